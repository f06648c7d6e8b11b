"""The runtime every long job shares (``vseam.runtime``): chunks that resume and shard over ranks, the
gather, the out-of-memory halving, and the run folder of processes a cluster launcher started; and the
config's one home for a key's choices and checks (``vseam.config``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest
import torch

from vseam.runtime import Chunks, ProgressMismatchError, Ranks, RowBatches, Runtime, read_chunk
from vseam.utils.io import save_safetensors


@dataclass
class Squares:
    """A toy chunk result: the squares of its items."""

    index: int
    values: torch.Tensor

    def save(self, path: Path, fingerprint: str) -> None:
        save_safetensors(path, {"values": self.values}, metadata={"fingerprint": fingerprint, "index": str(self.index)})

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> Squares:
        t, meta = read_chunk(path, fingerprint, "toy.resume")
        return cls(int(meta["index"]), t["values"])


def _compute(chunks: Chunks, log: list):
    def compute(c: int) -> Squares:
        log.append(c)
        lo, hi = chunks.bounds[c]
        return Squares(c, torch.arange(lo, hi, dtype=torch.float32) ** 2)
    return compute


def test_chunks_save_resume_and_shard(tmp_path):
    rt = Runtime(tmp_path, {"weights_sha256": "abc"})
    chunks = rt.chunks(7, 3, "toy", ids=list(range(7)))
    assert chunks.bounds == [(0, 3), (3, 6), (6, 7)] and chunks.mine() == [0, 1, 2]
    computed, done = [], []
    first = chunks.run(_compute(chunks, computed), Squares.load, on_chunk=done.append)
    assert computed == [0, 1, 2] and [d.index for d in done] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"toy-chunk0000{c}.safetensors" for c in range(3)]
    (tmp_path / "toy-chunk00001.safetensors").unlink()  # a run killed before its second chunk was saved
    again, units = [], []
    second = chunks.run(_compute(chunks, again), Squares.load, units=chunks.size, on_progress=units.append)
    assert again == [1] and units == [3, 1]  # loaded chunks advance the bar by their size; computed ones report their own
    assert all(torch.equal(a.values, b.values) for a, b in zip(first, second))
    # another fingerprint (other weights) in the same folder is refused, naming the key that discards it
    other = Runtime(tmp_path, {"weights_sha256": "xyz"}).chunks(7, 3, "toy", ids=list(range(7)))
    with pytest.raises(ProgressMismatchError, match="toy.resume=false"):
        other.run(_compute(other, []), Squares.load)


def test_each_rank_computes_its_chunks_and_the_gather_restores_chunk_order(tmp_path, monkeypatch):
    """Chunk c belongs to rank c % world_size; gathered in rank order, the chunks come back in chunk order,
    so what is computed from them does not depend on the number of ranks."""
    parts = {}
    for rank in (0, 1, 2):
        chunks = Runtime(tmp_path, ranks=Ranks(rank, 3)).chunks(10, 2, "toy", ids=list(range(10)))
        parts[rank] = chunks.run(_compute(chunks, []), Squares.load)
        assert [r.index for r in parts[rank]] == list(range(rank, 5, 3))
    monkeypatch.setattr(Ranks, "gather", lambda self, mine: [r for k in range(3) for r in parts[k]])
    gathered = chunks.gather(parts[2])
    assert [r.index for r in gathered] == [0, 1, 2, 3, 4]
    assert torch.equal(torch.cat([r.values for r in gathered]), torch.arange(10.0) ** 2)
    monkeypatch.setattr(Ranks, "gather", lambda self, mine: parts[0] + parts[0])
    with pytest.raises(RuntimeError, match="chunks computed twice"):
        chunks.gather(parts[0])
    monkeypatch.undo()
    assert Ranks().gather([1, 2]) == [1, 2] and Ranks().zero and not Ranks(1, 2).zero


def test_row_batches_halve_on_out_of_memory_and_keep_the_smaller_size():
    seen = []

    def forward(start, stop):
        if stop - start > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append((start, stop))
        return stop - start

    rows = RowBatches(16, "trace.rows_per_forward")
    assert sum(rows.run(10, forward)) == 10 and rows.size == 2  # 16 -> 8 -> 4 -> 2
    assert seen[:2] == [(0, 2), (2, 4)] and seen[-1] == (8, 10)
    assert rows.run(3, lambda a, b: b - a) == [2, 1]  # the next call starts at the halved size
    with pytest.raises(ValueError, match="a bug"):  # any other error is not swallowed
        RowBatches(4, "k").run(4, lambda a, b: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(RuntimeError, match="out of memory"):  # at one row there is nothing left to halve
        RowBatches(1, "k").run(2, lambda a, b: (_ for _ in ()).throw(RuntimeError("out of memory")))


def test_processes_of_a_cluster_launcher_need_one_named_folder(tmp_path, monkeypatch):
    from vseam.config import load_config
    from vseam.utils.ranks import is_rank_zero
    from vseam.utils.rundir import RunFolderError, claim, release

    cfg = load_config(["logger=none"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("VSEAM_OUT_DIR", raising=False)
    with pytest.raises(RunFolderError, match="one of 2 processes started by torchrun or srun.*out_dir="):
        claim(cfg, "heads")
    cfg.out_dir = str(tmp_path / "shared")
    out, took = claim(cfg, "heads")
    assert took and (out / "config.yaml").exists()
    release(out)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SLURM_PROCID", "3")  # a task srun started knows it is not rank 0 before Lightning says so
    assert not is_rank_zero()


# ----------------------------------------------------------------------------------- config: one home
def test_each_choice_is_declared_once_and_the_tables_that_act_on_it_agree():
    """A key's choices are the ``Literal`` of its field; the registries that act on them use the same names."""
    from vseam import config as c
    from vseam.data.readers import FORMATS, POPE_SPLITS
    from vseam.models import ADAPTERS
    from vseam.models.base import ANSWER_DEFINITIONS
    from vseam.models.loading import DTYPES
    from vseam.modulation.methods import RUNNERS
    from vseam.tracing.engine import BLOCK_SITES
    from vseam.tracing.positions import POSITION_GROUPS
    from vseam.utils.devices import ACCELERATORS

    assert set(get_args(c.Arch)) == set(ADAPTERS)
    assert set(get_args(c.AnswerDefinition)) == set(ANSWER_DEFINITIONS)
    assert set(get_args(c.DType)) == set(DTYPES) and set(get_args(c.EditDType)) == {"auto", *DTYPES}
    assert list(get_args(c.ModulationMethod)) == list(RUNNERS)
    assert get_args(c.TraceBlock) == tuple(BLOCK_SITES) and get_args(c.PositionGroup) == POSITION_GROUPS
    assert set(get_args(c.DataFormat)) == {"organism", *FORMATS} and get_args(c.PopeSplit) == POPE_SPLITS
    assert get_args(c.Accelerator) == ACCELERATORS
    assert c.schema_field("trainer.accelerator")[0] is c.Accelerator


@pytest.mark.parametrize("key, bad, says", [
    ("data.batch_size", 0, "data.batch_size=0: expected a number >= 1"),
    ("modulation.k_pos", -1, "modulation.k_pos=-1: expected a number >= 0"),  # a bound of 0 is a bound
    ("modulation.lr", 0.0, "modulation.lr=0.0: expected a learning rate > 0"),
    ("data.max_skip_fraction", 1.5, r"data.max_skip_fraction=1.5: expected a share in \[0, 1\]"),
    ("attribution.atp_alpha", 1.0, r"attribution.atp_alpha=1.0: expected an ablation strength in \[0, 1\) \(0 = classic"),
    ("edit.resolution", 500, r"edit.resolution=500: expected a multiple of 8 \(the inpainting VAE's stride\)"),
    ("study.k", [], r"study.k=\[\]: expected a non-empty list of integers >= 1"),
    ("trace.blocks", ["attn", "attn"], r"trace.blocks=\['attn', 'attn'\]: expected a non-empty list of distinct names .*attn named twice"),
    ("modulation.methods", ["learned", "lorra"], r"modulation.methods=\['learned', 'lorra'\].*unknown \['lorra'\]"),
    ("model.dtype", "float33", r"model.dtype='float33': expected one of \['float32', 'bfloat16', 'float16'\]"),
    ("data.limit", 0, "data.limit=0: expected a number >= 1 or null"),
])
def test_a_field_s_checks_name_the_key_the_value_and_what_is_valid(key, bad, says):
    """On a configuration built without the schema (``check_values``, as ``validate`` runs it) and, for choices
    and lists, already when the command line is composed."""
    from omegaconf import OmegaConf

    from vseam.config import ConfigError, check_values, load_config
    from vseam.validate import validate

    cfg = OmegaConf.create(OmegaConf.to_container(load_config([])))
    group, name = key.split(".")
    cfg[group][name] = bad
    with pytest.raises(ConfigError, match=says):
        check_values(cfg)
    arg = f"{key}=[{','.join(map(str, bad))}]" if isinstance(bad, list) else f"{key}={bad}"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(load_config([arg]), "heads")


def test_a_bad_choice_in_a_group_file_names_the_key_and_the_file(tmp_path):
    from vseam.config import CONFIG_GROUPS, ConfigError, load_config

    for g in CONFIG_GROUPS:
        (tmp_path / g).mkdir()
    (tmp_path / "analyze.yaml").write_text("defaults:\n  model: odd\n")
    (tmp_path / "model" / "odd.yaml").write_text("dtype: float8\n")
    with pytest.raises(ConfigError, match=r"model.dtype='float8': expected one of .* \(in .*odd.yaml\)"):
        load_config([], config_dir=tmp_path)


def test_inner_functions_take_the_group_and_keep_no_defaults_of_their_own():
    """``settings_of`` fills a partial group from the schema; the engines' keyword defaults are the schema's."""
    import inspect

    from vseam.attribution.exact import ExactEngine
    from vseam.attribution.patching import estimated_ablated_probs
    from vseam.attribution.sweep import Sweep, score_heads
    from vseam.config import AttributionConfig, ConfigError, settings_of

    st = settings_of({"method": "atp"}, AttributionConfig)
    assert st.method == "atp" and st.atp_alpha == AttributionConfig.atp_alpha and st.atp_path == "layer"
    with pytest.raises(ConfigError, match=r"attribution.method='exactly': expected one of \['exact', 'atp'\]"):
        settings_of({"method": "exactly"}, AttributionConfig)
    defaults = {**inspect.signature(ExactEngine).parameters, **inspect.signature(estimated_ablated_probs).parameters}
    for name, key in (("rows_per_forward", "rows_per_forward"), ("mode", "ablation"), ("alpha", "atp_alpha"),
                      ("path", "atp_path"), ("space", "atp_space")):
        assert defaults[name].default == getattr(AttributionConfig, key), name
    assert len(inspect.signature(score_heads).parameters) <= 8 and len(inspect.signature(Sweep).parameters) <= 8
