"""A file made for one model is not applied to another without a word: modulations, head scores and resumed sweeps
carry the model's id and weights hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from vseam.config import load_config

from conftest import heads_cfg

ROOT = Path(__file__).resolve().parents[2]


def test_another_models_modulation_is_refused_unless_asked(tmp_path, tiny_llava, capsys):
    from vseam.interventions import HeadModulation
    from vseam.interventions.checkpoint import load_modulation, save_modulation
    from vseam.models import load_adapter
    from vseam.models.identity import ModelMismatchError

    other = load_adapter({"arch": "llava", "path": "tiny:llava", "dtype": "float32", "device": "cpu", "seed": 1,
                          "name": "tiny-llava-seed1"})
    assert other.shape == tiny_llava.shape
    assert other.identity["weights_sha256"] != tiny_llava.identity["weights_sha256"]
    mod = HeadModulation([(0, 1)], tiny_llava.head_dim, scale="scalar")
    path = save_modulation(tmp_path / "m.safetensors", mod, model=tiny_llava.name, num_layers=2, num_heads=4,
                           identity=tiny_llava.identity)
    load_modulation(path, tiny_llava)  # its own model
    with pytest.raises(ModelMismatchError, match="was made with model .* weights sha256 .* but this model is "
                                                 "tiny-llava-seed1.*allow_other_model=true"):
        load_modulation(path, other)
    load_modulation(path, other, allow_other_model=True)
    assert "WARNING" in capsys.readouterr().out
    # a file that does not say which weights it was made with is refused too
    anon = save_modulation(tmp_path / "anon.safetensors", mod, model="?", num_layers=2, num_heads=4)
    with pytest.raises(ModelMismatchError, match="does not record the weights"):
        load_modulation(anon, tiny_llava)


def test_weights_hash_is_of_the_files_not_the_dtype(tmp_path):
    from vseam.models import load_adapter

    base = {"arch": "llava", "path": str(ROOT / "checkpoints/organism/llava-undertrained"), "device": "cpu",
            "local_files_only": True}
    a = load_adapter({**base, "dtype": "float32"})
    b = load_adapter({**base, "dtype": "bfloat16"})
    c = load_adapter({**base, "path": str(ROOT / "checkpoints/organism/llava"), "dtype": "float32"})
    assert a.identity["weights_sha256"] == b.identity["weights_sha256"] != c.identity["weights_sha256"]
    import hashlib

    raw = hashlib.sha256((ROOT / "checkpoints/organism/llava-undertrained/model.safetensors").read_bytes()).hexdigest()
    assert a.identity["weights_sha256"] == hashlib.sha256(f"model.safetensors:{raw}\n".encode()).hexdigest()


@pytest.mark.parametrize("content,problem", [
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, 0.2], [0.3', "not valid JSON"),
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, 0.2], [0.3]]}', "ragged"),
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, "x"], [0.3, 0.4]]}', r"non-numeric entry at \[0\]\[1\]"),
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, NaN], [0.3, 0.4]]}', "1 NaN / infinite"),
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, null], [0.3, 0.4]]}', "non-numeric entry"),
    ('[1, 2]', "expected a JSON object"),
])
def test_a_bad_head_score_file_is_named(tmp_path, content, problem):
    from vseam.attribution.outputs import load_head_scores
    from vseam.utils.io import BadFileError

    path = tmp_path / "head_scores.json"
    path.write_text(content)
    with pytest.raises(BadFileError, match=problem) as e:
        load_head_scores(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_head_scores_of_another_model_are_refused_by_train(world, tmp_path):
    """head_scores.json names the weights it was made with; train.py refuses another checkpoint's."""
    from vseam.attribution.run import run_heads
    from vseam.models.identity import ModelMismatchError
    from vseam.modulation.run import run_train

    res = run_heads(heads_cfg(world, tmp_path / "h", "model.seed=1"))  # a tiny llava of other weights
    assert len(res["weights_sha256"]) == 64 and res["model_path"] == "tiny:llava"
    args = ["model=tiny-llava", "logger=none", f"data.root={world}", "modulation.methods=[learned]",
            f"modulation.head_scores={tmp_path / 'h'}", "trainer.max_steps=1", "modulation.k_pos=1",
            "modulation.k_neg=1", "modulation.val_fraction=0.2", "modulation.test_fraction=0.3"]
    with pytest.raises(ModelMismatchError, match="was made with model .* but this model is tiny-llava"):
        run_train(load_config(args + [f"out_dir={tmp_path / 't'}"]))
    assert not (tmp_path / "t" / "checkpoints").exists()


def test_a_sweep_resumed_with_other_weights_in_the_same_folder_is_refused(world, tmp_path, tiny_llava):
    """The sweep's progress fingerprint holds the weights' hash (models.identity.weights_sha256), as
    tracing's does: replaced weights under the same model.path (same config) never reuse saved chunks."""
    from vseam.attribution.run import run_heads
    from vseam.models import load_adapter
    from vseam.runtime import ProgressMismatchError

    folder = tmp_path / "model"
    tiny_llava.model.save_pretrained(folder)
    tiny_llava.processor.save_pretrained(folder)
    args = (f"model.path={folder}", "model.local_files_only=true")
    first = run_heads(heads_cfg(world, tmp_path / "h", *args))
    assert len(first["weights_sha256"]) == 64 and first["model_path"] == str(folder)
    assert run_heads(heads_cfg(world, tmp_path / "h", *args))["signed"] == first["signed"]  # same weights: resumed
    other = load_adapter({"arch": "llava", "path": "tiny:llava", "dtype": "float32", "device": "cpu", "seed": 1})
    other.model.save_pretrained(folder)  # the same path and config, other weights
    with pytest.raises(ProgressMismatchError, match="model weights"):
        run_heads(heads_cfg(world, tmp_path / "h", *args))
