"""Seeding and resuming: a method's row does not depend on the other methods trained beside it; a killed train
resumes to the same table."""

from __future__ import annotations

import pytest

from vseam.config import load_config

from conftest import train_args


def _ckpt_state(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_a_methods_row_does_not_depend_on_the_other_methods(trained, tmp_path):
    import torch

    from vseam.modulation.run import run_train

    world = trained[0]
    alone = run_train(load_config(train_args(world, tmp_path / "a", "modulation.methods=[lora]", "trainer.max_steps=3")))
    mixed = run_train(load_config(train_args(world, tmp_path / "b", "modulation.methods=[learned,random,lora]",
                                              "trainer.max_steps=3")))
    assert alone["methods"]["lora"]["test"] == mixed["methods"]["lora"]["test"]
    a, b = (_ckpt_state(p / "checkpoints" / "lora" / "last.ckpt") for p in (tmp_path / "a", tmp_path / "b"))
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_killed_train_resumes_to_the_same_table(trained, tmp_path, monkeypatch, capsys):
    import torch

    from vseam.interventions.checkpoint import read_modulation
    from vseam.modulation.module import FrozenVLMModule
    from vseam.modulation.run import run_train

    world = trained[0]
    extra = ["modulation.methods=[none,learned]", "trainer.max_epochs=3", "modulation.lr=0.05"]
    full = run_train(load_config(train_args(world, tmp_path / "full", *extra)))

    class Killed(RuntimeError):
        pass

    original = FrozenVLMModule.on_train_epoch_start

    def die_in_epoch_3(self):
        if self.current_epoch == 2:
            raise Killed("killed")
        return original(self)

    cfg_args = train_args(world, tmp_path / "killed", *extra)
    monkeypatch.setattr(FrozenVLMModule, "on_train_epoch_start", die_in_epoch_3, raising=False)
    with pytest.raises(Killed):
        run_train(load_config(cfg_args))
    monkeypatch.undo()
    assert not (tmp_path / "killed" / "summary.json").exists()
    capsys.readouterr()
    steps = []
    step = FrozenVLMModule.training_step
    monkeypatch.setattr(FrozenVLMModule, "training_step", lambda self, *a: steps.append(1) or step(self, *a))
    again = run_train(load_config(cfg_args))  # the same command
    resumed = capsys.readouterr().out
    assert "[learned] resuming from" in resumed
    # it continued from the last saved epoch instead of starting again
    assert 0 < len(steps) < full["methods"]["learned"]["steps"], resumed
    assert (tmp_path / "killed" / "table.txt").read_text() == (tmp_path / "full" / "table.txt").read_text()
    assert again["methods"]["learned"]["steps"] == full["methods"]["learned"]["steps"]
    a, _ = read_modulation(tmp_path / "full" / "modulation.safetensors")
    b, _ = read_modulation(tmp_path / "killed" / "modulation.safetensors")
    torch.testing.assert_close(a.offset, b.offset, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.scale, b.scale, rtol=0, atol=1e-6)
