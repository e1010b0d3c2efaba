"""Metrics logging: a resumable CSV file always, TensorBoard when it is installed."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from regae.engine.checkpoint import atomic_write_text


class MetricsLogger:
    """Writes ``metrics.csv`` (one row per logged step; columns grow as new metrics appear).

    On resume from step ``s`` the rows after ``s`` are dropped, so the file reads as one uninterrupted run.
    (Fabric's CSVLogger deletes an existing file on start, which is why this one exists.)
    """

    def __init__(self, run_dir: Path, *, resume_step: int | None = None, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, float]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                for row in csv.DictReader(f):
                    if int(float(row["step"])) <= resume_step:
                        self.rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
        self.tb = None
        if tensorboard:
            try:
                from lightning_fabric.loggers import TensorBoardLogger

                self.tb = TensorBoardLogger(root_dir=str(Path(run_dir) / "tensorboard"), name="", version="")
                self.tb.experiment  # noqa: B018 - fails here, not mid-run, when tensorboard is absent
            except (ImportError, ModuleNotFoundError):
                self.tb = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": float(step), **{k: float(v) for k, v in metrics.items()}}
        if self.rows and self.rows[-1]["step"] == step:  # merge train and eval rows of the same step
            self.rows[-1].update(row)
            self._dirty = True
        else:
            self.rows.append(row)
        if self.tb is not None:
            self.tb.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step)
        self.flush()

    _keys: list[str] | None = None
    _written = 0  # rows already in the file
    _dirty = True  # the file must be rewritten (new columns, a merged row, or a resume)

    def flush(self) -> None:
        """Append the new rows; rewrite the whole file (atomically) only when its columns or old rows change.

        No fsync here: a crash loses at most the tail of the log, which a resume rewrites anyway."""
        keys = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        if keys != self._keys:
            self._keys, self._dirty = keys, True
        fmt = lambda r: {k: (int(v) if k == "step" else f"{v:.6g}") for k, v in r.items()}  # noqa: E731
        if self._dirty or not self.path.is_file():
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=keys)
            w.writeheader()
            w.writerows(fmt(r) for r in self.rows)
            atomic_write_text(self.path, buf.getvalue(), fsync=False)
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=keys).writerows(fmt(r) for r in self.rows[self._written :])
        self._written, self._dirty = len(self.rows), False

    def last(self, key: str) -> float | None:
        for r in reversed(self.rows):
            if key in r:
                return r[key]
        return None

    def close(self) -> None:
        if self.tb is not None:
            self.tb.finalize("success")
