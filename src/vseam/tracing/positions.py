"""Where the image tokens, the question's tokens and the last token sit in a batch, found from the inputs.

Image tokens are where the processor put them: whatever it put in place of the prompt's image placeholder
(LLaVA's expanded patches, LLaVA-NeXT's tiles with their newline tokens, Qwen2-VL's dynamic-resolution
tokens; a processor's own tile or row markers around them too: Gemma 3's ``\\n\\n<start_of_image>`` ...
``<end_of_image>\\n\\n``), or, with no placeholder in the prompt, the adapter's visual tokens (InstructBLIP's
query tokens): one ``image`` band, however many tokens the image got. The question's tokens are found by
aligning the processor's ids with the tokenizer's character offsets of the prompt (as the processor sees it:
``adapter.model_text``): outside the band the two id sequences must be the same (else a clear error naming
the sample), except that a template token touching the placeholder may merge with what the processor put
there (Gemma's "user\\n" + "\\n\\n" is one "\\n\\n\\n" token) and then joins the band; the question's own tokens
never may. A token belongs to the question when its characters overlap the question's span in the prompt.
Nothing is hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch

from vseam.config import PositionGroup

POSITION_GROUPS = get_args(PositionGroup)  # the groups of positions found here (trace.groups)

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
            raise ValueError(f"trace group {group!r}: expected one of {POSITION_GROUPS}")
        return m


def question_span(template: str, prompt: str, question: str) -> tuple[int, int]:
    """Character span [start, end) of ``question`` in ``prompt`` made from ``template``."""
    if "{question}" not in template:
        raise ValueError(f"prompt template {template!r} has no {{question}}")
    # the text before {question} as rendered (a chat template's own braces are doubled in the template)
    start = len(template.split("{question}", 1)[0].replace("{{", "{").replace("}}", "}"))
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
        prompt = adapter.model_text(adapter.prompt(question))
        start, end = question_span(adapter.model_text(adapter.template), prompt, question)
        enc = tok(prompt, return_offsets_mapping=True, add_special_tokens=adapter.add_special_tokens)
        row = input_ids[b].cpu()
        band, text_pos, spans = _align(adapter, row, mask[b], image[b], enc["input_ids"], enc["offset_mapping"],
                                       name, prompt, (start, end))
        roles = ["pad"] * row.shape[0]
        for t in band:
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


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _align(adapter, row: torch.Tensor, real: torch.Tensor, visual: torch.Tensor, prompt_ids: list[int],
           offsets: list, name: str, prompt: str, question: tuple[int, int]) -> tuple[list[int], list[int], list]:
    """(image band positions, text positions, the text positions' character spans in the prompt) of one row.

    When the prompt holds the image placeholder once (``<image>``, ``<|image_pad|>``, Gemma 3's
    ``<start_of_image>``: ``adapter.placeholder_token_id``), the processor replaced it by the image's tokens:
    the row is the prompt's tokens before it, the band, and the tokens after it, so the band is whatever the
    processor put there (image tokens, and any tile, row or newline markers it adds around them). A prompt
    token next to the placeholder that the tokenizer merged with the processor's markers joins the band; one
    overlapping the ``question`` character span, or the last token, is an error. Otherwise (InstructBLIP's
    query tokens lead the row) the band is the adapter's visual tokens and the rest must be the prompt's
    tokens. Either way every visual token must lie in the band.
    """
    pos = [t for t in range(row.shape[0]) if real[t]]
    ids = [int(row[t]) for t in pos]
    holders = [k for k, i in enumerate(prompt_ids) if i == adapter.placeholder_token_id]
    if len(holders) == 1:
        k = holders[0]
        before, after = list(prompt_ids[:k]), list(prompt_ids[k + 1:])
        n_after = len(after)
        p = _common_prefix(ids, before)
        s = min(_common_prefix(ids[::-1], after[::-1]), max(0, len(ids) - p - 1))
        merged = list(offsets[p:k]) + list(offsets[k + 1:k + 1 + n_after - s])  # prompt tokens now in the band
        if (s == 0 and n_after) or any(e > question[0] and st < question[1] for st, e in merged):
            raise ValueError(f"sample {name!r}: the processor's tokens {ids} are not the tokenizer's {list(prompt_ids)} "
                             f"with the image placeholder expanded, for the prompt {prompt!r}; positions cannot be "
                             f"aligned")
        band = pos[p:len(pos) - s]
        text_pos = pos[:p] + pos[len(pos) - s:]
        if any(bool(visual[t]) for t in text_pos):
            raise ValueError(f"sample {name!r}: image tokens outside the band the processor put in place of the "
                             f"image placeholder of the prompt {prompt!r}")
        return band, text_pos, list(offsets[:p]) + list(offsets[k + 1 + n_after - s:])
    text_ids = [i for i in prompt_ids if i != adapter.placeholder_token_id]
    spans = [s for i, s in zip(prompt_ids, offsets) if i != adapter.placeholder_token_id]
    text_pos = [t for t in pos if not visual[t]]
    if [int(row[t]) for t in text_pos] != text_ids:
        raise ValueError(f"sample {name!r}: the processor's text tokens {[int(row[t]) for t in text_pos]} differ "
                         f"from the tokenizer's {text_ids} for the prompt {prompt!r}; positions cannot be aligned")
    return [t for t in pos if visual[t]], text_pos, spans
