"""The simulator behind an OpenAI-compatible HTTP server, so training runs elsewhere can share it."""

from zerosearch.search.server.connections import is_loopback
from zerosearch.search.server.http import SimulatorHTTPServer
from zerosearch.search.server.request import BadRequest, parse_completion_request
from zerosearch.search.server.serve import DEFAULT_LIMITS, check_listen_address, make_server, resolve_limits, serve

__all__ = ["DEFAULT_LIMITS", "BadRequest", "SimulatorHTTPServer", "check_listen_address", "is_loopback",
           "make_server", "parse_completion_request", "resolve_limits", "serve"]
