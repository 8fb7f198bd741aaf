"""QA data in the Search-R1 layout (question, golden_answers, data_source)."""

from zerosearch.data.qa import QAExample, load_qa, save_qa

__all__ = ["QAExample", "load_qa", "save_qa"]
