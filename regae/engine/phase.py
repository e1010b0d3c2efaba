"""A training phase: one named step of a model's algorithm box."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor, nn


class Batch(NamedTuple):
    """A minibatch: inputs ``x`` and labels ``y`` (None for unlabeled data; -1 marks unlabeled rows)."""

    x: Tensor
    y: Tensor | None = None


LossOutput = Tensor | tuple[Tensor, dict[str, Tensor]]


@dataclass
class Phase:
    """One phase of a training step, e.g. the AAE's *reconstruction* or *regularization* phase.

    Attributes:
        name: the paper's name for the phase; also the key of its optimizer config (``train.phase_optim``).
        loss: ``loss(batch) -> loss`` or ``(loss, {name: value})``; values are logged as ``<name>/<key>``.
        params: the parameters this phase's optimizer updates (other parameters may receive gradients
            but are not stepped; every phase zeroes its own gradients first).
        repeats: optimizer steps of this phase per training step (e.g. several critic updates).
        every: run this phase only on every ``every``-th training step.
        clip_grad_norm: clip the gradient norm of ``params`` before stepping.
        after_step: called after each optimizer step (e.g. weight clipping of a WGAN critic).
        keep_graph: keep the autograd graph after this phase's backward, for a later phase of the same step
            that reuses part of this phase's forward pass (exact only if this phase's step leaves the reused
            part's weights unchanged). Single-process only: under DDP the graph is freed as usual.
    """

    name: str
    loss: Callable[..., LossOutput]
    params: Iterable[nn.Parameter]
    repeats: int = 1
    every: int = 1
    clip_grad_norm: float | None = None
    after_step: Callable[[], None] | None = None
    keep_graph: bool = False

    def __post_init__(self) -> None:
        self.params = [p for p in self.params if p.requires_grad]
        if not self.params:
            raise ValueError(f"phase {self.name!r} has no trainable parameters")
        if self.repeats < 1 or self.every < 1:
            raise ValueError(f"phase {self.name!r}: repeats and every must be >= 1")
