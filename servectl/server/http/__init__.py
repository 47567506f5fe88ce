"""servectl's HTTP/1.1 connection layer: its own asyncio protocol over httptools, plugged
into uvicorn through the public `Config(http=...)` (uvicorn keeps sockets, lifespan,
signals and graceful shutdown)."""

from servectl.server.http.connection import ABORT, Connection, Express, connection_class
from servectl.server.http.cycle import Cycle

__all__ = ["ABORT", "Connection", "Cycle", "Express", "connection_class"]
