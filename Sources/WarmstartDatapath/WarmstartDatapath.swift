// WarmstartDatapath: see Docs/ARCHITECTURE.md
