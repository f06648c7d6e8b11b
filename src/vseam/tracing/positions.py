"""Where the image tokens, the question's tokens and the last token sit in a batch, found from the inputs.

Image tokens are where the processor put them (``adapter.visual_token_mask``: LLaVA's expanded image
patches, InstructBLIP's query tokens). The question's tokens are found by aligning the processor's
ids with the tokenizer's character offsets of the prompt: with the image tokens removed from both,
the two id sequences must be the same (else a clear error naming the sample), and a token belongs to
the question when its characters overlap the question's span in the prompt. Nothing is hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vseam.validate import TRACE_GROUPS as GROUPS

ROLES = ("pad", "image", "question", "text")


@dataclass
class Layout:
    """One row of a left-padded batch: the role of every position and the tokens as text."""

    roles: list[str]  # per position of the padded row: pad | image | question | text (template)
    tokens: list[str]  # per position: the token as the tokenizer writes it ("" for padding)

    @property
    def length(self) -> int:
        return len(self.roles)

    def positions(self, role: str) -> list[int]:
        return [i for i, r in enumerate(self.roles) if r == role]

    def real(self) -> list[int]:
        return [i for i, r in enumerate(self.roles) if r != "pad"]

    def group_mask(self, group: str) -> torch.Tensor:
        """Bool [T]: the positions of ``group`` (image | question | last)."""
        m = torch.zeros(self.length, dtype=torch.bool)
        if group == "last":
            m[-1] = True
        elif group in ("image", "question"):
            m[self.positions(group)] = True
        else:
            raise ValueError(f"trace group {group!r}: expected one of {GROUPS}")
        return m


def question_span(template: str, prompt: str, question: str) -> tuple[int, int]:
    """Character span [start, end) of ``question`` in ``prompt`` made from ``template``."""
    if "{question}" not in template:
        raise ValueError(f"prompt template {template!r} has no {{question}}")
    start = len(template.split("{question}", 1)[0])
    q = question.strip()
    if prompt[start:start + len(q)] != q:
        raise ValueError(f"question {q!r} not found at character {start} of the prompt {prompt!r}")
    return start, start + len(q)


def layouts(adapter, input_ids: torch.Tensor, attention_mask: torch.Tensor, questions: list[str],
            ids: list[str] | None = None) -> list[Layout]:
    """The ``Layout`` of every row of a processed, left-padded batch (``input_ids`` [B, T])."""
    tok = adapter.tokenizer
    image = adapter.visual_token_mask(input_ids).cpu()
    mask = attention_mask.bool().cpu()
    out = []
    for b, question in enumerate(questions):
        name = ids[b] if ids else str(b)
        prompt = adapter.prompt(question)
        start, end = question_span(adapter.template, prompt, question)
        enc = tok(prompt, return_offsets_mapping=True)
        text_ids = [i for i in enc["input_ids"] if i != adapter.image_token_id]
        spans = [s for i, s in zip(enc["input_ids"], enc["offset_mapping"]) if i != adapter.image_token_id]
        row = input_ids[b].cpu()
        text_pos = [t for t in range(row.shape[0]) if mask[b, t] and not image[b, t]]
        if [int(row[t]) for t in text_pos] != text_ids:
            raise ValueError(f"sample {name!r}: the processor's text tokens {[int(row[t]) for t in text_pos]} differ "
                             f"from the tokenizer's {text_ids} for the prompt {prompt!r}; positions cannot be aligned")
        roles = ["pad"] * row.shape[0]
        for t in range(row.shape[0]):
            if mask[b, t] and image[b, t]:
                roles[t] = "image"
        for t, (s, e) in zip(text_pos, spans):
            roles[t] = "question" if (e > start and s < end) else "text"
        if "question" not in roles:
            raise ValueError(f"sample {name!r}: no token of the question {question!r} found in the prompt")
        if not mask[b, -1]:
            raise ValueError(f"sample {name!r}: the batch is not left-padded (last position is padding)")
        tokens = [tok.convert_ids_to_tokens(int(row[t])) if roles[t] != "pad" else "" for t in range(row.shape[0])]
        out.append(Layout(roles, tokens))
    return out
