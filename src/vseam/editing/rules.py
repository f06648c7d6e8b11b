"""Edit prompts by rule: from a GQA-style question and its semantic program, decide what to change
(object, colour / material, or relation), pick a substitute from a vocabulary, and write the edit
prompt, the answer on the edited image and a counterfactual question with its answer.

Everything here is a pure function of the sample, the vocabularies and a seed, so the rules are tested
without any model. A question the rules cannot handle raises ``NotCovered`` with the reason, which
the editing run counts as a skip.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from vseam.data.sample import Sample

# ------------------------------------------------------------------------------------ vocabularies
# Substitutes are drawn from these lists; synonyms and plural/adjective forms map onto their entries,
# so a substitute is never a synonym of the original ("steel" -> "metal" would not change anything).

VOCAB: dict[str, list[str]] = {
    "Animal": ["dog", "cat", "horse", "cow", "sheep", "elephant", "giraffe", "zebra", "bear", "bird", "goat",
               "pig", "lion", "tiger", "deer", "rabbit", "duck", "monkey", "camel", "kangaroo"],
    "Indoor": ["chair", "table", "couch", "bed", "lamp", "mirror", "refrigerator", "oven", "microwave", "sink",
               "desk", "bookcase", "cabinet", "pillow", "television", "clock", "vase", "toilet", "bathtub",
               "dishwasher", "nightstand", "rug", "curtain", "towel"],
    "Vehicle": ["car", "truck", "bus", "train", "bicycle", "motorcycle", "airplane", "boat", "van", "scooter",
                "taxi", "tractor", "helicopter", "skateboard"],
    "color": ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray",
              "tan", "silver", "gold"],
    "material": ["wood", "metal", "plastic", "glass", "stone", "brick", "concrete", "leather", "fabric", "paper",
                 "ceramic", "rubber"],
    "action": ["holding", "carrying", "riding", "eating", "feeding", "pushing", "pulling", "throwing", "kicking",
               "touching", "watching", "wearing", "sitting on", "standing on", "walking on", "lying on",
               "sitting in", "standing in", "walking in", "lying in", "eating in"],
    # opposite pairs first: a spatial substitute is the opposite when there is one
    "spatial": ["to the left of", "to the right of", "in front of", "behind", "above", "below", "on top of",
                "under", "underneath", "next to", "far from", "inside", "outside", "near", "beside", "on"],
}

SYNONYMS: dict[str, str] = {
    # objects
    "bike": "bicycle", "plane": "airplane", "aeroplane": "airplane", "motorbike": "motorcycle", "sofa": "couch",
    "fridge": "refrigerator", "tv": "television", "kitten": "cat", "puppy": "dog", "lamb": "sheep",
    "calf": "cow", "cattle": "cow", "sailboat": "boat", "ship": "boat", "cab": "taxi", "shelf": "bookcase",
    # colours
    "grey": "gray", "golden": "gold", "beige": "tan", "cream": "white",
    # materials (adjective forms)
    "wooden": "wood", "metallic": "metal", "steel": "metal", "iron": "metal", "aluminum": "metal",
    "stainless steel": "metal", "brass": "metal", "stone": "stone", "marble": "stone", "cement": "concrete",
    "cloth": "fabric", "cotton": "fabric", "denim": "fabric", "porcelain": "ceramic", "cardboard": "paper",
    "glassy": "glass",
}

SPATIAL_OPPOSITES: dict[str, str] = {
    "to the left of": "to the right of", "to the right of": "to the left of",
    "in front of": "behind", "behind": "in front of",
    "above": "below", "below": "above",
    "on top of": "under", "under": "on top of", "underneath": "on top of", "beneath": "on top of",
    "on": "under", "next to": "far from", "beside": "far from", "near": "far from",
    "inside": "outside", "outside": "inside", "left of": "right of", "right of": "left of",
}

TEMPLATES: dict[str, str] = {
    "object": "{a_to}",  # "a cat" / "cats"
    "color": "a {to} {target}",
    "material": "a {target} made of {to}",
    "relation": "a {subject} {to} the {object}",
}

FEW_SHOT_EXAMPLES = [  # the format of the original GPT-4o few-shot prompt (docs/method.md#visual-semantic-editing)
    {"question": "Is there a dog in this picture?", "answer": "Yes", "level": "object",
     "edit": {"target": "dog", "from": "dog", "to": "cat", "edit_prompt": "a cat",
              "edited_answer": "No", "cf_question": "Is there a cat in this picture?", "cf_answer": "Yes"}},
    {"question": "Is the car red?", "answer": "Yes", "level": "attribute",
     "edit": {"target": "car", "from": "red", "to": "green", "edit_prompt": "a green car",
              "edited_answer": "No", "cf_question": "Is the car green?", "cf_answer": "Yes"}},
    {"question": "Is the man riding the horse?", "answer": "Yes", "level": "relation",
     "edit": {"target": "man", "from": "riding", "to": "feeding", "edit_prompt": "a man feeding the horse",
              "edited_answer": "No", "cf_question": "Is the man feeding the horse?", "cf_answer": "Yes"}},
]

_YES, _NO = "Yes", "No"


class NotCovered(ValueError):
    """The rules do not cover this question/program; the message is the skip reason."""


@dataclass
class EditPlan:
    """What to edit in one sample and what the answers become."""

    id: str
    level: str  # object | attribute | relation
    kind: str  # object | color | material | action | spatial
    target: str  # the object whose region is edited (relation: the subject)
    source: str  # the concept before the edit (object name, colour, material, relation)
    substitute: str  # the concept after the edit
    edit_prompt: str
    edited_answer: str  # gold answer of the original question on the edited image
    cf_question: str  # a question about the new concept ...
    cf_answer: str  # ... and its answer on the edited image
    boxes: list[list[float]] = field(default_factory=list)  # [[x, y, w, h]] annotated regions to edit
    objects: list[str] = field(default_factory=list)  # the names of those regions

    def change(self) -> dict[str, Any]:
        """The ``change`` field of the edit record."""
        return {"kind": self.kind, "target": self.target, "from": self.source, "to": self.substitute,
                "cf_question": self.cf_question, "cf_answer": self.cf_answer, "objects": self.objects}

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------- small helpers

def canonical(word: str) -> str:
    w = re.sub(r"\s+", " ", word.strip().lower())
    return SYNONYMS.get(w, w)


def singular(word: str) -> str:
    w = canonical(word)
    irregular = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
                 "geese": "goose", "oxen": "ox", "sheep": "sheep", "deer": "deer", "glasses": "glasses",
                 "pants": "pants", "jeans": "jeans", "skis": "ski"}
    if w in irregular:
        return irregular[w]
    for suf, rep in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x"), ("uses", "us"),
                     ("oes", "o")):
        if w.endswith(suf) and len(w) > len(suf) + 1:
            return canonical(w[: -len(suf)] + rep)
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        return canonical(w[:-1])
    return w


def plural(word: str) -> str:
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def fix_articles(text: str, plural_head: bool = False) -> str:
    """``'a orange car'`` -> ``'an orange car'``; ``'a white pants'`` -> ``'white pants'`` (plural head)."""
    if plural_head:
        text = re.sub(r"^[Aa]n? ", "", text)
    return re.sub(r"\b([Aa]) ([aeiouAEIOU])", lambda m: m.group(1) + "n " + m.group(2), text)


def is_plural(word: str) -> bool:
    return singular(word) != canonical(word) or canonical(word) in ("people", "pants", "jeans", "glasses")


def _rng(seed: int, sample_id: str) -> random.Random:
    # per-sample stream: the choice for one sample does not depend on which other samples are edited
    return random.Random(f"{seed}:{sample_id}")


def _choose(rng: random.Random, vocab: list[str], exclude: str) -> str:
    ex = canonical(exclude)
    options = [v for v in vocab if canonical(v) != ex and singular(v) != singular(ex)]
    if not options:
        raise NotCovered(f"no substitute for {exclude!r} in a vocabulary of {len(vocab)}")
    return rng.choice(options)


def _ops(meta: dict) -> list[tuple[str, str]]:
    prog = meta.get("semantic") or []
    out = []
    for op in prog:
        if isinstance(op, dict):
            out.append((str(op.get("operation", "")), str(op.get("argument", ""))))
    return out


def _name(arg: str) -> str:
    """``'pants (715737)'`` -> ``'pants'``."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", arg).strip()


def _first_select(meta: dict) -> str | None:
    for op, arg in _ops(meta):
        if op == "select":
            return _name(arg)
    return None


def _is_yes_no(answer: str) -> bool:
    return answer.strip().lower() in ("yes", "no")


def _flip(answer: str) -> str:
    return _NO if answer.strip().lower() == "yes" else _YES


def boxes_for(names: list[str], meta: dict) -> list[list[float]]:
    """Boxes [x, y, w, h] of ``names`` in ``object_positions`` (aligned with involved/relevant objects)."""
    positions = meta.get("object_positions") or []
    involved = meta.get("involved_objects") or meta.get("relevant_objects") or []
    out = []
    for name in names:
        idx = None
        for i, obj in enumerate(involved):
            if i < len(positions) and (canonical(obj) == canonical(name) or singular(obj) == singular(name)):
                idx = i
                break
        if idx is None and len(positions) == 1 and len(names) == 1:
            idx = 0  # a single annotated box is the queried object
        if idx is None:
            raise NotCovered(f"no box for {name!r} in object_positions (involved objects {involved})")
        b = positions[idx]
        out.append([b["x"], b["y"], b["w"], b["h"]])
    return out


# ----------------------------------------------------------------------------------------- rules

_EXIST_Q = re.compile(r"^(?:is|are) there (?:an?|any|some|the)?\s*(?P<obj>.+?)(?: in (?:this|the) "
                      r"(?:picture|image|photo|photograph|scene))?\s*\?$", re.I)


def _plan_object(s: Sample, category: str | None, vocab: dict[str, list[str]], rng: random.Random,
                 templates: dict[str, str], strict: bool) -> EditPlan:
    m = _EXIST_Q.match(s.question.strip())
    if not m:
        raise NotCovered(f"object question form not covered: {s.question!r}")
    obj = m.group("obj").strip()
    ops = _ops(s.meta)
    if ops and not any(op == "exist" for op, _ in ops):
        raise NotCovered("object program has no 'exist' operation: " + "->".join(o for o, _ in ops))
    if not _is_yes_no(s.answer):
        raise NotCovered(f"object question with a non yes/no answer {s.answer!r}")
    if s.answer.lower() == "no":
        raise NotCovered("object absent (answer No): there is no region to edit")
    cat_vocab = next((v for k, v in vocab.items() if k.lower() == (category or "").lower()), None)
    if cat_vocab is None:
        raise NotCovered(f"no object vocabulary for category {category!r}")
    in_vocab = singular(obj) in {singular(v) for v in cat_vocab}
    if strict and not in_vocab:
        raise NotCovered(f"object {obj!r} is not in the {category} vocabulary")
    sub = _choose(rng, cat_vocab, singular(obj))
    many = is_plural(obj) and singular(obj) not in ("sheep", "deer")  # "Is there an elephants ..."
    sub_word = plural(sub) if many else sub
    a_to = sub_word if many else f"a {sub}"
    cf_q = f"Are there {sub_word} in this picture?" if many else f"Is there {article(sub)} {sub} in this picture?"
    return EditPlan(
        id=s.id, level="object", kind="object", target=obj, source=obj, substitute=sub_word,
        edit_prompt=fix_articles(templates["object"].format(to=sub_word, target=obj, a_to=a_to, **{"from": obj})),
        edited_answer=_NO, cf_question=cf_q, cf_answer=_YES, boxes=boxes_for([obj], s.meta), objects=[obj])


def _attribute_kind(s: Sample, category: str | None) -> str:
    c = (category or "").lower()
    if c in ("color", "colour"):
        return "color"
    if c == "material":
        return "material"
    if re.search(r"\bmade of\b", s.question, re.I):
        return "material"
    for op, arg in _ops(s.meta):
        if op.split(" ")[0] in ("query", "verify", "choose", "filter"):
            a = (op.split(" ", 1)[1] if " " in op else arg).split(":")[0].strip()
            if a in ("color", "material"):
                return a
    raise NotCovered("attribute program is neither colour nor material")


def _plan_attribute(s: Sample, category: str | None, vocab: dict[str, list[str]], rng: random.Random,
                    templates: dict[str, str]) -> EditPlan:
    kind = _attribute_kind(s, category)
    q = s.question.strip()
    target = _first_select(s.meta)
    if kind == "material":
        m = re.match(r"^(?:is|are) (?:the |this |that )?(?P<obj>.+?) made (?:of|from) (?P<val>[\w ]+?)\s*\?$", q, re.I)
    else:
        m = None
        if target:
            m = re.match(rf"^(?:is|are) (?:the |this |that )?(?P<obj>{re.escape(target)}) (?P<val>[\w ]+?)\s*\?$", q, re.I)
        m = m or re.match(r"^(?:is|are) (?:the |this |that )?(?P<obj>.+) (?P<val>\w+)\s*\?$", q, re.I)
    if not m:
        if _is_yes_no(s.answer):
            raise NotCovered(f"{kind} question form not covered: {q!r}")
        m = None
    obj = m.group("obj").strip() if m else (target or "")
    if not obj:
        raise NotCovered("attribute question names no object")
    kv = vocab[kind]
    if _is_yes_no(s.answer):
        val = canonical(m.group("val"))
        if s.answer.lower() == "yes":  # the object has `val`: change it to something else
            src, sub = val, _choose(rng, kv, val)
            edited = _NO
            cf_q = _replace_last(q, m.group("val"), sub)
        else:  # the object does not have `val`: give it `val`, the answer becomes Yes
            src, sub = _true_value(s, kind, exclude=val), val
            edited = _YES
            cf_q = q
        cf_a = _YES
    else:  # open question ("What colour is the car?" -> "red"): the answer itself changes
        src = canonical(s.answer)
        sub = _choose(rng, kv, src)
        edited, cf_q, cf_a = sub, q, sub
    boxes = boxes_for([obj], s.meta)
    return EditPlan(id=s.id, level="attribute", kind=kind, target=obj, source=src, substitute=sub,
                    edit_prompt=fix_articles(templates[kind].format(to=sub, target=obj, **{"from": src}),
                                             plural_head=is_plural(obj)),
                    edited_answer=edited, cf_question=cf_q, cf_answer=cf_a, boxes=boxes, objects=[obj])


def _true_value(s: Sample, kind: str, exclude: str) -> str | None:
    """The object's actual colour/material when the full answer says it ("The vest is cream colored.").

    The queried value itself is excluded: some released answers contradict their full answer
    ("No" with "Yes, the motorcycle is metallic."), and then the actual value is unknown.
    """
    full = str(s.meta.get("fullAnswer", "")).lower()
    for v in sorted(set(VOCAB[kind]) | {k for k, c in SYNONYMS.items() if c in VOCAB[kind]}, key=len, reverse=True):
        if canonical(v) != exclude and re.search(rf"\b{re.escape(v)}\b", full):
            return canonical(v)
    return None


def _replace_last(text: str, old: str, new: str) -> str:
    i = text.lower().rfind(old.lower())
    return text if i < 0 else text[:i] + new + text[i + len(old):]


def _relations_in_program(meta: dict) -> list[str]:
    rels = []
    for op, arg in _ops(meta):
        if op in ("relate", "verify rel", "choose rel"):
            parts = [p.strip() for p in arg.split(",")]
            if len(parts) >= 2:
                rels.extend(r.strip() for r in parts[1].split("|"))
    return rels


def _spatial_core(rel: str) -> tuple[str, str] | None:
    """``'standing behind'`` -> (``'standing '``, ``'behind'``): a leading verb and the spatial phrase."""
    for phrase in sorted(SPATIAL_OPPOSITES, key=len, reverse=True):
        if rel == phrase:
            return "", phrase
        if rel.endswith(" " + phrase):
            return rel[: -len(phrase)], phrase
    return None


def _substitute_relation(rel: str, vocab: dict[str, list[str]], rng: random.Random,
                         prefer_opposites: bool) -> tuple[str, str]:
    words = rel.split()
    if words and words[0].endswith("ing") and rel not in SPATIAL_OPPOSITES:
        # an action: keep its preposition ("sitting on" -> "standing on") so the sentence stays well formed
        prep = " ".join(words[1:])
        core = _spatial_core(rel)
        if core and core[0] and prep not in ("on", "in"):  # "standing behind": move, keep the pose
            verb, phrase = core
            opp = SPATIAL_OPPOSITES[phrase] if prefer_opposites else _choose(rng, vocab["spatial"], phrase)
            return "spatial", verb + opp
        same = [a for a in vocab["action"] if " ".join(a.split()[1:]) == prep]
        return "action", _choose(rng, same if len(same) > 1 else vocab["action"], rel)
    core = _spatial_core(rel)
    if core is not None:
        verb, phrase = core
        if prefer_opposites:
            return "spatial", verb + SPATIAL_OPPOSITES[phrase]
        return "spatial", verb + _choose(rng, vocab["spatial"], phrase)
    raise NotCovered(f"relation {rel!r} is in neither the action nor the spatial vocabulary")


def _plan_relation(s: Sample, vocab: dict[str, list[str]], rng: random.Random, templates: dict[str, str],
                   relation_mask: str, prefer_opposites: bool) -> EditPlan:
    q = s.question.strip()
    rels = sorted(set(_relations_in_program(s.meta)) | set(vocab["action"]) | set(SPATIAL_OPPOSITES),
                  key=len, reverse=True)
    # the program's relation first, then any known one, that the question states between two objects
    prog = set(_relations_in_program(s.meta))
    rels = sorted(rels, key=lambda r: (r not in prog, -len(r)))
    m = rel = None
    for r in rels:
        m = re.match(rf"^(?:is|are) (?:the )?(?P<s>.+?) {re.escape(r)} (?:the )?(?P<o>.+?)\s*\?$", q, re.I)
        if m:
            rel = r
            break
    if m is None or rel is None:
        raise NotCovered(f"relation question form not covered: {q!r}")
    if not _is_yes_no(s.answer):
        raise NotCovered(f"relation question with a non yes/no answer {s.answer!r}")
    if s.answer.lower() == "no":
        raise NotCovered("relation does not hold (answer No): no region shows it")
    subj, obj = m.group("s").strip(), m.group("o").strip()
    kind, sub = _substitute_relation(rel, vocab, rng, prefer_opposites)
    names = {"both": [subj, obj], "subject": [subj], "object": [obj]}[relation_mask]
    boxes = boxes_for(names, s.meta)
    cf_q = q[: m.start("s")] + subj + " " + sub + q[m.end("s") + 1 + len(rel):]
    return EditPlan(id=s.id, level="relation", kind=kind, target=subj, source=rel, substitute=sub,
                    edit_prompt=fix_articles(templates["relation"].format(subject=subj, object=obj, to=sub,
                                                                          **{"from": rel}),
                                             plural_head=is_plural(subj)),
                    edited_answer=_NO, cf_question=cf_q, cf_answer=_YES, boxes=boxes, objects=names)


def plan_edit(sample: Sample, seed: int = 0, vocab: dict[str, list[str]] | None = None,
              templates: dict[str, str] | None = None, relation_mask: str = "both",
              prefer_opposites: bool = True, strict_vocabulary: bool = False) -> EditPlan:
    """The rule-based edit of one GQA-style sample; raises ``NotCovered`` with the reason otherwise.

    ``vocab`` / ``templates`` extend or replace entries of ``VOCAB`` / ``TEMPLATES``. ``relation_mask``:
    which boxes a relation edit repaints (both objects, the subject, or the object).
    ``strict_vocabulary``: skip object questions about objects outside the category's vocabulary
    (GQA's Vehicle subset also asks about windows and bags) instead of replacing them anyway.
    """
    v = {**VOCAB, **(vocab or {})}
    t = {**TEMPLATES, **(templates or {})}
    if relation_mask not in ("both", "subject", "object"):
        raise ValueError(f"relation_mask must be both, subject or object; got {relation_mask!r}")
    if not sample.meta.get("object_positions"):
        raise NotCovered("no object_positions: nothing to mask")
    rng = _rng(seed, sample.id)
    level = sample.level
    if level == "object":
        return _plan_object(sample, sample.category, v, rng, t, strict_vocabulary)
    if level == "attribute":
        return _plan_attribute(sample, sample.category, v, rng, t)
    if level == "relation":
        return _plan_relation(sample, v, rng, t, relation_mask, prefer_opposites)
    raise NotCovered(f"unknown semantic level {level!r}")
