"""Benchmark evaluation: score a (possibly modulated) model on organism / GQA-style / POPE / COCO-QA samples."""

from vseam.evaluation.metrics import accuracy, grouped_accuracy, is_yes, pope_metrics, summarize
from vseam.evaluation.score import EvalResult, evaluate

__all__ = ["accuracy", "grouped_accuracy", "is_yes", "pope_metrics", "summarize", "EvalResult", "evaluate"]
