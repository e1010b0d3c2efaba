"""The ``regae`` command line: list, train, resume, eval, sample, energy, config.

regae list
regae train dae-mnist epochs=5 noise_std=0.3 seed=7 name=my-run checkpoint_every=100
regae train my_experiment.yaml
regae resume runs/dae-mnist
regae eval runs/dae-mnist
regae sample runs/vae-mnist n=64
regae energy --data two-moons
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path

from regae.errors import ConfigMigrationWarning, RegaeError


def _kv(items: list[str], allowed: dict[str, type], command: str) -> dict:
    """Parse ``key=value`` arguments of the small commands (eval, sample)."""
    from regae.config import parse_value
    from regae.registry import suggest

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise RegaeError(f"`regae {command}` takes key=value arguments, got {item!r}")
        if key not in allowed:
            raise RegaeError(
                f"`regae {command}` has no option {key!r}.{suggest(key, list(allowed))} Options: {', '.join(allowed)}"
            )
        value = parse_value(text)
        if allowed[key] is int and not (isinstance(value, int) and not isinstance(value, bool)):
            raise RegaeError(f"{key} must be an integer, got {text!r}")
        out[key] = value if allowed[key] is not str else str(value)
    return out


def cmd_list(args: argparse.Namespace) -> None:
    import regae  # noqa: F401  (registers everything)
    from regae.config import experiment_names, read_experiment
    from regae.registry import DATASETS, MODELS, PRIORS

    def section(title: str, rows: list[tuple[str, str]]) -> None:
        print(f"{title}:")
        width = max((len(n) for n, _ in rows), default=0)
        for name, help in rows:
            print(f"  {name:<{width}}  {help}")
        print()

    section(
        "experiments (regae train NAME)",
        [(n, str(read_experiment(n).get("description", ""))) for n in experiment_names()],
    )
    section("models", [(n, MODELS.help(n)) for n in MODELS.names()])
    section("datasets", [(n, DATASETS.help(n)) for n in DATASETS.names()])
    if len(PRIORS):
        section("priors", [(n, PRIORS.help(n)) for n in PRIORS.names()])


def cmd_train(args: argparse.Namespace) -> None:
    from regae.config import load_experiment
    from regae.run import train

    cfg = load_experiment(args.experiment, args.overrides)
    run_dir = train(cfg, command="regae train " + " ".join(shlex.quote(a) for a in [args.experiment, *args.overrides]))
    _done(run_dir)


def cmd_resume(args: argparse.Namespace) -> None:
    from regae.run import resume

    _done(resume(args.run_dir, args.overrides))


def _done(run_dir: Path) -> None:
    import json

    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    info = json.loads((run_dir / "run.json").read_text())
    test = info.get("test", {})
    print(f"finished {run_dir}: {info.get('steps')} steps in {info.get('train_seconds')} s")
    for k, v in test.items():
        print(f"  {k} = {v:.4g}")
    print(f"report: {run_dir / 'report.md'}")


def cmd_eval(args: argparse.Namespace) -> None:
    from regae.run import evaluate

    opts = _kv(args.options, {"split": str}, "eval")
    metrics = evaluate(args.run_dir, **opts)
    split = opts.get("split", "test")
    for k, v in metrics.items():
        print(f"{k} = {v:.4g}")
    print("written to", Path(args.run_dir) / ("eval.json" if split == "test" else f"eval_{split}.json"))


def cmd_sample(args: argparse.Namespace) -> None:
    from regae.run import sample

    opts = _kv(args.options, {"n": int, "seed": int, "out": str}, "sample")
    if opts.get("n", 64) < 1:
        raise RegaeError("n must be >= 1")
    print(sample(args.run_dir, **opts))


def cmd_energy(args: argparse.Namespace) -> None:
    from regae.energy import energy_maps

    models = [m for m in args.models.split(",") if m] if args.models else None
    png = energy_maps(
        args.data, models=models, steps=args.steps, out_dir=args.out, seed=args.seed, progress=not args.quiet
    )
    print(f"energy maps: {png}")
    print(f"report: {png.parent / 'report.md'}")


def cmd_demo(args: argparse.Namespace) -> None:
    from regae.demo import demo

    report = demo(args.out, epochs_scale=args.scale, progress=not args.quiet)
    print(f"demo report: {report.resolve()}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from regae.reproduce import parse_budget, parse_seeds, refresh_records, reproduce, write_report

    only = [o for item in (args.only or []) for o in item.split(",") if o]
    if args.rescore:  # score the finished runs again (after a metric fix), no training
        from regae.reproduce import rescore

        report = rescore(args.paper, only=only or None, out_dir=args.out, report_dir=args.report_dir)
        print(f"reproduction report: {report.resolve()}")
        return
    if args.report_only:  # rebuild the report from the records and any finished runs, no training
        refresh_records(args.paper, Path(args.out), Path(args.report_dir))
        report = write_report(args.paper, Path(args.report_dir))
        print(f"reproduction report: {report.resolve()}")
        return
    report = reproduce(
        args.paper,
        budget_minutes=parse_budget(args.budget),
        only=only,
        seeds=parse_seeds(args.seeds) if args.seeds else None,
        out_dir=args.out,
        report_dir=args.report_dir,
        overrides=args.overrides,
        progress=not args.quiet,
    )
    print(f"reproduction report: {report.resolve()}")


def cmd_config(args: argparse.Namespace) -> None:
    from regae.config import load_experiment

    print(load_experiment(args.experiment, args.overrides).to_yaml(), end="")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="regae",
        description="Regularized autoencoders: train, evaluate, sample, and look at their energy.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="experiments, models, datasets and priors regae knows")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("train", help="train an experiment (a name from `regae list` or a YAML file)")
    s.add_argument("experiment")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=5 lr=3e-4")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    s.add_argument("run_dir", type=Path)
    s.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. epochs=30 to train longer")
    s.set_defaults(fn=cmd_resume)

    s = sub.add_parser("eval", help="metrics of a run's model on the test split (split=val for validation)")
    s.add_argument("run_dir", type=Path)
    s.add_argument("options", nargs="*", metavar="key=value")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("sample", help="a PNG grid of samples from a generative run (n=64 seed=0 out=path)")
    s.add_argument("run_dir", type=Path)
    s.add_argument("options", nargs="*", metavar="key=value")
    s.set_defaults(fn=cmd_sample)

    s = sub.add_parser("energy", help="reconstruction-energy maps of several models on a 2-D toy dataset")
    s.add_argument("--data", default="two-moons", help="a 2-D dataset (two-moons, rings, spirals, ...)")
    s.add_argument("--models", default=None, help="comma-separated model names (default: all classic ones)")
    s.add_argument("--steps", type=int, default=3000, help="training steps per model")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="output folder (default runs/energy-<data>)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_energy)

    s = sub.add_parser("demo", help="train a denoising AE and a 2-D VAE on MNIST (a few CPU minutes), write a report")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--scale", type=float, default=1.0, help="multiply the demo's epochs (e.g. 0.3 for a quick look)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("reproduce", help="run a paper's experiments within a budget; write reports/<paper>.md")
    s.add_argument("paper", choices=["aae"])
    s.add_argument(
        "--budget",
        default="30m",
        help="total training time of the command, e.g. 30m, 2h, split equally over its experiments and seeds",
    )
    s.add_argument("--only", action="append", help="experiment(s), e.g. semi-100 or semi-100,cluster-16")
    s.add_argument(
        "--seeds",
        help="run each experiment once per seed (seed and data.seed), e.g. 0-4 or 0,3; the row is mean ± sd",
    )
    s.add_argument("--out", default="runs/reproduce", help="where the run folders go (default runs/reproduce)")
    s.add_argument("--report-dir", default="reports", help="where <paper>.md and its records go (default reports)")
    s.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report from its records (reports/<paper>/*/result.json) and the finished runs in --out",
    )
    s.add_argument(
        "--rescore",
        action="store_true",
        help="score the finished runs in --out again with this regae (e.g. after a metric fix), no training; "
        "each run.json keeps its figures before as test_before_rescore",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every experiment")
    s.set_defaults(fn=cmd_reproduce)

    s = sub.add_parser("config", help="print the resolved config of an experiment with overrides")
    s.add_argument("experiment")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    s.set_defaults(fn=cmd_config)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """regae's own warnings as one line for the command's user, without the source line they came from."""
    if issubclass(category, ConfigMigrationWarning):
        print(f"regae: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow options (`regae reproduce aae --budget 5m epochs=3`)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        elif hasattr(args, "options") and all("=" in e and not e.startswith("-") for e in extra):
            args.options = [*args.options, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.fn(args)
    except RegaeError as e:
        print(f"regae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; `regae resume <run folder>` continues from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
