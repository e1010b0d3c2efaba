"""An exponential moving average (EMA) of a model's weights, the Polyak-Ruppert average of SGD's iterates.

After every training step each floating-point tensor of the model's state (parameters and batch-norm
statistics) moves the average toward the live weights,

    θ̄ ← θ̄ + (1 - d_n) (θ - θ̄),    d_n = min(decay, (1 + n) / (10 + n)),

where n counts the updates so far: the warm-up of d_n (as in TensorFlow's ``ExponentialMovingAverage``)
keeps the random initial weights from lingering in the average of a short run. Averaging the iterates of
adversarial training damps the oscillation of its players (Yazıcı et al., 2019, "The unusual effectiveness
of averaging in GAN training"). It is not in the AAE paper; runs that use it say so.

``torch.optim.swa_utils.AveragedModel`` would deep-copy the whole module, including the training data a
model holds after ``attach_data``; this keeps only the shadow tensors and swaps them in place when the
average is evaluated or saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import Tensor


class WeightAverage:
    """The EMA of ``model``'s floating-point state tensors.

    Args:
        model: the module whose weights are averaged (its tensors are updated in place by the optimizers;
            the average keeps references to them).
        decay: the EMA's decay d in (0, 1); the average spans about 1 / (1 - d) steps.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        state = model.state_dict(keep_vars=False)
        self.names = [k for k, v in state.items() if v.is_floating_point()]
        self.live = [state[k] for k in self.names]  # detached aliases of the parameters and buffers
        self.shadow = [t.detach().clone() for t in self.live]
        self.updates = 0
        self.swapped = False  # True while the model holds the average and the shadow holds the live weights

    @torch.no_grad()
    def update(self) -> None:
        """Move the average toward the live weights (call after each optimizer step)."""
        if self.swapped:
            raise RuntimeError("cannot update the weight average while it is swapped into the model")
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, w in zip(self.shadow, self.live):
            avg.lerp_(w, 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's weights with the shadow tensors (its own inverse)."""
        for avg, w in zip(self.shadow, self.live):
            tmp = w.clone()
            w.copy_(avg)
            avg.copy_(tmp)
        self.swapped = not self.swapped

    @contextmanager
    def _holding(self, average: bool) -> Iterator[None]:
        flip = self.swapped != average
        if flip:
            self.swap()
        try:
            yield
        finally:
            if flip:
                self.swap()

    def averaged(self) -> AbstractContextManager[None]:
        """Within the block the model holds the averaged weights."""
        return self._holding(average=True)

    def online(self) -> AbstractContextManager[None]:
        """Within the block the model holds the weights the optimizers train."""
        return self._holding(average=False)

    def average_tensors(self) -> dict[str, Tensor]:
        """The averaged tensors by state-dict name, wherever they are held now."""
        held = self.live if self.swapped else self.shadow
        return dict(zip(self.names, held))

    def load_average(self, tensors: dict[str, Tensor], updates: int) -> None:
        """Restore the average (from a checkpoint) while the model holds its live weights."""
        if self.swapped:
            raise RuntimeError("load the weight average before swapping it in")
        missing = [k for k in self.names if k not in tensors]
        if missing:
            raise KeyError(f"the weight average lacks {missing[:3]}")
        with torch.no_grad():
            for name, avg in zip(self.names, self.shadow):
                avg.copy_(tensors[name])
        self.updates = int(updates)
