"""Two CPU processes under DDP (gloo, launched by Fabric) equal one process on the concatenated batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

EXPERIMENT = {
    # no randomness in the loss (plain AE), so both set-ups see exactly the same gradients
    "model": {"type": "ae", "hidden": [32, 32], "code_dim": 4},
    "data": {"name": "two-moons", "n_samples": 1000},
    "train": {
        "max_steps": 30,
        "epochs": 100,
        "batch_size": 100,
        "progress": False,
        "accelerator": "cpu",
        "best_metric": None,
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    },
}


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(EXPERIMENT))
    for name, extra in (("one", []), ("two", ["devices=2", "strategy=ddp"])):
        proc = subprocess.run(
            [sys.executable, "-m", "regae", "train", str(cfg_path), f"name={name}", f"out_dir={tmp_path}", *extra],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    one = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    for k in one:
        assert not torch.equal(one[k], torch.zeros_like(one[k]))
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=f"{k} differs between 1 and 2 processes")
    hw = yaml.safe_load((tmp_path / "two" / "run.json").read_text())["hardware"]
    assert hw["processes"] == 2


def _train_ddp(cfg_path: Path, name: str, args: list[str]) -> None:
    """``regae train`` of ``cfg_path`` with two DDP processes into ``cfg_path.parent / name``."""
    out = cfg_path.parent
    proc = subprocess.run(
        [sys.executable, "-m", "regae", "train", str(cfg_path), f"name={name}", f"out_dir={out}", "devices=2"]
        + ["strategy=ddp", *args],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_time_limits_under_ddp_follow_rank_zero_and_stop_every_process_together(tmp_path: Path) -> None:
    """max_minutes and checkpoint_minutes read the clock: under DDP rank 0's decides (every log_every steps
    for max_minutes), so both processes save and stop at the same step instead of one waiting forever."""
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(EXPERIMENT))
    _train_ddp(cfg_path, "timed", ["max_minutes=1e-6", "checkpoint_minutes=1e-6", "log_every=12"])
    info = yaml.safe_load((tmp_path / "timed" / "run.json").read_text())
    assert info["steps"] == 12  # the first log_every boundary after the deadline
    per_epoch = int(info["steps"] / info["epochs_done"])
    saved = sorted(p.name for p in (tmp_path / "timed" / "checkpoints").glob("step-*"))
    assert saved == [f"step-{per_epoch:08d}", "step-00000012"]  # an epoch's end, then the stop


@pytest.mark.slow
def test_fit_schedule_under_ddp_fits_one_length_for_every_process(tmp_path: Path) -> None:
    """train.fit_schedule under DDP: rank 0's timing decides the fitted length for both processes (each timing
    its own steps would give two lengths, and the longer process would wait forever for the other)."""
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(EXPERIMENT))
    args = ["max_minutes=0.03", "fit_schedule=true", "max_steps=null", "epochs=5000", "log_every=5"]
    _train_ddp(cfg_path, "fitted", [*args, "checkpoint_minutes=null"])
    info = yaml.safe_load((tmp_path / "fitted" / "run.json").read_text())
    assert info["planned_steps"] == 50_000 and 0 < info["fitted_steps"] < 50_000
    assert info["steps"] <= info["fitted_steps"]
