"""What the W&B dashboards get: eval's per-level accuracy without doubled run names, edit's clean and edited example
images (read back from the offline runs)."""

from __future__ import annotations

from vseam.config import load_config


def test_eval_logs_per_level_accuracy_and_run_names_are_not_doubled(tmp_path):
    from vseam.evaluation.run import run_eval
    from vseam.utils.tracking import run_name

    from conftest import wandb_run_data

    assert run_name("heads", "runs/heads-organism") == "heads-organism"
    assert run_name("heads", "runs/heads/20261201-1200-1-ab") == "heads-20261201-1200-1-ab"
    out = tmp_path / "eval-organism"
    run_eval(load_config(["model=tiny-llava", "logger=wandb", "logger.mode=offline", f"data.root={tmp_path / 'w'}",
                          "data.n_per_category=2", f"out_dir={out}"]))
    data = wandb_run_data(out / "logs", ["base/acc_level/object", "base/acc_level/attribute",
                                         "base/acc_level/relation", "base/acc/Color"])
    assert b"eval-eval-organism" not in data


def test_edit_logs_clean_and_edited_example_images(tmp_path):
    from vseam.editing.run import run_edit

    from conftest import wandb_run_data

    out = tmp_path / "edit"
    run_edit(load_config(["model=tiny-llava", "data=organism", f"data.root={tmp_path / 'world'}",
                          "data.n_per_category=2", "data.categories=[Color]", "logger=wandb", "logger.mode=offline",
                          "edit.progress=false", "edit.filter=false", f"out_dir={out}"]))
    wandb_run_data(out / "logs", ["edit/examples/0/clean", "edit/examples/0/edited", "edit/examples/1/edited"])
