"""The simulator behind an OpenAI-compatible HTTP server, so training runs elsewhere can share it."""

from zerosearch.search.server.http import SimulatorHTTPServer, is_loopback, make_server, serve
from zerosearch.search.server.request import BadRequest, parse_completion_request

__all__ = ["BadRequest", "SimulatorHTTPServer", "is_loopback", "make_server", "parse_completion_request", "serve"]
