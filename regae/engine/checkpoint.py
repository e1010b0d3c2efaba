"""Atomic checkpoints: tensors in safetensors, everything else in JSON, never pickle.

A checkpoint is a folder ``step-00000100/`` holding ``tensors.safetensors`` and ``state.json`` (with the
SHA-256 of the tensor file). It is written under a temporary name and renamed into place, so a run killed
at any moment leaves either the complete folder or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from regae.errors import CheckpointError, NonFiniteLossError

FORMAT_VERSION = 1
TENSORS = "tensors.safetensors"
STATE = "state.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str, *, fsync: bool = True) -> None:
    """Write a text file via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_finite(tensors: Mapping[str, Tensor], what: str = "checkpoint") -> None:
    """Refuse to write non-finite floating tensors: NaN weights must never replace good ones."""
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise NonFiniteLossError(f"refusing to save {what}: tensor {name!r} holds NaN or Inf")


def write_folder(
    folder: Path, tensors: Mapping[str, Tensor], state: dict, *, tensor_file: str = TENSORS, state_file: str = STATE
) -> Path:
    """Write ``tensors`` + ``state`` into ``folder`` atomically (temp folder + rename)."""
    folder = Path(folder)
    check_finite(tensors, str(folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp-{folder.name}-"))
    try:
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, str(tmp / tensor_file))
        state = {**state, "format_version": FORMAT_VERSION, "sha256": {tensor_file: sha256(tmp / tensor_file)}}
        (tmp / state_file).write_text(json.dumps(state, indent=1))
        for f in (tmp / tensor_file, tmp / state_file):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if folder.exists():  # replacing (e.g. `best`): move the old one aside first, then drop it
            old = folder.with_name(f".old-{folder.name}-{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_folder(
    folder: Path, *, tensor_file: str = TENSORS, state_file: str = STATE, verify: bool = True
) -> tuple[dict[str, Tensor], dict]:
    """Read a folder written by :func:`write_folder`, with clear errors for missing or corrupt files."""
    folder = Path(folder)
    tpath, spath = folder / tensor_file, folder / state_file
    for p in (tpath, spath):
        if not p.is_file():
            raise CheckpointError(f"{p} is missing: {folder} is not a complete regae checkpoint")
    try:
        state = json.loads(spath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{spath} is corrupt (not valid JSON: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{spath} is corrupt (a JSON {type(state).__name__}, not a mapping)")
    expected = (state.get("sha256") or {}).get(tensor_file)
    if verify and expected is not None and sha256(tpath) != expected:
        raise CheckpointError(f"{tpath} is corrupt or truncated: its SHA-256 does not match {spath}")
    try:
        tensors = load_file(str(tpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{tpath} is corrupt or truncated ({e})") from None
    return tensors, state


# ------------------------------------------------------------------------------------ optimizer state


def flatten_optimizer(sd: dict, prefix: str) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able metadata."""
    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{pid}.{key}"] = value
            else:
                plain.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "plain_state": plain}


def unflatten_optimizer(tensors: Mapping[str, Tensor], meta: dict, prefix: str) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            pid, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("plain_state", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------------------------------- manager


class CheckpointManager:
    """Keeps ``step-*`` checkpoints under ``root`` (the last ``keep_last``) and a ``best`` copy."""

    def __init__(self, root: Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = keep_last

    def steps(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("step-*") if p.is_dir())

    def latest(self) -> Path | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, tensors: Mapping[str, Tensor], state: dict) -> Path:
        path = write_folder(self.root / f"step-{step:08d}", tensors, state)
        for old in self.steps()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        for junk in self.root.glob(".tmp-*"):  # left by a run killed mid-write
            shutil.rmtree(junk, ignore_errors=True)
        return path

    def save_best(self, tensors: Mapping[str, Tensor], state: dict) -> Path:
        return write_folder(self.root / "best", tensors, state)
