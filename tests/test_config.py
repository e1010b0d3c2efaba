"""Configs (overrides, YAML, validation, schedules), the engine's failure modes and checkpoint files."""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import regae
from regae.config import (
    CONFIG_VERSION,
    ExperimentConfig,
    OptimConfig,
    ScheduleConfig,
    build_experiment,
    experiment_names,
    load_experiment,
)
from regae.data import load_data
from regae.engine import Trainer
from regae.engine.checkpoint import flatten_optimizer, read_folder, unflatten_optimizer, write_folder
from regae.errors import CheckpointError, ConfigError, ConfigMigrationWarning, NonFiniteLossError
from regae.models import AE
from regae.models.base import Autoencoder, register_model
from regae.registry import MODELS
from regae.run import build_model, read_run_config


def toy(out_dir: Path, model: dict | None = None, data: dict | None = None, **train) -> ExperimentConfig:
    """A tiny two-moons experiment writing into ``out_dir/run``."""
    return build_experiment(
        {
            "model": {"type": "ae", "hidden": [16], "code_dim": 2, **(model or {})},
            "data": {"name": "two-moons", "n_samples": 500, **(data or {})},
            "train": {
                "out_dir": str(out_dir),
                "name": "run",
                "epochs": 100,
                "max_steps": 30,
                "batch_size": 50,
                "log_every": 10,
                "progress": False,
                **train,
            },
        }
    )


# ------------------------------------------------------------------------------------------- overrides


def test_flat_overrides_reach_their_sections():
    """Bare keys are routed to train, model or data: the README's example command works as written."""
    cfg = load_experiment("dae-mnist", ["epochs=5", "noise_std=0.3", "seed=7", "name=my-run", "checkpoint_every=100"])
    assert cfg.train.epochs == 5
    assert cfg.model.noise_std == 0.3
    assert cfg.train.seed == 7 and cfg.data.seed == 0  # a bare `seed` is the training seed
    assert cfg.train.name == "my-run"
    assert cfg.train.checkpoint_every == 100
    assert cfg.experiment == "dae-mnist" and cfg.model_type == "dae"


def test_without_overrides_the_shipped_values_and_name_are_used():
    """The YAML's values are kept and the run is named after the experiment."""
    cfg = load_experiment("dae-mnist")
    assert cfg.train.epochs == 20 and cfg.model.hidden == (1000, 1000) and cfg.train.name == "dae-mnist"


def test_dotted_overrides_address_a_section_explicitly():
    """``data.seed=3`` sets the data seed (not the training seed); ``train.optim.lr`` reaches the optimizer."""
    cfg = load_experiment("dae-mnist", ["data.seed=3", "train.optim.lr=0.0001", "model.hidden=[64,32]"])
    assert cfg.data.seed == 3 and cfg.train.seed == 0
    assert cfg.train.optim.lr == pytest.approx(1e-4)
    assert cfg.model.hidden == (64, 32)


def test_optimizer_fields_can_be_given_as_bare_keys():
    """A bare optimizer field (``lr=``, ``weight_decay=``) is routed to ``train.optim``."""
    cfg = load_experiment("dae-mnist", ["lr=0.0001", "weight_decay=0.01"])
    assert cfg.train.optim.lr == pytest.approx(1e-4) and cfg.train.optim.weight_decay == 0.01


@pytest.mark.parametrize("override", ["lr=1e-4", "train.optim.lr=1e-4"])
def test_scientific_notation_without_a_dot_is_a_number(override):
    """``lr=1e-4`` (the CLI help's own example style) sets the learning rate to 0.0001."""
    assert load_experiment("dae-mnist", [override]).train.optim.lr == pytest.approx(1e-4)


def test_scientific_notation_in_a_yaml_file_is_a_number(tmp_path):
    """``lr: 1e-4`` in an experiment file sets the learning rate to 0.0001."""
    path = tmp_path / "exp.yaml"
    path.write_text("model: {type: ae}\ntrain: {optim: {lr: 1e-4}}\n")
    assert load_experiment(str(path)).train.optim.lr == pytest.approx(1e-4)


def test_unknown_key_suggests_the_close_one():
    """A misspelt key is a ConfigError that suggests the intended key."""
    with pytest.raises(ConfigError, match="'epocs'.*Did you mean 'epochs'"):
        load_experiment("dae-mnist", ["epocs=3"])
    with pytest.raises(ConfigError, match="Did you mean 'noise_std'"):
        load_experiment("dae-mnist", ["model.noise_sdt=0.1"])
    with pytest.raises(ConfigError, match="'trian'.*Did you mean 'train'"):
        load_experiment("dae-mnist", ["trian.epochs=3"])


@pytest.mark.parametrize(
    "override, where",
    [
        ("epochs=abc", "train.epochs"),
        ("epochs=2.5", "train.epochs"),
        ("hidden=[a]", r"model.hidden\[0\]"),
        ("progress=maybe", "train.progress"),
        ("noise_std=[1, 2]", "model.noise_std"),
        ("epochs=0", "train.epochs"),
        ("noise=blur", "model.noise"),
    ],
)
def test_mistyped_or_invalid_values_are_config_errors(override, where):
    """A value of the wrong type or out of range is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=where):
        load_experiment("dae-mnist", [override])


def test_overrides_must_be_key_value_and_cannot_change_the_model_type():
    """``epochs`` without ``=`` and ``model=vae`` are refused with an explanation."""
    with pytest.raises(ConfigError, match="key=value"):
        load_experiment("dae-mnist", ["epochs"])
    with pytest.raises(ConfigError, match="model type cannot be overridden"):
        load_experiment("dae-mnist", ["model=vae"])


def test_a_single_value_for_a_tuple_field_is_a_one_tuple():
    """``hidden=64`` means one hidden layer of 64 units."""
    assert load_experiment("dae-mnist", ["hidden=64"]).model.hidden == (64,)


# ------------------------------------------------------------------------------------------ YAML files


def test_unknown_experiment_name_suggests_the_close_one():
    """A misspelt experiment name is a ConfigError with a suggestion and the list of experiments."""
    with pytest.raises(ConfigError, match="Did you mean 'dae-mnist'.*vae-mnist"):
        load_experiment("dae-mnsit")


def test_experiment_from_a_yaml_file(tmp_path):
    """A YAML file path loads with its stem as the experiment and run name, and takes overrides."""
    path = tmp_path / "tiny-moons.yaml"
    path.write_text(
        "description: a test\n"
        "model: {type: dae, hidden: [8], code_dim: 2, noise_std: 0.2}\n"
        "data: {name: two-moons, n_samples: 100}\n"
        "train: {epochs: 3, optim: {name: sgd, lr: 0.01}}\n"
    )
    cfg = load_experiment(str(path), ["epochs=4"])
    assert cfg.experiment == "tiny-moons" and cfg.train.name == "tiny-moons"
    assert cfg.description == "a test"
    assert cfg.model.noise_std == 0.2 and cfg.model.hidden == (8,)
    assert cfg.data.n_samples == 100
    assert cfg.train.epochs == 4 and cfg.train.optim.name == "sgd" and cfg.train.optim.momentum == 0.9


def test_a_config_inherits_its_base_and_lists_only_its_changes(tmp_path):
    """``base:`` (an experiment name or a .yaml path relative to the file) is merged key by key: mappings
    merge, lists and scalars replace; the child's description and its file name are its own."""
    (tmp_path / "parent.yaml").write_text(
        "description: the parent\n"
        "experiment: parent-run\n"
        "model: {type: dae, hidden: [8, 8], code_dim: 2, noise_std: 0.2}\n"
        "data: {name: two-moons, n_samples: 100}\n"
        "train: {epochs: 3, optim: {name: sgd, lr: 0.01, momentum: 0.5}}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "description: the child\nbase: parent.yaml\nmodel: {hidden: [16]}\ntrain: {optim: {lr: 0.1}}\n"
    )
    (tmp_path / "grandchild.yaml").write_text("base: child.yaml\ndata: {n_samples: 50}\n")
    child = load_experiment(str(tmp_path / "child.yaml"), ["epochs=5"])
    assert child.experiment == "child" and child.train.name == "child" and child.description == "the child"
    assert child.model.hidden == (16,) and child.model.noise_std == 0.2 and child.model.code_dim == 2
    assert child.train.optim.lr == 0.1 and child.train.optim.momentum == 0.5 and child.train.optim.name == "sgd"
    assert child.train.epochs == 5 and child.data.n_samples == 100
    grandchild = load_experiment(str(tmp_path / "grandchild.yaml"))
    assert grandchild.experiment == "grandchild" and grandchild.description == "the child"
    assert grandchild.model.hidden == (16,) and grandchild.data.n_samples == 50
    # a registered experiment as the base
    (tmp_path / "longer.yaml").write_text("base: dae-mnist\ntrain: {epochs: 123}\n")
    longer = load_experiment(str(tmp_path / "longer.yaml"))
    assert longer.train.epochs == 123 and longer.model == load_experiment("dae-mnist").model


def test_shipped_variants_state_only_their_departure():
    """A shipped variant is its base plus what it changes: aae-likelihood-warp is aae-likelihood-ema with
    the warp, and a fix to A.1's base config reaches both."""
    from regae.config import read_experiment

    warp, ema = load_experiment("aae-likelihood-warp"), load_experiment("aae-likelihood-ema")
    assert (warp.model.input_rotation, warp.model.input_scale) == (15.0, 0.1)
    assert replace(warp.model, input_rotation=0.0, input_scale=0.0) == ema.model and warp.train.ema_decay == 0.999
    assert "base" not in read_experiment("aae-likelihood-warp")


@pytest.mark.parametrize(
    "files, error",
    [
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, r"`base` chain loops: a -> b -> a"),
        ({"a.yaml": "base: a.yaml\n"}, r"loops: a -> a"),
        ({"a.yaml": "base: dae-mnsit\n"}, r"unknown experiment 'dae-mnsit'.*Did you mean 'dae-mnist'"),
        ({"a.yaml": "base: missing.yaml\n"}, r"missing.yaml' does not exist"),
        ({"a.yaml": "base: [dae-mnist]\n"}, r"`base` must name an experiment or a .yaml file"),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "- 1\n- 2\n"}, r"b.yaml: an experiment config must be a mapping"),
    ],
)
def test_a_bad_base_is_a_clear_error(tmp_path, files, error):
    """A loop, an unknown or missing base, or a base that is not a config each name the problem."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=error):
        load_experiment(str(tmp_path / "a.yaml"))


def test_build_experiment_refuses_an_unresolved_base():
    """``base`` is a file-level key: a mapping handed straight to build_experiment says how to resolve it."""
    with pytest.raises(ConfigError, match="`base:` is resolved when an experiment is read"):
        build_experiment({"base": "dae-mnist", "model": {"type": "ae"}})


def test_unknown_top_level_section_is_refused(tmp_path):
    """A misspelt section (``trian:``) is a ConfigError suggesting ``train``, not silently ignored."""
    path = tmp_path / "bad.yaml"
    path.write_text("model: {type: ae}\ntrian: {epochs: 3}\n")
    with pytest.raises(ConfigError, match="'trian'.*Did you mean 'train'"):
        load_experiment(str(path))


def test_invalid_yaml_is_a_config_error_naming_the_file(tmp_path):
    """A file that is not YAML is a ConfigError naming the file."""
    path = tmp_path / "broken.yaml"
    path.write_text("model: {type: ae\ntrain: [\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_experiment(str(path))


def test_missing_yaml_file_and_missing_model_are_config_errors(tmp_path):
    """A path that does not exist, or a config without ``model.type``, is a ConfigError."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(str(tmp_path / "nope.yaml"))
    path = tmp_path / "nomodel.yaml"
    path.write_text("data: {name: two-moons}\n")
    with pytest.raises(ConfigError, match="model"):
        load_experiment(str(path))
    with pytest.raises(ConfigError, match="Did you mean 'vae'"):
        build_experiment({"model": {"type": "vea"}})


def test_config_round_trips_through_a_dict_and_yaml():
    """build_experiment(cfg.to_dict()) rebuilds an equal config, also after a trip through YAML text."""
    import yaml

    cfg = load_experiment("k-sparse-ae-mnist", ["epochs=2", "lr=0.01"])
    cfg.train.schedules["k"] = ScheduleConfig(start=100, end=25, steps=500, kind="cosine")
    cfg.train.phase_optim["reconstruction"] = {"lr": 0.5}
    rebuilt = build_experiment(cfg.to_dict())
    assert rebuilt == cfg
    assert build_experiment(yaml.safe_load(cfg.to_yaml())) == cfg
    assert isinstance(rebuilt.train.schedules["k"], ScheduleConfig)


@pytest.mark.parametrize("name", experiment_names())
def test_every_shipped_experiment_builds(name):
    """Each shipped experiment loads, round-trips and builds its model (for the data's known input shape)."""
    cfg = load_experiment(name)
    assert build_experiment(cfg.to_dict()) == cfg
    shape = {"mnist": (1, 28, 28), "digits": (1, 8, 8)}[cfg.data.name]
    model = MODELS.get(cfg.model_type)(replace(cfg.model, input_shape=shape, likelihood="bernoulli"))
    assert model.model_type == cfg.model_type
    labels = (torch.tensor([0, 1]),) if cfg.model_type == "supervised-aae" else ()  # decodes (z, y)
    assert model.reconstruct(torch.rand(2, *shape), *labels).shape == (2, *shape)
    # every phase named in train.phase_optim exists (the trainer refuses the run otherwise)
    from regae.data import ArrayDataset, DataSplits

    part = ArrayDataset(torch.rand(8, *shape), torch.tensor([0, 1, -1, -1, 0, 1, -1, -1]))
    model.attach_data(DataSplits("fake", part, part, part))
    assert set(cfg.train.phase_optim) <= {p.name for p in model.phases()}


def test_shipped_experiments_cover_every_classic_model():
    """There is a shipped experiment for each of the classic model families."""
    types = {load_experiment(n).model_type for n in experiment_names()}
    assert {"ae", "dae", "sparse-ae", "k-sparse-ae", "cae", "vae", "beta-vae"} <= types


# -------------------------------------------------------------------------------- schedules and optim


@pytest.mark.parametrize(
    "kind, start, end, expected_mid",
    [("linear", 1.0, 0.0, 0.5), ("cosine", 1.0, 0.0, 0.5), ("exponential", 1.0, 0.01, 0.1)],
)
def test_schedule_values_at_start_middle_and_end(kind, start, end, expected_mid):
    """A schedule is ``start`` at step 0, the shape's midpoint at steps/2, and ``end`` from ``steps`` on."""
    s = ScheduleConfig(start=start, end=end, steps=100, kind=kind)
    assert s.value(0) == pytest.approx(start)
    assert s.value(50) == pytest.approx(expected_mid)
    assert s.value(100) == pytest.approx(end)
    assert s.value(1000) == pytest.approx(end)
    assert s.value(-5) == pytest.approx(start)


def test_schedule_shapes_differ_between_kinds():
    """At a quarter of the way the shapes differ: linear 0.75, cosine (1 + cos(π/4)) / 2, exponential 0.01^¼."""
    assert ScheduleConfig(1.0, 0.0, 100, "linear").value(25) == pytest.approx(0.75)
    assert ScheduleConfig(1.0, 0.0, 100, "cosine").value(25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert ScheduleConfig(1.0, 0.01, 100, "exponential").value(25) == pytest.approx(0.01**0.25)
    assert ScheduleConfig(0.0, 2.0, 10, "linear").value(3) == pytest.approx(0.6)  # increasing schedules too


def test_schedule_validation():
    """Unknown kinds, steps < 1 and non-positive exponential ends are ConfigErrors."""
    with pytest.raises(ConfigError, match="Did you mean 'cosine'"):
        ScheduleConfig(kind="cosin")
    with pytest.raises(ConfigError, match="steps"):
        ScheduleConfig(steps=0)
    with pytest.raises(ConfigError, match="exponential"):
        ScheduleConfig(start=1.0, end=0.0, kind="exponential")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "adma"}, "Did you mean 'adam'"),
        ({"lr": 0.0}, "optim.lr"),
        ({"lr": -1e-3}, "optim.lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"schedule": "cosine-annealing"}, "optim.schedule"),
        ({"schedule_unit": "batch"}, "optim.schedule_unit"),
    ],
)
def test_optim_config_validation(fields, message):
    """Invalid optimizer settings are ConfigErrors naming the field."""
    with pytest.raises(ConfigError, match=message):
        OptimConfig(**fields)


def test_optim_config_from_yaml_section():
    """An optimizer section builds with betas as a tuple; a wrong-length betas list is refused."""
    cfg = build_experiment({"model": "ae", "train": {"optim": {"name": "adamw", "betas": [0.5, 0.9]}}})
    assert cfg.train.optim.betas == (0.5, 0.9)
    with pytest.raises(ConfigError, match="betas"):
        build_experiment({"model": "ae", "train": {"optim": {"betas": [0.5]}}})


# -------------------------------------------------------------------------------------- engine failures


class NanAE(AE):
    """An AE whose loss becomes NaN from the 7th call (training step 6) on."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def loss(self, batch):
        self.calls += 1
        loss = self.energy(batch.x).mean()
        return loss * float("nan") if self.calls >= 7 else loss


@pytest.fixture
def nan_model():
    """NanAE registered as model type "nan-test-ae" for one test (unregistered afterwards, so that other
    tests iterating over the registry never see it)."""
    register_model("nan-test-ae", help="test only: an AE whose loss turns NaN from its 7th call on")(NanAE)
    yield NanAE
    MODELS._items.pop("nan-test-ae", None)
    MODELS._help.pop("nan-test-ae", None)


def checkpoint_tensors_are_finite(run_dir: Path) -> list[Path]:
    """Assert every checkpoint folder under ``run_dir`` reads back with finite tensors; return them."""
    folders = [p for p in (run_dir / "checkpoints").iterdir() if p.is_dir()]
    for folder in folders:
        tensors, _ = read_folder(folder)
        for name, t in tensors.items():
            assert not t.is_floating_point() or torch.isfinite(t).all(), (folder, name)
    return folders


def test_nan_loss_stops_the_run_and_never_saves_nan_weights(tmp_path, nan_model):
    """A NaN loss raises NonFiniteLossError naming phase and step; the run is marked failed; checkpoints stay finite."""
    cfg = toy(tmp_path, {"type": "nan-test-ae"}, checkpoint_every=3, keep_last=10, log_every=5, eval_every=4)
    with pytest.raises(NonFiniteLossError, match=r"'reconstruction'.*step 6"):
        regae.train(cfg)
    assert nan_model.model_type == "nan-test-ae"
    run_dir = tmp_path / "run"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "NonFiniteLossError" in info["error"]
    folders = checkpoint_tensors_are_finite(run_dir)
    # steps 3 and 6 were saved before the bad step, `best` at the step-4 evaluation; nothing after step 6
    assert sorted(p.name for p in folders) == ["best", "step-00000003", "step-00000006"]
    assert read_folder(run_dir / "checkpoints" / "best")[1]["step"] == 4
    assert not (run_dir / "model").exists()


def test_diverging_sgd_is_caught_as_non_finite(tmp_path):
    """lr=1e6 with SGD blows the loss up: the run stops with NonFiniteLossError and no Inf/NaN checkpoint."""
    cfg = toy(tmp_path, optim={"name": "sgd", "lr": 1e6}, checkpoint_every=1, keep_last=100, log_every=1)
    with pytest.raises(NonFiniteLossError, match=r"phase 'reconstruction'.*at step \d+"):
        regae.train(cfg)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"
    checkpoint_tensors_are_finite(tmp_path / "run")


def test_phase_optim_with_an_unknown_phase_is_refused(tmp_path):
    """``train.phase_optim`` naming a phase the model does not have is a ConfigError listing the real ones."""
    cfg = toy(tmp_path, phase_optim={"discriminator": {"lr": 0.1}})
    with pytest.raises(ConfigError, match=r"discriminator.*reconstruction"):
        regae.train(cfg)


def test_phase_optim_overrides_the_phase_optimizer(tmp_path):
    """``train.phase_optim.<phase>`` changes that phase's optimizer settings (here its learning rate)."""
    cfg = toy(tmp_path, phase_optim={"reconstruction": {"lr": 0.05}}, max_steps=10)
    splits = load_data(cfg.data)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit(build_model(cfg, splits), splits)
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.05


def test_phase_repeats_steps_a_phase_several_times(tmp_path):
    """``train.phase_repeats.<phase>: n`` takes n optimizer steps of that phase per training step; unknown
    phases and counts below 1 are refused."""
    cfg = toy(tmp_path, phase_repeats={"reconstruction": 3}, max_steps=4)
    splits = load_data(cfg.data)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit(build_model(cfg, splits), splits)
    opt = trainer.optimizers[0]
    opt = getattr(opt, "optimizer", opt)
    assert {int(s["step"]) for s in opt.state.values()} == {12}  # Adam's per-parameter step count
    with pytest.raises(ConfigError, match=r"phase_repeats names unknown phases \['generator'\]"):
        regae.train(toy(tmp_path / "b", phase_repeats={"generator": 2}))
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="phase_repeats.reconstruction must be an integer"):
            toy(tmp_path / "c", phase_repeats={"reconstruction": bad})


def test_schedule_for_an_attribute_the_model_cannot_schedule_is_refused(tmp_path):
    """``train.schedules`` for a hyperparameter the model does not expose is a ConfigError."""
    cfg = toy(tmp_path, schedules={"noise_std": {"start": 0.5, "end": 0.1, "steps": 10}})
    with pytest.raises(ConfigError, match=r"noise_std.*AE"):
        regae.train(cfg)


def test_noise_schedule_drives_the_dae_noise_level(tmp_path):
    """A linear noise_std schedule moves model.noise_std during training and ends at its final value."""
    cfg = toy(
        tmp_path,
        {"type": "dae", "noise_std": 0.9},
        schedules={"noise_std": {"start": 0.5, "end": 0.1, "steps": 20}},
        checkpoint_every=10,
        keep_last=5,
    )
    splits = load_data(cfg.data)
    model = build_model(cfg, splits)
    assert model.noise_std == 0.9
    model = Trainer(cfg, tmp_path / "run").fit(model, splits)
    assert model.noise_std == pytest.approx(0.1)
    # the checkpoint after 10 steps records the value used by the 10th step: 0.5 - 0.4 * 9/20
    _, state = read_folder(tmp_path / "run" / "checkpoints" / "step-00000010")
    assert state["schedules"]["noise_std"] == pytest.approx(0.32)


def test_checkpoint_minutes_saves_at_epoch_ends_and_train_seconds_add_up_over_a_resume(tmp_path):
    """With ``checkpoint_minutes`` passed at every epoch's end, each epoch leaves a checkpoint (the default of
    10 minutes protects long runs from being killed); a resumed run's train_seconds include the first part."""
    import json

    cfg = toy(tmp_path, checkpoint_minutes=1e-9, keep_last=100, max_steps=None, epochs=3)
    splits = load_data(cfg.data)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit(build_model(cfg, splits), splits)
    per_epoch = trainer.steps_per_epoch
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert saved == [f"step-{e * per_epoch:08d}" for e in (1, 2, 3)]
    _, state = read_folder(tmp_path / "run" / "checkpoints" / f"step-{per_epoch:08d}")
    assert 0 < state["train_seconds"] <= trainer.train_seconds
    assert toy(tmp_path).train.checkpoint_minutes == 10.0
    with pytest.raises(ConfigError, match="checkpoint_minutes must be > 0"):
        toy(tmp_path, checkpoint_minutes=0)

    first = regae.train(toy(tmp_path, name="timed", max_steps=20))
    before = json.loads((first / "run.json").read_text())["train_seconds"]
    regae.resume(first, ["max_steps=30"])
    info = json.loads((first / "run.json").read_text())
    assert info["steps"] == 30 and info["train_seconds"] > before


def _one_second_per_step(monkeypatch) -> None:
    """A clock that advances one second per training step and not otherwise: timings become exact."""
    import regae.engine.trainer as trainer_module

    clock = {"t": 0.0}
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock["t"])
    step = Trainer.train_step

    def timed_step(self, batch):
        step(self, batch)
        clock["t"] += 1.0

    monkeypatch.setattr(Trainer, "train_step", timed_step)


def test_fit_schedule_compresses_the_schedule_into_max_minutes_and_keeps_it_over_a_resume(tmp_path, monkeypatch):
    """``train.fit_schedule``: after 5 % of ``max_minutes`` (3 s of 60 here, at 1 s per step) the run is cut to the
    steps that fit with a 5 % margin (3 + int(0.95 * 57) = 57 of 200) and the cosine runs on a clock 200/57 times
    faster, so it ends at zero; without it the same time limit stops the cosine near its start. A resumed run
    keeps the fitted length and repeats the uninterrupted run's weights exactly."""
    _one_second_per_step(monkeypatch)
    cosine = {"name": "adam", "lr": 0.01, "schedule": "cosine", "schedule_unit": "step"}
    common = dict(max_steps=None, epochs=20, max_minutes=1.0, optim=cosine, checkpoint_every=10, keep_last=100)
    splits = load_data(toy(tmp_path).data)  # 500 two-moons points: 10 steps of 50 per epoch, 200 planned

    cfg = toy(tmp_path, name="fitted", fit_schedule=True, **common)
    fitted = Trainer(cfg, tmp_path / "fitted")
    fitted.fit(build_model(cfg, splits), splits)
    assert (fitted.planned_steps, fitted.fitted_steps, fitted.step) == (200, 57, 57)
    assert fitted.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)

    plain_cfg = toy(tmp_path, name="plain", **common)
    plain = Trainer(plain_cfg, tmp_path / "plain")
    plain.fit(build_model(plain_cfg, splits), splits)
    assert plain.fitted_steps is None and plain.step == 61  # stopped by the clock, 61 s > 60 s
    assert plain.optimizers[0].param_groups[0]["lr"] > 0.7 * 0.01

    resumed = Trainer(cfg, tmp_path / "resumed")
    resumed.fit(build_model(cfg, splits), splits, resume_from=tmp_path / "fitted" / "checkpoints" / "step-00000030")
    assert (resumed.fitted_steps, resumed.step) == (57, 57)
    for k, v in fitted.raw_model.state_dict().items():
        assert torch.equal(v, resumed.raw_model.state_dict()[k]), k

    with pytest.raises(ConfigError, match="fit_schedule fits the schedule to train.max_minutes"):
        toy(tmp_path, fit_schedule=True)


def test_schedule_factor_matches_torchs_schedulers():
    """The closed forms that ``fit_schedule`` runs on its compressed clock are torch's schedules at whole units."""
    from regae.config import OptimConfig
    from regae.engine.trainer import build_scheduler, schedule_factor

    for kw in (
        {"schedule": "cosine"},
        {"schedule": "step", "step_size": 3, "gamma": 0.5},
        {"schedule": "multistep", "milestones": [4, 7], "gamma": 0.1},
        {"schedule": "exponential", "gamma": 0.9},
    ):
        oc = OptimConfig(name="sgd", lr=1.0, **kw)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sch = build_scheduler(opt, oc, 10)
        for k in range(10):
            assert opt.param_groups[0]["lr"] == pytest.approx(schedule_factor(oc, k, 10), rel=1e-6), (kw, k)
            opt.step()
            sch.step()


def test_a_run_with_bad_data_config_creates_no_run_folder(tmp_path):
    """Bad data options fail before anything is written: no run folder appears."""
    with pytest.raises(ConfigError, match="binarize"):
        regae.train(toy(tmp_path, data={"binarize": "fixed"}))
    with pytest.raises(ConfigError, match="Did you mean 'two-moons'"):
        regae.train(toy(tmp_path, data={"name": "two-moon"}))
    assert not (tmp_path / "run").exists()
    assert list(tmp_path.iterdir()) == []


def test_training_into_an_existing_run_folder_needs_overwrite(tmp_path):
    """An existing run folder is refused (files untouched) unless overwrite=true, which replaces it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("precious: true\n")
    (run_dir / "notes.txt").write_text("do not delete")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()}
    with pytest.raises(ConfigError, match="already exists.*overwrite=true"):
        regae.train(toy(tmp_path))
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()} == before

    regae.train(toy(tmp_path, overwrite=True, max_steps=5, log_every=5))
    assert not (run_dir / "notes.txt").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


# ---------------------------------------------------------------------------------------- checkpoints


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.arange(5), "h": torch.randn(7, generator=g).half()}


def test_write_and_read_folder_round_trip(tmp_path):
    """read_folder returns exactly the tensors and state given to write_folder, plus a SHA-256."""
    tensors = sample_tensors()
    folder = write_folder(tmp_path / "ck", tensors, {"step": 12, "note": "x"})
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "tensors.safetensors"]
    loaded, state = read_folder(folder)
    assert loaded.keys() == tensors.keys()
    for k, t in tensors.items():
        assert torch.equal(loaded[k], t) and loaded[k].dtype == t.dtype
    assert state["step"] == 12 and state["note"] == "x"
    assert len(state["sha256"]["tensors.safetensors"]) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temp folders left behind


def test_truncated_tensor_file_is_a_checkpoint_error(tmp_path):
    """A truncated tensors file is refused, with the file named."""
    folder = write_folder(tmp_path / "ck", sample_tensors(), {})
    path = folder / "tensors.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="tensors.safetensors"):
        read_folder(folder)


def test_flipped_byte_is_caught_by_the_sha256(tmp_path):
    """One flipped byte in the tensor data (same size, still loadable) fails the SHA-256 check."""
    folder = write_folder(tmp_path / "ck", {"w": torch.zeros(64)}, {})
    path = folder / "tensors.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the float data, not the header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        read_folder(folder)
    tensors, _ = read_folder(folder, verify=False)  # the file itself still parses: only the hash catches it
    assert tensors["w"].abs().sum() != 0


def test_missing_files_are_checkpoint_errors(tmp_path):
    """A folder without its state or tensor file is refused with the missing file named."""
    folder = write_folder(tmp_path / "ck", sample_tensors(), {})
    (folder / "state.json").unlink()
    with pytest.raises(CheckpointError, match="state.json is missing"):
        read_folder(folder)


def test_write_folder_refuses_nan_and_keeps_the_old_folder(tmp_path):
    """Saving NaN tensors raises NonFiniteLossError and leaves an existing folder of that name intact."""
    good = sample_tensors()
    folder = write_folder(tmp_path / "best", good, {"step": 1})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    bad = {**good, "w": torch.full((4, 3), float("nan"))}
    with pytest.raises(NonFiniteLossError, match="'w'"):
        write_folder(tmp_path / "best", bad, {"step": 2})
    with pytest.raises(NonFiniteLossError):
        write_folder(tmp_path / "best", {"x": torch.tensor([1.0, float("inf")])}, {"step": 2})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert read_folder(folder)[1]["step"] == 1


def test_write_folder_replaces_an_existing_folder(tmp_path):
    """Writing over an existing folder replaces its content atomically (the `best` checkpoint case)."""
    write_folder(tmp_path / "best", {"w": torch.zeros(2)}, {"step": 1})
    write_folder(tmp_path / "best", {"w": torch.ones(2)}, {"step": 2})
    tensors, state = read_folder(tmp_path / "best")
    assert state["step"] == 2 and torch.equal(tensors["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_adam_state_round_trips_exactly_through_a_checkpoint(tmp_path):
    """flatten/unflatten through write_folder + JSON restore an Adam optimizer so it steps identically."""

    def setup():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        return net, torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)

    def step(net, opt, seed):
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(seed))
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()

    net, opt = setup()
    for s in range(3):
        step(net, opt, s)
    tensors, meta = flatten_optimizer(opt.state_dict(), "optim.rec")
    folder = write_folder(tmp_path / "ck", {**tensors, **{f"model.{k}": v for k, v in net.state_dict().items()}}, meta)

    loaded, state = read_folder(folder)
    net2, opt2 = setup()
    net2.load_state_dict({k[6:]: v for k, v in loaded.items() if k.startswith("model.")})
    opt2.load_state_dict(unflatten_optimizer(loaded, state, "optim.rec"))
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd["param_groups"] == sd2["param_groups"]
    assert sd2["param_groups"][0]["betas"] == (0.8, 0.95)
    assert sd["state"].keys() == sd2["state"].keys()
    for pid in sd["state"]:
        assert sd["state"][pid].keys() == sd2["state"][pid].keys()
        for key, value in sd["state"][pid].items():
            assert torch.equal(value, sd2["state"][pid][key]), (pid, key)
    step(net, opt, 10)
    step(net2, opt2, 10)
    for p, p2 in zip(net.parameters(), net2.parameters()):
        assert torch.equal(p, p2)


def test_checkpoint_files_are_not_left_half_written(tmp_path, monkeypatch):
    """If saving fails midway, neither the target folder nor a temp folder is left behind."""
    import regae.engine.checkpoint as ck

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_folder(tmp_path / "ck", sample_tensors(), {})
    assert os.listdir(tmp_path) == []


def test_dotted_key_without_section_is_resolved_like_a_bare_key():
    """``optim.name=sgd`` means ``train.optim.name=sgd``; ``phase_optim={}`` clears a mapping."""
    cfg = load_experiment("aae-semi-100", ["optim.name=adam", "optim.betas=[0.5,0.999]", "phase_optim={}"])
    assert cfg.train.optim.name == "adam" and cfg.train.optim.betas == (0.5, 0.999)
    assert cfg.train.phase_optim == {}
    with pytest.raises(ConfigError, match="Did you mean 'optim'"):
        load_experiment("dae-mnist", ["optm.lr=0.1"])


# ------------------------------------------------------------------------------ configs of older regae


def _old_aae_raw() -> dict:
    """A plain AAE's config as regae wrote it before config versions: with the since-moved label_shift."""
    raw = build_experiment({"model": {"type": "aae", "hidden": [8], "disc_hidden": [8], "code_dim": 2}}).to_dict()
    assert raw.pop("config_version") == CONFIG_VERSION
    raw["model"]["label_shift"] = 0
    return raw


def test_a_run_saved_by_an_older_regae_loads_with_a_warning(tmp_path):
    """A run folder whose config.yaml has a key a later version removed still loads; the warning names it."""
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_old_aae_raw()))
    with pytest.warns(ConfigMigrationWarning, match=r"config.yaml.*version 1.*model.label_shift"):
        cfg = read_run_config(tmp_path)
    assert cfg.model_type == "aae" and not hasattr(cfg.model, "label_shift")
    # written again, it says its version and loads silently
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_run_config(tmp_path) == cfg


def test_user_configs_stay_strict_and_newer_versions_are_refused(tmp_path):
    """Migration is for saved runs: a hand-written config with a removed key is still an unknown key; a
    config from a newer regae, or with a nonsense version, is refused by name."""
    raw = _old_aae_raw()
    with pytest.raises(ConfigError, match="unknown config key 'model.label_shift'"):
        build_experiment(raw)
    with pytest.raises(ConfigError, match="newer regae"):
        build_experiment({**raw, "config_version": CONFIG_VERSION + 1})
    with pytest.raises(ConfigError, match="config_version must be an integer"):
        build_experiment({**raw, "config_version": "two"})
    with pytest.warns(ConfigMigrationWarning):  # an old run's file, copied by hand, says its version
        assert build_experiment({**raw, "config_version": 1}).model_type == "aae"


def test_a_model_folder_saved_by_an_older_regae_loads_with_a_warning(tmp_path):
    """from_pretrained migrates the config.json of a model folder written before config versions."""
    model = {"type": "aae", "hidden": [8], "disc_hidden": [8], "code_dim": 2}
    cfg = build_experiment({"model": model, "data": {"name": "two-moons", "n_samples": 200}})
    model = build_model(cfg, load_data(cfg.data))
    folder = model.save_pretrained(tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    assert meta.pop("config_version") == CONFIG_VERSION
    meta["config"]["label_shift"] = 0
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.warns(ConfigMigrationWarning, match=r"config.json.*model.label_shift"):
        loaded = Autoencoder.from_pretrained(folder)
    assert loaded.config == model.config
