// WarmstartIO: see Docs/ARCHITECTURE.md
