"""Greedy evaluation with any search backend: EM / cover-EM / F1 per dataset and their average."""

from zerosearch.eval.evaluate import evaluate, format_table, summarize
from zerosearch.eval.test_sets import load_test_sets, qa_files, source_name

__all__ = ["evaluate", "format_table", "load_test_sets", "qa_files", "source_name", "summarize"]
