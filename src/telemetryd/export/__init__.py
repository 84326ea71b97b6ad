"""What the NOC sees: one prometheus-client Collector per domain, the status JSON and page, the HTTP app.

Collectors read the domain objects they are given (State, the scheduler, link state,
supervision, the history writer), never the daemon. They run in a worker thread while
the event loop goes on, so each reads a consistent view: State's roster is swapped
whole on reload, and mutable containers are copied in one C-level step before use.
"""
