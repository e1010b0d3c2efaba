"""The ``regae`` command line, called in-process through ``regae.cli.main`` (and once as a subprocess)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from regae.cli import main
from regae.config import build_experiment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_experiment(folder: Path, name: str, model: dict, **train) -> Path:
    """A tiny two-moons experiment YAML (500 points, 30 steps) whose runs go under ``folder/runs``."""
    raw = {
        "description": f"tiny {model['type']} for the CLI tests",
        "model": {"hidden": [16, 16], "code_dim": 2, **model},
        "data": {"name": "two-moons", "n_samples": 500},
        "train": {
            "epochs": 100,
            "max_steps": 30,
            "batch_size": 50,
            "log_every": 10,
            "checkpoint_every": 10,
            "progress": False,
            "out_dir": str(folder / "runs"),
            **train,
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_cli(*argv: str) -> SimpleNamespace:
    """``main(argv)`` with its exit code, stdout and stderr (usable where capsys is not: module fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory) -> tuple[Path, SimpleNamespace]:
    """`regae train tiny-ae.yaml`: the run folder and what the command returned and printed."""
    folder = tmp_path_factory.mktemp("cli-ae")
    result = run_cli("train", write_experiment(folder, "tiny-ae", {"type": "ae"}))
    return folder / "runs" / "tiny-ae", result


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    """A finished `regae train` run of a tiny VAE."""
    folder = tmp_path_factory.mktemp("cli-vae")
    result = run_cli("train", write_experiment(folder, "tiny-vae", {"type": "vae"}))
    assert result.code == 0, result.err
    return folder / "runs" / "tiny-vae"


# ------------------------------------------------------------------------------------------ list/config


def test_list_shows_experiments_models_and_datasets(capsys):
    """`regae list` names the shipped experiments, the model types and the datasets, with help lines."""
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for section in ("experiments", "models:", "datasets:"):
        assert section in out
    for name in ("dae-mnist", "vae-mnist", "k-sparse-ae", "beta-vae", "cae", "two-moons", "digits", "mnist"):
        assert re.search(rf"^\s+{re.escape(name)}\s", out, re.M), name
    assert "Denoising autoencoder on MNIST" in out  # experiment descriptions are shown


def test_list_runs_as_a_module_in_a_subprocess():
    """`python -m regae list` works as a separate process and exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "regae", "list"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "dae-mnist" in proc.stdout and "two-moons" in proc.stdout and "vae" in proc.stdout


def test_config_prints_the_resolved_yaml(capsys):
    """`regae config dae-mnist epochs=5` prints a YAML config with the override applied, which rebuilds."""
    assert main(["config", "dae-mnist", "epochs=5", "noise_std=0.1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  epochs: 5$", out, re.M)
    raw = yaml.safe_load(out)
    assert raw["train"]["epochs"] == 5 and raw["model"]["noise_std"] == 0.1
    assert build_experiment(raw).train.epochs == 5


def test_unknown_key_exits_2_with_a_suggestion(tmp_path, capsys):
    """A misspelt override is exit code 2 with the suggestion on stderr, and nothing is written."""
    path = write_experiment(tmp_path, "tiny", {"type": "ae"})
    assert main(["train", str(path), "epocs=3"]) == 2
    captured = capsys.readouterr()
    assert "Did you mean 'epochs'" in captured.err and captured.out == ""
    assert not (tmp_path / "runs").exists()
    assert main(["config", "dae-mnist", "noise_sdt=0.1"]) == 2
    assert "Did you mean 'noise_std'" in capsys.readouterr().err


def test_unknown_command_is_an_argparse_error(capsys):
    """An unknown sub-command exits with argparse's usage error (code 2)."""
    with pytest.raises(SystemExit) as exc:
        main(["trian"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ train


def test_train_writes_a_complete_run_folder(ae_run):
    """`regae train` exits 0 and leaves config, status, metrics, model, eval, figures and a report."""
    run_dir, result = ae_run
    assert result.code == 0, result.err
    assert f"finished {run_dir}: 30 steps" in result.out and "report:" in result.out
    for name in ("config.yaml", "run.json", "metrics.csv", "model/config.json", "model/model.safetensors",
                 "eval.json", "report.md"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 30
    assert info["command"].startswith("regae train ")
    assert "test/energy" in json.loads((run_dir / "eval.json").read_text())
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == 30
    figures = sorted((run_dir / "figures").glob("*.png"))
    assert figures and all(p.read_bytes()[:8] == PNG_MAGIC for p in figures)


def test_report_references_figures_that_exist(ae_run):
    """Every image linked from report.md exists in the run folder, and every figure is linked."""
    run_dir, _ = ae_run
    report = (run_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert links
    for link in links:
        assert (run_dir / link).is_file(), link
    assert {Path(link).name for link in links} == {p.name for p in (run_dir / "figures").glob("*.png")}
    assert "tiny ae for the CLI tests" in report


# ------------------------------------------------------------------------------------------ eval/sample


def test_eval_prints_metrics_and_writes_eval_json(ae_run, capsys):
    """`regae eval RUN` prints the test metrics and (re)writes eval.json; split=val writes eval_val.json."""
    run_dir, _ = ae_run
    (run_dir / "eval.json").unlink()
    assert main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run_dir / "eval.json").read_text())
    assert set(metrics) == {"test/energy"}
    assert re.search(r"^test/energy = \S+$", out, re.M) and "eval.json" in out
    assert main(["eval", str(run_dir), "split=val"]) == 0
    assert "val/energy" in json.loads((run_dir / "eval_val.json").read_text())
    assert main(["eval", str(run_dir), "spilt=val"]) == 2
    assert "Did you mean 'split'" in capsys.readouterr().err


def test_sample_from_a_vae_run_writes_a_png(vae_run, capsys):
    """`regae sample RUN n=16` for a VAE prints the path of a new PNG."""
    assert main(["sample", str(vae_run), "n=16", "seed=3"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == vae_run / "figures" / "samples-16-seed3.png"
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_sample_from_an_ae_run_says_it_is_not_generative(ae_run, capsys):
    """`regae sample` on a non-generative run exits 2 and says the model is not generative."""
    run_dir, _ = ae_run
    assert main(["sample", str(run_dir), "n=16"]) == 2
    assert "not a generative model" in capsys.readouterr().err


def test_sample_with_a_non_integer_n_exits_2(vae_run, capsys):
    """`regae sample RUN n=abc` (and n=0) is exit code 2 with an explanation."""
    assert main(["sample", str(vae_run), "n=abc"]) == 2
    assert "n must be an integer" in capsys.readouterr().err
    assert main(["sample", str(vae_run), "n=0"]) == 2
    assert "n must be >= 1" in capsys.readouterr().err


def test_eval_of_a_folder_that_is_not_a_run_exits_2(tmp_path, capsys):
    """`regae eval` on a folder without config.yaml exits 2 saying it is not a run folder."""
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a regae run folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- resume


def test_resume_extends_a_finished_run(ae_run, tmp_path, capsys):
    """`regae resume RUN max_steps=40 max_minutes=5` continues a finished 30-step run to step 40."""
    run_dir = tmp_path / "tiny-ae"
    shutil.copytree(ae_run[0], run_dir)
    assert main(["resume", str(run_dir), "max_steps=40", "max_minutes=5"]) == 0
    assert f"finished {run_dir}: 40 steps" in capsys.readouterr().out
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["steps"] == 40
    assert info["resumed_from"].endswith("step-00000030")
    assert (run_dir / "checkpoints" / "step-00000040").is_dir()
    steps = [int(line.split(",")[0]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [10, 20, 30, 40]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 40 and saved["train"]["max_minutes"] == 5


def test_resume_refuses_to_change_the_model(ae_run, tmp_path, capsys):
    """`regae resume RUN code_dim=4` exits 2: resuming may only change how long and where a run trains."""
    run_dir = tmp_path / "tiny-ae"
    shutil.copytree(ae_run[0], run_dir)
    assert main(["resume", str(run_dir), "code_dim=4"]) == 2
    assert "resume can only change" in capsys.readouterr().err
    assert json.loads((run_dir / "run.json").read_text())["steps"] == 30


# ----------------------------------------------------------------------------------------------- energy


def test_energy_maps_for_two_models(tmp_path, capsys):
    """`regae energy --data two-moons --models ae,dae` writes energy_maps.png and a report with both models."""
    out_dir = tmp_path / "energy"
    code = main(["energy", "--data", "two-moons", "--models", "ae,dae", "--steps", "50", "--out", str(out_dir),
                 "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert str(out_dir / "energy_maps.png") in capsys.readouterr().out
    assert (out_dir / "energy_maps.png").read_bytes()[:8] == PNG_MAGIC
    report = (out_dir / "report.md").read_text()
    assert "![energy maps](energy_maps.png)" in report
    assert "AE, over-complete code" in report and "Denoising AE" in report


def test_energy_needs_two_dimensional_data(tmp_path, capsys):
    """`regae energy --data digits` exits 2 explaining that energy maps need 2-D data; unknown models too."""
    assert main(["energy", "--data", "digits", "--steps", "5", "--out", str(tmp_path / "e"), "--quiet"]) == 2
    assert "2-D" in capsys.readouterr().err
    assert main(["energy", "--models", "ae,dea", "--steps", "5", "--out", str(tmp_path / "e"), "--quiet"]) == 2
    assert "Did you mean 'dae'" in capsys.readouterr().err
    assert not (tmp_path / "e" / "energy_maps.png").exists()


def test_demo_writes_one_report_with_the_three_runs(tmp_path):
    """The demo's code path on 600 images and tiny networks: a report with the AAE's test error first."""
    from regae.demo import demo

    report = demo(
        tmp_path / "demo",
        epochs_scale=0.01,
        progress=False,
        overrides=["data.limit=600", "hidden=[32]", "max_steps=10"],
    )
    text = report.read_text()
    assert text.index("semi-supervised-aae") < text.index("| [dae]") < text.index("| [vae]")
    assert " % |" in text  # the semi-supervised AAE's test error
    assert "schedule fitted" not in text  # 10 steps fit in the 4-minute cap: nothing was shortened
    for line in text.splitlines():
        if line.startswith("!["):
            assert (report.parent / line.split("(")[1].rstrip(")")).is_file()
