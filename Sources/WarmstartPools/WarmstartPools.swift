// WarmstartPools: see Docs/ARCHITECTURE.md
