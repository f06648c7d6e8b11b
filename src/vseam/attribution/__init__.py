"""Head attribution (docs/method.md#head-scores): exact mean-substitution scores (fast engine and the reference
loop), attribution patching, the score math, and the resumable, sharded sweep behind
``python analyze.py heads``."""

from vseam.attribution.exact import ExactEngine
from vseam.attribution.outputs import load_head_scores, scores_from_dict, scores_to_dict
from vseam.attribution.patching import estimated_ablated_probs
from vseam.attribution.reference import reference_ablated_probs, reference_baseline
from vseam.attribution.scores import MATRICES, HeadScores, head_scores, heads_of, top_k, top_k_overlap, top_k_set
from vseam.attribution.sweep import score_heads

__all__ = [
    "ExactEngine", "estimated_ablated_probs", "reference_ablated_probs",
    "reference_baseline", "HeadScores", "head_scores", "top_k", "top_k_set", "top_k_overlap",
    "load_head_scores", "scores_from_dict", "scores_to_dict", "score_heads", "heads_of", "MATRICES",
]
