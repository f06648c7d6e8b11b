"""Model adapters: one interface (prompt, inputs, answer tokens, scoring, LM structure) over LLaVA and InstructBLIP."""

from vseam.models.base import Embedded, Encoded, ScoreResult, VLMAdapter, answer_stats, find_decoder
from vseam.models.cache import Batch, EmbeddingCache
from vseam.models.instructblip import InstructBlipAdapter
from vseam.models.llava import LlavaAdapter
from vseam.models.loading import ADAPTERS, ModelNotFoundError, load_adapter

__all__ = [
    "VLMAdapter", "LlavaAdapter", "InstructBlipAdapter", "Encoded", "Embedded", "ScoreResult",
    "answer_stats", "find_decoder", "Batch", "EmbeddingCache", "load_adapter", "ModelNotFoundError", "ADAPTERS",
]
