"""The two answer definitions (``model.answer_definition``, docs/method.md#answer-tokens), each against a hand-written
loop over the raw Hugging Face model: the project's (p sums the single-token yes/no case variants; correct
when the arg-max is one of them) and the paper's released code's (p of the answer's first sub-token as
written; correct when the arg-max is any of the answer's sub-tokens)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from vseam.models.base import answer_stats
from vseam.models.llava import LlavaAdapter

DEFINITIONS = ("project", "reference")


def hand_answer(model, processor, template: str, sample, definition: str) -> tuple[float, bool]:
    """(p, correct) of one sample, written out by hand from the processor, the model and the tokenizer."""
    tok = processor.tokenizer
    from vseam.data.sample import load_image

    inputs = processor(images=[load_image(sample)], text=[template.format(question=sample.question)], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[0, -1].float()
    probs = logits.softmax(-1)
    pieces = tok(sample.answer, add_special_tokens=False)["input_ids"]  # the answer as written
    if definition == "reference":
        p_ids, correct_ids = [pieces[0]], set(pieces)
    else:
        p_ids = [pieces[0]]
        if sample.answer.lower() in ("yes", "no"):
            for v in (sample.answer.lower(), sample.answer.capitalize(), sample.answer.upper()):
                v_ids = tok(v, add_special_tokens=False)["input_ids"]
                if len(v_ids) == 1 and v_ids[0] not in p_ids:
                    p_ids.append(v_ids[0])
        correct_ids = set(p_ids)
    return float(sum(probs[i] for i in p_ids)), int(logits.argmax()) in correct_ids


def _with_argmax(adapter, sample, token: str) -> LlavaAdapter:
    """A copy of ``adapter``'s model whose arg-max on ``sample`` is ``token``: two rows of the unembedding
    swapped (only those two logits change places)."""
    model = copy.deepcopy(adapter.model)
    enc = adapter.encode([sample])
    with torch.no_grad():
        top = int(model(**adapter.model_inputs(enc), use_cache=False).logits[0, -1].argmax())
    want = adapter.tokenizer.convert_tokens_to_ids(token)
    w = model.get_output_embeddings().weight
    with torch.no_grad():
        w[[top, want]] = w[[want, top]].clone()
    return model


@pytest.mark.parametrize("answer,argmax,expected", [
    ("Yes", "▁yes", {"project": True, "reference": False}),  # a case variant: the project's, not the paper's
    ("giraffe", "ir", {"project": False, "reference": True}),  # a later sub-token: the paper's, not the project's
    ("Yes", "▁Yes", {"project": True, "reference": True}),
    ("no", "▁No", {"project": True, "reference": False}),
])
def test_each_definition_equals_a_hand_written_loop(tiny_llava, samples, answer, argmax, expected):
    from vseam.evaluation.score import evaluate

    sample = next(s for s in samples if s.answer == answer)
    model = _with_argmax(tiny_llava, sample, argmax)
    for definition in DEFINITIONS:
        a = LlavaAdapter(model, tiny_llava.processor, answer_definition=definition)
        p_hand, c_hand = hand_answer(model, a.processor, a.template, sample, definition)
        assert c_hand is expected[definition], (definition, "the hand loop itself")
        got = a.score([sample])
        assert float(got.prob[0]) == pytest.approx(p_hand, rel=1e-5, abs=1e-7), definition
        assert bool(got.correct[0]) is c_hand, definition
        rec = evaluate(a, [sample]).records[0]  # through the embedding cache, as eval and train.py read it
        assert rec["prob"] == pytest.approx(p_hand, rel=1e-5, abs=1e-7) and rec["correct"] is c_hand, definition
    # the two definitions differ in p exactly when the project sums in a case variant
    p = {d: hand_answer(model, tiny_llava.processor, tiny_llava.template, sample, d)[0] for d in DEFINITIONS}
    if answer.lower() in ("yes", "no"):
        assert p["project"] > p["reference"]
    else:
        assert p["project"] == p["reference"]


def test_answer_stats_reads_probability_and_correctness_from_their_own_masks():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    p_mask = torch.tensor([[False, False, True, False]])
    c_mask = torch.tensor([[False, True, True, False]])
    prob, correct, _ = answer_stats(logits, p_mask, c_mask)
    assert float(prob) == pytest.approx(float(logits.softmax(-1)[0, 2]))
    assert bool(correct)
    assert not bool(answer_stats(logits, p_mask)[1])  # default: correctness from the probability mask


def test_unknown_definition_fails_before_the_model_loads(monkeypatch):
    from vseam.models import loading

    monkeypatch.setattr(loading, "_from_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match="model.answer_definition='paper'"):
        loading.load_adapter({"arch": "llava", "path": "some/model", "answer_definition": "paper"})


def test_head_sweep_names_its_definition_and_matches_the_hand_loop(world, tmp_path):
    """``analyze.py heads`` under each definition: the baseline of every sample equals the hand loop, the
    result file names the definition, and the two runs' progress is never mixed up."""
    from safetensors.torch import load_file

    from vseam.attribution.run import run_heads
    from vseam.config import load_config
    from vseam.data.load import load_samples
    from vseam.models import load_adapter

    results = {}
    for definition in DEFINITIONS:
        out = tmp_path / definition
        cfg = load_config(["model=tiny-llava", "logger=none", f"data.root={world}", "data.limit=1",
                           "data.batch_size=2", "attribution.chunk_size=2", "attribution.progress=false",
                           "attribution.heatmaps=false", f"model.answer_definition={definition}", f"out_dir={out}"])
        results[definition] = run_heads(cfg)
        assert json.loads((out / "head_scores.json").read_text())["answer_definition"] == definition
        t = load_file(str(out / "head_scores.safetensors"))
        a = load_adapter(cfg.model)
        for i, s in enumerate(load_samples(cfg.data)):
            p_hand, c_hand = hand_answer(a.model, a.processor, a.template, s, definition)
            assert float(t["prob"][i]) == pytest.approx(p_hand, rel=1e-5, abs=1e-7), (definition, s.id)
            assert bool(t["correct"][i]) is c_hand, (definition, s.id)
    # yes/no answers are in the world, so the project's p sums a variant the paper's leaves out
    assert results["project"]["baseline"]["mean_prob"] > results["reference"]["baseline"]["mean_prob"]


def test_the_progress_of_one_definition_is_not_reused_by_the_other(world, tmp_path):
    """A sweep under the reference definition never loads chunks saved under the project's: the progress
    fingerprint names the definition (the run folder's config check refuses it first when it is run there)."""
    from types import SimpleNamespace

    from vseam.runtime import model_fingerprint

    ad = SimpleNamespace(identity={"weights_sha256": "0" * 64})
    assert model_fingerprint({"arch": "llava", "answer_definition": "reference"}, ad) != \
        model_fingerprint({"arch": "llava"}, ad)
    # the default adds nothing, so progress saved before the key existed still matches
    assert model_fingerprint({"arch": "llava", "answer_definition": "project"}, ad) == \
        model_fingerprint({"arch": "llava"}, ad)


def test_the_config_check_names_a_bad_definition_before_any_model():
    from typing import get_args

    from omegaconf import OmegaConf

    from vseam.config import AnswerDefinition, ConfigError, load_config
    from vseam.models.base import ANSWER_DEFINITIONS
    from vseam.validate import validate

    assert set(get_args(AnswerDefinition)) == set(ANSWER_DEFINITIONS)  # the key's choices: its field's type
    with pytest.raises(ConfigError, match=r"model.answer_definition='paper': expected one of \['project', 'reference'\]"):
        load_config(["model.answer_definition=paper"])
    cfg = OmegaConf.create(OmegaConf.to_container(load_config([])))  # a config built without the schema
    cfg.model.answer_definition = "paper"
    for command in ("heads", "train", "eval"):
        with pytest.raises(ConfigError, match="model.answer_definition='paper'"):
            validate(cfg, command)
