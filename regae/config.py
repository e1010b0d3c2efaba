"""Typed experiment configs: dataclasses, YAML files and ``key=value`` overrides.

An experiment has three sections::

    model: {type: dae, code_dim: 32, noise_std: 0.3, ...}   # the model's own config class
    data:  {name: mnist, ...}                                # regae.data.DataConfig
    train: {epochs: 20, batch_size: 100, optim: {...}, ...}  # TrainConfig

A flat override ``noise_std=0.3`` is looked up in ``train``, then ``model``, then ``data``;
``data.seed=3`` addresses a section explicitly. Unknown or mistyped keys are errors that name
the closest valid key.
"""

from __future__ import annotations

import copy
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from regae.data.base import DataConfig
from regae.errors import ConfigError, ConfigMigrationWarning
from regae.registry import MODELS, suggest


@dataclass
class OptimConfig:
    """One phase's optimizer and learning-rate schedule.

    ``schedule``: "constant", "step" (×gamma every ``step_size`` units), "multistep" (×gamma at each
    of ``milestones``), "cosine" (to 0 over the run) or "exponential" (×gamma each unit);
    ``schedule_unit`` is "epoch" or "step".
    """

    name: str = "adam"  # adam, adamw, sgd, rmsprop
    lr: float = 1e-3
    momentum: float = 0.9  # sgd and rmsprop
    betas: tuple[float, float] = (0.9, 0.999)  # adam and adamw
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: str = "constant"
    schedule_unit: str = "epoch"
    step_size: int = 10
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_choice("optim.name", self.name, ("adam", "adamw", "sgd", "rmsprop"))
        check_choice("optim.schedule", self.schedule, ("constant", "step", "multistep", "cosine", "exponential"))
        check_choice("optim.schedule_unit", self.schedule_unit, ("epoch", "step"))
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("optim.weight_decay must be >= 0 and optim.momentum in [0, 1)")


@dataclass
class ScheduleConfig:
    """A hyperparameter that changes during training (noise level, k of k-sparse, a margin...).

    ``value = start + (end - start) * shape(t)`` with t = progress in [0, 1] over ``steps`` steps
    (after which it stays at ``end``); shape is linear, cosine or exponential (geometric).
    """

    start: float = 1.0
    end: float = 0.0
    steps: int = 1000
    kind: str = "linear"

    def __post_init__(self) -> None:
        check_choice("schedule kind", self.kind, ("linear", "cosine", "exponential"))
        if self.steps < 1:
            raise ConfigError(f"a schedule needs steps >= 1, got {self.steps}")
        if self.kind == "exponential" and (self.start <= 0 or self.end <= 0):
            raise ConfigError("an exponential schedule needs start > 0 and end > 0")

    def value(self, step: int) -> float:
        import math

        t = min(max(step, 0) / self.steps, 1.0)
        if self.kind == "cosine":
            t = 0.5 * (1 - math.cos(math.pi * t))
        elif self.kind == "exponential":
            return self.start * (self.end / self.start) ** t
        return self.start + (self.end - self.start) * t


@dataclass
class TrainConfig:
    """How to train: length, batches, optimizers, checkpoints, devices, logging."""

    name: str | None = None  # run folder name under out_dir; default: the experiment's name
    out_dir: str = "runs"
    overwrite: bool = False  # replace an existing run folder of the same name
    seed: int = 0
    epochs: int = 10
    max_steps: int | None = None  # stop after this many steps even if epochs remain
    max_minutes: float | None = None  # stop (cleanly, with a checkpoint) after this much training time
    # With max_minutes: time the first 5 % of it, then shorten the run to the steps that fit and run every
    # schedule (learning rates, train.schedules) on a clock compressed to match, so a slow machine still gets
    # the whole schedule (a cosine decays to zero) instead of its first part.
    fit_schedule: bool = False
    batch_size: int = 100  # global batch: split over the processes under DDP
    optim: OptimConfig = field(default_factory=OptimConfig)
    phase_optim: dict[str, dict] = field(default_factory=dict)  # per-phase overrides of `optim` fields
    phase_repeats: dict[str, int] = field(default_factory=dict)  # optimizer steps of a phase per training step
    schedules: dict[str, ScheduleConfig] = field(default_factory=dict)  # model attribute -> schedule
    log_every: int = 50  # steps between loss logs (and the only host syncs of the loop)
    eval_every: int | None = None  # steps between validation passes; None: at the end of every epoch
    checkpoint_every: int | None = None  # steps between checkpoints; one is always written at the end
    checkpoint_minutes: float | None = 10.0  # training minutes between checkpoints, written at an epoch's end
    keep_last: int = 2  # checkpoints kept besides `best`
    best_metric: str | None = "val/energy"  # lower is better; None disables the `best` checkpoint
    accelerator: str = "auto"  # cpu, cuda, mps, auto
    devices: int = 1
    strategy: str = "auto"  # auto, ddp, ddp_spawn...
    precision: str = "32-true"  # 32-true, bf16-mixed, 16-mixed
    deterministic: bool = True  # torch.use_deterministic_algorithms (bit-identical resume on CPU)
    num_threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    progress: bool = True  # tqdm progress bar
    compile: bool = False  # torch.compile the model
    # EMA of the weights (regae.engine.ema): None, or its decay in (0, 1). The average is the run's model:
    # val/* and test/* score it, val_online/* and test_online/* the weights the optimizers train.
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "log_every", "keep_last", "devices"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_minutes", "checkpoint_minutes"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"train.{key} must be > 0 or null, got {value}")
        for key in ("max_steps", "eval_every", "checkpoint_every", "num_threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"train.{key} must be >= 1 or null, got {value}")
        if self.fit_schedule and self.max_minutes is None:
            raise ConfigError("train.fit_schedule fits the schedule to train.max_minutes; set max_minutes too")
        for name, n in self.phase_repeats.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ConfigError(f"train.phase_repeats.{name} must be an integer >= 1, got {n!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must lie in (0, 1) or be null, got {self.ema_decay!r}")
        check_choice("train.precision", self.precision, ("32-true", "32", "bf16-mixed", "16-mixed", "64-true"))


@dataclass
class ExperimentConfig:
    """A whole experiment: ``model`` (a model config with a ``type``), ``data`` and ``train``."""

    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: str = "custom"  # name of the experiment it came from
    description: str = ""

    @property
    def model_type(self) -> str:
        return self.model.type

    def to_dict(self) -> dict:
        return {"config_version": CONFIG_VERSION, **to_dict(self)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------- saved configs

# Saved runs and model folders record the config format they were written in. Bump CONFIG_VERSION whenever
# a key is renamed or removed, and add the step that brings version N - 1 to N to MIGRATIONS, so runs saved
# by an earlier regae still load (user-written configs stay strict: an unknown key is an error).
CONFIG_VERSION = 2


def _label_shift_moved(raw: dict) -> list[str]:
    """Version 2 moved ``model.label_shift`` from every AAE to the semi-supervised AAEs, the only ones whose
    training it ever changed; on the others it is dropped."""
    model = raw.get("model")
    if not isinstance(model, dict) or "label_shift" not in model or model.get("type") not in MODELS:
        return []
    if "label_shift" in {f.name for f in fields(model_config_class(model["type"]))}:
        return []
    value = model.pop("label_shift")
    return [f"dropped model.label_shift={value!r}, which model type {model['type']!r} never used"]


MIGRATIONS: dict[int, Callable[[dict], list[str]]] = {1: _label_shift_moved}  # version -> its step to +1


def migrate(raw: dict, where: str, default_version: int = 1) -> dict:
    """A config mapping saved by an earlier regae, brought up to :data:`CONFIG_VERSION` (a copy).

    Its ``config_version`` key (``default_version`` when absent: files saved before versioning) picks
    the steps to run; each change is named in one warning. A newer version than this regae's is an error.
    """
    raw = copy.deepcopy(raw)
    version = raw.pop("config_version", default_version)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"{where}: config_version must be an integer >= 1, got {version!r}")
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{where} was written by a newer regae (config version {version}; this one reads up to "
            f"{CONFIG_VERSION}). Upgrade regae to load it."
        )
    changes = [change for v in range(version, CONFIG_VERSION) for change in MIGRATIONS[v](raw)]
    if changes:
        warnings.warn(
            f"{where} was saved by an older regae (config version {version}): " + "; ".join(changes),
            ConfigMigrationWarning,
            stacklevel=2,
        )
    return raw


# ----------------------------------------------------------------------------------------------- parsing


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        hint = suggest(str(value), [str(c) for c in choices])
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}.{hint}")


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-able data (tuples become lists)."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where it is lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} does not fit {_describe(tp)}")
    if is_dataclass(tp):
        if is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and origin is tuple and args:
            value = [value]  # `hidden=512` means a 1-tuple
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and mistyped values."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            raise ConfigError(
                f"unknown config key {path!r}.{suggest(str(key), list(known))} Valid keys: {', '.join(known)}"
            )
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def model_config_class(model_type: str) -> type:
    return MODELS.get(model_type).config_class


def build_experiment(raw: dict, experiment: str = "custom") -> ExperimentConfig:
    """Validate a raw mapping (from YAML) into an ExperimentConfig."""
    if not isinstance(raw, dict):
        raise ConfigError(f"an experiment config must be a mapping, got {type(raw).__name__}")
    # a config written by `regae config` or copied from a run folder says its version; without it, the current
    raw = migrate(raw, f"experiment {experiment!r}", default_version=CONFIG_VERSION)
    unknown = set(raw) - {"model", "data", "train", "experiment", "description"}
    if "base" in unknown:
        raise ConfigError(
            "`base:` is resolved when an experiment is read from its file (load_experiment, read_experiment); "
            "merge the base into a mapping with regae.config.merge before building it"
        )
    for key in sorted(unknown):
        raise ConfigError(
            f"unknown top-level config key {key!r}.{suggest(key, ['model', 'data', 'train', 'description'])} "
            "An experiment has the sections model, data and train."
        )
    model_raw = raw.get("model")
    if isinstance(model_raw, str):
        model_raw = {"type": model_raw}
    if not isinstance(model_raw, dict) or "type" not in model_raw:
        raise ConfigError("the config needs `model: {type: <name>, ...}`; see `regae list` for model names")
    model_cfg = from_dict(model_config_class(model_raw["type"]), model_raw, "model")
    return ExperimentConfig(
        model=model_cfg,
        data=from_dict(DataConfig, raw.get("data") or {}, "data"),
        train=from_dict(TrainConfig, raw.get("train") or {}, "train"),
        experiment=str(raw.get("experiment", experiment)),
        description=str(raw.get("description", "")),
    )


def parse_value(text: str) -> Any:
    """A CLI value: YAML scalars and flow lists (``0.3``, ``true``, ``null``, ``[500,500]``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` strings to a raw experiment mapping.

    A dotted key (``train.optim.lr=1e-4``) is taken literally; a bare key is looked up in the train,
    model and data sections, in that order.
    """
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    if isinstance(raw.get("model"), str):
        raw["model"] = {"type": raw["model"]}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. epochs=5)")
        key, text = item.split("=", 1)
        key = key.strip()
        value = parse_value(text)
        if key == "model" or key == "model.type":
            raise ConfigError("the model type cannot be overridden: pick another experiment or YAML file")
        path = key.split(".")
        if path[0] not in ("model", "data", "train"):  # `optim.lr` -> train.optim.lr, like a bare key
            path = _resolve_flat_key(raw, path[0])[:-1] + path
        node = raw.setdefault(path[0], {})
        for part in path[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key!r}: {part!r} is not a section")
        node[path[-1]] = value
    return raw


def _section_fields(raw: dict) -> dict[str, list[str]]:
    model = raw.get("model") or {}
    model_fields: list[str] = []
    if isinstance(model, dict) and "type" in model:
        model_fields = [f.name for f in fields(model_config_class(model["type"]))]
    return {
        "train": [f.name for f in fields(TrainConfig)],
        "model": model_fields,
        "data": [f.name for f in fields(DataConfig)],
    }


def _resolve_flat_key(raw: dict, key: str) -> list[str]:
    sections = _section_fields(raw)
    for section in ("train", "model", "data"):
        if key in sections[section]:
            return [section, key]
    optim_fields = [f.name for f in fields(OptimConfig)]
    if key in optim_fields:
        return ["train", "optim", key]
    everything = ["train", "model", "data"] + sections["train"] + sections["model"] + sections["data"] + optim_fields
    raise ConfigError(
        f"unknown config key {key!r}.{suggest(key, everything)} See the run's config.yaml for valid keys."
    )


# ----------------------------------------------------------------------------------------- experiments


CONFIG_DIR = Path(__file__).parent / "configs"


def experiment_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return raw or {}


def _experiment_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """The YAML file of a registered experiment name (``dae-mnist``) or of a path (relative paths are
    taken from ``relative_to``, the folder of the config that names them, when given)."""
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        return relative_to / path if relative_to is not None and not path.is_absolute() else path
    if Path(name_or_path).is_file() and relative_to is None:
        return Path(name_or_path)
    names = experiment_names()
    if name_or_path not in names:
        raise ConfigError(
            f"unknown experiment {name_or_path!r}.{suggest(name_or_path, names)} "
            f"Known experiments: {', '.join(names)} (or pass a .yaml file)"
        )
    return CONFIG_DIR / f"{name_or_path}.yaml"


def merge(base: dict, changes: dict) -> dict:
    """``base`` updated by ``changes``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_experiment(name_or_path: str) -> dict:
    """An experiment's raw mapping with its ``base:`` chain resolved.

    A config may start from another with ``base: <experiment name or .yaml path>`` and list only what it
    changes, so a variant (``aae-likelihood-warp``: A.1's recipe plus a warp) states its departure and
    follows every later fix of its base. Its own description replaces the base's.
    """
    layers: list[dict] = []  # the named config first, then its base, its base's base...
    seen: list[Path] = []
    path = _experiment_path(name_or_path)
    while True:
        raw = load_yaml(path)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: an experiment config must be a mapping, got {type(raw).__name__}")
        seen.append(path.resolve())
        if isinstance(raw.get("model"), str):  # `model: ae` is short for `model: {type: ae}`
            raw["model"] = {"type": raw["model"]}
        if layers:
            raw.pop("experiment", None)  # a run's saved config names its own run, not the variant's
        base = raw.pop("base", None)
        layers.append(raw)
        if base is None:
            break
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: `base` must name an experiment or a .yaml file, got {base!r}")
        path = _experiment_path(base, relative_to=path.parent)
        if path.resolve() in seen:
            raise ConfigError(f"config `base` chain loops: {' -> '.join(p.stem for p in [*seen, path])}")
    out: dict = {}
    for layer in reversed(layers):
        out = merge(out, layer)
    return out


def load_experiment(name_or_path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """An experiment by registered name (``dae-mnist``) or YAML path, with ``key=value`` overrides."""
    path = _experiment_path(name_or_path)
    name = path.stem
    raw = read_experiment(name_or_path)
    raw = apply_overrides(raw, overrides or [])
    cfg = build_experiment(raw, experiment=raw.get("experiment", name))
    if cfg.train.name is None:
        cfg.train.name = name
    return cfg


__all__ = [
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "ExperimentConfig",
    "DataConfig",
    "build_experiment",
    "migrate",
    "CONFIG_VERSION",
    "load_experiment",
    "read_experiment",
    "merge",
    "apply_overrides",
    "experiment_names",
    "from_dict",
    "to_dict",
]
