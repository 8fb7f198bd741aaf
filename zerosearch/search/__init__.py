"""Search backends: real ones (BM25, dense E5, a Search-R1 retrieval server, Google via a web API), the LLM
simulator (local or served) with its noise curriculum, and the simulator's HTTP server (:mod:`.server`)."""

from .base import (
    EMPTY_QUERY_DOCS,
    UNAVAILABLE_DOCS,
    SearchBackend,
    SearchRequest,
    SearchResult,
    clean_query,
    empty_query_result,
    unavailable_result,
)
from .bm25 import BM25Search
from .curriculum import NoiseCurriculum, noise_probability
from .dense import DenseRetrieverSearch
from .documents import format_documents, parse_documents
from .openai_client import OpenAICompletions, OpenAISimulator
from .retrieval_server import RetrievalServerSearch
from .simulator import SimulatorSearch
from .web_search import WebSearch

__all__ = [
    "EMPTY_QUERY_DOCS",
    "UNAVAILABLE_DOCS",
    "BM25Search",
    "DenseRetrieverSearch",
    "NoiseCurriculum",
    "OpenAICompletions",
    "OpenAISimulator",
    "RetrievalServerSearch",
    "SearchBackend",
    "SearchRequest",
    "SearchResult",
    "SimulatorSearch",
    "WebSearch",
    "clean_query",
    "empty_query_result",
    "format_documents",
    "noise_probability",
    "parse_documents",
    "unavailable_result",
]
