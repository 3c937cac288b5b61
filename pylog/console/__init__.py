"""The console (issue 14): a web UI of a pylog broker or cluster; see docs/console.md.

``pylog serve --console HOST:PORT`` serves it from a broker; ``pylog console
--bootstrap-server HOST:PORT`` runs it on its own.  Both are :class:`Console`.
"""
from pylog.console.app import Console

__all__ = ["Console"]
