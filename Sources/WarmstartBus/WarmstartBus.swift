// WarmstartBus: see Docs/ARCHITECTURE.md
