"""One generic training loop that runs any model's named phases, on Lightning Fabric.

Per training step, for each phase of ``model.phases()``: zero that phase's gradients, compute its loss
through the (possibly DDP-wrapped) module, backward, clip, step, run its hook. Losses are accumulated on the
device and read back only every ``log_every`` steps, so the hot loop has no host syncs.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from torch import Tensor

from regae.config import ExperimentConfig, OptimConfig, from_dict
from regae.data.base import ArrayDataset, DataSplits, batches_per_epoch, iterate_batches
from regae.engine.checkpoint import CheckpointManager, flatten_optimizer, read_folder, unflatten_optimizer
from regae.engine.ema import WeightAverage
from regae.engine.logger import MetricsLogger
from regae.engine.phase import Batch, Phase
from regae.errors import CheckpointError, ConfigError, NonFiniteLossError

# ------------------------------------------------------------------------------------------ optimizers


def _fused_ok(params: list[torch.nn.Parameter]) -> bool:
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """An optimizer from its config, fused where PyTorch supports it (one kernel for all parameters)."""
    fused = {"fused": True} if _fused_ok(params) else {"foreach": True}
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **fused)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, **fused
        )
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
        )
    raise ConfigError(f"unknown optimizer {cfg.name!r}")


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, total_units: int):
    """The learning-rate schedule of one phase, stepped once per epoch or per step (``schedule_unit``)."""
    sch = torch.optim.lr_scheduler
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "step":
        return sch.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "multistep":
        return sch.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return sch.CosineAnnealingLR(opt, T_max=max(total_units, 1))
    if cfg.schedule == "exponential":
        return sch.ExponentialLR(opt, gamma=cfg.gamma)
    raise ConfigError(f"unknown schedule {cfg.schedule!r}")


def schedule_factor(cfg: OptimConfig, u: float, total_units: int) -> float:
    """The learning-rate multiplier of ``cfg.schedule`` after ``u`` (possibly fractional) schedule units, in the
    closed forms of torch's schedulers; ``train.fit_schedule`` runs these on a compressed clock."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** math.floor(u / cfg.step_size)
    if cfg.schedule == "multistep":
        return cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), u)
    if cfg.schedule == "cosine":
        t_max = max(total_units, 1)
        return 0.5 * (1 + math.cos(math.pi * min(u, t_max) / t_max))
    if cfg.schedule == "exponential":
        return cfg.gamma**u
    raise ConfigError(f"unknown schedule {cfg.schedule!r}")


def phase_optim_config(cfg: ExperimentConfig, phase: str) -> OptimConfig:
    """``train.optim`` with the fields of ``train.phase_optim[phase]`` replaced."""
    base = dataclasses.asdict(cfg.train.optim)
    return from_dict(OptimConfig, {**base, **cfg.train.phase_optim.get(phase, {})}, f"train.phase_optim.{phase}")


def make_fabric(cfg: ExperimentConfig) -> Fabric:
    """A Fabric for the devices, strategy and precision of ``cfg.train`` (not yet launched)."""
    t = cfg.train
    strategy = t.strategy
    if strategy in ("ddp", "ddp_spawn"):
        from lightning_fabric.strategies import DDPStrategy

        from regae.registry import MODELS

        # a model whose phases update parameter subsets leaves some parameters without gradient
        find_unused = getattr(MODELS.get(cfg.model_type), "ddp_find_unused_parameters", True)
        strategy = DDPStrategy(
            find_unused_parameters=find_unused, start_method="spawn" if t.strategy == "ddp_spawn" else "popen"
        )
    precision = "32-true" if t.precision == "32" else t.precision
    return Fabric(accelerator=t.accelerator, devices=t.devices, strategy=strategy, precision=precision)


# ----------------------------------------------------------------------------------------------- loop


class Trainer:
    """Runs ``model.phases()`` over ``splits.train`` as configured by ``cfg.train``.

    Args:
        cfg: the whole experiment (the loop reads ``cfg.train``).
        run_dir: where metrics, checkpoints and the progress of this run live.
        fabric: a launched Fabric; one is made from the config if not given.
    """

    def __init__(self, cfg: ExperimentConfig, run_dir: Path | str, fabric: Fabric | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.fabric = fabric or make_fabric(cfg)
        self.ckpt = CheckpointManager(self.run_dir / "checkpoints", cfg.train.keep_last)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.ema: WeightAverage | None = None
        self.seconds_before = 0.0  # training time of the earlier invocations of a resumed run
        # train.fit_schedule: the steps that fit max_minutes, and how much faster than the steps the
        # schedules' clock then runs (planned steps / fitted steps)
        self.fitted_steps: int | None = None
        self.schedule_scale = 1.0
        self._t0 = time.perf_counter()

    # ----------------------------------------------------------------------------------------- setup

    def _setup(self, model: torch.nn.Module, splits: DataSplits) -> None:
        fabric, t = self.fabric, self.cfg.train
        self.splits = splits.to(fabric.device)
        self.train_data = self.splits.train
        world = fabric.world_size
        if t.batch_size % world:
            raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by the {world} processes")
        if len(self.train_data) < t.batch_size:
            raise ConfigError(
                f"train.batch_size={t.batch_size} exceeds the {len(self.train_data)} training samples; lower it"
            )
        self.local_batch = t.batch_size // world
        self.steps_per_epoch = batches_per_epoch(len(self.train_data), t.batch_size)
        total_steps = self.steps_per_epoch * t.epochs
        self.total_steps = min(total_steps, t.max_steps) if t.max_steps else total_steps
        self.planned_steps = self.total_steps

        model = model.to(fabric.device)
        model.attach_data(self.splits)
        self.raw_model = model
        self.phases: list[Phase] = model.phases()
        for key in ("phase_optim", "phase_repeats"):
            unknown = set(getattr(t, key)) - {p.name for p in self.phases}
            if unknown:
                raise ConfigError(
                    f"train.{key} names unknown phases {sorted(unknown)}; "
                    f"this model's phases are {[p.name for p in self.phases]}"
                )
        for p in self.phases:
            p.repeats = t.phase_repeats.get(p.name, p.repeats)
        for attr in t.schedules:
            if attr not in getattr(model, "schedulable", ()):
                raise ConfigError(
                    f"train.schedules.{attr}: {type(model).__name__} has no schedulable hyperparameter {attr!r}; "
                    f"it has {list(getattr(model, 'schedulable', ())) or 'none'}"
                )
        self.opt_cfgs = {p.name: phase_optim_config(self.cfg, p.name) for p in self.phases}
        optimizers = [build_optimizer(p.params, self.opt_cfgs[p.name]) for p in self.phases]
        if t.compile:
            model = torch.compile(model)
        self.model, *self.optimizers = fabric.setup(model, *optimizers)
        self.schedulers = []
        for opt, p in zip(self.optimizers, self.phases):
            oc = self.opt_cfgs[p.name]
            units = self.total_steps if oc.schedule_unit == "step" else t.epochs
            inner = opt.optimizer if hasattr(opt, "optimizer") else opt
            if t.fit_schedule and oc.schedule != "constant":
                self.schedulers.append(torch.optim.lr_scheduler.LambdaLR(inner, self._fitted_factor(oc, units)))
            else:
                self.schedulers.append(build_scheduler(inner, oc, units))
        # after fabric.setup, which may move the parameters: the average keeps references to them
        self.ema = WeightAverage(self.raw_model, t.ema_decay) if t.ema_decay else None

        # device-side accumulators: no host sync until the next log
        dev = fabric.device
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self._bad = torch.full((), -1, dtype=torch.long, device=dev)  # first (step * n_phases + phase) non-finite

    def _fitted_factor(self, oc: OptimConfig, units: int):
        # a closure (not an object), so LambdaLR's state_dict stores nothing for it: the scale is in the meta
        return lambda k: schedule_factor(oc, k * self.schedule_scale, units)

    def _fit_to_time(self, deadline: float, start_step: int, bar) -> None:
        """Shorten the run to the steps that fit before ``deadline`` at the speed measured so far (rank 0's
        measurement, for every process), with a 5 % margin for evaluations and checkpoints."""
        now = time.perf_counter()
        per_step = (now - self._t0) / max(self.step - start_step, 1)
        fits = self.step + int(0.95 * max(deadline - now, 0.0) / per_step)
        if self.fabric.world_size > 1:
            fits = int(self.fabric.broadcast(fits, src=0))
        self.fitted_steps = max(min(self.total_steps, fits), self.step)
        self.schedule_scale = self.planned_steps / max(self.fitted_steps, 1)
        self.total_steps = self.fitted_steps
        if bar is not None:
            bar.total = self.total_steps
            bar.refresh()

    # ---------------------------------------------------------------------------------- state / ckpt

    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        if self.ema is not None and self.ema.swapped:
            raise RuntimeError("the trainer's state is only defined while the model holds its online weights")
        tensors = {f"model.{k}": v for k, v in self.raw_model.state_dict().items()}
        meta: dict[str, Any] = {"optimizers": {}, "schedulers": {}}
        for opt, p in zip(self.optimizers, self.phases):
            t, m = flatten_optimizer(opt.state_dict(), f"optim.{p.name}")
            tensors.update(t)
            meta["optimizers"][p.name] = m
        for sch, p in zip(self.schedulers, self.phases):
            if sch is not None:
                meta["schedulers"][p.name] = sch.state_dict()
        # RNG of every process (gathered so that rank r resumes with its own stream)
        tensors["rng.torch"] = self._gather(torch.get_rng_state())
        if self.fabric.device.type == "cuda":
            tensors["rng.cuda"] = self._gather(torch.cuda.get_rng_state(self.fabric.device))
        meta.update(
            step=self.step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            best=self.best,
            train_seconds=self.clock(),
            world_size=self.fabric.world_size,
            schedules={k: getattr(self.raw_model, k) for k in self.cfg.train.schedules},
            planned_steps=self.planned_steps,
            fitted_steps=self.fitted_steps,
        )
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.average_tensors().items()})
            meta["ema_updates"] = self.ema.updates
        return tensors, meta

    def _gather(self, state: Tensor) -> Tensor:
        """One row per process (a no-op copy in a single process)."""
        if self.fabric.world_size == 1:
            return state.reshape(1, -1).clone()
        with warnings.catch_warnings():  # Fabric's all_gather goes through a deprecated torch function
            warnings.simplefilter("ignore", UserWarning)
            rows = self.fabric.all_gather(state.to(self.fabric.device))
        return rows.cpu().reshape(-1, state.numel())

    def load_state(self, folder: Path) -> None:
        tensors, meta = read_folder(folder)
        model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.raw_model.load_state_dict(model_sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{folder} does not match this model: {e}") from None
        for opt, p in zip(self.optimizers, self.phases):
            if p.name not in meta["optimizers"]:
                raise CheckpointError(f"{folder} has no optimizer state for phase {p.name!r}")
            opt.load_state_dict(unflatten_optimizer(tensors, meta["optimizers"][p.name], f"optim.{p.name}"))
        for sch, p in zip(self.schedulers, self.phases):
            if sch is not None and p.name in meta["schedulers"]:
                sch.load_state_dict(meta["schedulers"][p.name])
        rank = self.fabric.global_rank
        rng = tensors["rng.torch"]
        if meta.get("world_size", 1) == self.fabric.world_size:
            torch.set_rng_state(rng[rank].clone())
            if "rng.cuda" in tensors and self.fabric.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"][rank].clone(), self.fabric.device)
        else:  # a different number of processes: streams cannot match anyway; reseed deterministically
            torch.manual_seed(self.cfg.train.seed + 7919 * (meta["step"] + 1) + rank)
        for k, v in meta.get("schedules", {}).items():
            setattr(self.raw_model, k, v)
        if self.ema is not None:
            average = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
            if average:
                try:
                    self.ema.load_average(average, meta.get("ema_updates", 0))
                except KeyError as e:
                    raise CheckpointError(f"{folder}: {e.args[0]}") from None
            else:  # EMA switched on for a resumed run: the average starts at the resumed weights
                self.ema = WeightAverage(self.raw_model, self.cfg.train.ema_decay)
                warnings.warn(
                    f"{folder} holds no weight average; train.ema_decay starts one at step {meta['step']}",
                    stacklevel=2,
                )
        self.step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        # a schedule fitted to an earlier invocation's time stays as it was, unless the run was lengthened
        if self.cfg.train.fit_schedule and meta.get("fitted_steps") and meta.get("planned_steps") == self.planned_steps:
            self.fitted_steps = self.total_steps = int(meta["fitted_steps"])
            self.schedule_scale = self.planned_steps / max(self.fitted_steps, 1)
        self.best = meta.get("best")
        self.seconds_before = float(meta.get("train_seconds", 0.0))

    def save_checkpoint(self) -> Path | None:
        self._check_finite()  # never write weights that came out of a NaN step
        tensors, meta = self.state_tensors()
        path = None
        if self.fabric.is_global_zero:
            path = self.ckpt.save(self.step, tensors, meta)
        self.fabric.barrier()
        return path

    # ------------------------------------------------------------------------------------- the loop

    def _apply_schedules(self) -> None:
        for attr, sch in self.cfg.train.schedules.items():
            value = sch.value(self.step * self.schedule_scale)
            current = getattr(self.raw_model, attr)
            setattr(self.raw_model, attr, round(value) if isinstance(current, int) else value)

    def _accumulate(self, key: str, value: Tensor) -> None:
        v = value.detach().float()
        if key in self._sums:
            self._sums[key] += v
        else:
            self._sums[key] = v.clone()

    def train_step(self, batch: Batch) -> None:
        fabric, n_phases = self.fabric, len(self.phases)
        # In one process each phase backpropagates into its own parameters only: gradients of the others
        # (e.g. the discriminator's weights in a generator phase) would be computed and then discarded. Not
        # under DDP, whose reducer waits for a gradient of every parameter the forward pass used.
        single = fabric.world_size == 1
        for i, (phase, opt) in enumerate(zip(self.phases, self.optimizers)):
            if self.step % phase.every:
                continue
            for _ in range(phase.repeats):
                opt.zero_grad(set_to_none=True)
                out = self.model(batch, phase=phase.name)
                loss, logs = out if isinstance(out, tuple) else (out, {})
                if single:
                    fabric.backward(loss, inputs=phase.params, retain_graph=phase.keep_graph)
                else:
                    fabric.backward(loss)
                if phase.clip_grad_norm is not None:
                    fabric.clip_gradients(self.model, opt, max_norm=phase.clip_grad_norm)
                opt.step()
                if phase.after_step is not None:
                    phase.after_step()
            self._accumulate(f"{phase.name}/loss", loss)
            for k, v in logs.items():
                self._accumulate(f"{phase.name}/{k}", v)
            # record the first non-finite (step, phase) without a host sync
            code = torch.where(torch.isfinite(loss.detach()), -1, self.step * n_phases + i)
            self._bad = torch.where(self._bad < 0, code, self._bad)
        self._count += 1

    def _time_up(self, when: float, every: int | None = None) -> bool:
        """Whether the clock passed ``when``: rank 0's clock decides for every process, which must stop and
        save together; under DDP the clocks are compared only every ``every`` steps (``log_every``), as the
        agreement costs a collective."""
        if self.fabric.world_size == 1:
            return time.perf_counter() > when
        if self.step % (every or self.cfg.train.log_every):
            return False
        return bool(self.fabric.broadcast(time.perf_counter() > when, src=0))

    def _check_finite(self) -> None:
        bad = int(self._bad)
        if bad >= 0:
            step, i = divmod(bad, len(self.phases))
            last = self.ckpt.latest()
            raise NonFiniteLossError(
                f"the loss of phase {self.phases[i].name!r} became NaN/Inf at step {step}. Nothing was saved "
                f"after it; the last good checkpoint is {last if last else 'none'}. Lower the learning rate "
                f"(train.optim.lr), enable gradient clipping, or check the data for extreme values."
            )

    def _log_train(self, bar) -> dict[str, float]:
        if not self._count:
            return {}
        keys = list(self._sums)
        means = torch.stack([self._sums[k] for k in keys]).div_(self._count).tolist()  # the one sync
        self._check_finite()
        metrics = dict(zip(keys, means))
        metrics["epoch"] = self.epochs_done()
        metrics["seconds"] = self.clock()
        for p, opt in zip(self.phases, self.optimizers):
            metrics[f"{p.name}/lr"] = opt.param_groups[0]["lr"]
        self._sums.clear()
        self._count = 0
        if self.fabric.is_global_zero:
            self.logger.log(metrics, self.step)
            if bar is not None:
                bar.set_postfix({k.replace("/loss", ""): f"{v:.4g}" for k, v in metrics.items() if k.endswith("/loss")})
        return metrics

    def evaluate(self, data: ArrayDataset | None, prefix: str = "val") -> dict[str, float]:
        """The model's metrics on ``data`` as ``<prefix>/<name>``. With ``train.ema_decay`` these score the
        weight average (the run's model), and ``<prefix>_online/<name>`` the weights the optimizers train."""
        if data is None:
            return {}
        if self.ema is None:
            return self._evaluate(data, prefix)
        with self.ema.averaged():
            metrics = self._evaluate(data, prefix)
        with self.ema.online():
            metrics.update(self._evaluate(data, f"{prefix}_online"))
        return metrics

    def _evaluate(self, data: ArrayDataset, prefix: str) -> dict[str, float]:
        with torch.random.fork_rng(devices=[self.fabric.device] if self.fabric.device.type == "cuda" else []):
            self.raw_model.eval()
            metrics = {f"{prefix}/{k}": v for k, v in self.raw_model.evaluate(data).items()}
            self.raw_model.train()
        return metrics

    def epochs_done(self) -> float:
        return self.epoch + self.batch_in_epoch / self.steps_per_epoch

    def clock(self) -> float:
        """Seconds of training so far, over every invocation of a resumed run (evaluations included); a
        column of ``metrics.csv``, so a curve can be read against wall time (e.g. time to a target error)."""
        return self.seconds_before + time.perf_counter() - self._t0

    def _eval_and_track(self) -> None:
        metrics = self.evaluate(self.splits.val)
        if not metrics:
            return
        if self.fabric.is_global_zero:
            self.logger.log({**metrics, "epoch": self.epochs_done(), "seconds": self.clock()}, self.step)
        key = self.cfg.train.best_metric
        if key and key in metrics and math.isfinite(metrics[key]) and (self.best is None or metrics[key] < self.best):
            self.best = metrics[key]
            self._check_finite()
            tensors, meta = self.state_tensors()
            if self.fabric.is_global_zero:
                self.ckpt.save_best(tensors, meta)
            self.fabric.barrier()

    def fit(self, model: torch.nn.Module, splits: DataSplits, *, resume_from: Path | None = None) -> torch.nn.Module:
        """Train ``model`` on ``splits``; continue from a checkpoint folder if ``resume_from`` is given."""
        t, fabric = self.cfg.train, self.fabric
        self._setup(model, splits)
        if resume_from is not None:
            self.load_state(resume_from)
        self.logger = (
            MetricsLogger(self.run_dir, resume_step=self.step if resume_from else None)
            if fabric.is_global_zero
            else None
        )
        x_all, y_all = self.train_data.x, self.train_data.y
        rank, b = fabric.global_rank, self.local_batch
        bar = None
        if t.progress and fabric.is_global_zero:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.total_steps,
                initial=self.step,
                desc=f"train {self.run_dir.name}",
                unit="step",
                dynamic_ncols=True,
                mininterval=0.5,
            )
        self.raw_model.train()
        t0 = self._t0 = time.perf_counter()
        deadline = t0 + 60 * t.max_minutes if t.max_minutes else None
        fit_at = t0 + 3 * t.max_minutes if t.fit_schedule and self.fitted_steps is None else None  # 5 %
        last_save = t0
        start_step = self.step
        done = self.step >= self.total_steps
        while not done and self.epoch < t.epochs:
            for idx in iterate_batches(
                len(self.train_data),
                t.batch_size,
                seed=t.seed,
                epoch=self.epoch,
                start=self.batch_in_epoch,
                device=fabric.device,
            ):
                idx = idx[rank * b : (rank + 1) * b]
                x = x_all[idx]
                if self.splits.transform is not None:
                    x = self.splits.transform(x)
                self._apply_schedules()
                self.train_step(Batch(x, None if y_all is None else y_all[idx]))
                if self.ema is not None:
                    self.ema.update()
                self.step += 1
                self.batch_in_epoch += 1
                for sch, p in zip(self.schedulers, self.phases):
                    if sch is not None and self.opt_cfgs[p.name].schedule_unit == "step":
                        sch.step()
                if bar is not None:
                    bar.update(1)
                if fit_at is not None and self._time_up(fit_at):
                    self._fit_to_time(deadline, start_step, bar)
                    fit_at = None
                if self.step % t.log_every == 0:
                    self._log_train(bar)
                if t.eval_every and self.step % t.eval_every == 0:
                    self._eval_and_track()
                if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                    self.save_checkpoint()
                    last_save = time.perf_counter()
                if self.step >= self.total_steps or (deadline is not None and self._time_up(deadline)):
                    done = True
                    break
            if self.batch_in_epoch >= self.steps_per_epoch:  # a full epoch ended
                for sch, p in zip(self.schedulers, self.phases):
                    if sch is not None and self.opt_cfgs[p.name].schedule_unit == "epoch":
                        sch.step()
                self.epoch += 1
                self.batch_in_epoch = 0
                if not t.eval_every:
                    self._eval_and_track()
                # a killed run loses at most about checkpoint_minutes (and an epoch) of training
                if t.checkpoint_minutes and self._time_up(last_save + 60 * t.checkpoint_minutes, every=1):
                    self.save_checkpoint()
                    last_save = time.perf_counter()
        self._log_train(bar)
        self._check_finite()
        if bar is not None:
            bar.close()
        self.elapsed = time.perf_counter() - t0  # this invocation's training time
        self.train_seconds = self.seconds_before + self.elapsed  # all invocations'
        self.steps_run = self.step - start_step
        if not self.ckpt.latest() or self.ckpt.latest().name != f"step-{self.step:08d}":
            self.save_checkpoint()
        if self.logger is not None:
            self.logger.close()
        if self.ema is not None:  # the run's model is the average (the checkpoints keep both)
            self.ema.swap()
        return self.raw_model
