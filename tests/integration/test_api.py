"""The notebook API (``vseam/__init__.py``): load by config name or path, samples from (image, question,
answer) or a free prompt, run / cache / intervene, score_heads, read_benchmark; and the README's worked
example, executed as it is written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

import vseam

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    return vseam.load("tiny:llava", device="cpu")


def test_load_by_config_name_and_by_path():
    by_name = vseam.load("organism-llava", device="cpu")
    assert by_name.adapter.name == "organism-llava" and (by_name.num_layers, by_name.num_heads) == (6, 8)
    folder = ROOT / "checkpoints" / "organism" / "llava"
    by_path = vseam.load(str(folder), device="cpu")  # arch read from the folder's config.json
    assert by_path.adapter.arch == "llava" and by_path.adapter.name == str(folder)
    from vseam.models import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="hf download some/unknown-model"):  # offline: its model_type unknown
        vseam.load("some/unknown-model", device="cpu")


def test_run_an_answered_sample_and_a_free_prompt(model, samples):
    img = samples[0].image
    s = vseam.sample(img, "Is there a circle?", "Yes")
    p = vseam.prompt(img, "Describe the image.")
    out = model.run([s, p])
    assert out.ids == [s.id, p.id] and s.id != p.id
    assert isinstance(out.prob[0], float) and out.correct[0] in (True, False)
    assert out.prob[1] is None and out.correct[1] is None and out.pred_token[1]  # a prediction, no gold
    assert out.accuracy == float(out.correct[0])
    # the same numbers as the adapter's own scoring of the answered sample
    ref = model.adapter.score([s])
    assert out.prob[0] == pytest.approx(float(ref.prob[0]), abs=1e-6) and out.pred_token[0] == ref.pred_token[0]


def test_intervene_and_cache(model, samples):
    base = model.run(samples)
    ablated = model.run(samples, vseam.Ablate(layer=0, heads=[0, 1, 2, 3], mode="zero"))
    assert not torch.allclose(base.logits, ablated.logits)  # the edit reached the model
    with model.intervene(vseam.Ablate(layer=0, heads=[0, 1, 2, 3], mode="zero")):
        inside = model.run(samples)
    torch.testing.assert_close(inside.logits, ablated.logits)
    again = model.run(samples)
    torch.testing.assert_close(again.logits, base.logits)  # hooks removed
    out, cache = model.run_with_cache(samples)
    torch.testing.assert_close(out.logits, base.logits, rtol=1e-4, atol=1e-5)
    assert cache.layers() == list(range(model.num_layers))
    B, T, H, D = cache[0].shape
    assert (B, H, D) == (len(samples), model.num_heads, model.adapter.head_dim)


def test_score_heads_and_read_benchmark(model, samples, tmp_path):
    import json

    scores = vseam.score_heads(model, samples, method="exact")
    assert isinstance(scores, vseam.HeadScores) and scores.shape == (model.num_layers, model.num_heads)
    assert scores.n == len(samples) and scores.method == "exact"
    ann = tmp_path / "Color.json"
    ann.write_text(json.dumps([{"question_id": "1", "question": "What color is it?", "answer": "red",
                                "imageId": "a"}]))
    read = vseam.read_benchmark("gqa", ann, image_dir=tmp_path)
    assert [(s.id, s.answer, s.category) for s in read] == [("1", "red", "Color")]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Notebook API"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README: the Notebook API section has no python block"
    return m.group(1)


def test_the_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths of the example land here; shipped files come from the package
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_readme_example(), "README.md (Notebook API)", "exec"), {})
    out = printed.getvalue()
    assert "Model('organism-llava'" in out and "accuracy" in out and "torch.Size([2," in out, out
