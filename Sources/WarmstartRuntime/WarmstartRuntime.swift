// WarmstartRuntime: see Docs/ARCHITECTURE.md
