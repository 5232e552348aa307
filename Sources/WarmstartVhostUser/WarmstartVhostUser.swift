// WarmstartVhostUser: see Docs/ARCHITECTURE.md
