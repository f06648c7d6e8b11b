"""One adapter interface over every supported VLM: prompts, batched inputs, answer tokens, scoring, and
the structure (the language model's and the vision tower's stacks of layers, their attention output
projections and heads, the final norm, the projector) that interventions reach (``vseam.models.structure``).

A VLM is split in two: ``embed`` (vision tower, projector / Q-Former, merged into the token
embeddings; run once per image) and ``lm_logits`` (the language model on those embeddings,
logits at the last position only). The language-model analyses intervene in the second part only, so
images are encoded once and reused across all ablations. ``Embedded`` carries what the language model
needs besides the embeddings, captured from the HF model's own call of its decoder: the padding mask,
the position ids (``[B, T]``, or ``[B, 3, T]`` for Qwen2-VL's M-RoPE), and per-token extras of an
architecture (``Embedded.extra``). An architecture's adapter says how these become the decoder's
keyword arguments (``VLMAdapter.lm_kwargs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vseam.data.sample import Sample, load_image
from vseam.models.structure import find_decoder, language_stack, vision_stack  # noqa: F401 (find_decoder re-exported)

YES_NO = {"yes", "no"}

# How the answer probability and correctness are read off the last position (docs/method.md#answer-tokens);
# ``model.answer_definition`` picks one, "project" is the default.
ANSWER_DEFINITIONS = {
    # p = summed probability of the gold first token and its single-token yes/no case variants; correct
    # when the arg-max is one of those tokens
    "project": "p sums the gold first token and its single-token yes/no case variants (▁Yes, ▁yes, ▁YES); "
               "correct when the arg-max is one of them",
    # the paper's released code: p of the first sub-token of the answer as written only; correct when the
    # arg-max is any of the answer's sub-tokens
    "reference": "p of the first sub-token of the answer as written; correct when the arg-max is any sub-token "
                 "of the answer",
}


def check_answer_definition(name) -> str:
    """``name`` when it is a known answer definition, else a ValueError naming the config key."""
    if name not in ANSWER_DEFINITIONS:
        raise ValueError(f"model.answer_definition={name!r}: expected one of {sorted(ANSWER_DEFINITIONS)}")
    return str(name)


class _StopForward(Exception):
    """Raised inside a hook to stop a forward pass once the wanted tensors are captured."""


@dataclass
class Encoded:
    """A batch ready for the model: processor outputs plus the answer token ids of each sample."""

    inputs: dict[str, torch.Tensor]  # processor outputs (input_ids, attention_mask, pixel_values, ...)
    answer_ids: list[list[int]]  # per sample: token ids whose probabilities make p (see answer_token_ids)
    target: torch.Tensor  # [B] the first token of the gold answer as written (the training target)
    ids: list[str] = field(default_factory=list)
    # per sample: token ids an arg-max counts as correct at; None = answer_ids (the project's definition)
    correct_ids: list[list[int]] | None = None

    def to(self, device) -> Encoded:
        return Encoded({k: v.to(device) for k, v in self.inputs.items()}, self.answer_ids,
                       self.target.to(device), self.ids, self.correct_ids)

    @property
    def batch_size(self) -> int:
        return int(self.target.shape[0])

    def answer_mask(self, vocab_size: int) -> torch.Tensor:
        """Bool [B, V]: True at the token ids whose probabilities make the answer probability."""
        return answer_mask(self.answer_ids, vocab_size, self.target.device)

    def correct_mask(self, vocab_size: int) -> torch.Tensor:
        """Bool [B, V]: True at the token ids an arg-max counts as correct at."""
        return answer_mask(self.answer_ids if self.correct_ids is None else self.correct_ids, vocab_size,
                           self.target.device)


def answer_mask(answer_ids: Sequence[Sequence[int]], vocab_size: int, device=None) -> torch.Tensor:
    """Bool [B, V]: True at the token ids of each sample (``Encoded`` and the cache's ``Batch``)."""
    mask = torch.zeros(len(answer_ids), vocab_size, dtype=torch.bool, device=device)
    for i, ids in enumerate(answer_ids):
        mask[i, list(ids)] = True
    return mask


@dataclass
class Embedded:
    """Inputs of the language model: merged embeddings, attention mask, position ids, per-token extras.

    Every tensor is batch-first with the token axis last (``inputs_embeds`` excepted: [B, T, d]), so one
    rule selects rows (``index``), repeats them (``repeat``), keeps the last positions (``crop``) and
    left-pads cached rows (``models.cache``) for every architecture.
    """

    inputs_embeds: torch.Tensor  # [B, T, d]
    attention_mask: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T], or [B, k, T] (Qwen2-VL's M-RoPE: k = 3, time / height / width)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # per token [B, ..., T] (an architecture's own)

    def repeat(self, n: int) -> Embedded:
        """Each sample repeated ``n`` times in a row (sample-major): rows b*n ... b*n+n-1 are sample b."""
        return Embedded(self.inputs_embeds.repeat_interleave(n, 0), self.attention_mask.repeat_interleave(n, 0),
                        self.position_ids.repeat_interleave(n, 0),
                        {k: v.repeat_interleave(n, 0) for k, v in self.extra.items()})

    def index(self, idx) -> Embedded:
        return Embedded(self.inputs_embeds[idx], self.attention_mask[idx], self.position_ids[idx],
                        {k: v[idx] for k, v in self.extra.items()})

    def crop(self, width: int) -> Embedded:
        """The last ``width`` positions of every row (left padding dropped)."""
        return Embedded(self.inputs_embeds[:, -width:], self.attention_mask[:, -width:],
                        self.position_ids[..., -width:], {k: v[..., -width:] for k, v in self.extra.items()})


@dataclass
class ScoreResult:
    """Per-sample answer probability, correctness and prediction."""

    prob: torch.Tensor  # [N] summed probability of the answer token ids at the last position
    correct: torch.Tensor  # [N] bool: arg-max token is one of the answer ids
    pred_token_id: torch.Tensor  # [N]
    pred_token: list[str]  # the arg-max token as text (``token_text``)
    ids: list[str]
    logit: torch.Tensor | None = None  # [N] mean logit of the answer token ids

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean()) if len(self.correct) else float("nan")


def answer_stats(logits: torch.Tensor, answer_mask: torch.Tensor, correct_mask: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From last-position logits [B, V] and the answer mask [B, V]: (prob, correct, mean logit).

    ``correct_mask`` [B, V] (default: ``answer_mask``) holds the ids an arg-max counts as correct at; it
    differs from ``answer_mask`` under ``model.answer_definition=reference``.
    """
    logits = logits.float()
    probs = logits.softmax(-1)
    prob = (probs * answer_mask).sum(-1)
    pred = logits.argmax(-1)
    correct_mask = answer_mask if correct_mask is None else correct_mask.to(answer_mask.device)
    correct = correct_mask.gather(1, pred[:, None]).squeeze(1)
    mean_logit = (logits * answer_mask).sum(-1) / answer_mask.sum(-1).clamp(min=1)
    return prob, correct, mean_logit


class VLMAdapter:
    """A frozen VLM seen through the interface every analysis uses. Subclasses name the architecture
    (``arch``, the HF class, the checkpoint ``model_type`` values they serve) and, where the architecture
    needs it, how the language model's inputs are formed (``positions``, ``lm_kwargs``)."""

    arch: str = "base"
    hf_class: str = ""  # the transformers class the checkpoint loads as (loading.py)
    model_types: tuple[str, ...] = ()  # config.model_type values of checkpoints this adapter serves
    # the prompt; None = the model's own chat template with the one-word instruction (chat_template_prompt)
    default_template: str | None = None
    # no position of the language model attends to a later one (False: Gemma 3's image tokens, PaliGemma's prefix);
    # the attention-pattern reads check it (interventions.hooks)
    causal: bool = True

    def __init__(self, model: nn.Module, processor: Any, *, template: str | None = None, name: str | None = None,
                 answer_definition: str = "project"):
        self.model = model.eval()
        self.answer_definition = check_answer_definition(answer_definition)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # the answer is read at the last position of every row
        # where the prompt comes from: model.prompt_template, the adapter's paper prompt, or the chat template
        if template:
            self.template, self.template_source = template, "model.prompt_template"
        elif self.default_template is not None:
            self.template, self.template_source = self.default_template, "adapter"
        else:
            self.template, self.template_source = chat_template_prompt(processor), "chat_template"
        self.name = name or getattr(model.config, "_name_or_path", "") or self.arch
        # id, path and weights hash (vseam.models.identity); load_adapter fills in the hash
        self.identity: dict[str, str] = {"id": self.name, "path": str(getattr(model.config, "_name_or_path", ""))}
        self.lm = language_stack(model)  # the decoder, its layers, attention output projections, final norm
        self.lm.causal = self.causal
        self.decoder: nn.Module = self.lm.decoder
        self.layers: nn.ModuleList = self.lm.layers
        self.norm: nn.Module = self.lm.norm
        self.lm_head: nn.Module = model.get_output_embeddings()
        self.num_layers, self.num_heads, self.head_dim = self.lm.shape
        text_config = model.config.get_text_config()
        self.num_kv_heads = int(getattr(text_config, "num_key_value_heads", None) or self.num_heads)
        self.vocab_size = self.lm_head.out_features
        self._answer_cache: dict[tuple[str, str], tuple[list[int], int, list[int]]] = {}
        self._vision = None

    # ----------------------------------------------------------------- structure
    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def attention(self, layer: int) -> nn.Module:
        return self.lm.attention(layer)

    def o_proj(self, layer: int) -> nn.Linear:
        return self.lm.o_proj(layer)

    @property
    def vision(self):
        """The vision tower as a ``Stack`` (its layers' attention heads and residual streams, and the
        projector / connector as site ``proj_out``): ``intervene(adapter.vision, Ablate(...))``."""
        if self._vision is None:
            self._vision = vision_stack(self.model)
        return self._vision

    def stack(self, tower: str):
        """The ``Stack`` of ``tower`` (``attribution.tower``): language | vision."""
        if tower == "language":
            return self.lm
        if tower == "vision":
            return self.vision
        raise ValueError(f"attribution.tower={tower!r}: expected language or vision")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(num_layers, num_heads, head_dim) of the language model."""
        return self.num_layers, self.num_heads, self.head_dim

    def visual_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool [B, T]: where the processor put the image tokens (every image's, tiles and newline tokens
        included) or InstructBLIP's query tokens."""
        return input_ids == self.image_token_id

    @property
    def image_token_id(self) -> int:
        cfg = self.model.config
        tid = getattr(cfg, "image_token_id", None)
        if tid is None:
            tid = getattr(cfg, "image_token_index", None)
        return int(tid)

    @property
    def placeholder_token_id(self) -> int:
        """The token of the prompt that the processor replaces by the image's tokens: the image token itself,
        unless the processor expands another one (Gemma 3's ``<start_of_image>``)."""
        return self.image_token_id

    @property
    def prompt_info(self) -> dict[str, str]:
        """The prompt template and where it came from, for result files."""
        return {"template": self.template, "source": self.template_source}

    # ----------------------------------------------------------------- text
    def prompt(self, question: str) -> str:
        return self.template.format(question=question.strip())

    def model_text(self, prompt: str) -> str:
        """The text the processor tokenizes for ``prompt``, its image placeholder not yet expanded: the prompt
        itself, unless the processor completes it (PaliGemma's puts BOS after the image and a newline at the end)."""
        return prompt

    @property
    def add_special_tokens(self) -> bool:
        """Whether the tokenizer adds its special tokens (BOS) to a prompt: not when the prompt starts with the BOS
        itself (Gemma 3's chat template writes it), as ``processor.apply_chat_template`` decides."""
        bos = self.tokenizer.bos_token
        return not (bos and self.template.startswith(str(bos)))

    def answer_token_ids(self, answer: str) -> tuple[list[int], int]:
        """Token ids whose probabilities make the answer probability, and the gold first token.

        The gold token is the first token of ``answer`` as the model would emit it after the prompt
        (a leading-space piece such as "▁Yes"). Multi-token answers count by their first token.
        Under the project's definition (default) yes/no answers are case-insensitive: "yes", "Yes",
        "YES" count when each is one token; under ``answer_definition="reference"`` only the gold token.
        """
        ids, gold, _ = self.answer_tokens(answer)
        return ids, gold

    def answer_correct_ids(self, answer: str) -> list[int]:
        """Token ids an arg-max counts as correct at: the probability ids (project), or every sub-token of
        the answer as written (reference)."""
        return self.answer_tokens(answer)[2]

    def answer_tokens(self, answer: str) -> tuple[list[int], int, list[int]]:
        """(probability ids, gold first token, correct ids) of ``answer`` under this adapter's definition."""
        key = (self.answer_definition, answer)
        if key in self._answer_cache:
            return self._answer_cache[key]
        answer = answer.strip()
        if not answer:
            raise ValueError("empty answer cannot be tokenized")
        gold = self._first_continuation_token(answer)
        ids = [gold]
        if self.answer_definition == "reference":
            correct = list(dict.fromkeys(self._continuation_tokens(answer)))  # every sub-token, once, in order
        else:
            if answer.lower() in YES_NO:
                for variant in sorted({answer.lower(), answer.capitalize(), answer.upper()} - {answer}):
                    pieces = self._continuation_tokens(variant)
                    if len(pieces) == 1 and pieces[0] not in ids:
                        ids.append(pieces[0])
            correct = list(ids)
        self._answer_cache[key] = (ids, gold, correct)
        return self._answer_cache[key]

    def _continuation_tokens(self, answer: str) -> list[int]:
        base = self.model_text(self.prompt("x")).replace(str(getattr(self.processor, "image_token", None) or "<image>"),
                                                        "")
        # after "ASSISTANT:" the answer follows a space ("▁Yes"); after a chat template's "assistant\n" none
        sep = "" if base[-1:].isspace() else " "
        ids_p = self.tokenizer(base, add_special_tokens=False)["input_ids"]
        ids_pa = self.tokenizer(base + sep + answer, add_special_tokens=False)["input_ids"]
        i = 0
        while i < min(len(ids_p), len(ids_pa)) and ids_p[i] == ids_pa[i]:
            i += 1
        return ids_pa[i:]

    def _first_continuation_token(self, answer: str) -> int:
        cont = self._continuation_tokens(answer)
        if not cont:
            raise ValueError(f"answer {answer!r} adds no token after the prompt")
        if cont[0] == self.tokenizer.unk_token_id:
            raise ValueError(f"answer {answer!r} starts with an unknown token")
        return cont[0]

    # ----------------------------------------------------------------- limits of the inputs
    @property
    def patch_size(self) -> int | None:
        """Side in pixels of the vision tower's patch (an image smaller than it carries no patch), or None."""
        vision = getattr(self.model.config, "vision_config", None)
        size = getattr(vision, "patch_size", None)
        return int(size) if isinstance(size, int) else None

    def position_limits(self, question: str) -> list[tuple[str, int, int]]:
        """``(part, positions the prompt of `question` takes, positions the part has)`` for each part of the
        model with a position limit: the language model (text tokens plus the image's tokens)."""
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if not limit:
            return []
        text = len(self.tokenizer(self.prompt(question))["input_ids"])
        return [("language model", text + self._image_positions(), int(limit))]

    def _image_positions(self) -> int:
        """How many positions an image adds to the tokenized prompt (measured once with the processor:
        LLaVA's image token becomes its patches, InstructBLIP's query tokens are put in front)."""
        if not hasattr(self, "_image_overhead"):
            from PIL import Image

            prompt = self.prompt("x")
            with_image = self.processor(images=self.processor_images([Image.new("RGB", (32, 32))]), text=[prompt],
                                        return_tensors="pt", **self.processor_kwargs())["input_ids"].shape[-1]
            self._image_overhead = int(with_image) - len(self.tokenizer(prompt)["input_ids"])
        return self._image_overhead

    def token_text(self, ids: Sequence[int]) -> list[str]:
        """Each token id as the text it stands for (``red``, not the SentencePiece piece ``▁red``)."""
        return [self.tokenizer.decode([int(i)]).strip() for i in ids]

    # ----------------------------------------------------------------- inputs
    def processor_images(self, images: list) -> list:
        """The processor's ``images`` for a batch of one image per prompt (Gemma 3's and SmolVLM's processors want a
        list per prompt: a flat list is one prompt's images to them)."""
        return images

    def processor_kwargs(self) -> dict:
        """Keyword arguments of every processor call (no second BOS after a template's own: ``add_special_tokens``)."""
        return {} if self.add_special_tokens else {"add_special_tokens": False}

    def encode(self, samples: Sequence[Sample], images: Sequence[Any] | None = None) -> Encoded:
        """Preprocess a batch: prompts, images, left padding, answer ids. Raises MissingImageError."""
        if images is None:
            images = [load_image(s) for s in samples]
        prompts = [self.prompt(s.question) for s in samples]
        inputs = self.processor(images=self.processor_images(list(images)), text=prompts, return_tensors="pt",
                                padding=True, **self.processor_kwargs())
        inputs = left_align({k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        answer_ids, target, correct_ids = [], [], []
        for s in samples:
            if s.answer is None:  # a free-form prompt (vseam.prompt): a prediction, nothing to score
                answer_ids.append([])
                target.append(-100)
                continue
            try:
                ids, gold, correct = self.answer_tokens(s.answer)
            except ValueError as e:
                raise ValueError(f"sample {s.id!r}: {e}") from e
            answer_ids.append(ids)
            target.append(gold)
            correct_ids.append(correct)
        return Encoded(inputs, answer_ids, torch.tensor(target), [s.id for s in samples], correct_ids)

    # ----------------------------------------------------------------- forward
    def model_inputs(self, enc: Encoded) -> dict:
        inputs = dict(enc.inputs)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def embed(self, enc: Encoded) -> Embedded:
        """Run the vision side once; return the language model's inputs (merged token embeddings, the
        padding mask, and the position ids the HF model hands its decoder; ``positions``)."""
        captured = {}

        def grab(module, args, kwargs):
            captured.update(kwargs)
            raise _StopForward

        handle = self.decoder.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.model(**self.model_inputs(enc), use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if "inputs_embeds" not in captured:
            raise RuntimeError(f"{type(self.model).__name__}: the language model was never called")
        mask = enc.inputs["attention_mask"].to(self.device)
        return Embedded(captured["inputs_embeds"], mask, self.positions(mask, captured), self.extras(enc, captured))

    def positions(self, mask: torch.Tensor, decoder_kwargs: dict) -> torch.Tensor:
        """Position ids [B, T] (or [B, k, T]) of a left-padded batch; ``decoder_kwargs``: what the HF model
        passed its decoder. Default: counted over real tokens only, so left padding does not shift them."""
        return position_ids_from_mask(mask)

    def extras(self, enc: Encoded, decoder_kwargs: dict) -> dict[str, torch.Tensor]:
        """Per-token tensors [B, ..., T] the decoder needs besides embeddings, mask and positions (none here)."""
        return {}

    def lm_kwargs(self, emb: Embedded) -> dict:
        """The decoder's keyword arguments (besides ``inputs_embeds``) for ``emb``."""
        return {"attention_mask": emb.attention_mask, "position_ids": emb.position_ids}

    def lm_hidden(self, emb: Embedded) -> torch.Tensor:
        """Final (normed) hidden state at the last position, [B, d]."""
        out = self.decoder(inputs_embeds=emb.inputs_embeds, **self.lm_kwargs(emb), use_cache=False)
        return out.last_hidden_state[:, -1]

    def lm_logits(self, emb: Embedded) -> torch.Tensor:
        """Logits at the last position only, [B, V]."""
        return self.unembed(self.lm_hidden(emb))

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from final-normed hidden states [..., d]: the LM head (an architecture that post-processes its
        logits, e.g. a soft cap, does it here, and every analysis reads logits through it)."""
        return self.lm_head(hidden)

    def last_logits(self, enc: Encoded) -> torch.Tensor:
        return self.lm_logits(self.embed(enc))

    @torch.no_grad()
    def score(self, samples: Sequence[Sample], batch_size: int = 8, progress: bool = False) -> ScoreResult:
        """Answer probability, correctness and prediction for every sample (batched, no grad)."""
        probs, corrects, preds, logits_, ids = [], [], [], [], []
        it = range(0, len(samples), batch_size)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="score", unit="batch")
        for start in it:
            enc = self.encode(samples[start:start + batch_size]).to(self.device)
            logits = self.last_logits(enc)
            p, c, ml = answer_stats(logits, enc.answer_mask(logits.shape[-1]), enc.correct_mask(logits.shape[-1]))
            probs.append(p.cpu())
            corrects.append(c.cpu())
            logits_.append(ml.cpu())
            preds.append(logits.argmax(-1).cpu())
            ids += enc.ids
        if not probs:
            empty = torch.zeros(0)
            return ScoreResult(empty, empty.bool(), empty.long(), [], [], empty)
        pred = torch.cat(preds)
        return ScoreResult(torch.cat(probs), torch.cat(corrects), pred, self.token_text(pred.tolist()), ids,
                           torch.cat(logits_))


# The one-word-answer instruction of a chat-template prompt (docs/method.md#prompts: LLaVA-1.5's words)
ONE_WORD = "Please answer with a single word."


def chat_template_prompt(processor: Any, instruction: str = ONE_WORD) -> str:
    """The prompt template (``{question}`` marks the question) that the processor's own chat template makes
    of one user turn holding the image and ``{question} {instruction}``, with the assistant's turn opened.

    The chat template is rendered once around a marker that becomes ``{question}`` (any brace of the
    template's own text doubled), and checked to render another question the same way, so
    ``template.format(question=q)`` is exactly what ``processor.apply_chat_template`` gives for ``q``.
    """
    if not getattr(processor, "chat_template", None):
        raise ValueError(f"{type(processor).__name__} has no chat template: set model.prompt_template (with "
                         f"{{question}}) for this model")

    def render(question: str) -> str:
        conversation = [{"role": "user", "content": [{"type": "image"},
                                                     {"type": "text", "text": f"{question} {instruction}"}]}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    marker = "QUESTIONMARKER7F3A"
    text = render(marker)
    if text.count(marker) != 1:
        raise ValueError(f"{type(processor).__name__}'s chat template does not put the question once in the prompt")
    template = text.replace("{", "{{").replace("}", "}}").replace(marker, "{question}")
    probe = "Is the {red} cube left of 2 balls?"
    if render(probe) != template.format(question=probe):
        raise ValueError(f"{type(processor).__name__}'s chat template renders the question differently from one "
                         f"question to the next; set model.prompt_template")
    return template


def left_align(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The processor's outputs with every row's real tokens moved to the end (left padding), whatever side
    the tokenizer padded: the per-token tensors (``input_ids``, ``attention_mask``, token-type ids) are
    rolled row by row; a left-padded batch is returned as it is."""
    mask = inputs.get("attention_mask")
    if mask is None or mask.dim() != 2 or bool(mask[:, -1].all()):
        return inputs
    keys = [k for k, v in inputs.items() if v.shape == mask.shape and (k in ("input_ids", "attention_mask")
                                                                      or k.endswith("type_ids"))]
    shift = mask.shape[1] - (mask.long().cumsum(1) * mask.long()).argmax(1) - 1  # positions after the last real token
    out = dict(inputs)
    for k in keys:
        out[k] = torch.stack([torch.roll(row, int(n)) for row, n in zip(inputs[k], shift)])
    return out


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)
