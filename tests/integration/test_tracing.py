"""Causal tracing and the hook points it uses: identities that must hold exactly, positions, the logit lens,
and the run end to end (resume included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vseam.interventions import Patch, Read, intervene
from vseam.interventions.replay import run_from_layer
from vseam.tracing import TraceEngine, effects, layouts

from conftest import trace_cfg

CKPT = Path(__file__).resolve().parents[2] / "checkpoints" / "organism"


@pytest.fixture(scope="session")
def organism_world(tmp_path_factory):
    """A small organism world (4 questions per category) with its exact edits."""
    from types import SimpleNamespace

    from vseam.editing.run import read_manifest
    from vseam.world.write import ensure_world

    root = tmp_path_factory.mktemp("world")
    ensure_world(SimpleNamespace(format="organism", root=str(root), n_per_category=4, world_seed=0, world_split="test"))
    return read_manifest(root, effective=False)


@pytest.fixture(scope="session", params=["llava", "instructblip"])
def organism(request):
    from vseam.models import load_adapter

    return load_adapter({"arch": request.param, "path": str(CKPT / request.param), "device": "cpu"})


def _pairs_enc(adapter, records, n: int = 2):
    """n clean / edited pairs of different categories: rows 0..n-1 clean, n..2n-1 edited (scored on the clean answer)."""
    from vseam.editing.filter import edited_probe

    recs, seen = [], set()
    for r in records:
        if r.category not in seen and r.level != "relation":
            recs.append(r)
            seen.add(r.category)
        if len(recs) == n:
            break
    samples = [r.clean_sample() for r in recs] + [edited_probe(r) for r in recs]
    return adapter.encode(samples), [r.question for r in recs]


def _all_positions(enc, rows):
    return enc.inputs["attention_mask"].bool()[rows]


# ----------------------------------------------------------------------------------------- hook points

def test_sites_compose_and_patterns_are_causal(tiny_adapter, samples):
    a = tiny_adapter
    enc = a.encode(samples[:2])
    impl = a.decoder.config._attn_implementation
    with torch.no_grad():
        emb = a.embed(enc)
        reads = [Read(site=s) for s in ("resid_pre", "attn_out", "mlp_out", "resid_post", "attn_pattern")]
        with intervene(a, *reads) as cache:
            a.lm_logits(emb)
    assert a.decoder.config._attn_implementation == impl  # restored
    B, T = enc.inputs["input_ids"].shape
    for l in range(a.num_layers):
        pre, post = cache["resid_pre", l], cache["resid_post", l]
        torch.testing.assert_close(post, pre + cache["attn_out", l] + cache["mlp_out", l], rtol=0, atol=1e-5)
        if l + 1 < a.num_layers:
            assert torch.equal(cache["resid_pre", l + 1], post)
        pat = cache["attn_pattern", l]
        assert pat.shape == (B, a.num_heads, T, T)
        real = enc.inputs["attention_mask"].bool()
        sums = pat.sum(-1)[real[:, None, :].expand(-1, a.num_heads, -1)]
        torch.testing.assert_close(sums, torch.ones_like(sums))
        assert float(torch.triu(pat, diagonal=1)[real[:, None, :, None].expand_as(pat)].abs().max()) < 1e-6


def test_site_edit_errors(tiny_llava):
    with pytest.raises(ValueError, match="site"):
        Read(site="nowhere")
    with pytest.raises(ValueError, match="read, not patched"):
        Patch(0, torch.zeros(1), site="attn_pattern")
    with pytest.raises(ValueError, match="takes no heads"):
        Patch(0, torch.zeros(1), heads=[0], site="mlp_out")


def test_patch_resid_pre_every_position_restores_the_source(organism, organism_world):
    a = organism
    enc, _ = _pairs_enc(a, organism_world)
    P = enc.batch_size // 2
    with torch.no_grad():
        emb = a.embed(enc)
        with intervene(a, Read(site="resid_pre")) as cache:
            logits = a.lm_logits(emb)
        assert (logits[:P] - logits[P:]).abs().max() > 1e-4  # the edit changes the output: the test can fail
        for l in range(a.num_layers):
            src = cache["resid_pre", l][:P]
            with intervene(a, Patch(l, src, site="resid_pre")):
                patched = a.lm_logits(emb.index(torch.arange(P, 2 * P)))
            torch.testing.assert_close(patched, logits[:P], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------- identities

def test_tracing_identities(organism, organism_world):
    a = organism
    enc, qs = _pairs_enc(a, organism_world)
    P = enc.batch_size // 2
    eng = TraceEngine(a, {"rows_per_forward": 37})
    run, cache = eng.record(enc)
    from vseam.models.base import answer_stats

    amask = enc.answer_mask(a.vocab_size)
    prob, _, mlogit = answer_stats(run.logits, amask)
    base, source = torch.arange(P, 2 * P), torch.arange(P)
    assert float((prob[:P] - prob[P:]).abs().min()) > 1e-5  # something to restore in every pair
    L, T = a.num_layers, enc.inputs["input_ids"].shape[1]
    for l in range(L):
        # the clean residual stream at every position of a layer's output restores the clean output: 1
        pr, lg = eng.patched_metrics(run, cache, l, base, source, ["resid"] * P, _all_positions(enc, source),
                                     amask[base])
        _, norm_p = effects(pr, prob[P:], prob[:P])
        _, norm_l = effects(lg, mlogit[P:], mlogit[:P])
        torch.testing.assert_close(norm_p, torch.ones(P), rtol=0, atol=1e-5)
        torch.testing.assert_close(norm_l, torch.ones(P), rtol=0, atol=1e-5)
        # the corrupt run's own values change nothing: 0, for every block and position
        for b in ("attn", "mlp", "resid"):
            pos = torch.eye(T, dtype=torch.bool)
            rows = base[:1].repeat(T)
            pr, _ = eng.patched_metrics(run, cache, l, rows, rows, [b] * len(rows), pos, amask[rows])
            raw, _ = effects(pr, prob[rows], prob[rows - P])
            assert float(raw.abs().max()) < 1e-6


def test_batched_patches_equal_one_at_a_time(organism, organism_world):
    a = organism
    enc, qs = _pairs_enc(a, organism_world)
    many, _ = TraceEngine(a, {"rows_per_forward": 4096}).trace_pairs(enc, qs)
    # one patch per forward (the residual stream of the first pair; the other blocks share the same code path)
    one, _ = TraceEngine(a, {"blocks": ["resid"], "rows_per_forward": 1}).trace_pairs(_sub(enc, 0), [qs[0]])
    for k in ("tokenwise_prob", "tokenwise_logit", "group_prob", "group_logit"):
        torch.testing.assert_close(getattr(many[0], k)[2:], getattr(one[0], k), rtol=0, atol=1e-5)
    # an odd forward size splits rows of different pairs, blocks and positions across forwards
    odd, _ = TraceEngine(a, {"rows_per_forward": 7}).trace_pairs(enc, qs)
    single = [TraceEngine(a, {"rows_per_forward": 4096}).trace_pairs(_sub(enc, 1), [qs[1]])[0][0]]
    for m, o, s in zip(many[1:], odd[1:], single):
        for k in ("tokenwise_prob", "tokenwise_logit", "group_prob", "group_logit", "lens_prob"):
            torch.testing.assert_close(getattr(m, k), getattr(o, k), rtol=0, atol=1e-5)
            # a pair alone (its own padding) gives the same numbers as in a batch of pairs
            torch.testing.assert_close(getattr(m, k), getattr(s, k), rtol=0, atol=1e-5)
        assert not torch.isnan(m.tokenwise_prob).any()
        assert float(m.tokenwise_prob.std()) > 1e-3  # not a constant map: the comparison can fail


def _sub(enc, i):
    """Pair i of a batch of pairs, as a batch of one pair with its padding removed."""
    from vseam.models.base import Encoded

    P = enc.batch_size // 2
    rows = torch.tensor([i, P + i])
    keep = enc.inputs["attention_mask"][rows].bool().any(0)
    inputs = {}
    for k, v in enc.inputs.items():
        v = v[rows]
        if k in ("input_ids", "attention_mask"):
            v = v[:, keep]
        inputs[k] = v
    return Encoded(inputs, [enc.answer_ids[i], enc.answer_ids[P + i]], enc.target[rows], [enc.ids[i], enc.ids[P + i]])


def test_attn_plus_mlp_equals_resid_where_the_inputs_agree(organism, organism_world):
    """Patching attn and mlp output at (l, t) equals patching the layer's output at (l, t) exactly where the
    layer's input at t is the same in both runs (layer 0, text positions), and differs where it is not."""
    a = organism
    enc, qs = _pairs_enc(a, organism_world)
    P = enc.batch_size // 2
    eng = TraceEngine(a)
    run, cache = eng.record(enc)
    lay = layouts(a, enc.inputs["input_ids"][:P], enc.inputs["attention_mask"][:P], qs)
    p = 0
    base, src = torch.tensor([P + p]), torch.tensor([p])
    checked = {"equal": 0, "differ": 0}
    real = lay[p].real()
    image = lay[p].positions("image")
    text = [t for t in real if t not in image]
    for t in text[:2] + image[:2] + text[-3:]:
        pos = torch.zeros(1, enc.inputs["input_ids"].shape[1], dtype=torch.bool)
        pos[0, t] = True
        both = run_from_layer(a, run, 0, base, Patch(0, cache["attn_out", 0][src], positions=pos, site="attn_out"),
                              Patch(0, cache["mlp_out", 0][src], positions=pos, site="mlp_out"))
        resid = run_from_layer(a, run, 0, base, Patch(0, cache["resid_post", 0][src], positions=pos, site="resid_post"))
        same_input = torch.equal(run.layer_inputs[0][p, t], run.layer_inputs[0][P + p, t])
        if same_input:
            torch.testing.assert_close(both, resid, rtol=0, atol=1e-5)
            checked["equal"] += 1
        elif lay[p].roles[t] == "image":
            assert float((both - resid).abs().max()) > 1e-6
            checked["differ"] += 1
    assert checked["equal"] >= 3 and checked["differ"] > 0, checked


# ----------------------------------------------------------------------------------------- positions, lens

def test_positions_match_the_processor(tiny_adapter, samples):
    a = tiny_adapter
    enc = a.encode(samples)
    ids, mask = enc.inputs["input_ids"], enc.inputs["attention_mask"]
    lay = layouts(a, ids, mask, [s.question for s in samples], enc.ids)
    cfg = a.model.config
    n_visual = int(cfg.num_query_tokens) if a.arch == "instructblip" else None
    for b, (s, l) in enumerate(zip(samples, lay)):
        img = l.positions("image")
        assert img == (ids[b] == a.image_token_id).nonzero().squeeze(1).tolist()
        assert img == list(range(img[0], img[0] + len(img)))  # one contiguous block
        if n_visual is not None:
            assert len(img) == n_visual and img[0] == 0  # InstructBLIP: the queries first, then the padded text
        else:
            assert len(img) == int(a.processor.num_image_tokens if hasattr(a.processor, "num_image_tokens") else len(img))
            assert img[0] > int((~mask[b].bool()).sum())  # LLaVA: after "USER:"
        q = l.positions("question")
        text = a.tokenizer.decode(ids[b, q].tolist()).strip()
        assert text == s.question.strip(), (text, s.question)
        assert l.group_mask("last").nonzero().squeeze(1).tolist() == [ids.shape[1] - 1]
        assert [r == "pad" for r in l.roles] == (~mask[b].bool()).tolist()


def test_positions_refuse_a_misaligned_prompt(tiny_llava, samples):
    a = tiny_llava
    enc = a.encode(samples[:1])
    with pytest.raises(ValueError, match="cannot be aligned"):
        layouts(a, enc.inputs["input_ids"], enc.inputs["attention_mask"], ["A different question entirely?"], ["s0"])


def test_logit_lens_last_layer_is_the_model_output(organism, organism_world):
    a = organism
    enc, qs = _pairs_enc(a, organism_world)
    traces, _ = TraceEngine(a).trace_pairs(enc, qs)
    with torch.no_grad():
        probs = a.last_logits(enc).float().softmax(-1)
    P = len(qs)
    amask = enc.answer_mask(a.vocab_size)
    for p, t in enumerate(traces):
        for k, row in ((0, p), (1, P + p)):
            torch.testing.assert_close(t.lens_prob[k, -1], (probs[row] * amask[row]).sum(), rtol=0, atol=1e-5)
            gold = int(enc.target[row])
            assert int(t.lens_rank[k, -1]) == int((probs[row] > probs[row, gold]).sum())
            assert t.lens_top[k][-1][0][0] == a.token_text([int(probs[row].argmax())])[0]
            assert not any("\u2581" in text for layer in t.lens_top[k] for text, _ in layer)  # text, not pieces
    from vseam.tracing import logit_lens

    with torch.no_grad():
        emb = a.embed(enc)
        with intervene(a, Read(site="resid_post")) as cache:
            logits = a.lm_logits(emb)
        lp, _, ti, tv = logit_lens(a, cache.stack("resid_post")[:, :, -1], amask, enc.target, 5)
    torch.testing.assert_close(tv[-1], logits.float().softmax(-1).topk(5).values, rtol=0, atol=1e-6)


def test_effects_normalisation():
    raw, norm = effects(torch.tensor([0.2, 0.6, 1.0]), 0.2, 1.0)
    torch.testing.assert_close(raw, torch.tensor([0.0, 0.4, 0.8]))
    torch.testing.assert_close(norm, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.isnan(effects(torch.tensor([0.3]), 0.5, 0.5)[1]).all()


def test_trace_run_end_to_end_and_resume(tmp_path):
    """The organism: outputs and their schema; a killed run resumes bit-identical; another config is refused."""
    from vseam.tracing.run import run_trace

    out1 = run_trace(trace_cfg(tmp_path / "a"))
    assert out1["n_manifest"] == 2 and out1["n_pairs"] + out1["n_skipped"] == 2 and out1["n_pairs"] > 0
    for f in ("trace.json", "trace.safetensors", "heatmap_prob.png", "groups_prob.png", "logit_lens.png",
              "logit_lens.txt", "pairs/heatmap_0.png", "config.yaml"):
        assert (tmp_path / "a" / f).exists(), f
    d = json.loads((tmp_path / "a" / "trace.json").read_text())
    assert d["blocks"] == ["attn", "mlp", "resid"] and d["groups"] == ["image", "question", "last"]
    pair = d["pairs"][0]
    assert len(pair["tokens"]) == len(pair["roles"]) and "image" in pair["roles"]
    assert pair["clean"]["correct"] and not pair["corrupt"]["correct"]  # effective only
    g = d["average"]["groups"]["prob_norm"]["resid"]["last"]
    assert len(g["mean"]) == d["num_layers"]
    # the layer output at the last position of the last layer is all the answer sees: it restores it
    assert abs(g["mean"][-1] - 1) < 1e-5

    class Kill(Exception):
        pass

    def kill(chunk):
        raise Kill

    with pytest.raises(Kill):
        run_trace(trace_cfg(tmp_path / "b"), on_chunk=kill)
    assert len(list((tmp_path / "b" / "progress").glob("*.safetensors"))) == 1
    out2 = run_trace(trace_cfg(tmp_path / "b"))
    from safetensors.torch import load_file

    t1, t2 = load_file(str(tmp_path / "a" / "trace.safetensors")), load_file(str(tmp_path / "b" / "trace.safetensors"))
    assert t1.keys() == t2.keys()
    for k in t1:
        assert torch.equal(t1[k].nan_to_num(-9), t2[k].nan_to_num(-9)), k
    assert [p["id"] for p in out1["pairs"]] == [p["id"] for p in out2["pairs"]]
    from vseam.runtime import ProgressMismatchError
    from vseam.utils.rundir import RunFolderError

    with pytest.raises(RunFolderError, match="trace.direction"):  # the folder holds another config's results
        run_trace(trace_cfg(tmp_path / "b", "trace.direction=noise"))
    from vseam.tracing.run import TraceChunk

    chunk = sorted((tmp_path / "b" / "progress").glob("*.safetensors"))[0]
    with pytest.raises(ProgressMismatchError, match="trace.resume"):  # a chunk saved under another fingerprint
        TraceChunk.load(chunk, "another-config")


def test_trace_config_errors_before_the_model_loads(tmp_path):
    from vseam.tracing.run import run_trace

    with pytest.raises(ValueError, match="trace.direction"):
        run_trace(trace_cfg(tmp_path, "trace.direction=sideways", "model.path=/nonexistent"))
    with pytest.raises(ValueError, match="trace.blocks"):
        run_trace(trace_cfg(tmp_path, "trace.blocks=[attn,ffn]", "model.path=/nonexistent"))
    with pytest.raises(FileNotFoundError, match="no edit manifest"):
        run_trace(trace_cfg(tmp_path, f"trace.manifest={tmp_path}/none.jsonl", "model.path=/nonexistent"))
