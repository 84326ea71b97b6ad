"""The monthly SLA report: figures (pure), queries (PostgreSQL, chain), rendering, its command."""
