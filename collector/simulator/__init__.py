"""Local OKX-protocol simulator: the test oracle and fault injector for the collector.

`market` models the true 400-level books, `faults` parses the fault plan, `server` serves the
public WebSocket and REST endpoints on one port (with `session`, `rest`, `truth` and
`instruments` as its parts). Nothing here imports the collector's book engine.
"""
