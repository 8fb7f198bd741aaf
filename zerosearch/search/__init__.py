"""Search backends: real ones (BM25, dense E5, a Search-R1 retrieval server, Google via a web API), the LLM
simulator (local or served), the curriculum."""

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
from .openai_client import OpenAISimulator
from .retrieval_server import RetrievalServerSearch
from .simulator import SimulatorSearch, hf_generate_fn, parse_documents
from .web_search import WebSearch

__all__ = [
    "EMPTY_QUERY_DOCS",
    "UNAVAILABLE_DOCS",
    "BM25Search",
    "DenseRetrieverSearch",
    "NoiseCurriculum",
    "OpenAISimulator",
    "RetrievalServerSearch",
    "SearchBackend",
    "SearchRequest",
    "SearchResult",
    "SimulatorSearch",
    "WebSearch",
    "clean_query",
    "empty_query_result",
    "hf_generate_fn",
    "noise_probability",
    "parse_documents",
    "unavailable_result",
]
