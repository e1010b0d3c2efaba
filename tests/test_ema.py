"""The exponential moving average of the weights (``train.ema_decay``): its recurrence, what a run scores and
saves with it, and its place in checkpoints and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import regae
from regae.config import build_experiment
from regae.data import load_data
from regae.engine import Trainer
from regae.engine.checkpoint import read_folder
from regae.engine.ema import WeightAverage
from regae.errors import ConfigError
from regae.run import build_model, load_run_model


def toy(out_dir: Path, name: str = "run", **train) -> object:
    """A small two-moons AE writing into ``out_dir/name``."""
    return build_experiment(
        {
            "model": {"type": "ae", "hidden": [16], "code_dim": 2},
            "data": {"name": "two-moons", "n_samples": 500},
            "train": {
                "out_dir": str(out_dir),
                "name": name,
                "epochs": 100,
                "max_steps": 30,
                "batch_size": 50,
                "log_every": 10,
                "progress": False,
                "ema_decay": 0.9,
                **train,
            },
        }
    )


def test_weight_average_follows_its_recurrence_and_swaps_exactly():
    """θ̄ ← θ̄ + (1 - d_n)(θ - θ̄) with d_n = min(d, (1+n)/(10+n)); a swap and its inverse restore both sides."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = WeightAverage(net, decay=0.5)
    expected = {k: v.clone() for k, v in net.state_dict().items() if v.is_floating_point()}
    assert "1.running_mean" in expected and "1.num_batches_tracked" not in ema.names
    for n in range(12):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(8, 3))  # moves the batch-norm statistics
        d = min(0.5, (1 + n) / (10 + n))
        for k, v in net.state_dict().items():
            if k in expected:
                expected[k] = d * expected[k] + (1 - d) * v
        ema.update()
    assert d == 0.5  # the warm-up has given way to the decay
    for k, v in ema.average_tensors().items():
        torch.testing.assert_close(v, expected[k])
    online = {k: v.clone() for k, v in net.state_dict().items()}
    with ema.averaged():
        for k, v in expected.items():
            torch.testing.assert_close(net.state_dict()[k], v)
        with ema.online():
            assert all(torch.equal(net.state_dict()[k], v) for k, v in online.items())
        with pytest.raises(RuntimeError, match="swapped"):
            ema.update()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in online.items())
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        WeightAverage(net, decay=1.0)


def test_a_run_with_ema_scores_and_saves_the_average(tmp_path):
    """With ``train.ema_decay`` the run's model, test/* and val/* are the average; *_online/* the trained weights."""
    run_dir = regae.train(toy(tmp_path))
    last = read_folder(run_dir / "checkpoints" / "step-00000030")
    tensors, meta = last
    assert meta["ema_updates"] == 30
    saved = load_file(str(run_dir / "model" / "model.safetensors"))
    averaged = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    online = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    assert averaged and set(averaged) <= set(saved)
    assert all(torch.equal(saved[k], v) for k, v in averaged.items())
    assert any(not torch.equal(online[k], v) for k, v in averaged.items())
    test = json.loads((run_dir / "eval.json").read_text())
    assert {"test/energy", "test_online/energy"} <= set(test)
    assert test["test/energy"] != test["test_online/energy"]
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/energy", "val_online/energy"} <= set(header)
    # `regae eval` scores the saved model: the average
    assert regae.evaluate(run_dir)["test/energy"] == pytest.approx(test["test/energy"], rel=1e-5)
    # an unfinished run's model is its latest checkpoint's average
    (run_dir / "model" / "config.json").unlink()
    model = load_run_model(run_dir)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in averaged.items())


def test_a_resumed_ema_run_ends_with_the_same_average(tmp_path):
    """Stopped at step 15 and resumed to 30, a run ends with the average of an uninterrupted 30-step run."""
    reference = regae.train(toy(tmp_path, "reference"))
    stopped = regae.train(toy(tmp_path, "stopped", max_steps=15))
    regae.resume(stopped, ["max_steps=30"])
    a = load_file(str(reference / "model" / "model.safetensors"))
    b = load_file(str(stopped / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert read_folder(stopped / "checkpoints" / "step-00000030")[1]["ema_updates"] == 30


def test_ema_switched_on_for_a_resumed_run_starts_at_the_resumed_weights(tmp_path):
    """A checkpoint without an average, resumed with ``ema_decay``: a warning, and the average starts there."""
    plain = regae.train(toy(tmp_path, "plain", ema_decay=None, max_steps=10))
    cfg = toy(tmp_path, "plain", max_steps=10)  # same run, now asking for an average; nothing left to train
    splits = load_data(cfg.data)
    trainer = Trainer(cfg, plain)
    with pytest.warns(UserWarning, match="no weight average"):
        model = trainer.fit(build_model(cfg, splits), splits, resume_from=plain / "checkpoints" / "step-00000010")
    weights = read_folder(plain / "checkpoints" / "step-00000010")[0]
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[f"model.{k}"]), k


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "often"])
def test_ema_decay_outside_the_open_unit_interval_is_refused(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"train.ema_decay must (lie in \(0, 1\)|be a number)"):
        toy(tmp_path, ema_decay=bad)
