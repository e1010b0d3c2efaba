"""A run killed with SIGKILL at an arbitrary step and resumed ends with bit-identical weights (CPU)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

# A DAE (random corruption every step), a per-epoch LR decay, a noise schedule and epoch-end
# evaluations: everything whose state a resume must restore.
EXPERIMENT = {
    "model": {"type": "dae", "hidden": [64, 64], "code_dim": 8, "noise_std": 0.2},
    "data": {"name": "two-moons", "n_samples": 1000},
    "train": {
        "epochs": 1000,
        "max_steps": 1500,
        "batch_size": 50,
        "checkpoint_every": 20,
        "log_every": 10,
        "progress": False,
        "optim": {"name": "adam", "lr": 0.003, "schedule": "step", "step_size": 10, "gamma": 0.5},
        "schedules": {"noise_std": {"start": 0.4, "end": 0.05, "steps": 1000}},
        "num_threads": 1,
    },
}


def _cli(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "regae", *args]


def _run(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _latest_step(run_dir: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*")]
    return max(steps, default=-1)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path: Path) -> None:
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(EXPERIMENT))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    _run(_cli("train", str(cfg_path), "name=reference", f"out_dir={tmp_path}", cwd=tmp_path), tmp_path)
    reference = _weights(tmp_path / "reference")

    killed = tmp_path / "killed"
    cmd = _cli("train", str(cfg_path), "name=killed", f"out_dir={tmp_path}", cwd=tmp_path)
    for kill_after in (120, 700):  # kill, resume, kill the resumed run again, resume again
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while _latest_step(killed) < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the run finished before it could be killed; raise max_steps"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (killed / "model").exists()
        cmd = _cli("resume", str(killed), cwd=tmp_path)
    _run(cmd, tmp_path)

    resumed = _weights(killed)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), f"{name} differs after kill + resume"

    # the metrics file reads as one run: strictly increasing steps, none lost or repeated
    import csv

    steps = [int(r["step"]) for r in csv.DictReader(open(killed / "metrics.csv"))]
    assert steps == sorted(set(steps)) and steps[-1] == 1500
    ref_steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "reference" / "metrics.csv"))]
    assert steps == ref_steps
    # the seconds column goes on from the checkpoint's training time, so it never runs backwards
    seconds = [float(r["seconds"]) for r in csv.DictReader(open(killed / "metrics.csv"))]
    assert len(seconds) == len(steps) and all(b >= a for a, b in itertools.pairwise(seconds))
