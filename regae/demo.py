"""``make demo`` / ``regae demo``: a few CPU minutes on the bundled MNIST, one report.

The flagship first: the semi-supervised adversarial autoencoder with only 100 labels (AAE paper §5), with
the recipe that reaches the paper's 1.90 % in 50 epochs (``aae-semi-100-elastic-lr4x``: Adam, cosine decay,
shifted, rotated, zoomed and elastically distorted labeled images, the semi-supervised phase at 4x the
learning rate) cut to 4 epochs and fitted to 4 minutes (``train.fit_schedule``); in fp32, since bf16
autocast is only fast on CPUs with native bf16, then a denoising AE and a VAE with a 2-D code. Writes
``runs/demo/report.md`` with the test error, cluster heads, style/content grid, samples, reconstructions,
the learned manifold and code spaces.
"""

from __future__ import annotations

import json
from pathlib import Path

from regae.config import load_experiment
from regae.engine.checkpoint import atomic_write_text
from regae.run import schedule_shortened, train

# (sub-folder, experiment, overrides): short schedules that fit a few CPU minutes
DEMO_RUNS = [
    # 3.00 % test error in 158 s on two Xeon threads (make demo, 2026-12-01; 4.77 % for aae-semi-100-affine)
    # fit_schedule: on a slower or busy machine the cosine is compressed into the 4 minutes, not cut short
    (
        "semi-supervised-aae",
        "aae-semi-100-elastic-lr4x",
        ["epochs=4", "max_minutes=4", "fit_schedule=true", "precision=32-true"],
    ),
    ("dae", "dae-mnist", ["epochs=2", "hidden=[500,500]"]),
    ("vae", "vae2d-mnist", ["epochs=5"]),
]


def demo(
    out_dir: str | Path = "runs/demo",
    *,
    epochs_scale: float = 1.0,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Run the demo into ``out_dir`` (replacing an earlier demo) and return the report's path.

    ``overrides`` (``key=value``) apply to every run, e.g. ``["data.limit=2000"]`` for a quick look."""
    out_dir = Path(out_dir)
    sections = []
    for sub, experiment, run_overrides in DEMO_RUNS:
        run_overrides = list(run_overrides)
        if epochs_scale != 1.0:
            epochs = int(next(o for o in run_overrides if o.startswith("epochs=")).split("=")[1])
            run_overrides.append(f"epochs={max(1, round(epochs * epochs_scale))}")
        cfg = load_experiment(
            experiment,
            [
                *run_overrides,
                *(overrides or []),
                f"out_dir={out_dir}",
                f"name={sub}",
                "overwrite=true",
                f"progress={str(progress).lower()}",
            ],
        )
        run_dir = train(cfg, command=f"regae demo ({experiment} {' '.join(run_overrides)})")
        info = json.loads((run_dir / "run.json").read_text())
        sections.append((sub, experiment, cfg, info))

    lines = [
        "# regae demo: regularized autoencoders on MNIST",
        "",
        "Three models trained for a few CPU minutes each on the bundled MNIST (50k train / 10k test). The "
        "semi-supervised AAE sees the labels of only 100 training images (10 per class). Energy is the per-image "
        "reconstruction cost (AAE: ½ squared error; DAE and VAE: Bernoulli negative log-likelihood in nats).",
        "",
        "| run | model | epochs | train time | test error | test energy |",
        "|---|---|---|---|---|---|",
    ]
    for sub, experiment, cfg, info in sections:
        t = info.get("test", {})
        err = f"{t['test/error']:.2f} %" if "test/error" in t else "—"
        epochs = str(info["epochs_done"])
        if schedule_shortened(info):
            epochs += f" of {cfg.train.epochs} (schedule fitted to {cfg.train.max_minutes:g} min)"
        lines.append(
            f"| [{sub}]({sub}/report.md) | `{cfg.model_type}` ({experiment}) | {epochs} | "
            f"{info['train_seconds']:.0f} s | {err} | {t.get('test/energy', float('nan')):.2f} |"
        )
    lines.append("")
    for sub, _experiment, cfg, _ in sections:
        lines += [f"## {sub}: {cfg.description}", ""]
        for fig in sorted((out_dir / sub / "figures").glob("*.png")):
            lines += [f"![{sub} {fig.stem}]({sub}/figures/{fig.name})", ""]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
