"""Training-step throughput of regae's engine against a minimal plain-PyTorch loop, in one process.

The workload is the thesis' denoising autoencoder on MNIST: MLP encoder 784-1000-1000-32, mirrored
decoder, ReLU, additive Gaussian noise (std 0.3), Bernoulli likelihood (BCE with logits summed over the
pixels, averaged over the batch), Adam lr 1e-3, batch 100.

- ``regae``: ``Trainer.fit`` with ``max_steps=N``: the real loop, i.e. batching by index from device tensors,
  schedules, the phase loop through the Fabric-wrapped module, device-side loss accumulation and
  non-finite tracking, a metrics log every 50 steps.
- ``plain``: the same architecture (a copy of the same model object, so identical initial weights) trained by a
  hand-written loop that calls ``encoder``/``decoder`` and the loss itself, with ``torch.optim.Adam`` built
  with the flags regae's ``build_optimizer`` picks (fused on CPU/CUDA), ``zero_grad(set_to_none=True)``,
  random-permutation batching by index, and no host sync per step.
- ``plain-default``: the same loop with ``torch.optim.Adam``'s default implementation (for reference only).

The sides alternate for ``--rounds`` rounds of ``--steps`` steps (plain, regae, plain-default, then regae, plain,
plain-default, ...), so slow drifts of a shared machine hit all of them alike; the medians over rounds are compared:

    overhead = median regae step time / median plain step time - 1

and the script prints PASS when it is at most 5 % (exit code 1 on FAIL only with ``--strict``).

Run: ``python benchmarks/engine_step.py [--steps 300] [--rounds 5] [--threads 2] [--json out.json]``
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from regae.config import build_experiment
from regae.data import DataConfig, load_data
from regae.engine import Trainer
from regae.engine.trainer import _fused_ok
from regae.run import build_model

THRESHOLD = 0.05  # the largest engine overhead that passes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="timed training steps per side and round (default 300)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are taken over them (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--batch-size", type=int, default=100, help="batch size (default 100)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps per side before the rounds (default 20)")
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="run the regae side under torch.use_deterministic_algorithms(True) as `regae train` does with\n"
        "train.deterministic=true (its default); the plain sides run without it. Off by default: Trainer.fit\n"
        "itself does not set it, so the default compares the engine loop alone",
    )
    p.add_argument("--strict", action="store_true", help="exit with status 1 when the overhead exceeds 5 %%")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)
    for name in ("steps", "rounds", "threads", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def experiment_config(args: argparse.Namespace, steps: int):
    """The DAE-on-MNIST experiment, with a loop that runs exactly ``steps`` steps and writes nothing mid-run."""
    return build_experiment(
        {
            "model": {"type": "dae", "hidden": [1000, 1000], "code_dim": 32, "noise_std": 0.3},
            "data": {"name": "mnist"},
            "train": {
                "batch_size": args.batch_size,
                "epochs": 1_000_000,  # max_steps ends the run, never the epoch count
                "max_steps": max(steps, 1),
                "optim": {"name": "adam", "lr": 1e-3},
                "progress": False,
                "log_every": 50,
                "eval_every": 10**9,  # no validation pass in the timed window (None would evaluate each epoch)
                "checkpoint_every": None,  # only the final checkpoint, written after the timer stops
                "best_metric": None,
                "num_threads": args.threads,
                "accelerator": "auto",
                "seed": 0,
            },
        },
        experiment="bench-engine-step",
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """A ``perf_counter`` stamp after every optimizer step, for per-step times (a cross-check only).

    The regae side gets it as its phase's ``after_step`` hook, which the engine calls right after
    ``opt.step()``; the interval between two stamps is one whole iteration of the engine's loop (bookkeeping,
    logging, batching, the step). The plain loop stamps at the same point. On CUDA the stamps time the host
    side only (kernels run asynchronously), so there the round times are the figures to read.
    """

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self) -> None:
        self.stamps.append(time.perf_counter())

    def intervals(self) -> list[float]:
        s, self.stamps = self.stamps, []
        return [b - a for a, b in zip(s, s[1:])]


def install_clock(model, clock: StepClock) -> None:
    """Make ``model.phases()`` return its phases with ``after_step=clock`` (the losses are unchanged)."""
    phases = model.phases

    def phases_with_clock():
        return model._register_phases([dataclasses.replace(p, after_step=clock) for p in phases()])

    model.phases = phases_with_clock


# ---------------------------------------------------------------------------------------------- regae


def time_regae(cfg, model, splits, run_dir: Path) -> tuple[float, int, float]:
    """(loop seconds, steps, whole fit seconds) of one ``Trainer.fit`` with ``cfg.train.max_steps`` steps.

    Timing choice: ``Trainer.fit`` sets ``elapsed`` from a ``perf_counter`` started after its setup
    (device transfer, optimizers, Fabric wrapping, logger) and stopped after the last step's log and the
    final finite check (a host sync), before the final checkpoint is written. That is exactly the step loop
    with everything the engine does per step, and one run per round suffices; the alternative (fit W and
    W+N steps and subtract) needs two runs per sample and adds the noise of two setups. Each round uses a
    new Trainer (fresh Adam state, as the plain loop does), so both sides pay one first-step state
    initialisation per round.
    """
    trainer = Trainer(cfg, run_dir)
    t0 = time.perf_counter()
    trainer.fit(model, splits)
    wall = time.perf_counter() - t0
    return trainer.elapsed, trainer.steps_run, wall


# ---------------------------------------------------------------------------------------------- plain


def time_plain(
    model, x_all: torch.Tensor, steps: int, batch_size: int, noise_std: float, adam_kwargs: dict, clock: StepClock
) -> float:
    """Seconds of ``steps`` steps of a hand-written denoising-AE loop (fresh Adam, new permutation each epoch)."""
    device = x_all.device
    encoder, decoder = model.encoder, model.decoder
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **adam_kwargs)
    model.train()
    n = x_all.shape[0]
    per_epoch = n // batch_size
    perm = None
    sync(device)
    t0 = time.perf_counter()
    for s in range(steps):
        i = s % per_epoch
        if i == 0:
            perm = torch.randperm(n, device=device)
        x = x_all[perm[i * batch_size : (i + 1) * batch_size]]
        logits = decoder(encoder(x + noise_std * torch.randn_like(x)))
        loss = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clock()
    sync(device)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------- main


def peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning_fabric")
    torch.set_num_threads(args.threads)

    cfg = experiment_config(args, args.steps)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(cfg.train.seed)
    splits = load_data(DataConfig(name="mnist"))
    regae_model = build_model(cfg, splits)
    plain_model = copy.deepcopy(regae_model)  # identical architecture and initial weights, trained separately
    clock = StepClock()
    install_clock(regae_model, clock)
    rss_loaded = peak_rss_mib()  # ru_maxrss only grows: what the process needed before the first step
    warm_cfg = experiment_config(args, args.warmup)

    with tempfile.TemporaryDirectory(prefix="regae-bench-") as tmp:
        # the regae Trainer moves the data to its device; the plain loop uses the same device
        device = Trainer(cfg, Path(tmp) / "probe").fabric.device
        plain_model.to(device)
        x_all = splits.train.x.to(device)
        params = list(plain_model.parameters())
        fused = {"fused": True} if _fused_ok(params) else {"foreach": True}  # what build_optimizer picks
        sides = {"plain": fused, "regae": None, "plain-default": {}}
        noise_std = cfg.model.noise_std

        if args.warmup:  # allocator, thread pool and kernel caches; not measured
            time_plain(plain_model, x_all, args.warmup, args.batch_size, noise_std, fused, clock)
            time_plain(plain_model, x_all, args.warmup, args.batch_size, noise_std, {}, clock)
            torch.use_deterministic_algorithms(args.deterministic, warn_only=True)
            time_regae(warm_cfg, regae_model, splits, Path(tmp) / "warmup")
            clock.intervals()

        step_s: dict[str, list[float]] = {k: [] for k in sides}  # per round: loop seconds / steps
        intervals: dict[str, list[float]] = {k: [] for k in sides}  # every single step, all rounds
        fit_wall: list[float] = []
        for r in range(args.rounds):
            # plain and regae alternate, and swap places every round (plain, regae, plain-default, regae, plain,
            # plain-default, ...), so neither always runs first after the slower reference loop
            order = ["plain", "regae"] if r % 2 == 0 else ["regae", "plain"]
            for side in [*order, "plain-default"]:
                kwargs = sides[side]
                # process-wide: on only while the regae side runs, and only with --deterministic
                torch.use_deterministic_algorithms(args.deterministic and side == "regae", warn_only=True)
                if side == "regae":
                    elapsed, steps, wall = time_regae(cfg, regae_model, splits, Path(tmp) / f"round-{r}")
                    if steps != args.steps:
                        raise RuntimeError(f"Trainer ran {steps} steps, expected {args.steps}")
                    fit_wall.append(wall)
                else:
                    elapsed = time_plain(plain_model, x_all, args.steps, args.batch_size, noise_std, kwargs, clock)
                step_s[side].append(elapsed / args.steps)
                intervals[side] += clock.intervals()
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(f"{k} {args.batch_size / v[-1]:,.0f} samples/s" for k, v in step_s.items()),
                flush=True,
            )

    torch.use_deterministic_algorithms(False)
    med = {k: statistics.median(v) for k, v in step_s.items()}
    overhead = med["regae"] / med["plain"] - 1
    # cross-checks (information only): the median of the per-round paired ratios, less sensitive to slow drifts,
    # and the ratio of the median single-step times, insensitive to bursts of other work that hit a few steps
    # (it leaves out most of the cost of the log every 50 steps, which the round times include)
    paired = statistics.median(g / p - 1 for g, p in zip(step_s["regae"], step_s["plain"]))
    p50 = {k: statistics.median(v) if v else float("nan") for k, v in intervals.items()}
    per_step = p50["regae"] / p50["plain"] - 1
    # round-to-round noise of each side: robust coefficient of variation (1.4826 * MAD / median)
    noise = {k: 1.4826 * statistics.median(abs(t - med[k]) for t in v) / med[k] for k, v in step_s.items()}
    rss = peak_rss_mib()
    adam_flags = ", ".join(f"{k}={v}" for k, v in fused.items())
    rows = [
        ("plain", f"hand-written loop, Adam({adam_flags})"),
        ("regae", "Trainer.fit (engine)"),
        ("plain-default", "hand-written loop, Adam() defaults"),
    ]
    print()
    print(
        f"DAE 784-1000-1000-32 on MNIST, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, "
        f"{args.threads} threads, device {device}, torch {torch.__version__}"
        + (", regae side deterministic" if args.deterministic else "")
    )
    print(f"{'side':<14} {'median ms/step':>15} {'samples/s':>11} {'min..max samples/s':>20} {'step p50 ms':>12}  what")
    for side, what in rows:
        v = step_s[side]
        lo, hi = args.batch_size / max(v), args.batch_size / min(v)
        rate, ms, p50_ms = args.batch_size / med[side], med[side] * 1e3, p50[side] * 1e3
        print(f"{side:<14} {ms:>15.2f} {rate:>11,.0f} {lo:>9,.0f}..{hi:<9,.0f} {p50_ms:>12.2f}  {what}")
    ratio = med["plain"] / med["regae"]
    print(f"regae/plain throughput ratio: {ratio:.3f}")
    print(f"engine overhead (median regae step / median plain step - 1): {overhead * 100:+.2f} %")
    print(f"  cross-check, median of the per-round paired ratios - 1: {paired * 100:+.2f} %")
    print(f"  cross-check, median single-step time regae / plain - 1:  {per_step * 100:+.2f} %")
    print(
        "round-to-round noise (1.4826 MAD / median): "
        + ", ".join(f"{k} {v * 100:.1f} %" for k, v in noise.items())
        + (
            ""
            if max(noise["plain"], noise["regae"]) <= THRESHOLD
            else "  <- above the 5 % being tested: the machine is busy, re-run with more --rounds"
        )
    )
    print(f"peak RSS of the process: {rss:,.0f} MiB (after loading the data, before any step: {rss_loaded:,.0f} MiB)")
    passed = overhead <= THRESHOLD
    print("PASS" if passed else "FAIL")

    if args.json is not None:
        figures = {
            "benchmark": "engine_step",
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "threads": args.threads,
            "device": str(device),
            "batch_size": args.batch_size,
            "steps": args.steps,
            "rounds": args.rounds,
            "adam_flags_regae": fused,
            "step_seconds": step_s,
            "median_step_seconds": med,
            "samples_per_s": {k: args.batch_size / v for k, v in med.items()},
            "regae_fit_wall_seconds": fit_wall,
            "ratio_regae_over_plain": ratio,
            "overhead": overhead,
            "overhead_paired_median": paired,
            "overhead_single_step_median": per_step,
            "single_step_median_seconds": p50,
            "noise_robust_cv": noise,
            "deterministic_regae_side": args.deterministic,
            "threshold": THRESHOLD,
            "peak_rss_mib": rss,
            "peak_rss_mib_after_data_load": rss_loaded,
            "passed": passed,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
