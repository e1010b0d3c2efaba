"""`regae reproduce`: budget parsing, experiment selection, and a tiny end-to-end run writing the report."""

from __future__ import annotations

import json

import pytest

from regae.errors import ConfigError
from regae.reproduce import parse_budget, parse_seeds, reproduce, run_name, select

TINY = ["data.limit=300", "hidden=[16]", "disc_hidden=[16]"]


def test_budget_parsing():
    assert parse_budget("30m") == 30 and parse_budget("2h") == 120 and parse_budget("90s") == 1.5
    assert parse_budget("5") == 5
    with pytest.raises(ConfigError, match="30m"):
        parse_budget("soon")


def test_selection_by_short_or_full_name():
    assert [t.experiment for t in select("aae", ["semi-100", "aae-cluster-16"])] == ["aae-semi-100", "aae-cluster-16"]
    with pytest.raises(ConfigError, match="semi-100"):
        select("aae", ["semi-10"])
    with pytest.raises(ConfigError, match="no reproduction"):
        select("ebgan", None)


@pytest.mark.slow
def test_tiny_reproduction_writes_a_self_contained_report(tmp_path):
    """Three experiments (two with the Parzen evaluation, one of them on a weight average) on 300 images with
    tiny networks, a few seconds each."""
    report = reproduce(
        "aae",
        budget_minutes=0.3,
        only=["semi-100", "likelihood", "likelihood-ema"],
        out_dir=tmp_path / "runs",
        report_dir=tmp_path / "reports",
        progress=False,
        overrides=["data.limit=300", "hidden=[16]", "disc_hidden=[16]", "max_steps=20"],
    )
    text = report.read_text()
    assert "| semi-supervised MNIST, 100 labels (table 2) | 1.9 % |" in text
    assert "Parzen" in text and "nats ±" in text
    # the weight average is the run's model; the trained weights are scored beside it
    plain, ema = (
        json.loads((tmp_path / "runs" / f"aae-{e}" / "run.json").read_text())["test"]
        for e in ("likelihood", "likelihood-ema")
    )
    assert "test_online/parzen" not in plain and {"test/parzen", "test_online/parzen"} <= set(ema)
    # beside the samples, the decoded codes of training images: the figure if q(z) matched the prior
    assert (
        plain["test/parzen_posterior"] != plain["test/parzen"]
        and f"(decoded q(z): {plain['test/parzen_posterior']:.2f})" in text
    )
    assert ema["test/parzen"] != ema["test_online/parzen"]
    # and how blurred the samples are, beside real digits (the Parzen figure rewards blur)
    assert 0 <= plain["test/sample_grey"] <= 1 and 0 <= plain["test/posterior_grey"] <= 1
    assert 0.3 < plain["test/real_grey"] < 0.7
    assert f"mid-grey share of the samples' ink {plain['test/sample_grey']:.2f}" in text
    for line in text.splitlines():
        if line.startswith("!["):
            assert (report.parent / line.split("(")[1].rstrip(")")).is_file()
    # a later call for another experiment keeps the rows already measured, in the paper's order
    report = reproduce(
        "aae",
        budget_minutes=0.1,
        only=["semi-all"],
        out_dir=tmp_path / "runs",
        report_dir=tmp_path / "reports",
        progress=False,
        overrides=["data.limit=300", "hidden=[16]", "disc_hidden=[16]", "max_steps=5"],
    )
    table = [line for line in report.read_text().splitlines() if line.startswith("| ")][1:]  # without header
    assert [row.split(",")[0] for row in table] == [
        "| semi-supervised MNIST",
        "| supervised MNIST",
        "| Parzen log-likelihood",
        "| Parzen log-likelihood",
    ]
    # runs/ is not kept: a fresh checkout rebuilds the same report, figures included, from the records alone
    import shutil

    from regae.cli import main

    before = report.read_text()
    shutil.rmtree(tmp_path / "runs")
    for fig in (tmp_path / "reports" / "aae").rglob("*.png"):
        assert fig.stat().st_size > 0
    main(
        [
            "reproduce",
            "aae",
            "--report-only",
            "--out",
            str(tmp_path / "runs"),
            "--report-dir",
            str(tmp_path / "reports"),
        ]
    )
    assert report.read_text() == before
    record = json.loads((tmp_path / "reports" / "aae" / "aae-semi-all" / "result.json").read_text())
    from regae.run import _cpu_name

    assert record["runs"][0]["hardware"]["device_name"] == _cpu_name()  # results depend on the CPU model
    assert record["runs"][0]["command"].startswith("regae reproduce aae --budget 0.1m --only semi-all data.limit=300")


def test_report_only_rebuilds_the_report_from_finished_runs(tmp_path):
    """`regae reproduce aae --report-only` trains nothing: rows come from the run folders (here a fake one)."""
    import json

    from regae.cli import main

    run = tmp_path / "runs" / "aae-semi-all"
    run.mkdir(parents=True)
    info = {
        "test": {"test/error": 1.23},
        "reproduce": {"budget_minutes": 7, "schedule_epochs": 5000},
        "epochs_done": 6.5,
        "steps": 3250,
        "train_seconds": 380,
        "hardware": {"device": "cpu", "threads": 1, "torch": "x"},
    }
    (run / "run.json").write_text(json.dumps(info))
    (tmp_path / "runs" / "aae-semi-100").mkdir()  # unfinished: no run.json, so no row
    main(["reproduce", "aae", "--report-only", "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path)])
    table = [line for line in (tmp_path / "aae.md").read_text().splitlines() if line.startswith("| ")][1:]
    assert len(table) == 1 and "| 0.85 % | 1.23 % | 6.5 of 5000 (3250 steps) | 6.3 min (7 min) |" in table[0]
    assert "| cpu, 1 thread(s), torch x |" in table[0]
    # a run that trained in another precision says so in its hardware column
    (run / "config.yaml").write_text("train: {precision: bf16-mixed}\n")
    main(["reproduce", "aae", "--report-only", "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path)])
    assert "| cpu, 1 thread(s), bf16-mixed, torch x |" in (tmp_path / "aae.md").read_text()

    # a metric the run predates, added later by `regae eval` (eval.json), fills its row; run.json wins ties
    (run / "eval.json").write_text(json.dumps({"test/error": 9.99, "test/part_error": 4.5}))
    (tmp_path / "runs" / "aae-mog-conditional").mkdir()
    info["test"] = {"test/energy": 17.0}
    (tmp_path / "runs" / "aae-mog-conditional" / "run.json").write_text(json.dumps(info))
    (tmp_path / "runs" / "aae-mog-conditional" / "eval.json").write_text(json.dumps({"test/part_error": 7.65}))
    main(["reproduce", "aae", "--report-only", "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path)])
    text = (tmp_path / "aae.md").read_text()
    assert "| 1.23 % |" in text and "9.99" not in text and "| 7.65 % |" in text


def test_every_reproduction_target_has_a_shipped_config():
    from regae.config import load_experiment
    from regae.reproduce import PAPERS

    for target in PAPERS["aae"]:
        cfg = load_experiment(target.experiment)
        assert "aae" in cfg.model.type, target.experiment


def test_seed_parsing_and_run_names():
    assert parse_seeds("0-2") == [0, 1, 2] and parse_seeds("3,0-1,3") == [3, 0, 1] and parse_seeds("5") == [5]
    for bad in ("", "a", "2-1", "-1", "1.5"):
        with pytest.raises(ConfigError, match="seeds"):
            parse_seeds(bad)
    assert run_name("aae-semi-100", 0, 0) == "aae-semi-100"
    assert run_name("aae-semi-100", 2, 2) == "aae-semi-100-seed2"
    assert run_name("aae-semi-100", 2, 0) == "aae-semi-100-seed2-data0"


@pytest.mark.slow
def test_seeds_pool_into_one_row_of_mean_and_sd(tmp_path, capsys):
    """`--seeds 0-2`: three runs (seed and labeled subset changing together), one row of their mean ± sd; a
    later call adds seeds to the same recipe; a changed recipe starts the row afresh."""
    import statistics

    from regae.cli import main

    def run(*args: str) -> None:
        main(["reproduce", "aae", "--quiet", "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path), *args])

    run("--budget", "0.3m", "--only", "semi-100", "--seeds", "0-1", *TINY, "max_steps=4")
    assert "the budget of 0.3 min is shared by 2 runs: 0.15 min each" in capsys.readouterr().err
    run("--budget", "0.1m", "--only", "semi-100", "--seeds", "2", *TINY, "max_steps=4")
    record = json.loads((tmp_path / "aae" / "aae-semi-100" / "result.json").read_text())
    runs = record["runs"]
    assert [(r["seed"], r["data_seed"]) for r in runs] == [(0, 0), (1, 1), (2, 2)]
    assert [r["run"].rsplit("/", 1)[1] for r in runs] == ["aae-semi-100", "aae-semi-100-seed1", "aae-semi-100-seed2"]
    assert runs[1]["command"].endswith(
        "--only semi-100 --seeds 1 data.limit=300 hidden=[16] disc_hidden=[16] max_steps=4"
    )
    # the labeled subsets differ: that is what the paper's ± is over
    configs = [
        (tmp_path / "runs" / name / "config.yaml").read_text() for name in ("aae-semi-100", "aae-semi-100-seed1")
    ]
    assert "seed: 1" in configs[1] and configs[0] != configs[1]
    errors = [r["test"]["test/error"] for r in runs]
    row = next(line for line in (tmp_path / "aae.md").read_text().splitlines() if line.startswith("| semi-sup"))
    assert f"| {statistics.fmean(errors):.2f} % ± {statistics.stdev(errors):.2f} (sd of 3 runs: " in row
    assert "| 1.33 of 5000 (4 steps) |" in row and "(seeds 0, 1, 2) |" in row

    # another recipe (here a wider network) replaces the three runs instead of mixing with them
    run("--budget", "0.1m", "--only", "semi-100", "data.limit=300", "hidden=[24]", "disc_hidden=[16]", "max_steps=4")
    record = json.loads((tmp_path / "aae" / "aae-semi-100" / "result.json").read_text())
    assert [r["seed"] for r in record["runs"]] == [0]
    # and the older runs of the first recipe, still in runs/, do not come back on a rebuild
    run("--report-only")
    assert len(json.loads((tmp_path / "aae" / "aae-semi-100" / "result.json").read_text())["runs"]) == 1


def test_a_run_cut_by_its_share_of_the_budget_says_so_and_what_to_change():
    from regae.reproduce import budget_cut

    def info(epochs_done, steps=100, **extra):
        return {"epochs_done": epochs_done, "steps": steps, "reproduce": {"budget_minutes": 22.5}, **extra}

    shared = budget_cut(info(23.8), 30, None, runs=2)
    assert shared.startswith("stopped at 23.8 of 30 epochs when its share of the budget (22.5 min) ran out")
    assert "shared by 2 runs" in shared and "one command per experiment and seed" in shared
    alone = budget_cut(info(23.8), 30, None, runs=1)
    assert "shared" not in alone and alone.endswith("out; a longer --budget lets it go further")
    assert budget_cut(info(30.0), 30, None, runs=2) is None  # finished its schedule
    assert budget_cut(info(1.33, steps=4), 5000, 4, runs=2) is None  # stopped by the user's max_steps
    fitted = info(4.0, fitted_steps=2000, planned_steps=2500000)
    assert budget_cut(fitted, 5000, None, runs=1) is None  # fit_schedule ran the whole schedule, compressed


def test_a_corrupt_record_is_a_clear_error(tmp_path, capsys):
    from regae.cli import main

    (tmp_path / "aae" / "aae-semi-100").mkdir(parents=True)
    (tmp_path / "aae" / "aae-semi-100" / "result.json").write_text("{not json")
    args = ["reproduce", "aae", "--report-only", "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path)]
    assert main(args) != 0
    assert "aae-semi-100/result.json is not a reproduction record" in capsys.readouterr().err
    (tmp_path / "aae" / "aae-semi-100" / "result.json").write_text('{"runs": 3}')
    assert main(args) != 0
    assert "no list of runs" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_reproduction_run_is_continued_not_restarted(tmp_path):
    """`regae reproduce` again after a run was killed (status running, a checkpoint on disk) continues it from
    the checkpoint when the recipe and seeds match; a run of another recipe is started over."""
    from regae import train
    from regae.config import load_experiment

    runs = tmp_path / "runs"
    common = [*TINY, "max_steps=8", "checkpoint_every=4", "progress=false"]

    def killed_run(*extra: str):
        cfg = load_experiment("aae-semi-100", [*common, *extra, f"out_dir={runs}", "name=aae-semi-100"])
        cfg.train.overwrite = True
        run_dir = train(cfg)
        # what a SIGKILL after step 4 leaves behind (tests/test_resume.py kills real processes)
        import shutil

        shutil.rmtree(run_dir / "checkpoints" / "step-00000008")
        shutil.rmtree(run_dir / "model")
        info = json.loads((run_dir / "run.json").read_text())
        info["status"] = "running"
        for key in ("finished", "test", "steps"):
            info.pop(key)
        (run_dir / "run.json").write_text(json.dumps(info))
        return run_dir

    def again(*extra: str):
        reproduce("aae", budget_minutes=0.2, only=["semi-100"], out_dir=runs, report_dir=tmp_path, progress=False,
                  overrides=[*common, *extra])  # fmt: skip
        return json.loads((runs / "aae-semi-100" / "run.json").read_text())

    killed_run()
    info = again()
    assert info["resumed_from"].endswith("step-00000004")
    assert info["status"] == "finished" and info["steps"] == 8 and "reproduce" in info
    record = json.loads((tmp_path / "aae" / "aae-semi-100" / "result.json").read_text())
    assert [r["steps"] for r in record["runs"]] == [8]

    # how long is the continuing call's to say: its max_steps holds, not the one the killed run was started with
    killed_run()
    info = again("max_steps=6")
    assert info["resumed_from"].endswith("step-00000004") and info["steps"] == 6
    assert "max_steps=6" in info["command"]
    record = json.loads((tmp_path / "aae" / "aae-semi-100" / "result.json").read_text())
    assert [r["steps"] for r in record["runs"]] == [6] and "max_steps=6" in record["runs"][0]["command"]

    killed_run("hidden=[24]")  # another recipe: its checkpoint cannot continue this one
    info = again()
    assert "resumed_from" not in info and info["steps"] == 8


def test_a_clustering_row_also_gives_nmi_and_the_hungarian_error_and_a_fitted_schedule_is_named():
    """Issue 3 asks for NMI and one-to-one (Hungarian) accuracy beside the §6 protocol's error; a row whose
    schedule was compressed into its budget says so in its epochs column."""
    from regae.reproduce import format_row, select

    target = select("aae", ["cluster-30"])[0]
    test = {"test/error": 12.5, "test/nmi": 0.6612, "test/hungarian_error": 35.04}
    run = {"run": "runs/x", "test": test, "epochs_done": 3.0, "steps": 1500, "train_seconds": 60.0}
    row = format_row(target, {"runs": [{**run, "precision": "32-true", "schedule_epochs": 1500}]})
    assert "| 12.50 % (NMI 0.661, one-to-one Hungarian error 35.04 %) |" in row
    assert "| 3.0 of 1500 (1500 steps) |" in row
    run["test"] = {**test, "test/majority_error": 17.47}
    row = format_row(target, {"runs": [{**run, "precision": "32-true", "schedule_epochs": 1500}]})
    assert "(NMI 0.661, one-to-one Hungarian error 35.04 %, majority-vote error 17.47 %) |" in row
    # a run whose schedule was fitted to its budget (fit_schedule=true) says so
    row = format_row(target, {"runs": [{**run, "precision": "32-true", "schedule_epochs": 1500, "fitted_steps": 1510}]})
    assert "| 3.0 of 1500 (1500 steps), the schedule compressed to fit the budget (`fit_schedule`) |" in row
    # seeds pooled from two machines name both CPUs, each with its seeds
    runs = [
        {**run, "seed": seed, "precision": "32-true", "hardware": {"device": "cpu", "device_name": name, "threads": 1}}
        for seed, name in [(0, "Intel Xeon"), (1, "AMD EPYC"), (2, "AMD EPYC")]
    ]
    row = format_row(target, {"runs": runs})
    assert "| cpu (Intel Xeon: seed(s) 0; AMD EPYC: seed(s) 1, 2), 1 thread(s), torch ? |" in row
    row = format_row(target, {"runs": runs[1:]})
    assert "| cpu (AMD EPYC), 1 thread(s), torch ? |" in row


def test_a_schedule_counts_as_shortened_only_when_fewer_steps_than_planned_fit():
    from regae.run import schedule_shortened

    assert schedule_shortened({"planned_steps": 2000, "fitted_steps": 1504})
    assert not schedule_shortened({"planned_steps": 2000, "fitted_steps": 2000})  # everything fitted
    assert not schedule_shortened({"steps": 2000})  # no fit_schedule


def test_an_option_added_later_at_its_neutral_value_keeps_the_recipe():
    """A run's config lists every key, including options added after a record's older runs; at the value
    that trains as before (``NEUTRAL``) such a key must not make the run another recipe, which would drop
    the record's older runs of the very same recipe. Any other value is another recipe."""
    from regae.reproduce import NEUTRAL, recipe_of

    old = {"model": {"type": "semi-supervised-aae", "code_dim": 10}, "train": {"epochs": 50, "seed": 0}}
    new = {**old, "model": {**old["model"], **NEUTRAL["model"]}, "train": {"epochs": 50, "seed": 3}}
    assert recipe_of(new) == recipe_of(old)
    warped = {**new, "model": {**new["model"], "input_rotation": 15.0}}
    assert recipe_of(warped) != recipe_of(old)
    assert recipe_of({**old, "train": {"epochs": 51}}) != recipe_of(old)


# The config keys regae had when the reproduction records' older runs were made (2026-12-01). A key added
# since is in every new run's config and, unless listed in regae.reproduce.NEUTRAL at the value that trains
# as before, makes new runs "another recipe" than the records' runs, which they would then replace.
KEYS_OF_RECORDED_RUNS = {
    "model": set(
        "activation adversarial_weight architecture beta category_temperature code_activation code_dim conditional "
        "contraction_weight disc_hidden encoder encoder_batchnorm fixed_heads_scale gaussian_std head_cost_weight "
        "head_distance hidden init_std input_dropout input_noise_std input_shape k label_elastic label_elastic_sigma "
        "label_rotation label_scale label_shift likelihood noise noise_dim noise_prob noise_std num_classes prior "
        "prior_args recon_loss regularization sparsity_weight test_alpha type use_labels".split()
    ),
    "train": set(
        "accelerator batch_size best_metric checkpoint_every checkpoint_minutes compile deterministic devices "
        "ema_decay epochs eval_every keep_last log_every max_minutes max_steps name num_threads optim out_dir "
        "overwrite phase_optim phase_repeats precision progress schedules seed strategy".split()
    ),
    "data": set(
        "binarize download labels_per_class limit n_samples name noise root seed shift source threshold".split()
    ),
}


def test_every_config_key_added_since_the_records_is_neutral_in_the_recipe():
    import dataclasses

    import regae.models  # noqa: F401  (registers the models)
    from regae.config import DataConfig, TrainConfig
    from regae.registry import MODELS
    from regae.reproduce import NEUTRAL, NOT_RECIPE

    fields = {
        "model": {f.name for name in MODELS for f in dataclasses.fields(MODELS.get(name).config_class)},
        "train": {f.name for f in dataclasses.fields(TrainConfig)},
        "data": {f.name for f in dataclasses.fields(DataConfig)},
    }
    for section, names in fields.items():
        new = names - KEYS_OF_RECORDED_RUNS[section] - set(NEUTRAL.get(section, {})) - set(NOT_RECIPE.get(section, ()))
        assert not new, (
            f"{section} keys {sorted(new)} are new since the reproduction records: add each to "
            "regae.reproduce.NEUTRAL with the value that trains as before (or to NOT_RECIPE), then to this list"
        )


def test_a_record_of_an_unknown_experiment_is_named_not_silently_dropped(tmp_path):
    """A record this regae has no target for (a newer checkout added it while an older process ran) cannot
    be a row: writing the report warns and says how to rebuild it."""
    from regae.reproduce import write_report

    (tmp_path / "aae" / "aae-from-the-future").mkdir(parents=True)
    (tmp_path / "aae" / "aae-from-the-future" / "result.json").write_text('{"runs": []}')
    with pytest.warns(UserWarning, match="leaves out the records of aae-from-the-future.*--report-only"):
        report = write_report("aae", tmp_path)
    assert "aae-from-the-future" not in report.read_text()


@pytest.mark.slow
def test_rescore_scores_finished_runs_again_without_training_and_keeps_the_old_figures(tmp_path):
    """`regae reproduce aae --rescore` re-evaluates finished runs (after a metric fix: the §6 protocol's
    argmax on saturated float32 probabilities): run.json keeps what it had, and the row says it was re-scored;
    the weights do not change."""
    from regae.cli import main

    runs, reports = tmp_path / "runs", tmp_path / "reports"
    tiny = ["data.limit=300", "hidden=[16]", "disc_hidden=[16]", "max_steps=10"]
    reproduce("aae", budget_minutes=0.2, only=["cluster-16"], seeds=[0, 1], out_dir=runs, report_dir=reports,
              progress=False, overrides=tiny)  # fmt: skip
    run = runs / "aae-cluster-16-seed1"
    info = json.loads((run / "run.json").read_text())
    weights = (run / "model" / "model.safetensors").read_bytes()
    true_error = info["test"]["test/error"]
    info["test"]["test/error"] = 99.0  # as if scored by an older, wrong metric
    (run / "run.json").write_text(json.dumps(info))
    main(["reproduce", "aae", "--report-only", "--out", str(runs), "--report-dir", str(reports)])
    assert "99.00" in (reports / "aae.md").read_text()
    main(["reproduce", "aae", "--rescore", "--only", "cluster-16", "--out", str(runs), "--report-dir", str(reports)])
    after = json.loads((run / "run.json").read_text())
    assert after["test"]["test/error"] == pytest.approx(true_error) and after["test_before_rescore"]["test/error"] == 99
    assert after["steps"] == info["steps"] and (run / "model" / "model.safetensors").read_bytes() == weights
    row = next(line for line in (reports / "aae.md").read_text().splitlines() if "16 clusters (table 3) |" in line)
    assert "99.00" not in row and "re-scored 20" in row and "; mean NMI " in row and "mean majority-vote error" in row
    record = json.loads((reports / "aae" / "aae-cluster-16" / "result.json").read_text())
    assert record["runs"][1]["test_before_rescore"]["test/error"] == 99


def test_records_are_merged_under_a_lock_so_side_by_side_commands_lose_no_run(tmp_path, monkeypatch):
    # two `regae reproduce --seeds S` commands that finish together both read, merge and rewrite one record;
    # unlocked, the later write can drop the other's run (and one crashed unlinking the other's figures)
    from filelock import FileLock

    import regae.reproduce as rp

    lock = tmp_path / "reports" / "aae" / rp.RECORDS_LOCK
    lock.parent.mkdir(parents=True)
    monkeypatch.setattr(rp, "RECORDS_LOCK_TIMEOUT", 0.2)
    with FileLock(lock):  # another command is writing the records
        with pytest.raises(RuntimeError, match="another regae reproduce.*--report-only"):
            rp.refresh_records("aae", tmp_path / "runs", tmp_path / "reports")
    rp.refresh_records("aae", tmp_path / "runs", tmp_path / "reports")  # free again: goes ahead
    with FileLock(lock, timeout=0):  # and has let go (Timeout otherwise)
        pass
