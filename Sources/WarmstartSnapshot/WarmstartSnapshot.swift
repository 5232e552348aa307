// WarmstartSnapshot: see Docs/ARCHITECTURE.md
