"""The field's eight methods as one system (``vseam.modulation.field``): one registry that train.py, analyze.py eval
and the config's choices agree on, one scaling of the papers' layer ranges and head counts, one image-free input
(positions where the model's own start), one validation of every method's keys (only those named, before a model
loads), and ``analyze.py eval eval.method=<name>`` for the methods that act on head outputs, hidden states and the
vision tower (VHR from its keys; ICT, VTI from their files, refused on the samples they were estimated on and on
another model's weights). The methods' own references: tests/test_field_attention.py, tests/test_field_activation.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from vseam.config import ConfigError, load_config
from vseam.models.base import Embedded
from vseam.models.cache import EmbeddingCache
from vseam.modulation import field
from vseam.validate import EVAL_METHODS, FIELD_METHODS, MODULATION_METHODS, NEED_A_FILE, validate


# ------------------------------------------------------------------------------------------ one registry
def test_one_registry_for_train_eval_and_the_configs_choices():
    from vseam.modulation.methods import RUNNERS

    assert list(field.METHODS) == list(FIELD_METHODS)
    assert set(NEED_A_FILE) == {n for n, m in field.METHODS.items() if m.needs_file} == {"ict", "vti", "adhh"}
    assert set(FIELD_METHODS) <= set(MODULATION_METHODS) and set(FIELD_METHODS) <= set(EVAL_METHODS)
    assert all(RUNNERS[n] is field.run_method for n in field.METHODS)
    with pytest.raises(ValueError, match="exactly one"):  # a method is configured from keys or estimated: not both
        field.Method(build=lambda *a: None, configure=lambda *a: {}, estimate=lambda *a: None)


# ------------------------------------------------------------------------------------------ the paper's model
def test_layer_ranges_and_head_counts_scale_to_the_model():
    assert field.model_layers([2, 32], 32, 32) == list(range(2, 32))
    assert field.model_layers([9, 15], 32, 6) == [2]  # the organism's 6 layers: the same share of the stack
    assert field.model_layers([2, 32], 32, 6) == list(range(6))
    assert field.model_layers([9, 15], 32, 40) == list(range(11, 19))  # LLaVA-1.5-13B
    assert field.model_layers([31, 32], 32, 6) == [5]  # at least one layer
    assert field.model_layers([4, 8], 32, 4) == [1]  # 0.5 rounds up: one rule for every method (VHR's included)
    assert field.model_heads(256, 32, 32, 32, 32) == 256  # LLaVA-1.5-7B as in ICT's paper
    assert field.model_heads(256, 32, 32, 6, 8) == 12  # the organism: a quarter of its 48 heads
    assert field.model_heads(1, 32, 32, 2, 4) == 1 and field.model_heads(4096, 32, 32, 2, 4) == 8
    assert field.model_heads(256, 40, 40, 40, 40) == 256  # field_depth x field_heads written for another model


# ------------------------------------------------------------------------------------------ the image-free input
def _alone(a, emb: Embedded, i: int) -> torch.Tensor:
    """Row ``i`` of ``emb`` without its padding, through the model on its own."""
    real = emb.attention_mask[i].bool()
    one = Embedded(emb.inputs_embeds[i:i + 1, real], emb.attention_mask[i:i + 1, real],
                   emb.position_ids[i:i + 1][..., real], {k: v[i:i + 1][..., real] for k, v in emb.extra.items()})
    with torch.no_grad():
        return a.lm_logits(one)


@pytest.mark.parametrize("arch, first", [("llava", 0), ("paligemma", 1), ("qwen2-vl", 0)])
def test_image_free_input_is_the_prompt_without_its_image(arch, first, samples):
    """PAI's contrast and VHR's second row: each row's tokens other than the image's, joined and left-padded again,
    their extras kept; positions count from where the model's own start (PaliGemma's HF model counts from 1, the
    others from 0), the same on every M-RoPE axis (Qwen2-VL); the rows score as each would alone."""
    from vseam.models import load_adapter

    a = load_adapter({"arch": arch, "path": f"tiny:{arch}", "dtype": "float32", "device": "cpu", "seed": 0})
    batch = EmbeddingCache(a).batch(samples[:3])
    free = field.image_free(batch.emb, batch.visual)
    with torch.no_grad():
        logits = a.lm_logits(free)
    for i in range(len(samples[:3])):
        real = batch.emb.attention_mask[i].bool()
        keep = real & ~batch.visual[i]
        n = int(keep.sum())
        assert int(batch.emb.position_ids[i][..., int(real.nonzero()[0, 0])].min()) == first  # where the model starts
        pos = free.position_ids[i][..., -n:].reshape(-1, n)
        assert all(row.tolist() == list(range(first, first + n)) for row in pos), pos
        assert int(free.attention_mask[i].sum()) == n and bool(free.attention_mask[i, -n:].all())
        torch.testing.assert_close(free.inputs_embeds[i, -n:], batch.emb.inputs_embeds[i, keep])
        for k, v in batch.emb.extra.items():  # PaliGemma's token types: the kept tokens' own
            assert torch.equal(free.extra[k][i][..., -n:], v[i][..., keep])
        torch.testing.assert_close(logits[i:i + 1], _alone(a, free, i), rtol=0, atol=1e-5)
    if arch == "llava":  # the same as the prompt's tokens without the image token, embedded afresh
        for i, s in enumerate(samples[:3]):
            enc = a.encode([s])
            ids = enc.inputs["input_ids"][0][enc.inputs["attention_mask"][0].bool()]
            ids = ids[ids != a.image_token_id]
            text = Embedded(a.model.get_input_embeddings()(ids)[None], torch.ones(1, len(ids), dtype=torch.long),
                            torch.arange(len(ids))[None])
            with torch.no_grad():
                torch.testing.assert_close(logits[i:i + 1], a.lm_logits(text), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ one validation
@pytest.mark.parametrize("argv, command, pattern", [
    (["modulation.methods=[none,pai]", "modulation.pai_layers=[5,3]"], "train", r"modulation.pai_layers=\[5, 3\]"),
    (["modulation.methods=[vaf]", "modulation.vaf_layers=[9,40]"], "train", r"vaf_layers.*field_depth=32"),
    (["modulation.methods=[spin]", "modulation.spin_keep=1.5"], "train", r"modulation.spin_keep=1.5"),
    (["modulation.methods=[adhh]", "modulation.adhh_threshold=-1"], "train", r"adhh_threshold"),
    (["modulation.methods=[vcd]", "modulation.vcd_noise_step=1000"], "train", r"vcd_noise_step=1000"),
    (["modulation.methods=[pai]", "modulation.pai_gamma=0.5"], "train", r"pai_gamma"),
    (["modulation.methods=[vhr]", "modulation.vhr_alpha=0"], "train", r"modulation.vhr_alpha=0.*> 0"),
    (["modulation.methods=[vhr]", "modulation.vhr_layers=[20,10]"], "train", r"modulation.vhr_layers=\[20, 10\]"),
    (["modulation.methods=[vhr]", "modulation.vhr_layers=[0,33]"], "train", r"vhr_layers.*field_depth=32"),
    (["modulation.methods=[vhr]", "modulation.field_depth=40", "modulation.vhr_layers=[0,41]"], "train",
     r"vhr_layers.*field_depth=40"),  # the one depth key, not a constant 32
    (["modulation.methods=[ict]", "modulation.ict_num_heads=0"], "train", r"modulation.ict_num_heads=0"),
    (["modulation.methods=[ict]", "modulation.ict_alpha=-1"], "train", r"modulation.ict_alpha=-1"),
    (["modulation.methods=[ict]", "modulation.ict_type=objects"], "train", r"modulation.ict_type='objects'.*image"),
    (["modulation.methods=[ict]", "modulation.ict_blur_radius=0"], "train", r"modulation.ict_blur_radius"),
    (["modulation.methods=[ict]", "modulation.field_heads=0"], "train", r"modulation.field_heads=0"),
    (["modulation.methods=[vti]", "modulation.vti_mask_ratio=1.0"], "train", r"modulation.vti_mask_ratio=1.0"),
    (["modulation.methods=[vti]", "modulation.vti_num_demos=1"], "train", r"modulation.vti_num_demos=1"),
    (["modulation.methods=[vti]", "modulation.vti_alpha_text=0", "modulation.vti_alpha_image=0"], "train",
     r"vti_alpha_text=0 and modulation.vti_alpha_image=0"),
    (["modulation.methods=[pia]"], "train", r"unknown \['pia'\]"),
    (["eval.method=adhh"], "eval", r"eval.method=adhh .*eval.checkpoint"),
    (["eval.method=ict"], "eval", r"eval.method=ict .*eval.checkpoint"),
    (["eval.method=vti"], "eval", r"eval.method=vti .*eval.checkpoint"),
    (["eval.method=dola"], "eval", r"eval.method='dola'"),
    (["eval.method=vcd", "modulation.vcd_beta=0"], "eval", r"vcd_beta"),
    (["eval.method=vhr", "modulation.vhr_layers=[3,2]"], "eval", r"vhr_layers"),
])
def test_every_methods_keys_are_validated_before_a_model_loads(argv, command, pattern, monkeypatch):
    monkeypatch.setattr("vseam.models.load_adapter", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match=pattern):
        validate(load_config(argv), command)


@pytest.mark.parametrize("argv, command", [
    (["modulation.methods=[none,learned]", "modulation.vhr_layers=[20,10]", "modulation.pai_layers=[0,40]",
      "modulation.vti_alpha_text=0", "modulation.vti_alpha_image=0"], "train"),
    (["eval.method=pai", "modulation.vhr_layers=[20,10]", "modulation.spin_layers=[5,5]"], "eval"),
])
def test_only_the_named_methods_cross_key_checks_run(argv, command):
    """A value outside its key's own range is refused whatever the methods (at the field, when the configuration is
    composed: ``test_every_methods_keys_are_validated_before_a_model_loads``); what needs several keys or the
    model's depth (a layer range, VTI's two strengths) is checked only for the methods a run names."""
    validate(load_config(argv), command)
    with pytest.raises(ConfigError, match="ict_type"):
        load_config(["modulation.methods=[none,learned]", "modulation.ict_type=objects"])


# ------------------------------------------------------------------------------------------ eval.method
def test_eval_applies_vhr_from_its_keys_and_ict_vti_from_their_files(tmp_path, capsys):
    """train.py with VHR, ICT and VTI on the organism, then ``analyze.py eval eval.method=<name>`` on another world:
    VHR from its keys and from its file, ICT and VTI from their files, each scoring what train.py's row scored
    (its modulated records equal ``evaluate`` with ``field.from_file``'s method); refused on the world they were
    estimated on (the overlap) and on another model's weights, each naming the file."""
    from vseam.cli import analyze_main
    from vseam.data.load import load_samples
    from vseam.evaluation.run import OverlapError
    from vseam.evaluation.score import evaluate
    from vseam.models import load_adapter
    from vseam.models.identity import ModelMismatchError
    from vseam.modulation.run import run_train

    world, out = tmp_path / "world", tmp_path / "run"
    common = ["model=organism-llava", "logger=none", "trainer.accelerator=cpu", "data.batch_size=8"]
    summary = run_train(load_config(common + [
        f"data.root={world}", "data.n_per_category=3", "data.pope_per_split=6", f"out_dir={out}",
        "modulation.methods=[none,vhr,ict,vti]", "modulation.vti_num_demos=6", "modulation.vti_num_trials=2",
        "modulation.ict_samples=24"]))
    m = summary["methods"]
    files = {k: out / "methods" / f"{k}.safetensors" for k in ("vhr", "ict", "vti")}
    assert all(m[k]["file"] == str(f) and f.exists() for k, f in files.items())
    held = ["data.format=organism", f"data.root={tmp_path / 'held'}", "data.world_seed=1", "data.n_per_category=2",
            "data.pope_per_split=6"]

    def run(name: str, *extra: str) -> dict:
        return analyze_main(["eval", *common, *held, f"out_dir={tmp_path / ('e-' + name)}", *extra])

    res = run("vhr-keys", "eval.method=vhr")
    assert res["method"] == "vhr" and res["overlap_with_training"] is None
    assert res["method_info"]["hyperparameters"] == m["vhr"]["hyperparameters"] == {"alpha": 2.0,
                                                                                   "layers": [1, 3, 4, 5]}
    assert res["method_info"]["cost"]["forward_passes"] == 2 and res["method_info"]["heads_per_layer"]
    assert res["stats"]["modulated_vs_base"]["n"] == res["results"]["base"]["n"] > 0
    a = load_adapter(load_config(common).model)
    preds = {}
    for name in ("vhr", "ict", "vti"):
        res = run(name, f"eval.method={name}", f"eval.checkpoint={files[name]}")
        assert res["method"] == name and res["modulation"] == str(files[name])
        assert res["method_info"]["hyperparameters"] == m[name]["hyperparameters"]
        assert res["overlap_with_training"]["known"] and res["overlap_with_training"]["n_in_train"] == 0
        lines = (tmp_path / f"e-{name}" / "eval_predictions.jsonl").read_text().splitlines()
        preds[name] = [p for p in map(json.loads, lines) if p["run"] == "modulated"]
    # what eval scored is the file's method, scored as every consumer scores it
    held_samples = load_samples(load_config(held).data)
    ids = {p["id"] for p in preds["vti"]}
    kept = [s for s in held_samples if s.id in ids]
    for name in ("ict", "vti"):
        direct = evaluate(a, kept, **field.from_file(name, files[name], a).scoring(a), batch_size=8)
        by_id = {r["id"]: r for r in direct.records}
        assert all(abs(p["prob"] - by_id[p["id"]]["prob"]) < 1e-6 for p in preds[name])
    base = {p["id"]: p["prob"] for p in map(json.loads, (tmp_path / "e-ict" / "eval_predictions.jsonl").read_text()
                                            .splitlines()) if p["run"] == "base"}
    assert any(abs(p["prob"] - base[p["id"]]) > 1e-4 for p in preds["ict"])  # it changed the model
    # the samples it was estimated on: refused (the overlap), naming the file
    for name in ("ict", "vti"):
        with pytest.raises(OverlapError, match=f"{name} file .*{name}.safetensors"):
            analyze_main(["eval", *common, "data=organism-pope", f"data.root={world}", "data.n_per_category=3",
                          "data.pope_per_split=6", f"out_dir={tmp_path / ('same-' + name)}", f"eval.method={name}",
                          f"eval.checkpoint={files[name]}"])
    # another model's weights (the organism's undertrained LLaVA: the same shape): refused, naming the file
    for name in ("vti", "vhr"):
        with pytest.raises(ModelMismatchError, match=f"{name} file .*{name}.safetensors"):
            analyze_main(["eval", "model=organism-llava-undertrained", *common[1:], *held,
                          f"out_dir={tmp_path / ('other-' + name)}", f"eval.method={name}",
                          f"eval.checkpoint={files[name]}"])
    capsys.readouterr()
