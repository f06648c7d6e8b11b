"""Model adapters: one interface (prompt, inputs, answer tokens, scoring, the language model's and the vision
tower's structure) over every supported VLM (``ADAPTERS``: LLaVA-1.5, InstructBLIP, LLaVA-NeXT, Qwen2-VL,
Qwen2.5-VL, Qwen3-VL, Gemma 3, PaliGemma, LLaVA-OneVision, Idefics3, SmolVLM, InternVL)."""

from vseam.models.base import Embedded, Encoded, ScoreResult, VLMAdapter, answer_stats, find_decoder
from vseam.models.cache import Batch, EmbeddingCache
from vseam.models.gemma3 import Gemma3Adapter
from vseam.models.idefics3 import Idefics3Adapter
from vseam.models.instructblip import InstructBlipAdapter
from vseam.models.internvl import InternVLAdapter
from vseam.models.llava import LlavaAdapter
from vseam.models.llava_next import LlavaNextAdapter
from vseam.models.llava_onevision import LlavaOnevisionAdapter
from vseam.models.loading import ADAPTERS, ModelNotFoundError, arch_for_model_type, load_adapter
from vseam.models.paligemma import PaliGemmaAdapter
from vseam.models.qwen2_5_vl import Qwen2_5_VLAdapter
from vseam.models.qwen2_vl import Qwen2VLAdapter
from vseam.models.qwen3_vl import Qwen3VLAdapter
from vseam.models.smolvlm import SmolVLMAdapter
from vseam.models.structure import Stack

__all__ = [
    "VLMAdapter", "LlavaAdapter", "InstructBlipAdapter", "LlavaNextAdapter", "Qwen2VLAdapter", "Encoded", "Embedded",
    "ScoreResult", "answer_stats", "find_decoder", "Stack", "Batch", "EmbeddingCache", "load_adapter",
    "ModelNotFoundError", "ADAPTERS", "arch_for_model_type",
    "Qwen2_5_VLAdapter", "Qwen3VLAdapter", "Gemma3Adapter", "PaliGemmaAdapter",
    "LlavaOnevisionAdapter", "Idefics3Adapter", "SmolVLMAdapter", "InternVLAdapter",
]
