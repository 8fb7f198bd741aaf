"""The simulator's training data: a policy's sub-queries against a real engine (`collector`), labelled useful or
noisy and balanced (`labels`, `judge`)."""

from .collector import collect, collect_stats, flatten, sample_questions
from .labels import balance, format_label_stats, label_rows, label_stats, mined_negatives

__all__ = ["balance", "collect", "collect_stats", "flatten", "format_label_stats", "label_rows", "label_stats",
           "mined_negatives", "sample_questions"]
