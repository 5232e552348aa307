// WarmstartVirtio: see Docs/ARCHITECTURE.md
