"""The field's activation-level methods (VHR, ICT, VTI; ``vseam.modulation.field.activation``) and the ``Steer``
edit against hand-written references on tiny random models: each edit equals the paper's operation written out
with the test's own hooks, a zero strength is a no-op, what is estimated comes from the train split only,
hyperparameters are checked before a model loads, and a method refuses where it does not apply."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vseam.config import ConfigError, load_config
from vseam.data import Sample
from vseam.interventions import HeadShapeError, Read, Steer, block_modules, intervene
from vseam.interventions.checkpoint import read_method, save_method
from vseam.models.cache import EmbeddingCache
from vseam.modulation import field
from vseam.modulation.data import split_samples
from vseam.modulation.field import activation as fa
from vseam.modulation.job import Job


# --------------------------------------------------------------------------------------------- fixtures
def world_samples(n: int = 4, seed: int = 3) -> list[Sample]:
    """Organism questions of every category with their images in memory and their boxes (``object_positions``)."""
    from vseam.world import CATEGORIES, generate
    from vseam.world.scene import render_pil

    out = []
    for cat in CATEGORIES:
        for it in generate(cat, n, seed=seed):
            out.append(Sample(id=it.id, question=it.question, answer=it.answer, benchmark="organism", category=cat,
                              level=it.level, meta={"object_positions": it.gqa_record()["object_positions"]},
                              image=render_pil(it.scene)))
    return out


@pytest.fixture(scope="module")
def splits() -> dict[str, list[Sample]]:
    return split_samples(world_samples(), 0.2, 0.3, seed=0)


def _job(adapter, splits, tmp_path, *overrides) -> Job:
    cfg = load_config(["data.batch_size=8", "modulation.vti_num_demos=8", "modulation.vti_num_trials=3", *overrides])
    return Job(cfg=cfg, out=Path(tmp_path), adapter=adapter, total_params=0, skipped=[], splits=splits, dm=None,
               cache=EmbeddingCache(adapter), tracker=None)


def _logits(applied, adapter, batch):
    """The logits ``applied`` scores ``batch`` by: its edits of the batch around its forward (or the plain one)."""
    with torch.no_grad(), intervene(adapter, *applied.for_batch(batch)):
        return applied.forward(batch) if applied.forward is not None else adapter.lm_logits(batch.emb)


def _enc_emb(adapter, samples):
    enc = adapter.encode(samples)
    return enc, adapter.embed(enc)


def _mlp_attr(layer: nn.Module, mlp: nn.Module) -> str:
    return next(name for name, child in layer.named_children() if child is mlp)


class RefVTILayer(nn.Module):
    """VTI's ``VTILayer`` (vti_utils/llm_layers.py) written out: x <- |x| * normalize(normalize(x) + 0.1 * lam * d/|d|)."""

    def __init__(self, direction: torch.Tensor, lam: float):
        super().__init__()
        self.direction, self.lam = direction, lam

    def forward(self, x):
        norm = torch.norm(x.float(), dim=-1).unsqueeze(-1)
        y = self.lam * nn.functional.normalize(self.direction, dim=-1)
        return (nn.functional.normalize(nn.functional.normalize(x.float(), dim=-1) + 0.1 * y, dim=-1) * norm).to(x.dtype)


class _Wrap(nn.Module):
    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after = inner, after

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        return self.after(out)


def _with_mlps(stack, refs: dict[int, nn.Module]):
    """Replace each layer's MLP by (MLP, reference) for the body of a ``with``; returns the undo."""
    undo = []
    for l, ref in refs.items():
        layer, mlp = stack.layers[l], block_modules(stack, l)["mlp_out"]
        name = _mlp_attr(layer, mlp)
        setattr(layer, name, _Wrap(mlp, ref))
        undo.append((layer, name, mlp))
    return undo


def _restore(undo):
    for layer, name, mlp in undo:
        setattr(layer, name, mlp)


# --------------------------------------------------------------------------------------------- Steer
def test_steer_add_at_z_equals_a_hand_written_shift_of_the_last_position(tiny_adapter, samples):
    a = tiny_adapter
    _, emb = _enc_emb(a, samples)
    g = torch.Generator().manual_seed(1)
    vec = torch.randn(a.num_heads, a.head_dim, generator=g)
    vec[0] = 0  # head 0 left alone
    layer = 1
    with intervene(a, Steer(layer, vec, site="z", strength=3.0, positions="last")):
        got = a.lm_logits(emb)

    def hook(module, args):
        x = args[0].clone()
        x[:, -1] += 3.0 * vec.reshape(-1)
        return (x,)
    h = a.o_proj(layer).register_forward_pre_hook(hook)
    try:
        ref = a.lm_logits(emb)
    finally:
        h.remove()
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    assert (got - a.lm_logits(emb)).abs().max() > 1e-4


def test_steer_rotate_equals_vti_layer_in_the_language_model_and_the_vision_tower(tiny_llava, samples):
    a = tiny_llava
    enc, emb = _enc_emb(a, samples)
    g = torch.Generator().manual_seed(2)
    d = a.model.config.get_text_config().hidden_size
    dirs = torch.randn(a.num_layers, d, generator=g)
    with intervene(a, *[Steer(l, dirs[l], site="mlp_out", mode="rotate", strength=0.1 * 0.9) for l in range(a.num_layers)]):
        got = a.lm_logits(emb)
    undo = _with_mlps(a.lm, {l: RefVTILayer(dirs[l], 0.9) for l in range(a.num_layers)})
    try:
        ref = a.lm_logits(emb)
    finally:
        _restore(undo)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - a.lm_logits(emb)).abs().max() > 1e-4
    # the vision tower, one direction per token [T, dv]
    v = a.vision
    with intervene(v, Read(site="resid_post", layers=[0])) as c:
        a.embed(enc)
    T, dv = c["resid_post", 0].shape[1:]
    vdirs = torch.randn(v.num_layers, T, dv, generator=g)
    with intervene(v, *[Steer(l, vdirs[l], site="mlp_out", mode="rotate", strength=0.1 * 0.9) for l in range(v.num_layers)]):
        got = a.embed(enc).inputs_embeds
    undo = _with_mlps(v, {l: RefVTILayer(vdirs[l], 0.9) for l in range(v.num_layers)})
    try:
        ref = a.embed(enc).inputs_embeds
    finally:
        _restore(undo)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - a.embed(enc).inputs_embeds).abs().max() > 1e-4


def test_zero_strength_steering_is_a_no_op(tiny_llava, samples):
    a = tiny_llava
    _, emb = _enc_emb(a, samples)
    plain = a.lm_logits(emb)
    vec = torch.randn(a.num_heads, a.head_dim)
    with intervene(a, Steer(0, vec, site="z", strength=0.0), Steer(1, vec, site="z", strength=0.0, positions="last")):
        torch.testing.assert_close(a.lm_logits(emb), plain, atol=1e-6, rtol=0)
    d = a.model.config.get_text_config().hidden_size
    with intervene(a, *[Steer(l, torch.randn(d), site="mlp_out", mode="rotate", strength=0.0) for l in range(2)]):
        torch.testing.assert_close(a.lm_logits(emb), plain, atol=1e-6, rtol=0)


def test_steer_refuses_what_does_not_fit(tiny_llava, samples):
    a = tiny_llava
    _, emb = _enc_emb(a, samples)
    with pytest.raises(ValueError, match=r"does not fit the heads \[H, D\]"):
        with intervene(a, Steer(0, torch.zeros(a.num_heads + 1, a.head_dim))):
            a.lm_logits(emb)
    with pytest.raises(ValueError, match="rotate"):
        Steer(0, torch.zeros(a.num_heads, a.head_dim), mode="rotate")
    with pytest.raises(ValueError, match="positions"):
        Steer(0, torch.zeros(3), site="resid_post", positions="first")


# --------------------------------------------------------------------------------------------- VHR
def _text_only(a, sample):
    """The prompt without its image, built from token ids (not from the cached embeddings): the reference input."""
    enc = a.encode([sample])
    ids = enc.inputs["input_ids"][0][enc.inputs["attention_mask"][0].bool()]
    ids = ids[ids != a.image_token_id]
    x = a.model.get_input_embeddings()(ids)[None]
    mask = torch.ones(1, len(ids), dtype=torch.long)
    from vseam.models.base import Embedded
    return Embedded(x, mask, torch.arange(len(ids))[None])


def _run_reading(a, emb, scaled: dict[int, list[int]], alpha: float, read_layer: int | None):
    """Logits of ``emb`` with heads ``scaled[l]`` multiplied by alpha (the test's hooks) and z read at ``read_layer``."""
    D, seen, handles = a.head_dim, {}, []
    for l in range(a.num_layers):
        def hook(module, args, l=l):
            x = args[0].clone()
            if l == read_layer:
                seen["z"] = x[0, -1].reshape(a.num_heads, D).clone()
            for h in scaled.get(l, []):
                x[..., h * D:(h + 1) * D] *= alpha
            return (x,)
        handles.append(a.o_proj(l).register_forward_pre_hook(hook))
    try:
        logits = a.lm_logits(emb)
    finally:
        for h in handles:
            h.remove()
    return logits, seen.get("z")


def _reference_vhr(a, sample, layers, alpha):
    """VHR for one question, written from the paper: layer by layer, VHD (Eq. 4) of the with- and without-image runs
    (earlier layers already reinforced in both), outliers zeroed (Eq. 6), heads above the median reinforced (Eq. 7)."""
    _, img = _enc_emb(a, [sample])
    txt = _text_only(a, sample)
    chosen: dict[int, list[int]] = {}
    for l in layers:
        _, zi = _run_reading(a, img, chosen, alpha, l)
        _, zt = _run_reading(a, txt, chosen, alpha, l)
        vhd = [math.dist(zi[h].tolist(), zt[h].tolist()) for h in range(a.num_heads)]
        ta = [sum(v * v for v in zt[h].tolist()) for h in range(a.num_heads)]
        mv, sv, mt, st = statistics.mean(vhd), statistics.stdev(vhd), statistics.mean(ta), statistics.stdev(ta)
        vhd = [0.0 if (v > mv + sv and t > mt + st) else v for v, t in zip(vhd, ta)]
        med = statistics.median(vhd)
        chosen[l] = [h for h in range(a.num_heads) if vhd[h] > med]
        _reference_vhr.outliers += sum(v == 0.0 for v in vhd)
    return _run_reading(a, img, chosen, alpha, None)[0][0], chosen


_reference_vhr.outliers = 0


@pytest.fixture(scope="module")
def organism_llava():
    """The trained organism LLaVA (6 layers x 8 heads): heads that differ, outliers that occur."""
    from vseam.models import load_adapter

    root = Path(__file__).resolve().parents[2]
    return load_adapter({"arch": "llava", "path": str(root / "checkpoints/organism/llava"), "dtype": "float32",
                         "device": "cpu"})


@pytest.mark.parametrize("model", ["tiny", "organism"])
def test_vhr_equals_the_papers_procedure_written_out(model, tiny_llava, request):
    if model == "tiny":
        a, layers, samples = tiny_llava, [0, 1], request.getfixturevalue("samples")
    else:
        a, layers, samples = request.getfixturevalue("organism_llava"), [1, 3, 4, 5], world_samples(1, seed=11)
    alpha = 2.0
    applied = fa.vhr(a, alpha, layers)
    cache = EmbeddingCache(a)
    got = _logits(applied, a, cache.batch(samples))
    record = applied.forward.record
    for i, s in enumerate(samples):
        ref, chosen = _reference_vhr(a, s, layers, alpha)
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=1e-5)
        for l in layers:
            assert record[l][0][i].nonzero().squeeze(1).tolist() == chosen[l]
    assert (got - a.lm_logits(cache.batch(samples).emb)).abs().max() > 1e-4  # it changes the model
    if model == "organism":  # Eq. 6 is exercised: some heads' VHD was zeroed as an outlier
        assert _reference_vhr.outliers > 0
    # the heads it recorded, scaled by the test's own hook, give its logits
    own = torch.stack([_run_reading(a, _enc_emb(a, [s])[1], {l: record[l][0][i].nonzero().squeeze(1).tolist()
                                                                for l in layers}, alpha, None)[0][0]
                       for i, s in enumerate(samples)])
    torch.testing.assert_close(got, own, atol=1e-5, rtol=1e-5)


def test_vhr_with_alpha_one_is_a_no_op(tiny_adapter, samples):
    cache = EmbeddingCache(tiny_adapter)
    batch = cache.batch(samples)
    applied = fa.vhr(tiny_adapter, 1.0, list(range(tiny_adapter.num_layers)))
    torch.testing.assert_close(_logits(applied, tiny_adapter, batch), tiny_adapter.lm_logits(batch.emb), atol=1e-6,
                               rtol=0)


@pytest.mark.parametrize("num_layers, argv, layers", [
    (32, [], [1] + list(range(18, 32))),  # LLaVA-1.5: layer 1 and the last 14
    (32, ["modulation.vhr_layers=[14,32]", "modulation.vhr_layer_one=false"], list(range(14, 32))),  # InstructBLIP
    (6, [], [1, 3, 4, 5]),  # the organism: 6 layers
    (2, ["modulation.vhr_layer_one=false"], [1]),
    (40, ["modulation.field_depth=40", "modulation.vhr_layers=[18,40]"], [1] + list(range(18, 40))),
])
def test_vhr_layers_scale_the_papers_range_to_the_depth(num_layers, argv, layers):
    from types import SimpleNamespace

    mc = load_config(argv).modulation
    assert fa.vhr_configure(SimpleNamespace(num_layers=num_layers), mc, 0)["layers"] == layers


def test_vhr_refuses_inputs_without_image_tokens(tiny_llava, splits, tmp_path, monkeypatch):
    job = _job(tiny_llava, splits, tmp_path, "modulation.methods=[none,vhr]")
    monkeypatch.setattr(type(tiny_llava), "visual_token_mask", lambda self, ids: torch.zeros_like(ids, dtype=torch.bool))
    job.cache = EmbeddingCache(tiny_llava)
    with pytest.raises(field.NotApplicableError, match="^vhr: .*no image token"):
        field.check_applicable(job)
    with pytest.raises(field.NotApplicableError, match="^vhr: "):  # its forward too (analyze.py eval)
        _logits(fa.vhr(tiny_llava, 2.0, [1]), tiny_llava, job.cache.batch(splits["test"][:2]))


# --------------------------------------------------------------------------------------------- ICT
def test_logistic_probe_reaches_the_regularised_optimum():
    from scipy.optimize import minimize

    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 40, 5, generator=g, dtype=torch.float64)
    y = (X[0, :, 0] + 0.5 * torch.randn(40, generator=g, dtype=torch.float64) > 0).double()
    w, b = fa.fit_logistic(X, y)
    for p in range(3):
        Xp = X[p].numpy()

        def f(th, Xp=Xp):
            s = Xp @ th[:-1] + th[-1]
            return np.sum(np.logaddexp(0, s) - y.numpy() * s) + 0.5 * th[:-1] @ th[:-1]
        ref = minimize(f, np.zeros(6), method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-14}).x
        np.testing.assert_allclose(np.append(w[p].numpy(), b[p].item()), ref, atol=1e-4)


def test_probe_accuracy_ranks_the_separating_unit_first():
    g = torch.Generator().manual_seed(0)
    trusted, untrusted = torch.randn(30, 2, 4, generator=g), torch.randn(30, 2, 4, generator=g)
    trusted[:, 1, 0] += 6  # unit 1 tells them apart, unit 0 does not
    acc = fa.probe_accuracy(trusted, untrusted, seed=0)
    assert acc[1] > 0.95 and acc[0] < 0.75


def test_ict_level_direction_std_and_selection():
    g = torch.Generator().manual_seed(0)
    t, u = torch.randn(20, 2, 3, 4, generator=g), torch.randn(24, 2, 3, 4, generator=g)
    t[:, 1, 2] += 5
    res = fa.ict_level(t, u, num_heads=1, seed=0)
    com = t.mean(0) - u.mean(0)
    unit = com / com.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(res["direction"], unit, atol=1e-6, rtol=1e-6)
    proj = (torch.cat([t, u]) * unit).sum(-1)
    torch.testing.assert_close(res["std"], torch.from_numpy(np.std(proj.numpy(), axis=0)), atol=1e-5, rtol=1e-5)
    assert res["selected"].nonzero().tolist() == [[1, 2]]


def test_ict_shift_equals_adding_its_vector_at_the_last_position(tiny_llava, splits, tmp_path):
    a = tiny_llava
    job = _job(a, splits, tmp_path, "modulation.ict_num_heads=384", "modulation.ict_alpha=8")
    out = field.run_method(job, "ict")
    assert out.extra["hyperparameters"]["levels"] == ["image", "object"]
    assert out.extra["object_pairs"] == len(splits["train"])
    tensors, info = read_method(out.extra["file"])
    assert info["method"] == "ict" and info["extra"]["seen_ids"]["train"] == [s.id for s in splits["train"]]
    vec = torch.zeros(a.num_layers, a.num_heads, a.head_dim)
    for level in ("image", "object"):
        assert int(tensors[f"{level}_selected"].sum()) == 3
        vec += tensors[f"{level}_selected"][..., None] * tensors[f"{level}_std"][..., None] * tensors[f"{level}_direction"]
    batch = job.cache.batch(splits["test"])
    got = _logits(field.from_file("ict", out.extra["file"], a), a, batch)

    handles = []
    for l in range(a.num_layers):
        def hook(module, args, l=l):
            x = args[0].clone()
            x[:, -1] += 8 * vec[l].reshape(-1)
            return (x,)
        handles.append(a.o_proj(l).register_forward_pre_hook(hook))
    try:
        ref = a.lm_logits(batch.emb)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - a.lm_logits(batch.emb)).abs().max() > 1e-4
    zero = fa.ict(a, {**info["hyperparameters"], "alpha": 0.0}, tensors)
    torch.testing.assert_close(_logits(zero, a, batch), a.lm_logits(batch.emb), atol=1e-6, rtol=0)


def _perturb(s: Sample) -> Sample:
    from PIL import Image

    noise = Image.fromarray(np.random.RandomState(7).randint(0, 255, (s.image.height, s.image.width, 3), dtype=np.uint8))
    return Sample(id=s.id, question=s.question, answer=s.answer, benchmark=s.benchmark, category=s.category,
                  level=s.level, meta=s.meta, image=noise)


@pytest.mark.parametrize("method", ["ict", "vti"])
def test_directions_come_from_the_train_split_only(method, tiny_llava, splits, tmp_path):
    """Changing a test (or validation) sample leaves what is estimated as it was; changing a train sample does not."""
    a = tiny_llava
    runner = field.run_method
    base = read_method(runner(_job(a, splits, tmp_path / "a", "modulation.ict_num_heads=384"), method).extra["file"])[0]
    for split in ("test", "val"):
        changed = {**splits, split: [_perturb(splits[split][0])] + splits[split][1:]}
        again = read_method(runner(_job(a, changed, tmp_path / split, "modulation.ict_num_heads=384"), method).extra["file"])[0]
        assert base.keys() == again.keys() and all(torch.equal(base[k], again[k]) for k in base)
    used = read_method(tmp_path / "a" / "methods" / f"{method}.safetensors")[1]["extra"]["seen_ids"]["train"]
    i = next(i for i, s in enumerate(splits["train"]) if s.id in used)
    changed = {**splits, "train": splits["train"][:i] + [_perturb(splits["train"][i])] + splits["train"][i + 1:]}
    control = read_method(runner(_job(a, changed, tmp_path / "train", "modulation.ict_num_heads=384"), method).extra["file"])[0]
    assert any(not torch.equal(base[k], control[k]) for k in base if base[k].is_floating_point())


def test_ict_object_level_needs_boxes(tiny_llava, splits, tmp_path, capsys):
    unboxed = {k: [Sample(**{**s.__dict__, "meta": {}}) for s in v] for k, v in splits.items()}
    assert field.run_method(_job(tiny_llava, unboxed, tmp_path / "o", "modulation.ict_type=object"), "ict") is None
    assert "[ict] refused: the object level needs the queried object's box" in capsys.readouterr().out
    out = field.run_method(_job(tiny_llava, unboxed, tmp_path / "b", "modulation.ict_num_heads=256"), "ict")
    assert out.extra["hyperparameters"]["levels"] == ["image"] and "only the image level runs" in capsys.readouterr().out


def test_degrade_blurs_the_whole_image_or_the_box_only():
    from PIL import Image

    im = Image.fromarray(np.random.RandomState(0).randint(0, 255, (32, 32, 3), dtype=np.uint8))
    whole, boxed = np.asarray(fa.degrade(im, 3)), np.asarray(fa.degrade(im, 3, (8, 8, 16, 16)))
    orig = np.asarray(im)
    assert (whole != orig).mean() > 0.9
    inside = np.zeros((32, 32), bool)
    inside[8:16, 8:16] = True
    assert (boxed[~inside] == orig[~inside]).all() and (boxed[inside] == whole[inside]).all()


# --------------------------------------------------------------------------------------------- VTI
def test_pca_direction_is_mean_plus_the_sign_fixed_first_component():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(9, 3, 5, generator=g, dtype=torch.float64)
    got = fa.pca_direction(X.float())
    for k in range(3):
        x = X[:, k].numpy()
        mean = x.mean(0)
        U, _, Vt = np.linalg.svd(x - mean, full_matrices=False)
        i = np.argmax(np.abs(U[:, 0]))
        ref = mean + np.sign(U[i, 0]) * Vt[0]
        np.testing.assert_allclose(got[k].numpy(), ref, atol=1e-5)
    torch.testing.assert_close(fa.pca_direction(X.float(), chunk=2), got)  # groups a chunk at a time


def test_masked_copies_mask_the_share_of_patches_with_the_mean():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 32, 32, generator=g)
    copies = fa.masked_copies(pixels, 8, 0.99, 5, torch.Generator().manual_seed(1))
    assert copies.shape == (5, 3, 32, 32)
    mean = pixels.mean(dim=(1, 2))
    for c in copies:
        patches = c.reshape(3, 4, 8, 4, 8).permute(1, 3, 0, 2, 4).reshape(16, 3, 64)
        masked = [(p == mean[:, None]).all().item() for p in patches]
        assert sum(masked) == int(0.99 * 16)


def test_vti_steers_both_towers_as_vti_layer_does(tiny_llava, splits, tmp_path):
    a = tiny_llava
    out = field.run_method(_job(a, splits, tmp_path), "vti")
    tensors, info = read_method(out.extra["file"])
    assert set(tensors) == {"text_direction", "vision_direction"} and out.extra["hyperparameters"]["num_demos"] == 8
    applied = field.from_file("vti", out.extra["file"], a)
    test = splits["test"]
    got = _logits(applied, a, applied.scoring(a)["cache"].batch(test))
    v = a.vision
    undo = _with_mlps(v, {l: RefVTILayer(tensors["vision_direction"][l], 0.9) for l in range(v.num_layers)})
    undo += _with_mlps(a.lm, {l: RefVTILayer(tensors["text_direction"][l], 0.9) for l in range(a.num_layers)})
    try:
        ref = a.lm_logits(EmbeddingCache(a).batch(test).emb)
    finally:
        _restore(undo)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - a.lm_logits(EmbeddingCache(a).batch(test).emb)).abs().max() > 1e-4
    zero = fa.vti(a, {**info["hyperparameters"], "alpha_text": 0.0, "alpha_image": 0.0}, tensors)
    plain = a.lm_logits(EmbeddingCache(a).batch(test).emb)
    torch.testing.assert_close(_logits(zero, a, zero.scoring(a)["cache"].batch(test)), plain, atol=1e-6, rtol=0)


def test_vti_wrong_answers():
    import random

    s = Sample(id="a", question="q", answer="Yes", category="Shape")
    assert fa.wrong_answer(s, {}, random.Random(0)) == "No"
    s = Sample(id="b", question="q", answer="no", category="Shape")
    assert fa.wrong_answer(s, {}, random.Random(0)) == "yes"
    s = Sample(id="c", question="q", answer="red", category="Color")
    assert fa.wrong_answer(s, {"Color": ["red", "blue"]}, random.Random(0)) == "blue"
    assert fa.wrong_answer(s, {"Color": ["red"]}, random.Random(0)) is None


def test_vti_refuses_packed_patches_unless_the_image_is_left_alone(splits, tmp_path):
    """Refused before any method runs (train.py's check), with one line naming VTI and the way around."""
    from vseam.models import load_adapter

    qwen = load_adapter({"arch": "qwen2-vl", "path": "tiny:qwen2-vl", "dtype": "float32", "device": "cpu", "seed": 0})
    small = {k: v[:6] for k, v in splits.items()}
    with pytest.raises(field.NotApplicableError, match=r"^vti: .*pixel_values.*vti_alpha_image=0"):
        field.check_applicable(_job(qwen, small, tmp_path / "q", "modulation.methods=[none,vti]"))
    job = _job(qwen, small, tmp_path / "t", "modulation.methods=[none,vti]", "modulation.vti_alpha_image=0")
    field.check_applicable(job)
    out = field.run_method(job, "vti")
    assert out is not None and out.extra["steered"] == ["text"]


# --------------------------------------------------------------------------------------------- files and config
def test_saved_files_refuse_another_shape_and_other_weights(tiny_llava, splits, tmp_path):
    from vseam.models import load_adapter
    from vseam.models.identity import ModelMismatchError

    path = save_method(tmp_path / "ict.safetensors", "ict", hyperparameters={"alpha": 1.0, "levels": ["image"]},
                       tensors={}, model="big", num_layers=32, num_heads=32, head_dim=128)
    with pytest.raises(HeadShapeError, match="32 layers x 32 heads"):
        field.from_file("ict", path, tiny_llava)
    vhr = field.from_config("vhr", tiny_llava, load_config([]).modulation, 0)
    assert vhr.hyperparameters["layers"] == [1] and vhr.cost["forward_passes"] == 2
    out = field.run_method(_job(tiny_llava, splits, tmp_path), "vhr")
    other = load_adapter({"arch": "llava", "path": "tiny:llava", "dtype": "float32", "device": "cpu", "seed": 1})
    with pytest.raises(ModelMismatchError):
        field.from_file("vhr", out.extra["file"], other)
    assert field.from_file("vhr", out.extra["file"], other, allow_other_model=True).hyperparameters["layers"] == [1]
    with pytest.raises(field.NotApplicableError, match="estimated on a train split"):
        field.from_config("ict", tiny_llava, load_config([]).modulation, 0)
    # ICT's directions of another model's shape (its L x H x D metadata rewritten to fit): refused, naming the file
    ict = save_method(tmp_path / "ict2.safetensors", "ict", hyperparameters={"alpha": 1.0, "levels": ["image"],
                                                                             "num_heads": 1},
                      tensors={"image_direction": torch.zeros(2, 3, 5), "image_std": torch.zeros(2, 3),
                               "image_selected": torch.zeros(2, 3, dtype=torch.uint8)}, model="x",
                      num_layers=tiny_llava.num_layers, num_heads=tiny_llava.num_heads, head_dim=tiny_llava.head_dim,
                      identity=tiny_llava.identity)
    with pytest.raises(HeadShapeError, match=r"ict file .*ict2.safetensors: ict: image_direction of shape \[2, 3, 5\]"):
        field.from_file("ict", ict, tiny_llava)


@pytest.mark.parametrize("override, pattern", [
    ("modulation.vhr_alpha=0", r"modulation.vhr_alpha=0.*> 0"),
    ("modulation.vhr_layers=[20,10]", r"modulation.vhr_layers=\[20, 10\]"),
    ("modulation.vhr_layers=[0,33]", r"modulation.vhr_layers"),
    ("modulation.ict_num_heads=0", r"modulation.ict_num_heads=0"),
    ("modulation.ict_alpha=-1", r"modulation.ict_alpha=-1"),
    ("modulation.ict_type=objects", r"modulation.ict_type='objects'.*image"),
    ("modulation.ict_blur_radius=0", r"modulation.ict_blur_radius"),
    ("modulation.vti_mask_ratio=1.0", r"modulation.vti_mask_ratio=1.0"),
    ("modulation.vti_num_demos=1", r"modulation.vti_num_demos=1"),
    ("modulation.vti_alpha_text=0", r"vti_alpha_text=0 and modulation.vti_alpha_image=0"),
])
def test_hyperparameters_are_checked_before_a_model_loads(override, pattern, monkeypatch):
    from vseam.validate import validate

    extra = ["modulation.vti_alpha_image=0"] if "vti_alpha_text" in override else []
    monkeypatch.setattr("vseam.models.load_adapter", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match=pattern):  # a bad choice already when the configuration is composed
        validate(load_config(["modulation.methods=[none,vhr,ict,vti]", override, *extra]), "train")


def test_train_py_runs_the_field_methods_on_the_same_questions(tmp_path):
    """``run_train`` with the three methods: one row each, every row on the same test questions, files written."""
    from vseam.modulation.run import run_train
    from vseam.world.write import write_world

    write_world(tmp_path / "world", n_per_category=6, seed=5)
    cfg = load_config(["model=tiny-llava", f"data.root={tmp_path / 'world'}", "data.world_seed=5",
                       f"out_dir={tmp_path / 'run'}", "trainer.accelerator=cpu", "data.batch_size=8", "logger=none",
                       "modulation.methods=[none,vhr,ict,vti]", "modulation.vti_num_trials=2",
                       "modulation.vti_num_demos=6", "modulation.ict_num_heads=256"])
    summary = run_train(cfg)
    m = summary["methods"]
    assert list(m) == ["none", "vhr", "ict", "vti"]
    assert len({r["test"]["n"] for r in m.values()}) == 1
    for name in ("vhr", "ict", "vti"):
        assert m[name]["trainable_params"] == 0 and Path(m[name]["file"]).exists()
        assert read_method(m[name]["file"])[1]["method"] == name
    assert m["vhr"]["cost"]["forward_passes"] == 2 and m["ict"]["cost"]["forward_passes"] == 1
    assert all(m[x]["changes"] and m[x]["cost"]["vision_passes"] == 1 for x in ("vhr", "ict", "vti"))
