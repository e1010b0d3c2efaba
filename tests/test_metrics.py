"""Metrics: Parzen log-likelihood against brute force and closed forms, σ selection, clustering protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from torch.distributions import Normal

from regae.errors import ConfigError, DataError
from regae.metrics import (
    DEFAULT_SIGMAS,
    classification_error,
    cluster_labels_paper,
    hungarian_accuracy,
    majority_accuracy,
    nmi,
    paper_cluster_error,
    parzen_evaluate,
    parzen_log_likelihood,
    select_sigma,
)


def brute_parzen(samples: np.ndarray, data: np.ndarray, sigma: float) -> np.ndarray:
    """Reference in float64: explicit differences, scipy's logsumexp."""
    s = samples.reshape(len(samples), -1).astype(np.float64)
    x = data.reshape(len(data), -1).astype(np.float64)
    d2 = ((x[:, None, :] - s[None, :, :]) ** 2).sum(-1)
    m, d = s.shape
    return logsumexp(-d2 / (2 * sigma**2), axis=1) - math.log(m) - 0.5 * d * math.log(2 * math.pi * sigma**2)


# --------------------------------------------------------------------------------------------- Parzen


def test_parzen_matches_brute_force_float64():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(37, 5, generator=g, dtype=torch.float64)
    data = torch.randn(11, 5, generator=g, dtype=torch.float64)
    for sigma in (0.2, 1.0, 3.0):
        got = parzen_log_likelihood(samples, data, sigma, batch_size=4, sample_chunk=8)
        assert got.dtype == torch.float64 and got.shape == (11,)
        np.testing.assert_allclose(got.numpy(), brute_parzen(samples.numpy(), data.numpy(), sigma), rtol=1e-12)


def test_parzen_float32_with_offset_stays_accurate():
    """float32 inputs far from the origin: centring keeps ||x||² - 2x·s + ||s||² accurate."""
    g = torch.Generator().manual_seed(1)
    samples = torch.rand(200, 64, generator=g) + 1000.0
    data = torch.rand(30, 64, generator=g) + 1000.0
    got = parzen_log_likelihood(samples, data, 0.1, batch_size=7, sample_chunk=50)
    want = brute_parzen(samples.numpy(), data.numpy(), 0.1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_parzen_no_underflow_when_kernels_vanish():
    """Every exp(-||x - s||² / 2σ²) underflows to 0 in float64, yet the streamed result is finite and exact."""
    g = torch.Generator().manual_seed(2)
    samples = torch.randn(40, 3, generator=g, dtype=torch.float64) * 5 + 20
    data = torch.randn(6, 3, generator=g, dtype=torch.float64)
    sigma = 0.05
    s, x = samples.numpy(), data.numpy()
    d2 = ((x[:, None] - s[None]) ** 2).sum(-1)
    with np.errstate(divide="ignore", under="ignore"):
        naive = np.log(np.exp(-d2 / (2 * sigma**2)).mean(1))
    assert np.all(np.isneginf(naive))
    got = parzen_log_likelihood(samples, data, sigma, batch_size=4, sample_chunk=3)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy(), brute_parzen(s, x, sigma), rtol=1e-10)
    # float32 too, against scipy in float64
    got32 = parzen_log_likelihood(samples.float(), data.float(), sigma, sample_chunk=7)
    assert torch.isfinite(got32).all()
    np.testing.assert_allclose(got32.numpy(), brute_parzen(s, x, sigma), rtol=1e-5)


def test_parzen_chunking_invariance():
    g = torch.Generator().manual_seed(3)
    samples = torch.rand(103, 10, generator=g)
    data = torch.rand(29, 10, generator=g)
    ref = parzen_log_likelihood(samples, data, 0.3)
    for batch_size, chunk in [(1, 1), (3, 7), (29, 103), (100, 10_000), (8, 50)]:
        got = parzen_log_likelihood(samples, data, 0.3, batch_size=batch_size, sample_chunk=chunk)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_parzen_single_point_is_gaussian_density():
    """All samples equal to one point s: the KDE is N(s, σ²I) whatever M is."""
    g = torch.Generator().manual_seed(4)
    s = torch.randn(6, generator=g, dtype=torch.float64)
    samples = s.expand(25, 6).clone()
    data = torch.randn(9, 6, generator=g, dtype=torch.float64)
    sigma = 0.7
    want = Normal(s, sigma).log_prob(data).sum(-1)
    got = parzen_log_likelihood(samples, data, sigma, sample_chunk=4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_parzen_flattens_images_and_accepts_numpy():
    g = torch.Generator().manual_seed(5)
    samples = torch.rand(20, 1, 3, 3, generator=g)
    data = torch.rand(4, 1, 3, 3, generator=g)
    flat = parzen_log_likelihood(samples.reshape(20, 9), data.reshape(4, 9), 0.5)
    torch.testing.assert_close(parzen_log_likelihood(samples, data, 0.5), flat)
    torch.testing.assert_close(parzen_log_likelihood(samples.numpy(), data.numpy(), 0.5), flat)


def test_default_sigma_grid_is_goodfellow():
    np.testing.assert_allclose(DEFAULT_SIGMAS, np.logspace(-1, 0, 10))


def test_select_sigma_picks_val_optimum():
    """Samples and val from N(0, 0.5²): the score is unimodal in σ with an interior optimum on the grid."""
    g = torch.Generator().manual_seed(6)
    samples = torch.randn(1000, 2, generator=g, dtype=torch.float64) * 0.5
    val = torch.randn(300, 2, generator=g, dtype=torch.float64) * 0.5
    grid = np.logspace(-2.5, 0.5, 13)
    best, scores = select_sigma(samples, val, grid, batch_size=64)
    assert list(scores) == pytest.approx(list(grid))
    ref = np.array([brute_parzen(samples.numpy(), val.numpy(), s).mean() for s in grid])
    np.testing.assert_allclose(list(scores.values()), ref, rtol=1e-10)
    k = int(np.argmax(ref))
    assert best == pytest.approx(grid[k])
    assert 0 < k < len(grid) - 1  # interior optimum: the grid covers it
    assert 0.03 < best < 0.5  # a KDE bandwidth well below the data scale 0.5 (Silverman: ~0.16 here)
    assert scores[grid[0]] < scores[best] and scores[grid[-1]] < scores[best]


def test_parzen_evaluate_stderr_and_keys():
    g = torch.Generator().manual_seed(7)
    samples = torch.rand(150, 4, generator=g)
    val = torch.rand(40, 4, generator=g)
    test = torch.rand(57, 4, generator=g)
    out = parzen_evaluate(samples, val, test, [0.05, 0.1, 0.2, 0.4])
    assert out["sigma"] == select_sigma(samples, val, [0.05, 0.1, 0.2, 0.4])[0]
    ll = brute_parzen(samples.numpy(), test.numpy(), out["sigma"])
    assert out["log_likelihood"] == pytest.approx(ll.mean(), rel=1e-6)
    assert out["stderr"] == pytest.approx(ll.std() / math.sqrt(57), rel=1e-5)
    assert out["n_samples"] == 150 and out["n_test"] == 57


@pytest.mark.parametrize(
    "samples, data, match",
    [
        (torch.zeros(5, 3), torch.zeros(4, 2), "same number of features"),
        (torch.zeros(0, 3), torch.zeros(4, 3), "empty"),
        (torch.zeros(5, 3), torch.zeros(0, 3), "empty"),
        (torch.zeros(5, 3), torch.tensor([[0.0, float("nan"), 0.0]]), "non-finite"),
        (torch.tensor([[float("inf"), 0.0]]), torch.zeros(2, 2), "non-finite"),
        (torch.zeros(5), torch.zeros(4, 1), r"\(N, 1\)"),
        (torch.zeros(5, 2, dtype=torch.complex64), torch.zeros(4, 2), "real"),
    ],
)
def test_parzen_bad_data(samples, data, match):
    with pytest.raises(DataError, match=match):
        parzen_log_likelihood(samples, data, 1.0)


def test_grey_share_measures_how_blurred_images_are():
    """Solid ink has no grey; blurring the same strokes greys their ink; real MNIST sits near one half."""
    from regae.metrics import grey_share

    strokes = torch.zeros(4, 28, 28)
    strokes[:, 8:20, 12:16] = 1.0
    assert grey_share(strokes) == 0.0
    blurred = torch.nn.functional.avg_pool2d(strokes[:, None], 5, stride=1, padding=2)[:, 0]
    assert grey_share(blurred) > 0.5
    assert grey_share(np.full((2, 4), 0.5)) == 1.0
    with pytest.raises(DataError, match="no pixel above the ink threshold"):
        grey_share(torch.zeros(3, 10))
    with pytest.raises(DataError, match="non-finite"):
        grey_share(torch.tensor([[0.5, float("nan")]]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": "1"}, "sigma"),
        ({"sigma": 1.0, "batch_size": 0}, "batch_size"),
        ({"sigma": 1.0, "sample_chunk": 2.5}, "sample_chunk"),
    ],
)
def test_parzen_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        parzen_log_likelihood(torch.zeros(3, 2), torch.zeros(2, 2), **kwargs)


def test_select_sigma_bad_grid():
    with pytest.raises(ConfigError, match="empty"):
        select_sigma(torch.zeros(3, 2), torch.zeros(2, 2), [])
    with pytest.raises(ConfigError, match="sigma"):
        select_sigma(torch.zeros(3, 2), torch.zeros(2, 2), [0.1, -0.2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_parzen_cuda_matches_cpu():
    g = torch.Generator().manual_seed(8)
    samples = torch.rand(300, 16, generator=g)
    data = torch.rand(50, 16, generator=g)
    cpu = parzen_log_likelihood(samples, data, 0.2, sample_chunk=64)
    gpu = parzen_log_likelihood(samples.cuda(), data.cuda(), 0.2, sample_chunk=64)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------------------------- clustering

# 3 clusters, 2 classes. Per cluster, the val row with the highest q: cluster 0 -> row 0 (y=0),
# cluster 1 -> row 2 (y=1), cluster 2 -> row 4 (y=1). Row 5 (unlabelled, y=-1) would win cluster 2 if counted.
Q_VAL = np.array(
    [
        [0.90, 0.05, 0.05],
        [0.60, 0.30, 0.10],
        [0.10, 0.80, 0.10],
        [0.20, 0.10, 0.70],
        [0.10, 0.10, 0.80],
        [0.00, 0.05, 0.95],
    ]
)
Y_VAL = np.array([0, 1, 1, 0, 1, -1])
Q_TEST = np.array(
    [
        [0.8, 0.1, 0.1],  # cluster 0 -> 0, y 0 ok
        [0.1, 0.8, 0.1],  # cluster 1 -> 1, y 1 ok
        [0.1, 0.1, 0.8],  # cluster 2 -> 1, y 1 ok
        [0.2, 0.2, 0.6],  # cluster 2 -> 1, y 0 wrong
        [0.5, 0.3, 0.2],  # cluster 0 -> 0, y 1 wrong
        [0.3, 0.4, 0.3],  # cluster 1 -> 1, y 1 ok
    ]
)
Y_TEST = np.array([0, 1, 1, 0, 1, 1])


def test_cluster_labels_paper_protocol():
    labels = cluster_labels_paper(torch.from_numpy(Q_VAL), torch.from_numpy(Y_VAL))
    assert labels.dtype == torch.int64
    assert labels.tolist() == [0, 1, 1]


def test_paper_cluster_error_handcrafted():
    err = paper_cluster_error(Q_VAL, Y_VAL, Q_TEST, Y_TEST)
    assert err == pytest.approx(100 * 2 / 6)
    as_tensors = paper_cluster_error(*(torch.from_numpy(a) for a in (Q_VAL, Y_VAL, Q_TEST, Y_TEST)))
    assert as_tensors == pytest.approx(err)


def test_cluster_log_odds_ranks_as_q_and_does_not_saturate():
    """log q/(1-q) equals its definition where float64 can compute it, and still ranks examples where a
    float32 softmax rounds every confident one to exactly 1 (the §6 protocol's argmax then falls to the
    order of the validation set)."""
    from regae.metrics import cluster_log_odds

    torch.manual_seed(0)
    logits = torch.randn(64, 7) * 3
    q = logits.double().softmax(1)
    torch.testing.assert_close(cluster_log_odds(logits), (q / (1 - q)).log())
    # three examples of cluster 0 leading by 20, 40 and 30 logits; then one of cluster 1
    logits = torch.tensor([[20.0, 0.0, 0.0], [40.0, 0.0, 0.0], [30.0, 0.0, 0.0], [0.0, 25.0, 0.0]])
    assert (logits.softmax(1)[:3, 0] == 1).all()  # float32 ties them all
    odds = cluster_log_odds(logits)
    assert odds[:, 0].argmax() == 1 and odds[:, 1].argmax() == 3
    torch.testing.assert_close(odds[1, 0], torch.tensor(40 - np.log(2), dtype=torch.float64))
    y = np.array([7, 4, 9, 1])  # the exact protocol labels cluster 0 by row 1, the lead of 40
    with pytest.warns(UserWarning, match="tie at the top score.*cluster_log_odds"):
        assert cluster_labels_paper(logits.softmax(1), y)[0] == 7  # float32: the first of the tied rows
    assert cluster_labels_paper(odds, y).tolist()[:2] == [4, 1]
    with pytest.raises(DataError, match="non-finite"):
        cluster_log_odds(torch.tensor([[0.0, float("nan")]]))


def test_cluster_table_explains_the_gap_between_paper_and_majority_errors():
    """Per cluster: size, majority label, §6 label; Σ (majority - §6 count) / N is exactly the §6 error
    minus the majority-vote error."""
    from regae.metrics import cluster_table

    rng = np.random.default_rng(0)
    assign = rng.integers(0, 5, 400)
    y = np.where(rng.random(400) < 0.7, assign % 3, rng.integers(0, 3, 400))
    y[:10] = -1  # unlabelled rows are left out
    paper = np.array([0, 2, 2, 0, 1, 1])  # cluster 1 mislabelled; cluster 5 is empty
    rows = cluster_table(assign, y, 6, paper)
    assert [r["cluster"] for r in rows] == list(range(6))
    assert rows[5] == {"cluster": 5, "size": 0, "majority": -1, "majority_count": 0, "paper_label": 1, "paper_count": 0}
    keep = y >= 0
    assert sum(r["size"] for r in rows) == keep.sum()
    assert [r["majority"] for r in rows[:5]] == [0, 1, 2, 0, 1]
    gap = 100 * sum(r["majority_count"] - r["paper_count"] for r in rows) / keep.sum()
    paper_error = classification_error(paper[assign], y)
    np.testing.assert_allclose(paper_error - (100 - majority_accuracy(assign, y)), gap)
    assert [set(r) for r in cluster_table(assign, y)][0] == {"cluster", "size", "majority", "majority_count"}
    with pytest.raises(DataError, match="only 4 clusters"):
        cluster_table(assign, y, 4)
    with pytest.raises(DataError, match="names 6 clusters, expected 5"):
        cluster_table(assign, y, 5, paper)


def test_paper_cluster_error_bad_inputs():
    with pytest.raises(DataError, match="clusters"):
        paper_cluster_error(Q_VAL, Y_VAL, Q_TEST[:, :2], Y_TEST)
    with pytest.raises(DataError, match="same number of rows"):
        cluster_labels_paper(Q_VAL, Y_VAL[:-1])
    with pytest.raises(DataError, match=r"\(N, K\)"):
        cluster_labels_paper(Q_VAL[:, 0], Y_VAL)
    with pytest.raises(DataError, match="non-finite"):
        cluster_labels_paper(np.where(Q_VAL > 0.85, np.nan, Q_VAL), Y_VAL)
    with pytest.raises(DataError, match="no labelled rows"):
        cluster_labels_paper(Q_VAL, -np.ones(6, dtype=int))


def test_classification_error():
    assert classification_error(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])) == pytest.approx(25.0)
    assert classification_error(np.array([0, 1, 0]), np.array([0, -1, 1])) == pytest.approx(50.0)
    assert classification_error([1, 1], np.array([1.0, 1.0])) == 0.0
    with pytest.raises(DataError, match="no labelled rows"):
        classification_error(np.array([0, 1]), np.array([-1, -1]))
    with pytest.raises(DataError, match="same number of rows"):
        classification_error(np.array([0, 1]), np.array([0]))
    with pytest.raises(DataError, match="integer labels"):
        classification_error(np.array([0, 1]), np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="1-D"):
        classification_error(np.zeros((2, 2), dtype=int), np.array([0, 1]))


def test_hungarian_permutation_is_perfect():
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    perm = torch.tensor([2, 0, 1])
    assert hungarian_accuracy(perm[y], y) == pytest.approx(100.0)
    assert hungarian_accuracy((perm[y] + 10).numpy(), y.numpy()) == pytest.approx(100.0)  # arbitrary ids
    assert majority_accuracy(perm[y], y) == pytest.approx(100.0)
    assert nmi(perm[y], y) == pytest.approx(1.0)


def test_more_clusters_than_classes():
    y = np.array([0, 0, 0, 1, 1, 1])
    assign = np.array([0, 0, 2, 1, 1, 1])  # cluster 2 is a split-off piece of class 0
    assert hungarian_accuracy(assign, y) == pytest.approx(100 * 5 / 6)  # cluster 2 unmatched: errors
    assert majority_accuracy(assign, y) == pytest.approx(100.0)  # cluster 2 votes for class 0
    assert hungarian_accuracy(np.arange(6), y) == pytest.approx(100 * 2 / 6)
    assert majority_accuracy(np.arange(6), y) == pytest.approx(100.0)


def test_fewer_clusters_than_classes_and_mixed_clusters():
    y = np.array([0, 0, 1, 1, 2, 2, -1])
    assign = np.array([0, 0, 1, 1, 1, 1, 0])  # classes 1 and 2 merged; last row unlabelled, ignored
    assert hungarian_accuracy(assign, y) == pytest.approx(100 * 4 / 6)
    assert majority_accuracy(assign, y) == pytest.approx(100 * 4 / 6)


def test_nmi_values():
    y = np.array([0, 0, 1, 1])
    assert nmi(np.array([5, 5, 7, 7]), y) == pytest.approx(1.0)
    assert nmi(np.array([0, 1, 0, 1]), y) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(DataError):
        nmi(np.array([0, 1]), y)
