"""A failed run does not poison its folder: a folder with no results takes a corrected configuration,
one with results still refuses another; ``.lock`` is gone when a run ends, also on an error."""

from __future__ import annotations

import pytest

from vseam.config import load_config
from vseam.utils.rundir import LOCK, RunFolderError, claim, release, run_folder


@pytest.fixture(scope="module")
def pope(tmp_path_factory):
    from vseam.world.pope import write_pope

    root = tmp_path_factory.mktemp("pope")
    write_pope(root, n_per_split=4, seed=0)
    return root


def test_a_failed_runs_folder_takes_the_corrected_rerun(pope, tmp_path, capsys):
    from vseam.data.readers import AnnotationError
    from vseam.evaluation.run import run_eval
    from vseam.utils.rundir import holds_results

    out = tmp_path / "o"
    bad = tmp_path / "coco_pope_random.json"
    bad.write_text('{"question_id": 1, "image": "x.png", "text": "Is there a cat?", "label": "maybe"}\n')
    args = ["model=tiny-llava", "logger=none", "data=pope", f"data.image_dir={pope / 'images'}", f"out_dir={out}"]
    with pytest.raises(AnnotationError):
        run_eval(load_config(args + [f"data.annotations=[{bad}]"]))
    assert (out / "config.yaml").exists() and not (out / LOCK).exists()  # the lock is gone on an error too
    assert not holds_results(out)
    good = pope / "organism_pope_random.json"
    res = run_eval(load_config(args + [f"data.annotations=[{good}]"]))
    assert res["results"]["base"]["n"] == 4
    assert str(good) in (out / "config.yaml").read_text() and not (out / LOCK).exists()
    assert "wrote no results; taking it for this configuration (data.annotations" in capsys.readouterr().out
    # now it holds results: another configuration is refused, as before
    assert holds_results(out)
    with pytest.raises(RunFolderError, match="holds the results of a run with another configuration"):
        run_eval(load_config(args + [f"data.annotations=[{bad}]"]))


def test_bookkeeping_is_not_results_but_progress_is(tmp_path):
    from vseam.utils.rundir import holds_results

    out = tmp_path / "o"
    with run_folder(load_config(["logger=none", f"out_dir={out}"]), "heads"):
        (out / "logs" / "heads").mkdir(parents=True)
        (out / "logs" / "heads" / "metrics.csv").write_text("a\n")
        (out / "wandb_run_ids.json").write_text("{}")
        (out / "progress").mkdir()  # an empty folder holds nothing
        assert (out / LOCK).exists() and not holds_results(out)
        (out / "progress" / "exact-chunk00000.safetensors").write_bytes(b"x")
        assert holds_results(out)
    assert not (out / LOCK).exists()


def test_a_removed_lock_file_still_excludes_a_second_run(tmp_path):
    """A run that ends removes .lock while holding it; a run starting then locks the file that is there."""
    out = tmp_path / "o"
    cfg = load_config(["logger=none", f"out_dir={out}"])
    a, took = claim(cfg, "heads")
    assert took
    release(a)
    b, took = claim(load_config(["logger=none", f"out_dir={out}"]), "heads")
    assert took and (out / LOCK).exists()
    release(b)
    assert not (out / LOCK).exists()
