"""Benchmark evaluation: score a (possibly modulated) model on organism / GQA-style / POPE / COCO-QA samples."""

from vseam.evaluation.metrics import (
    accuracy,
    accuracy_interval,
    grouped_accuracy,
    is_yes,
    paired_comparison,
    pope_metrics,
    summarize,
)
from vseam.evaluation.score import EvalResult, evaluate, evaluate_groups, yes_no_margin

__all__ = ["accuracy", "accuracy_interval", "grouped_accuracy", "is_yes", "paired_comparison", "pope_metrics",
           "summarize", "EvalResult", "evaluate", "evaluate_groups", "yes_no_margin"]
