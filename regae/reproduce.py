"""``regae reproduce aae``: run the paper's experiments within a time budget and compare with its tables.

Each experiment is a config in ``regae/configs`` with the appendix's hyperparameters. Where the paper's
schedule (e.g. 5000 epochs) does not fit the budget, the run stops at its share of the budget and the
table says how far it got: every number in the report is measured, with the epochs and hardware it took.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from regae.config import ExperimentConfig, load_experiment, load_yaml
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
WARP = "the encoder's input warped (±15° rotations, ±10 % zooms; the decoder reconstructs the clean image)"
CONSISTENCY = "beyond the paper: q(y|x) kept under a second warp of each image (IMSAT's self-augmented training, λ 0.3)"

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
        Target(
            "aae-semi-100-elastic-lr4x",
            f"semi-supervised MNIST, 100 labels: regae's {SHORT}, {AFFINE}, elastic distortions of it (α 34 px, "
            "σ 4 px), the semi-supervised phase at 4x the learning rate (A.2.1: 10x)",
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
        Target(
            "aae-semi-all-fast-lr4x",
            f"supervised MNIST, all labels: regae's {SHORT}, the semi-supervised phase at 4x the learning rate "
            "(A.2.1: 10x)",
            "test/error",
            0.85,
            "%",
        ),
        Target(
            "aae-semi-all-lr4x-long",
            f"supervised MNIST, all labels: regae's {SHORT}, the semi-supervised phase at 4x the learning rate "
            "(A.2.1: 10x), 50 epochs",
            "test/error",
            0.85,
            "%",
        ),
        Target(
            "aae-semi-all-elastic-lr4x",
            f"supervised MNIST, all labels: regae's {SHORT}, {AFFINE}, elastic distortions of it (α 34 px, σ 4 px), "
            "the semi-supervised phase at 4x the learning rate (A.2.1: 10x), 50 epochs",
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
        Target(
            "aae-cluster-16-warp",
            f"unsupervised clustering, 16 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}",
            "test/error",
            9.55,
            "%",
        ),
        Target(
            "aae-cluster-30-warp",
            f"unsupervised clustering, 30 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}",
            "test/error",
            4.10,
            "%",
        ),
        Target(
            "aae-cluster-30-warp-style2",
            f"unsupervised clustering, 30 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 2-D "
            "style code (A.3: 5-D)",
            "test/error",
            4.10,
            "%",
        ),
        Target(
            "aae-cluster-30-warp-style2-ema",
            f"unsupervised clustering, 30 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 2-D "
            "style code (A.3: 5-D), scored on a moving average of the weights (EMA 0.999)",
            "test/error",
            4.10,
            "%",
        ),
        Target(
            "aae-cluster-30-warp-style2-ema-bf16",
            f"unsupervised clustering, 30 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 2-D "
            "style code (A.3: 5-D), scored on a moving average of the weights (EMA 0.999), bf16 autocast",
            "test/error",
            4.10,
            "%",
        ),
        Target(
            "aae-cluster-16-warp-style4",
            f"unsupervised clustering, 16 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 4-D "
            "style code (A.3: 5-D)",
            "test/error",
            9.55,
            "%",
        ),
        Target(
            "aae-cluster-30-warp-style2-long",
            f"unsupervised clustering, 30 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 2-D "
            "style code (A.3: 5-D), about twice the training time",
            "test/error",
            4.10,
            "%",
        ),
        Target(
            "aae-cluster-16-warp-style4-ema",
            f"unsupervised clustering, 16 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 4-D "
            "style code (A.3: 5-D), scored on a moving average of the weights (EMA 0.999)",
            "test/error",
            9.55,
            "%",
        ),
        Target(
            "aae-cluster-16-warp-style4-ema-bf16",
            f"unsupervised clustering, 16 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 4-D "
            "style code (A.3: 5-D), scored on a moving average of the weights (EMA 0.999), bf16 autocast",
            "test/error",
            9.55,
            "%",
        ),
        Target(
            "aae-cluster-16-warp-style4-long",
            f"unsupervised clustering, 16 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 4-D "
            "style code (A.3: 5-D), about twice the training time",
            "test/error",
            9.55,
            "%",
        ),
        Target(
            "aae-cluster-30-warp-style2-consistency",
            f"unsupervised clustering, 30 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 2-D "
            f"style code (A.3: 5-D), {CONSISTENCY}",
            "test/error",
            4.10,
            "%",
        ),
        Target(
            "aae-cluster-30-warp-style2-consistency-balance",
            f"unsupervised clustering, 30 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 2-D "
            f"style code (A.3: 5-D), {CONSISTENCY}, and the minibatch's cluster usage pulled to uniform (λ 1)",
            "test/error",
            4.10,
            "%",
        ),
        Target(
            "aae-cluster-16-warp-style4-consistency",
            f"unsupervised clustering, 16 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 4-D "
            f"style code (A.3: 5-D), {CONSISTENCY}",
            "test/error",
            9.55,
            "%",
        ),
        Target(
            "aae-cluster-16-warp-style4-consistency-balance",
            f"unsupervised clustering, 16 clusters (table 3): A.3's recipe, 1000-unit layers, {WARP}, a 4-D "
            f"style code (A.3: 5-D), {CONSISTENCY}, and the minibatch's cluster usage pulled to uniform (λ 1)",
            "test/error",
            9.55,
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
            "aae-dimred-10d-100-lr4x",
            f"10-D embedding, 100 labels (fig. 11d): {SHORT}, {AFFINE}, the semi-supervised phase at 4x the "
            "learning rate",
            "test/error",
            3.90,
            "%",
        ),
        Target(
            "aae-dimred-2d-unsup-20",
            # 20 clusters for 10 digits: the §6 protocol (each cluster takes the label of its most confident
            # validation image) scores sub-clusters fairly; one-to-one Hungarian matching cannot. The paper's
            # 13.95 % is in fig. 11c's caption (the two-column caption interleaves (c) with (d) in the text)
            "2-D unsupervised embedding, 20 clusters (fig. 11c; Adam, §6 protocol)",
            "test/error",
            13.95,
            "%",
        ),
        Target(
            "aae-dimred-2d-unsup-20-warp-consistency",
            f"2-D unsupervised embedding, 20 clusters (fig. 11c; Adam, §6 protocol): {WARP}, {CONSISTENCY}",
            "test/error",
            13.95,
            "%",
        ),
        Target(
            "aae-dimred-2d-unsup-20-warp-consistency-balance",
            f"2-D unsupervised embedding, 20 clusters (fig. 11c; Adam, §6 protocol): {WARP}, {CONSISTENCY}, and "
            "the minibatch's cluster usage pulled to uniform (λ 1)",
            "test/error",
            13.95,
            "%",
        ),
        Target(
            "aae-dimred-2d-unsup-20-ema",
            "2-D unsupervised embedding, 20 clusters (fig. 11c; Adam, §6 protocol), scored on a moving average "
            "of the weights (EMA 0.999)",
            "test/error",
            13.95,
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
        Target(
            "aae-likelihood-warp",
            f"Parzen log-likelihood, 10k samples (table 1): A.1's recipe, EMA 0.999, {WARP}",
            "test/parzen",
            340.0,
            "nats",
            lower_is_better=False,
        ),
        Target(
            "aae-likelihood-noise",
            "Parzen log-likelihood, 10k samples (table 1): A.1's recipe, EMA 0.999, Gaussian noise (std 0.5) "
            "on the encoder's input (the decoder reconstructs the clean image)",
            "test/parzen",
            340.0,
            "nats",
            lower_is_better=False,
        ),
        Target(
            "aae-likelihood-noise-decay",
            "Parzen log-likelihood, 10k samples (table 1): A.1's recipe, EMA 0.999, Gaussian noise (std 0.5) "
            "on the encoder's input, the second tenfold decay at epoch 70 (not 500), 85 epochs",
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
    optimizers trained, from its last checkpoint, are scored too, as ``test_online/parzen``.

    ``test/parzen_posterior`` scores, the same way, the decoded codes of ``n_samples`` training images (z
    from the aggregated posterior q(z) instead of the prior): the figure the model's samples would reach if
    adversarial training had made q(z) equal to the prior, so the gap between the two is the prior matching's
    (``benchmarks/parzen_calibration.py`` puts both beside real images and k-means centroids).

    ``test/sample_grey`` is the samples' :func:`~regae.metrics.grey_share` (``test/posterior_grey`` that of
    the decoded q(z), ``test/real_grey`` that of the test digits): the Parzen figure rewards blur, and this
    says how blurred the samples are."""
    from regae.config import build_experiment
    from regae.data import load_data
    from regae.engine.checkpoint import CheckpointManager, read_folder
    from regae.metrics import grey_share, parzen_evaluate
    from regae.run import load_run_model, read_run_config

    cfg = read_run_config(run_dir)
    splits = load_data(build_experiment(cfg.to_dict()).data)

    def score(model, prefix: str) -> dict[str, float]:
        torch.manual_seed(0)
        with torch.no_grad():
            samples = torch.cat([model.sample(1000) for _ in range(n_samples // 1000)]).flatten(1)
        res = parzen_evaluate(samples, splits.val.x[:1000].flatten(1), splits.test.x.flatten(1))
        return {f"{prefix}/{k}": res[key] for k, key in PARZEN_KEYS.items()} | {
            f"{prefix}/sample_grey": grey_share(samples)
        }

    model = load_run_model(run_dir)
    metrics = score(model, "test")
    pick = torch.randperm(len(splits.train.x), generator=torch.Generator().manual_seed(0))[:n_samples]
    with torch.no_grad():
        decoded = torch.cat([model.reconstruct(splits.train.x[idx]) for idx in pick.split(1000)])
    res = parzen_evaluate(decoded.flatten(1), splits.val.x[:1000].flatten(1), splits.test.x.flatten(1))
    metrics["test/parzen_posterior"] = res["log_likelihood"]
    metrics["test/posterior_grey"] = grey_share(decoded)
    metrics["test/real_grey"] = grey_share(splits.test.x)  # the grey share of real digits, for comparison
    latest = CheckpointManager(run_dir / "checkpoints").latest()
    tensors = read_folder(latest)[0] if latest is not None else {}
    if any(k.startswith("ema.") for k in tensors):
        model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        metrics |= score(model, "test_online")
    return metrics


def parse_seeds(text: str) -> list[int]:
    """'0-4', '0,3,5' or '2' -> the seeds to run, in order, without repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise ConfigError(f"seeds {text!r} must look like 0-4, 0,3,5 or 2 (non-negative integers)")
        first = int(m.group(1))
        last = first if m.group(2) is None else int(m.group(2))
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    return seeds


def resumable(run_dir: Path, cfg: ExperimentConfig) -> bool:
    """Whether ``run_dir`` holds an unfinished run of ``cfg`` (same recipe and seeds) with a checkpoint.

    A run killed mid-way (``status: running`` in its run.json) is continued by ``regae reproduce`` rather
    than started over; a failed run (NaN, bad input) or one of another recipe is replaced."""
    from regae.engine.checkpoint import CheckpointManager

    try:
        info = json.loads((run_dir / "run.json").read_text())
        saved = load_yaml(run_dir / "config.yaml")
    except (OSError, ValueError, ConfigError):
        return False
    if info.get("status") != "running" or CheckpointManager(run_dir / "checkpoints").latest() is None:
        return False
    new = cfg.to_dict()
    for key in [k for k, v in new.get("model", {}).items() if v is None]:  # filled in from the data by train()
        new["model"].pop(key)
        saved.get("model", {}).pop(key, None)
    same_seeds = all(
        saved.get(section, {}).get("seed") == new.get(section, {}).get("seed") for section in ("train", "data")
    )
    return same_seeds and recipe_of(saved) == recipe_of(new)


def run_name(experiment: str, seed: int, data_seed: int) -> str:
    """The run folder of one seed: the experiment's name for seed 0 (as before seeds existed), else a suffix."""
    name = experiment if seed == 0 else f"{experiment}-seed{seed}"
    return name if data_seed == seed else f"{name}-data{data_seed}"


def reproduce(
    paper: str = "aae",
    *,
    budget_minutes: float = 30.0,
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    out_dir: str | Path = "runs/reproduce",
    report_dir: str | Path = "reports",
    overrides: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """Train each selected experiment for its share of the budget; write ``reports/<paper>.md``.

    With ``seeds``, each experiment runs once per seed, with ``seed=s data.seed=s``: the training seed and
    the labeled subset change together, as in the paper's ± (over label subsets). The budget is shared
    equally among all runs. Each finished run is added to its experiment's record (see
    :func:`refresh_records`), so the report keeps every row measured before, in this checkout or another.
    """
    from regae.run import RESUME_KEYS, resume, train

    targets = select(paper, only)
    per_seed = [[f"seed={s}", f"data.seed={s}"] for s in seeds] if seeds else [[]]
    runs = len(targets) * len(per_seed)
    share = budget_minutes / runs
    if runs > 1:  # a common surprise: the budget is the whole command's, not each run's
        print(
            f"the budget of {budget_minutes:g} min is shared by {runs} runs: {share:.3g} min each "
            "(one command per experiment and seed, `--only X --seeds S`, gives each run the whole budget)",
            file=sys.stderr,
        )
    for t in targets:
        short = t.experiment.removeprefix(paper + "-")
        for seed_overrides in per_seed:
            user = [*(overrides or []), *seed_overrides]
            cfg = load_experiment(
                t.experiment,
                [
                    f"progress={str(progress).lower()}",
                    *user,
                    f"out_dir={out_dir}",
                    "overwrite=true",
                    f"max_minutes={share * 0.9:.4g}",  # leave time for evaluation
                ],
            )
            cfg.train.name = run_name(t.experiment, cfg.train.seed, cfg.data.seed)
            # the command that repeats this one run: its own share of the budget, its own seed
            command = f"regae reproduce {paper} --budget {share:.4g}m --only {short}"
            if seeds:
                command += f" --seeds {cfg.train.seed}"
            command += "".join(f" {o}" for o in overrides or [])
            run_dir = Path(out_dir) / cfg.train.name
            if resumable(run_dir, cfg):  # killed before it finished (e.g. the session ended): continue it
                print(f"continuing {run_dir} from its latest checkpoint", file=sys.stderr)
                # this call's say on how long and where (max_steps=..., num_threads=...) holds, not the killed one's
                where = [
                    f"{k}={json.dumps(getattr(cfg.train, k))}"
                    for k in RESUME_KEYS
                    if k not in ("epochs", "max_minutes", "progress")
                ]
                run_dir = resume(
                    run_dir, [*where, f"progress={str(progress).lower()}", f"max_minutes={share * 0.9:.4g}"]
                )
            else:
                run_dir = train(cfg, command=command)
            info = json.loads((run_dir / "run.json").read_text())
            info["command"] = command  # a continued run was finished by this call, under its limits
            metrics = dict(info.get("test", {}))
            if t.metric == "test/parzen":
                metrics.update(parzen_metric(run_dir))
            info["test"] = metrics
            info["reproduce"] = {"budget_minutes": share, "schedule_epochs": cfg.train.epochs}
            atomic_write_text(run_dir / "run.json", json.dumps(info, indent=1))
            if warning := budget_cut(info, cfg.train.epochs, cfg.train.max_steps, runs):
                print(f"{run_dir.name}: {warning}", file=sys.stderr)
            refresh_records(paper, Path(out_dir), Path(report_dir))  # a later crash loses no finished row
    return write_report(paper, Path(report_dir))


def budget_cut(info: dict, schedule_epochs: int, max_steps: int | None, runs: int) -> str | None:
    """Why a reproduction run stopped short of its schedule, if its share of the budget stopped it.

    Runs that finished the schedule, stopped at the user's ``max_steps``, or ran a schedule compressed to
    the budget (``fit_schedule``) return None. The row's epochs column says the same; this says it when the
    run ends, with what to change.
    """
    from regae.run import schedule_shortened

    done, steps = float(info.get("epochs_done", 0)), int(info.get("steps", 0))
    if done >= schedule_epochs - 1e-6 or (max_steps and steps >= max_steps) or schedule_shortened(info):
        return None
    share = float(info["reproduce"]["budget_minutes"])
    hint = (
        f"the budget is shared by {runs} runs in this command; one command per experiment and seed or a longer --budget"
        if runs > 1
        else "a longer --budget"
    )
    return (
        f"stopped at {done:g} of {schedule_epochs} epochs when its share of the budget ({share:.3g} min) ran "
        f"out; {hint} lets it go further"
    )


def rescore(
    paper: str = "aae",
    *,
    only: list[str] | None = None,
    out_dir: str | Path = "runs/reproduce",
    report_dir: str | Path = "reports",
) -> Path:
    """Score the finished runs of the selected experiments again with this regae's evaluation, without
    training, and rewrite their rows: after a metric is corrected, the rows take the corrected figures.

    Each run's ``run.json`` keeps the figures it had before as ``test_before_rescore`` (from the first
    re-scoring on) and says when it was re-scored; its row says so too. The Parzen figures are not
    recomputed (they come from samples, not from ``evaluate``).
    """
    from regae.run import evaluate

    out_dir = Path(out_dir)
    for t in select(paper, only):
        for run_dir, _ in finished_runs(t, out_dir):
            print(f"re-scoring {run_dir}", file=sys.stderr)
            metrics = evaluate(run_dir)
            path = run_dir / "run.json"
            info = json.loads(path.read_text())
            info.setdefault("test_before_rescore", info["test"])
            info["test"] = {**info["test"], **metrics}
            info["rescored"] = time.strftime("%Y-%m-%d %H:%M:%S")
            atomic_write_text(path, json.dumps(info, indent=1))
    refresh_records(paper, out_dir, Path(report_dir))
    return write_report(paper, Path(report_dir))


# ------------------------------------------------------------------------------------------ records
#
# `runs/` is not kept in the repository, so the report cannot be rebuilt from run folders alone: each
# experiment's rows live in reports/<paper>/<experiment>/result.json, beside its figures. A record holds the
# runs of one recipe, one per (seed, data seed); the report's row is their mean ± standard deviation.

RECORD = "result.json"
RECORDS_LOCK = ".records.lock"  # held while a command merges its runs into a paper's records
RECORDS_LOCK_TIMEOUT = 600.0  # seconds; an update takes well under one, so a longer wait is a stuck process

# Config keys that say how long, where, or under which name a run trained, not what it trained. Runs of one
# experiment that differ only in these and in their seeds are runs of one recipe, pooled in one row; a run of
# another recipe (other epochs, precision, learning rate, augmentation...) replaces the record's runs.
NOT_RECIPE = {
    "train": (
        "name", "out_dir", "overwrite", "seed", "max_steps", "max_minutes", "progress", "num_threads",
        "log_every", "eval_every", "checkpoint_every", "checkpoint_minutes", "keep_last", "accelerator", "devices",
        "strategy",
    ),
    "data": ("seed", "root", "download", "source"),
}  # fmt: skip


# Config keys added after records were first written, with the value that trains as before their time. A
# run's config lists every key, so without this a new option would make every later run "another recipe"
# than the records' older runs of the very same recipe (and replace them). At these values they are left out.
NEUTRAL = {
    "model": {
        "input_rotation": 0.0,
        "input_scale": 0.0,
        "input_elastic": 0.0,
        "input_elastic_sigma": 4.0,
        "input_stroke": 0.0,
        "cluster_balance": 0.0,
        "cluster_consistency": 0.0,
    },
    "train": {"fit_schedule": False},
}


def recipe_of(config: dict) -> str:
    """A short hash of a run's config without the keys of ``NOT_RECIPE`` (and its prose description), nor
    those of ``NEUTRAL`` at their neutral values."""
    import copy
    import hashlib

    cfg = copy.deepcopy(config)
    cfg.pop("description", None)
    for section, keys in NOT_RECIPE.items():
        for key in keys:
            cfg.get(section, {}).pop(key, None)
    for section, neutral in NEUTRAL.items():
        part = cfg.get(section, {})
        for key, value in neutral.items():
            if key in part and part[key] == value:
                del part[key]
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_entry(run_dir: Path, info: dict, config: dict) -> dict:
    """What a record keeps of one finished run: enough to write its row without the run folder."""
    from regae.run import schedule_shortened

    train, data = config.get("train", {}), config.get("data", {})
    return {
        "run": str(run_dir),
        "seed": int(train.get("seed", 0)),
        "data_seed": int(data.get("seed", 0)),
        "command": info.get("command"),
        "finished": info.get("finished"),
        "test": info["test"],
        "epochs_done": info.get("epochs_done", 0),
        "steps": info.get("steps", 0),
        "train_seconds": info.get("train_seconds", 0.0),
        "hardware": info.get("hardware", {}),
        "precision": str(train.get("precision", "32-true")),
        "budget_minutes": info["reproduce"].get("budget_minutes"),
        "schedule_epochs": info["reproduce"].get("schedule_epochs"),
        # fit_schedule=true: the whole schedule compressed into the budget, over this many steps
        **({"fitted_steps": info["fitted_steps"]} if schedule_shortened(info) else {}),
        # `regae reproduce --rescore`: scored again after a metric was corrected
        **({k: info[k] for k in ("rescored", "test_before_rescore") if k in info}),
    }


def finished_runs(target: Target, out_dir: Path) -> list[tuple[Path, dict]]:
    """The finished reproduction runs of ``target`` in ``out_dir`` (every seed), oldest first."""
    pattern = re.compile(re.escape(target.experiment) + r"(-seed\d+)?(-data\d+)?")
    found = []
    for run_dir in sorted(out_dir.glob(f"{target.experiment}*")) if out_dir.is_dir() else []:
        path = run_dir / "run.json"
        if not pattern.fullmatch(run_dir.name) or not path.is_file():
            continue
        info = json.loads(path.read_text())
        if "reproduce" in info and "test" in info:
            # `regae eval <run>` re-scores the final model into eval.json: it adds metrics the run predates
            evaluated = run_dir / "eval.json"
            if evaluated.is_file():
                info["test"] = {**json.loads(evaluated.read_text()), **info["test"]}
            found.append((run_dir, info))
    return sorted(found, key=lambda item: item[1].get("finished") or "")


def read_record(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record.get("runs"), list):
            raise ValueError("no list of runs")
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"{path} is not a reproduction record ({e}); restore it from git or delete it") from None
    return record


def refresh_records(paper: str, out_dir: Path, report_dir: Path) -> None:
    """Add the finished runs in ``out_dir`` to the records in ``report_dir/<paper>/``.

    A run replaces the record's run of the same (seed, data seed) when it finished later. A run of another
    recipe than the record's, if newer than all of its runs, starts the record afresh (a changed config makes
    the old runs another experiment); an older one is left out. The figures are those of the record's
    lowest seed among the runs found here.

    Several ``regae reproduce`` commands (one per seed, side by side) may finish together: each reads,
    merges and rewrites the same records, so the whole update holds a file lock (an OS lock, released if
    the process dies) and a second command waits for the first instead of losing its run."""
    from filelock import FileLock, Timeout

    lock_path = report_dir / paper / RECORDS_LOCK
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_path, timeout=RECORDS_LOCK_TIMEOUT):
            _refresh_records(paper, out_dir, report_dir)
    except Timeout:
        raise RuntimeError(
            f"another regae reproduce has been writing the records in {lock_path.parent} for over "
            f"{RECORDS_LOCK_TIMEOUT:g} s (lock {lock_path}); the runs are finished: `regae reproduce {paper} "
            "--report-only` adds them once it is done"
        ) from None


def _refresh_records(paper: str, out_dir: Path, report_dir: Path) -> None:
    for t in PAPERS[paper]:
        found = finished_runs(t, out_dir)
        if not found:
            continue
        dest = report_dir / paper / t.experiment
        record = read_record(dest / RECORD) or {"experiment": t.experiment, "recipe": None, "runs": []}
        for run_dir, info in found:
            config = load_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else {}
            entry, recipe = _run_entry(run_dir, info, config), recipe_of(config)
            newest = max((r.get("finished") or "" for r in record["runs"]), default="")
            if recipe != record["recipe"]:
                if (entry["finished"] or "") < newest:
                    continue
                record = {"experiment": t.experiment, "recipe": recipe, "runs": []}
            key = (entry["seed"], entry["data_seed"])
            old = [r for r in record["runs"] if (r["seed"], r["data_seed"]) == key]
            if old and (old[0].get("finished") or "") > (entry["finished"] or ""):
                continue
            record["runs"] = sorted(
                [r for r in record["runs"] if r not in old] + [entry], key=lambda r: (r["seed"], r["data_seed"])
            )
        here = {r["run"] for r in record["runs"]} & {str(d) for d, _ in found}
        for r in record["runs"]:
            if r["run"] in here:  # the lowest seed whose run folder is here
                figs = sorted((Path(r["run"]) / "figures").glob("*.png"))
                if figs:  # copied next to the report, so it stands alone
                    dest.mkdir(parents=True, exist_ok=True)
                    for old_fig in dest.glob("*.png"):
                        old_fig.unlink(missing_ok=True)
                    for f in figs:
                        shutil.copyfile(f, dest / f.name)
                    record["figures_from"] = r["run"]
                break
        atomic_write_text(dest / RECORD, json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def read_records(paper: str, report_dir: Path) -> list[tuple[Target, dict]]:
    """Every experiment of ``paper`` with a record in ``report_dir``, in the paper's order."""
    rows = []
    for t in PAPERS[paper]:
        record = read_record(report_dir / paper / t.experiment / RECORD)
        if record and record["runs"]:
            rows.append((t, record))
    return rows


# ------------------------------------------------------------------------------------------- report


def _span(values: list, fmt: str = "{}") -> str:
    """'3' for equal values, '2.5–3' for a range."""
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def format_row(t: Target, record: dict) -> str:
    """One table row: a single run's figure, or mean ± sample standard deviation over the record's runs."""
    import statistics

    runs = record["runs"]
    values = [r["test"][t.metric] for r in runs if r["test"].get(t.metric) is not None]
    paper_v = "—" if t.paper is None else f"{t.paper:g} {t.unit}"
    if not values:
        ours = "n/a"
    elif len(runs) == 1:
        ours = f"{values[0]:.2f} {t.unit}"
        if t.metric == "test/parzen":
            ours += f" ± {runs[0]['test'].get('test/parzen_stderr', float('nan')):.1f}"
            if "test/parzen_posterior" in runs[0]["test"]:  # what a prior matched exactly would give
                ours += f" (decoded q(z): {runs[0]['test']['test/parzen_posterior']:.2f})"
        if "test/nmi" in runs[0]["test"]:  # clustering: the two other scores beside the §6 protocol's
            test = runs[0]["test"]
            ours += f" (NMI {test['test/nmi']:.3f}, one-to-one Hungarian error {test['test/hungarian_error']:.2f} %"
            if "test/majority_error" in test:  # each cluster labelled by its majority digit
                ours += f", majority-vote error {test['test/majority_error']:.2f} %"
            ours += ")"
    else:
        ours = f"{statistics.fmean(values):.2f} {t.unit} ± {statistics.stdev(values):.2f} (sd of {len(values)} runs"
        ours += f": {', '.join(f'{v:.2f}' for v in values)})" if len(values) <= 8 else ")"
        nmis = [r["test"].get("test/nmi") for r in runs]
        majority = [r["test"].get("test/majority_error") for r in runs]
        if None not in nmis:  # clustering: the steadier scores beside the §6 protocol's, as means
            ours += f"; mean NMI {statistics.fmean(nmis):.3f}"
            if None not in majority:
                ours += f", mean majority-vote error {statistics.fmean(majority):.2f} %"
    greys = [r["test"].get("test/sample_grey") for r in runs]
    if t.metric == "test/parzen" and values and None not in greys:  # how blurred the scored samples are
        real = statistics.fmean(r["test"]["test/real_grey"] for r in runs)
        ours += f"; mid-grey share of the samples' ink {statistics.fmean(greys):.2f} (real digits {real:.2f})"
    schedule = runs[0].get("schedule_epochs", "?")
    epochs = f"{_span([r['epochs_done'] for r in runs])} of {schedule} ({_span([r['steps'] for r in runs])} steps)"
    if any(r.get("fitted_steps") for r in runs):
        epochs += ", the schedule compressed to fit the budget (`fit_schedule`)"
    minutes = statistics.fmean(r["train_seconds"] for r in runs) / 60
    budget = statistics.fmean(r.get("budget_minutes") or 0 for r in runs)
    time = (
        f"{minutes:.1f} min ({budget:.0f} min)"
        if len(runs) == 1
        else f"{minutes:.1f} min per run ({budget:.0f} min each)"
    )
    hw = runs[0].get("hardware", {})
    threads = _span([r.get("hardware", {}).get("threads", "?") for r in runs])
    precisions = sorted({r["precision"] for r in runs if r["precision"] not in ("32-true", "32")})
    precision = "".join(f", {p}" for p in precisions)
    device = hw.get("device", "?")
    names: dict[str, list[str]] = {}  # pooled seeds may have run on different CPUs: name each with its seeds
    for r in runs:
        name = r.get("hardware", {}).get("device_name")
        if name not in (None, "", "x86_64", "aarch64", "arm64"):  # runs before the model name was recorded
            names.setdefault(name, []).append(str(r.get("seed", "?")))
    if len(names) == 1:
        device += f" ({next(iter(names))})"
    elif names:
        device += " (" + "; ".join(f"{n}: seed(s) {', '.join(s)}" for n, s in names.items()) + ")"
    hardware = f"{device}, {threads} thread(s){precision}, torch {hw.get('torch', '?')}"
    seeds = "" if len(runs) == 1 else f" (seeds {', '.join(str(r['seed']) for r in runs)})"
    rescored = sorted({r["rescored"][:10] for r in runs if r.get("rescored")})
    if rescored:  # `regae reproduce --rescore`: the figures are those of a corrected metric
        seeds += f", re-scored {', '.join(rescored)}"
    where = ", ".join(f"`{r['run']}`" for r in runs[:1]) + (f" and {len(runs) - 1} more" if len(runs) > 1 else "")
    return f"| {t.what} | {paper_v} | {ours} | {epochs} | {time} | {hardware} | {where}{seeds} |"


def write_report(paper: str, report_dir: Path) -> Path:
    """``report_dir/<paper>.md`` from the records in ``report_dir/<paper>/``: the table, then the figures."""
    rows = read_records(paper, report_dir)
    lines = [
        f"# Reproducing the {paper.upper()} paper",
        "",
        "Every figure below was measured by `regae reproduce`; each row's runs, with the command of each, are "
        f"in `{paper}/<experiment>/{RECORD}` (rows measured before these records existed, up to 2026-11-22, "
        "keep their figures but not their commands: `reports/README.md` gives them). A row of several runs "
        "(`--seeds`) gives their mean ± standard "
        "deviation, the seed and the labeled subset changing together. The paper's schedules are far longer "
        "than our budgets, so the *epochs* column says how much of the paper's schedule each run completed, "
        "and *budget* what it was given on which hardware. *Re-scored* in the run column: the final model was "
        "scored again after a metric was corrected (`regae reproduce --rescore`; the run's earlier figures stay "
        "in its record as `test_before_rescore`). The clustering rows' §6 error ranks validation images by "
        "log-odds since 2026-12-02; clustering rows without that mark predate it and ranked by float32 "
        "probabilities, which tie at 1 (`reports/README.md`, clustering).",
        "",
        "| experiment | paper | ours | epochs done (of the schedule) | training time (budget) | hardware | run |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [format_row(t, record) for t, record in rows]
    lines += ["", "## Figures", ""]
    for t, _ in rows:
        figs = sorted((report_dir / paper / t.experiment).glob("*.png"))
        if figs:
            lines += [f"### {t.what}", ""]
            lines += [f"![{f.stem}]({paper}/{t.experiment}/{f.name})" for f in figs]
            lines.append("")
    report = report_dir / f"{paper}.md"
    atomic_write_text(report, "\n".join(lines))
    known = {t.experiment for t in PAPERS[paper]}
    unknown = sorted(d.name for d in (report_dir / paper).glob("*") if (d / RECORD).is_file() and d.name not in known)
    if unknown:  # e.g. a long run started before a newer checkout added a target: its table lacks those rows
        warnings.warn(
            f"{report} leaves out the records of {', '.join(unknown)}, experiments this regae does not know "
            f"(added by a newer checkout?); rebuild the table with the current code: regae reproduce {paper} "
            "--report-only",
            stacklevel=2,
        )
    return report
