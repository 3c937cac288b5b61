"""The network client tests start real `pylog serve` processes with the server tests' fixture."""
from tests.server.conftest import start_server  # noqa: F401  (a fixture: pytest finds it here)
