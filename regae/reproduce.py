"""``regae reproduce aae``: run the paper's experiments within a time budget and compare with its tables.

Each experiment is a config in ``regae/configs`` with the appendix's hyperparameters. Where the paper's
schedule (e.g. 5000 epochs) does not fit the budget, the run stops at its share of the budget and the
table says how far it got: every number in the report is measured, with the epochs and hardware it took.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from regae.config import load_experiment, load_yaml
from regae.engine.checkpoint import atomic_write_text
from regae.errors import ConfigError


@dataclass(frozen=True)
class Target:
    experiment: str
    what: str
    metric: str  # key in the run's test metrics ("test/parzen" is computed here)
    paper: float | None
    unit: str
    lower_is_better: bool = True


SHORT = "short recipe (Adam, cosine LR, ±2 px shifts of the labeled batch)"
AFFINE = "plus ±25° rotations and ±15 % zooms of the labeled batch"

PAPERS: dict[str, list[Target]] = {
    "aae": [
        Target("aae-semi-100", "semi-supervised MNIST, 100 labels (table 2)", "test/error", 1.90, "%"),
        Target(
            "aae-semi-100-fast",
            f"semi-supervised MNIST, 100 labels: regae's {SHORT}",
            "test/error",
            1.90,
            "%",
        ),
        Target(
            "aae-semi-100-long",
            f"semi-supervised MNIST, 100 labels: regae's {SHORT}, 150 epochs, bf16 autocast",
            "test/error",
            1.90,
            "%",
        ),
        Target(
            "aae-semi-100-affine",
            f"semi-supervised MNIST, 100 labels: regae's {SHORT}, {AFFINE}, 100 epochs, bf16 autocast",
            "test/error",
            1.90,
            "%",
        ),
        Target(
            "aae-semi-100-elastic",
            f"semi-supervised MNIST, 100 labels: regae's {SHORT}, {AFFINE}, elastic distortions of it (α 34 px, "
            "σ 4 px)",
            "test/error",
            1.90,
            "%",
        ),
        Target(
            "aae-semi-100-elastic-long",
            f"semi-supervised MNIST, 100 labels: regae's {SHORT}, {AFFINE}, elastic distortions of it (α 34 px, "
            "σ 4 px), 100 epochs, bf16 autocast",
            "test/error",
            1.90,
            "%",
        ),
        Target("aae-semi-1000", "semi-supervised MNIST, 1000 labels (table 2)", "test/error", 1.60, "%"),
        Target(
            "aae-semi-1000-fast",
            f"semi-supervised MNIST, 1000 labels: regae's {SHORT}",
            "test/error",
            1.60,
            "%",
        ),
        Target(
            "aae-semi-1000-long",
            f"semi-supervised MNIST, 1000 labels: regae's {SHORT}, 90 epochs, bf16 autocast",
            "test/error",
            1.60,
            "%",
        ),
        Target(
            "aae-semi-1000-affine",
            f"semi-supervised MNIST, 1000 labels: regae's {SHORT}, {AFFINE}",
            "test/error",
            1.60,
            "%",
        ),
        Target(
            "aae-semi-1000-elastic",
            f"semi-supervised MNIST, 1000 labels: regae's {SHORT}, {AFFINE}, elastic distortions of it (α 34 "
            "px, σ 4 px)",
            "test/error",
            1.60,
            "%",
        ),
        Target("aae-semi-all", "supervised MNIST, all labels (table 2)", "test/error", 0.85, "%"),
        Target("aae-semi-all-fast", f"supervised MNIST, all labels: regae's {SHORT}", "test/error", 0.85, "%"),
        Target(
            "aae-semi-all-affine",
            f"supervised MNIST, all labels: regae's {SHORT}, {AFFINE}",
            "test/error",
            0.85,
            "%",
        ),
        Target("aae-cluster-16", "unsupervised clustering, 16 clusters (table 3)", "test/error", 9.55, "%"),
        Target("aae-cluster-30", "unsupervised clustering, 30 clusters (table 3)", "test/error", 4.10, "%"),
        Target(
            "aae-cluster-16-fast",
            "unsupervised clustering, 16 clusters (table 3): Adam, cosine LR over 8 epochs",
            "test/error",
            9.55,
            "%",
        ),
        Target(
            "aae-cluster-30-fast",
            "unsupervised clustering, 30 clusters (table 3): Adam, cosine LR over 8 epochs",
            "test/error",
            4.10,
            "%",
        ),
        Target(
            "aae-cluster-16-narrow",
            "unsupervised clustering, 16 clusters (table 3): A.3's recipe, 1000-unit layers",
            "test/error",
            9.55,
            "%",
        ),
        Target(
            "aae-cluster-30-narrow",
            "unsupervised clustering, 30 clusters (table 3): A.3's recipe, 1000-unit layers",
            "test/error",
            4.10,
            "%",
        ),
        # §7 gives no optimizer: these three run the short recipe of aae-semi-100-fast
        Target("aae-dimred-2d-1000", f"2-D embedding, 1000 labels (fig. 11a): {SHORT}", "test/error", 4.20, "%"),
        Target("aae-dimred-2d-100", f"2-D embedding, 100 labels (fig. 11b): {SHORT}", "test/error", 6.08, "%"),
        Target(
            "aae-dimred-2d-100-affine",
            f"2-D embedding, 100 labels (fig. 11b): {SHORT}, {AFFINE}",
            "test/error",
            6.08,
            "%",
        ),
        Target("aae-dimred-10d-100", f"10-D embedding, 100 labels (fig. 11d): {SHORT}", "test/error", 3.90, "%"),
        Target(
            "aae-dimred-10d-100-affine",
            f"10-D embedding, 100 labels (fig. 11d): {SHORT}, {AFFINE}",
            "test/error",
            3.90,
            "%",
        ),
        Target(
            "aae-dimred-10d-100-elastic",
            f"10-D embedding, 100 labels (fig. 11d): {SHORT}, {AFFINE}, elastic distortions of it (α 34 px, σ 4 px)",
            "test/error",
            3.90,
            "%",
        ),
        Target(
            "aae-dimred-2d-unsup-20",
            # 20 clusters for 10 digits: the §6 protocol (each cluster takes the label of its most confident
            # validation image) scores sub-clusters fairly; one-to-one Hungarian matching cannot
            "2-D unsupervised embedding, 20 clusters (fig. 11c; Adam, §6 protocol)",
            "test/error",
            None,
            "%",
        ),
        Target(
            "aae-mog-conditional",
            "10-component 2-D mixture, label-conditioned adversary, 10k labels (fig. 4a-b; % of test codes "
            "outside their label's component)",
            "test/part_error",
            None,
            "%",
        ),
        Target(
            "aae-swissroll-conditional",
            "swiss roll, label-conditioned adversary, 10k labels, the roll narrowed from 10x its width over 10 "
            "epochs (fig. 4c-d; % of test codes outside their label's stretch of the roll)",
            "test/part_error",
            None,
            "%",
        ),
        Target(
            "aae-likelihood",
            "Parzen log-likelihood, 10k samples (table 1)",
            "test/parzen",
            340.0,
            "nats",
            lower_is_better=False,
        ),
        Target(
            "aae-likelihood-ema",
            "Parzen log-likelihood, 10k samples (table 1): A.1's recipe, samples from a moving average of the "
            "weights (EMA 0.999)",
            "test/parzen",
            340.0,
            "nats",
            lower_is_better=False,
        ),
    ]
}


def parse_budget(text: str) -> float:
    """'30m', '2h', '90s' or a number of minutes -> minutes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not m:
        raise ConfigError(f"budget {text!r} must look like 30m, 2h or 90s")
    value, unit = float(m.group(1)), m.group(2) or "m"
    minutes = value * {"s": 1 / 60, "m": 1.0, "h": 60.0}[unit]
    if minutes <= 0:
        raise ConfigError("the budget must be positive")
    return minutes


def select(paper: str, only: list[str] | None) -> list[Target]:
    if paper not in PAPERS:
        raise ConfigError(f"no reproduction for {paper!r}; known: {', '.join(PAPERS)}")
    targets = PAPERS[paper]
    if not only:
        return targets
    chosen = []
    for name in only:
        hits = [t for t in targets if t.experiment in (name, f"{paper}-{name}")]
        if not hits:
            raise ConfigError(
                f"unknown experiment {name!r} for {paper}; choose from "
                f"{', '.join(t.experiment.removeprefix(paper + '-') for t in targets)}"
            )
        chosen += hits
    return chosen


PARZEN_KEYS = {"parzen": "log_likelihood", "parzen_stderr": "stderr", "parzen_sigma": "sigma"}


def parzen_metric(run_dir: Path, n_samples: int = 10_000) -> dict[str, float]:
    """Fit the Parzen window to ``n_samples`` model samples, σ chosen on 1000 validation images (§3).

    A run with a weight average (``train.ema_decay``) is scored on the average, its model; the weights the
    optimizers trained, from its last checkpoint, are scored too, as ``test_online/parzen``."""
    from regae.config import build_experiment
    from regae.data import load_data
    from regae.engine.checkpoint import CheckpointManager, read_folder
    from regae.metrics import parzen_evaluate
    from regae.run import load_run_model, read_run_config

    cfg = read_run_config(run_dir)
    splits = load_data(build_experiment(cfg.to_dict()).data)

    def score(model, prefix: str) -> dict[str, float]:
        torch.manual_seed(0)
        with torch.no_grad():
            samples = torch.cat([model.sample(1000) for _ in range(n_samples // 1000)]).flatten(1)
        res = parzen_evaluate(samples, splits.val.x[:1000].flatten(1), splits.test.x.flatten(1))
        return {f"{prefix}/{k}": res[key] for k, key in PARZEN_KEYS.items()}

    model = load_run_model(run_dir)
    metrics = score(model, "test")
    latest = CheckpointManager(run_dir / "checkpoints").latest()
    tensors = read_folder(latest)[0] if latest is not None else {}
    if any(k.startswith("ema.") for k in tensors):
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        metrics |= score(model, "test_online")
    return metrics


def reproduce(
    paper: str = "aae",
    *,
    budget_minutes: float = 30.0,
    only: list[str] | None = None,
    out_dir: str | Path = "runs/reproduce",
    report_dir: str | Path = "reports",
    overrides: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """Train each selected experiment for its share of the budget; write ``reports/<paper>.md``."""
    from regae.run import train

    targets = select(paper, only)
    share = budget_minutes / len(targets)
    for t in targets:
        cfg = load_experiment(
            t.experiment,
            [
                f"progress={str(progress).lower()}",
                *(overrides or []),
                f"out_dir={out_dir}",
                "overwrite=true",
                f"max_minutes={share * 0.9:.4g}",  # leave time for evaluation
            ],
        )
        short = t.experiment.removeprefix(paper + "-")
        command = f"regae reproduce {paper} --budget {budget_minutes:g}m --only {short}"
        if overrides:
            command += " " + " ".join(overrides)
        run_dir = train(cfg, command=command)
        info = json.loads((run_dir / "run.json").read_text())
        metrics = dict(info.get("test", {}))
        if t.metric == "test/parzen":
            metrics.update(parzen_metric(run_dir))
        info["test"] = metrics
        info["reproduce"] = {"budget_minutes": share, "schedule_epochs": cfg.train.epochs}
        atomic_write_text(run_dir / "run.json", json.dumps(info, indent=1))
    return write_report(paper, collect_rows(paper, Path(out_dir)), Path(report_dir))


def collect_rows(paper: str, out_dir: Path) -> list[tuple[Target, Path, dict]]:
    """Every finished reproduction run of ``paper`` in ``out_dir``, in the paper's order: the report
    covers all experiments run so far, so experiments can be run in separate (or concurrent) calls."""
    rows = []
    for t in PAPERS[paper]:
        path = out_dir / t.experiment / "run.json"
        if not path.is_file():
            continue
        info = json.loads(path.read_text())
        if "reproduce" in info and "test" in info:
            # `regae eval <run>` re-scores the final model into eval.json: it adds metrics the run predates
            evaluated = out_dir / t.experiment / "eval.json"
            if evaluated.is_file():
                info["test"] = {**json.loads(evaluated.read_text()), **info["test"]}
            rows.append((t, out_dir / t.experiment, info))
    return rows


def _precision(run_dir: Path) -> str:
    """ ", bf16-mixed" for a run that did not train in float32 (from its config.yaml), else ""."""
    path = run_dir / "config.yaml"
    train = load_yaml(path).get("train", {}) if path.is_file() else {}
    precision = str(train.get("precision", "32-true"))
    return "" if precision in ("32-true", "32") else f", {precision}"


def write_report(paper: str, rows: list[tuple[Target, Path, dict]], report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Reproducing the {paper.upper()} paper",
        "",
        "Every figure below was measured by `regae reproduce` (the command of each row is in its run folder's "
        "`run.json`). The paper's schedules are far longer than our budgets, so the *epochs* column says how "
        "much of the paper's schedule each run completed, and *budget* what it was given on which hardware.",
        "",
        "| experiment | paper | ours | epochs done (of the schedule) | training time (budget) | hardware | run |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, run_dir, info in rows:
        ours = info["test"].get(t.metric)
        paper_v = "—" if t.paper is None else f"{t.paper:g} {t.unit}"
        ours_v = "n/a" if ours is None else f"{ours:.2f} {t.unit}"
        if t.metric == "test/parzen" and ours is not None:
            ours_v += f" ± {info['test'].get('test/parzen_stderr', float('nan')):.1f}"
        hw = info.get("hardware", {})
        rep = info["reproduce"]
        lines.append(
            f"| {t.what} | {paper_v} | {ours_v} | {info.get('epochs_done', 0)} of {rep.get('schedule_epochs', '?')} "
            f"({info.get('steps', 0)} steps) | {info.get('train_seconds', 0.0) / 60:.1f} min "
            f"({rep.get('budget_minutes', 0):.0f} min) | {hw.get('device', '?')}, {hw.get('threads', '?')} "
            f"thread(s){_precision(run_dir)}, torch {hw.get('torch', '?')} | `{run_dir}` |"
        )
    lines += ["", "## Figures", ""]
    for t, run_dir, _ in rows:
        figs = sorted((run_dir / "figures").glob("*.png"))
        if figs:  # copied next to the report, so it stands alone (runs/ is not kept in the repository)
            dest = report_dir / paper / t.experiment
            dest.mkdir(parents=True, exist_ok=True)
            lines += [f"### {t.what}", ""]
            for f in figs:
                shutil.copyfile(f, dest / f.name)
                lines.append(f"![{f.stem}]({paper}/{t.experiment}/{f.name})")
            lines.append("")
    report = report_dir / f"{paper}.md"
    atomic_write_text(report, "\n".join(lines))
    return report
