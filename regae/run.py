"""Runs: train / resume / evaluate / sample, each leaving a self-describing folder ``runs/<name>/``.

A run folder holds ``config.yaml`` (the resolved experiment), ``run.json`` (status, timing, hardware),
``metrics.csv``, ``checkpoints/``, ``model/`` (``save_pretrained`` form), ``eval.json``, ``figures/``
and ``report.md``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from regae.config import ExperimentConfig, build_experiment, load_experiment, load_yaml, migrate, to_dict
from regae.data import DataSplits, load_data
from regae.engine.checkpoint import atomic_write_text
from regae.engine.trainer import Trainer, make_fabric
from regae.errors import CheckpointError, ConfigError
from regae.models.base import Autoencoder, complete_config
from regae.nn import count_parameters
from regae.registry import MODELS


def build_model(cfg: ExperimentConfig, splits: DataSplits) -> Autoencoder:
    """The model of ``cfg`` with its input shape and likelihood taken from the data."""
    complete_config(cfg.model, splits)
    return MODELS.get(cfg.model_type)(cfg.model)


def _setup_torch(cfg: ExperimentConfig) -> None:
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(t.seed)  # the same initial weights on every process (DDP also broadcasts rank 0's)


def _seed_noise(cfg: ExperimentConfig, rank: int) -> None:
    """After the model is built: each process draws its own noise (corruption, reparameterization)."""
    torch.manual_seed(cfg.train.seed + 1_000_003 * rank)


def _cpu_name() -> str:
    """The CPU's model name: floating-point results (and so a seeded run's trajectory) depend on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _hardware(fabric) -> dict[str, Any]:
    dev = fabric.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return {
        "device": str(dev),
        "device_name": name,
        "processes": fabric.world_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def schedule_shortened(info: dict) -> bool:
    """Whether ``train.fit_schedule`` compressed a run's schedule: run.json's ``fitted_steps`` below its
    ``planned_steps`` (a run whose planned steps all fit in ``max_minutes`` ran its schedule as written)."""
    return bool(info.get("fitted_steps")) and info["fitted_steps"] < info.get("planned_steps", float("inf"))


def _write_run_json(run_dir: Path, **fields: Any) -> None:
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.update(fields)
    atomic_write_text(path, json.dumps(info, indent=1))


def _read_run_raw(run_dir: Path) -> dict:
    """A run folder's saved config mapping, brought up to this regae's config format."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a regae run folder (no config.yaml)")
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a config mapping")
    return migrate(raw, str(path))  # saved before versioning: version 1


def read_run_config(run_dir: Path, raw: dict | None = None) -> ExperimentConfig:
    """The run's experiment config (from ``raw``, its already-read mapping, if given)."""
    raw = _read_run_raw(run_dir) if raw is None else raw
    return build_experiment(raw, raw.get("experiment", Path(run_dir).name))


def train(cfg: ExperimentConfig, *, command: str | None = None) -> Path:
    """Train the experiment ``cfg`` in ``<out_dir>/<name>/`` and write its report; returns the run folder."""
    t = cfg.train
    run_dir = Path(t.out_dir) / (t.name or cfg.experiment)
    if run_dir.exists() and any(run_dir.iterdir()) and not t.overwrite:
        raise ConfigError(
            f"run folder {run_dir} already exists. Continue it with `regae resume {run_dir}`, "
            f"choose another name=..., or pass overwrite=true to replace it"
        )
    fabric = make_fabric(cfg)
    fabric.launch()
    _setup_torch(cfg)
    splits = load_data(cfg.data)  # fails here, before anything is written, on bad data
    model = build_model(cfg, splits)
    _seed_noise(cfg, fabric.global_rank)
    if fabric.is_global_zero:
        if run_dir.exists() and t.overwrite:
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        _write_run_json(
            run_dir,
            status="running",
            experiment=cfg.experiment,
            model=cfg.model_type,
            data=cfg.data.name,
            started=time.strftime("%Y-%m-%d %H:%M:%S"),
            command=command or " ".join(sys.argv),
            hardware=_hardware(fabric),
        )
    fabric.barrier()
    return _fit_and_finish(cfg, run_dir, fabric, model, splits, resume_from=None)


# What `resume` may change: how long and where a run trains, never what it trains.
RESUME_KEYS = (
    "epochs",
    "max_steps",
    "max_minutes",
    "progress",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "checkpoint_minutes",
    "keep_last",
    "num_threads",
    "accelerator",
    "devices",
    "strategy",
)


def resume(run_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """Continue a killed or finished run from its latest checkpoint (``overrides`` may extend it)."""
    run_dir = Path(run_dir)
    raw = _read_run_raw(run_dir)  # read (and migrated, with its warning) once
    cfg = read_run_config(run_dir, raw)
    if overrides:
        from regae.config import apply_overrides

        for o in overrides:
            if o.split("=", 1)[0].removeprefix("train.") not in RESUME_KEYS:
                raise ConfigError(f"resume can only change how long and where a run trains, not {o!r}")
        cfg = build_experiment(apply_overrides(raw, overrides), cfg.experiment)
    fabric = make_fabric(cfg)
    fabric.launch()
    _setup_torch(cfg)
    splits = load_data(cfg.data)
    model = build_model(cfg, splits)
    _seed_noise(cfg, fabric.global_rank)  # as in train(), for a run killed before its first checkpoint
    from regae.engine.checkpoint import CheckpointManager

    latest = CheckpointManager(run_dir / "checkpoints").latest()
    if fabric.is_global_zero:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        _write_run_json(run_dir, status="running", resumed_from=str(latest) if latest else None)
    return _fit_and_finish(cfg, run_dir, fabric, model, splits, resume_from=latest)


def _fit_and_finish(cfg, run_dir: Path, fabric, model, splits, resume_from) -> Path:
    trainer = Trainer(cfg, run_dir, fabric)
    try:
        model = trainer.fit(model, splits, resume_from=resume_from)
    except BaseException as e:
        if fabric.is_global_zero:
            _write_run_json(run_dir, status="failed", error=f"{type(e).__name__}: {e}", step=trainer.step)
        raise
    if fabric.is_global_zero:
        model.save_pretrained(run_dir / "model")
        test = trainer.evaluate(splits.test.to(fabric.device) if splits.test is not None else None, "test")
        atomic_write_text(run_dir / "eval.json", json.dumps(test, indent=1))
        samples_per_s = trainer.steps_run * cfg.train.batch_size / max(trainer.elapsed, 1e-9)
        _write_run_json(
            run_dir,
            status="finished",
            finished=time.strftime("%Y-%m-%d %H:%M:%S"),
            steps=trainer.step,
            epochs_done=round(trainer.epoch + trainer.batch_in_epoch / trainer.steps_per_epoch, 2),
            train_seconds=round(trainer.train_seconds, 2),
            samples_per_s=round(samples_per_s, 1),
            parameters=count_parameters(model),
            test=test,
            # train.fit_schedule: the schedule ran over these steps instead of the planned ones
            **(
                {"planned_steps": trainer.planned_steps, "fitted_steps": trainer.fitted_steps}
                if trainer.fitted_steps
                else {}
            ),
        )
        write_report(run_dir, model=model, splits=splits)
    fabric.barrier()
    return run_dir


# -------------------------------------------------------------------------------------- eval / sample


def load_run_model(run_dir: str | Path, device: str = "cpu") -> Autoencoder:
    """The final model of a run, or its latest checkpoint if the run has not finished."""
    run_dir = Path(run_dir)
    if (run_dir / "model" / "config.json").is_file():
        return Autoencoder.from_pretrained(run_dir / "model", map_location=device)
    from regae.engine.checkpoint import CheckpointManager, read_folder

    latest = CheckpointManager(run_dir / "checkpoints").latest()
    if latest is None:
        raise CheckpointError(f"{run_dir} has neither a final model/ nor a checkpoint to load")
    cfg = read_run_config(run_dir)
    model = MODELS.get(cfg.model_type)(cfg.model)
    tensors, _ = read_folder(latest)
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    state.update({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})  # a weight average is the model
    model.load_state_dict(state)
    return model.to(device).eval()


def evaluate(run_dir: str | Path, split: str = "test") -> dict[str, float]:
    """Metrics of a run's model on a data split, written to ``<run>/eval.json`` (test) or ``eval_<split>.json``."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    model = load_run_model(run_dir)
    splits = load_data(cfg.data)
    data = getattr(splits, split, None)
    if data is None:
        raise ConfigError(f"dataset {cfg.data.name!r} has no {split!r} split")
    model.validate_input(data.x[:1])
    model.attach_data(splits)
    with torch.no_grad():
        metrics = {f"{split}/{k}": v for k, v in model.evaluate(data).items()}
    name = "eval.json" if split == "test" else f"eval_{split}.json"
    atomic_write_text(run_dir / name, json.dumps(metrics, indent=1))
    return metrics


def sample(run_dir: str | Path, n: int = 64, seed: int = 0, out: str | Path | None = None) -> Path:
    """Draw ``n`` samples from a generative run's model into a PNG grid."""
    from regae import viz

    run_dir = Path(run_dir)
    model = load_run_model(run_dir)
    if not model.generative:
        model.sample(n)  # raises the model's own explanation
    torch.manual_seed(seed)
    x = model.sample(n)
    out = Path(out) if out else run_dir / "figures" / f"samples-{n}-seed{seed}.png"
    if len(model.input_shape) == 3:
        return viz.image_grid(x, out, title=f"{n} samples, {model.model_type}")
    return viz.latent_scatter(x, out, title=f"{n} samples, {model.model_type}")


# ---------------------------------------------------------------------------------------------- report


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(run_dir: Path, *, model: Autoencoder, splits: DataSplits) -> Path:
    """Write ``figures/`` and a short ``report.md``: what was trained, final metrics, the figures inline."""
    from regae import viz

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    fig_dir = run_dir / "figures"
    figs: list[tuple[str, Path]] = []
    if (run_dir / "metrics.csv").is_file():
        figs.append(
            (
                "Training curves",
                viz.training_curves(run_dir / "metrics.csv", fig_dir / "curves.png", title=run_dir.name),
            )
        )
    device = next(model.parameters()).device
    held_out = (splits.test or splits.val or splits.train).to(device)
    model.attach_data(splits.to(device))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        figs += model.figures(held_out, fig_dir, name=cfg.model_type)
    sections = model.report_sections(held_out)

    lines = [f"# Run `{run_dir.name}`", ""]
    if cfg.description:
        lines += [cfg.description, ""]
    hw = info.get("hardware", {})
    lines += [
        "| | |",
        "|---|---|",
        f"| experiment | `{cfg.experiment}` |",
        f"| model | `{cfg.model_type}` ({MODELS.help(cfg.model_type)}), {info.get('parameters', 0):,} parameters |",
        f"| data | `{cfg.data.name}`: {len(splits.train):,} train / "
        f"{len(splits.val) if splits.val else 0:,} val / {len(splits.test) if splits.test else 0:,} test, "
        f"input shape {tuple(splits.input_shape)} |",
        f"| training | {info.get('steps', '?')} steps, {info.get('epochs_done', '?')} epochs, "
        f"batch {cfg.train.batch_size}, "
        f"{info.get('train_seconds', '?')} s ({info.get('samples_per_s', '?')} samples/s) |",
        f"| hardware | {hw.get('device', '?')} {hw.get('device_name', '')}, {hw.get('processes', 1)} process(es), "
        f"{hw.get('threads', '?')} threads, torch {hw.get('torch', '?')} |",
        f"| command | `{info.get('command', '')}` |",
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for k, v in (info.get("test") or {}).items():
        lines.append(f"| {k} | {_fmt(v)} |")
    lines += ["", "Energy = per-sample reconstruction negative log-likelihood (nats; constants dropped).", ""]
    lines += sections
    lines += ["## Figures", ""]
    for title, path in figs:
        lines += [f"### {title}", "", f"![{title}]({Path(path).relative_to(run_dir).as_posix()})", ""]
    lines += ["## Configuration", "", "```yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip(), "```", ""]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report


__all__ = ["train", "resume", "evaluate", "sample", "load_run_model", "build_model", "write_report", "load_experiment"]
