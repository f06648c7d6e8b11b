"""Who writes the edit: the deterministic rules (default) or an LLM given few-shot examples (off by
default; the original used GPT-4o). Both return an ``EditPlan`` or raise ``NotCovered``.

The LLM writer takes any ``generate(prompt) -> text`` callable, so a local transformers model, an API
client or a test double plugs in the same way; the masked boxes still come from the annotations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Protocol

from vseam.data.sample import Sample
from vseam.editing.rules import FEW_SHOT_EXAMPLES, EditPlan, NotCovered, boxes_for, fix_articles, plan_edit


class PromptWriter(Protocol):
    def __call__(self, sample: Sample) -> EditPlan: ...


class RuleWriter:
    """``plan_edit`` with fixed options."""

    def __init__(self, seed: int = 0, **options):
        self.seed, self.options = seed, options

    def __call__(self, sample: Sample) -> EditPlan:
        return plan_edit(sample, seed=self.seed, **self.options)


def few_shot_prompt(sample: Sample, examples: list[dict] = FEW_SHOT_EXAMPLES) -> str:
    """The instruction, the worked examples and the query, each edit as one JSON object."""
    lines = [
        "You write counterfactual image edits for visual question answering. Given a question about an "
        "image, its answer and its semantic level (object, attribute or relation), change the concept "
        "the question asks about so that the answer changes. Reply with one JSON object with the keys "
        "target (the object whose region is repainted), from, to, edit_prompt (a short inpainting prompt "
        "describing the new region), edited_answer (the answer to the original question after the edit), "
        "cf_question (a question about the new concept) and cf_answer.",
        "",
    ]
    for ex in examples:
        lines += [f"Question: {ex['question']}", f"Answer: {ex['answer']}", f"Level: {ex['level']}",
                  f"Edit: {json.dumps(ex['edit'])}", ""]
    objs = sample.meta.get("involved_objects") or sample.meta.get("relevant_objects") or []
    lines += [f"Question: {sample.question}", f"Answer: {sample.answer}", f"Level: {sample.level}"]
    if objs:
        lines.append(f"Objects: {', '.join(objs)}")
    lines.append("Edit:")
    return "\n".join(lines)


_KEYS = ("target", "from", "to", "edit_prompt", "edited_answer", "cf_question", "cf_answer")


def parse_llm_edit(text: str, sample: Sample) -> EditPlan:
    """The first JSON object in ``text`` as an ``EditPlan``; boxes from the annotated target."""
    m = re.search(r"\{.*?\}", text, re.S)
    if not m:
        raise NotCovered(f"LLM reply has no JSON object: {text[:80]!r}")
    try:
        d = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        raise NotCovered(f"LLM reply is not valid JSON ({e})") from None
    missing = [k for k in _KEYS if not str(d.get(k, "")).strip()]
    if missing:
        raise NotCovered(f"LLM reply lacks {missing}")
    target = str(d["target"]).strip()
    boxes = boxes_for([target], sample.meta)
    kind = {"object": "object", "attribute": "attribute", "relation": "relation"}.get(sample.level or "", "llm")
    return EditPlan(id=sample.id, level=sample.level or "", kind=kind, target=target, source=str(d["from"]),
                    substitute=str(d["to"]), edit_prompt=fix_articles(str(d["edit_prompt"])),
                    edited_answer=str(d["edited_answer"]), cf_question=str(d["cf_question"]),
                    cf_answer=str(d["cf_answer"]), boxes=boxes, objects=[target])


class LLMWriter:
    """An LLM fills in the edit from the few-shot prompt; ``fallback`` (e.g. the rules) when it fails."""

    def __init__(self, generate: Callable[[str], str], examples: list[dict] = FEW_SHOT_EXAMPLES,
                 fallback: PromptWriter | None = None):
        self.generate, self.examples, self.fallback = generate, examples, fallback

    def __call__(self, sample: Sample) -> EditPlan:
        if not sample.meta.get("object_positions"):
            raise NotCovered("no object_positions: nothing to mask")
        try:
            return parse_llm_edit(self.generate(few_shot_prompt(sample, self.examples)), sample)
        except NotCovered:
            if self.fallback is None:
                raise
            return self.fallback(sample)

    @classmethod
    def from_pretrained(cls, model_id: str, max_new_tokens: int = 128, **kwargs) -> LLMWriter:
        """A local/hub causal LM through the transformers text-generation pipeline (greedy)."""
        from transformers import pipeline

        gen = pipeline("text-generation", model=model_id)

        def generate(prompt: str) -> str:
            out = gen(prompt, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False)
            return out[0]["generated_text"]

        return cls(generate, **kwargs)
