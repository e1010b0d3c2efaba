"""Classification and clustering scores: the AAE §6 unsupervised-clustering protocol (table 3) and the usual
Hungarian / majority-vote accuracies and NMI.

All functions take torch tensors or numpy arrays. Labels are integers; rows whose true label is negative
(e.g. -1 for "unlabelled") are ignored everywhere. Error rates and accuracies are in percent, NMI in [0, 1].
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score
from torch import Tensor

from regae.errors import DataError

__all__ = [
    "classification_error",
    "cluster_log_odds",
    "cluster_labels_paper",
    "cluster_table",
    "paper_cluster_error",
    "hungarian_accuracy",
    "majority_accuracy",
    "nmi",
]

ArrayLike = Tensor | np.ndarray


def classification_error(pred: ArrayLike, y: ArrayLike) -> float:
    """Error rate in percent: 100 · mean(pred ≠ y) over the rows with y ≥ 0."""
    pred, y = _labels(pred, "pred"), _labels(y, "y")
    _same_length(pred, y, "pred", "y")
    keep = _labelled(y, "y")
    return float(100.0 * np.mean(pred[keep] != y[keep]))


def cluster_log_odds(logits: ArrayLike) -> Tensor:
    """Log-odds log q(y_i|x) / (1 - q(y_i|x)) = l_i - log Σ_{j≠i} exp(l_j) of a softmax q = softmax(l), in
    float64, as an (N, K) tensor.

    It ranks examples exactly as q(y_i|x) does, but it does not saturate. A float32 softmax rounds to
    exactly 1 once the winning logit leads the rest by about 17, and a trained clustering AAE puts hundreds
    of validation images per cluster there. Then ``argmax_n q(y_i|x_n)``, which the §6 protocol needs, is
    decided by the order of the validation set, not by the model. Even float64 rounds to 1 beyond a lead of
    about 37. So the winning class's sum leaves its own term out, and the other classes (q ≤ 1/2) take
    log(1 - q) with ``log1p``.
    """
    lg = torch.as_tensor(_scores(logits, "logits"), dtype=torch.float64)
    log_q = lg.log_softmax(1)
    odds = log_q - torch.log1p(-log_q.exp().clamp(max=0.5))  # right wherever q ≤ 1/2: all but the winner
    top = lg.argmax(1, keepdim=True)
    rest = torch.logsumexp(lg.scatter(1, top, float("-inf")), 1, keepdim=True)  # log Σ_{j≠top} exp(l_j)
    return odds.scatter(1, top, lg.gather(1, top) - rest)


def cluster_labels_paper(q_val: ArrayLike, y_val: ArrayLike) -> Tensor:
    """Label of each cluster by the AAE §6 protocol: cluster i takes the label of the validation example
    x_n maximising q(y_i | x_n), i.e. ``y_val[argmax_n q_val[n, i]]`` (labelled rows only).

    ``q_val``: (Nv, K) scores that rank examples as q(y_i|x) does; only the argmax over n matters. Pass
    :func:`cluster_log_odds` of the logits, not probabilities: a float32 softmax saturates at 1 and ties
    hundreds of examples (warned about here, since the first of them would then decide). Returns a long
    tensor (K,).
    """
    q = _scores(q_val, "q_val")
    y = _labels(y_val, "y_val")
    _same_length(q, y, "q_val", "y_val")
    keep = _labelled(y, "y_val")
    q, y = q[keep], y[keep]
    best = np.argmax(q, axis=0)
    at_top = q == q[best, np.arange(q.shape[1])]
    split = [i for i in range(q.shape[1]) if len(np.unique(y[at_top[:, i]])) > 1]
    if split:
        warnings.warn(
            f"cluster_labels_paper: in {len(split)} of {q.shape[1]} clusters (e.g. {split[0]}: "
            f"{int(at_top[:, split[0]].sum())} rows) validation rows of different labels tie at the top score, "
            "and the first of them decides; probabilities saturate at 1, so pass cluster_log_odds(logits)",
            stacklevel=2,
        )
    return torch.from_numpy(y[best].astype(np.int64))


def paper_cluster_error(q_val: ArrayLike, y_val: ArrayLike, q_test: ArrayLike, y_test: ArrayLike) -> float:
    """AAE table 3 error in percent: each test point goes to its argmax cluster, which carries the label
    given by :func:`cluster_labels_paper` on the validation split; then 100 · mean(label ≠ y_test).
    ``q_val`` and ``q_test`` may be probabilities, logits or :func:`cluster_log_odds` (the argmax over K of
    each is the same); ``q_val`` should be log-odds (see :func:`cluster_labels_paper`)."""
    labels = cluster_labels_paper(q_val, y_val).numpy()
    q = _scores(q_test, "q_test")
    if q.shape[1] != labels.shape[0]:
        raise DataError(f"q_val has K={labels.shape[0]} clusters but q_test has {q.shape[1]}")
    return classification_error(labels[np.argmax(q, axis=1)], y_test)


def cluster_table(
    assign: ArrayLike, y: ArrayLike, num_clusters: int | None = None, paper_labels: ArrayLike | None = None
) -> list[dict[str, int]]:
    """One row per cluster k = 0 … K-1 (K = ``num_clusters``, else ``len(paper_labels)``, else
    max(assign) + 1, so pass K to list empty clusters at the end too): ``size`` (labelled
    points assigned to k), ``majority`` (its most frequent label, -1 if empty) and ``majority_count``; with
    ``paper_labels`` (from :func:`cluster_labels_paper`) also ``paper_label`` and ``paper_count``, the
    points of k that carry it. ``100 · Σ_k (majority_count - paper_count) / N`` is then the gap between the
    §6 error and the majority-vote error, cluster by cluster: where the one most confident validation image
    is not of the cluster's majority digit."""
    a, t = _labels(assign, "assign"), _labels(y, "y")
    _same_length(a, t, "assign", "y")
    keep = _labelled(t, "y")
    a, t = a[keep], t[keep]
    if a.min() < 0:
        raise DataError(f"assign must hold cluster indices ≥ 0, got {a.min()}")
    labels = None if paper_labels is None else _labels(paper_labels, "paper_labels")
    k = num_clusters or (len(labels) if labels is not None else int(a.max()) + 1)
    if labels is not None and len(labels) != k:
        raise DataError(f"paper_labels names {len(labels)} clusters, expected {k}")
    if a.max() >= k:
        raise DataError(f"assign has cluster {a.max()} but there are only {k} clusters")
    table = np.zeros((k, max(int(t.max()), 0 if labels is None else int(labels.max())) + 1), dtype=np.int64)
    np.add.at(table, (a, t), 1)
    rows = []
    for i in range(k):
        size = int(table[i].sum())
        row = {"cluster": i, "size": size, "majority": int(table[i].argmax()) if size else -1}
        row["majority_count"] = int(table[i].max())
        if labels is not None:
            row["paper_label"] = int(labels[i])
            row["paper_count"] = int(table[i, labels[i]]) if labels[i] >= 0 else 0
        rows.append(row)
    return rows


def hungarian_accuracy(assign: ArrayLike, y: ArrayLike) -> float:
    """One-to-one clustering accuracy in percent: the best matching between clusters and classes, found by
    ``scipy.optimize.linear_sum_assignment`` on the contingency matrix C[k, c] = #{assign = k, y = c}.

    With K clusters ≠ number of classes the assignment is rectangular: only min(K, classes) pairs are
    matched, and points in unmatched clusters (or of unmatched classes) count as errors, so K > classes is
    penalised. Cluster ids may be any integers. See :func:`majority_accuracy` for the many-to-one mapping.
    """
    table = _contingency(assign, y)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(100.0 * table[rows, cols].sum() / table.sum())


def majority_accuracy(assign: ArrayLike, y: ArrayLike) -> float:
    """Many-to-one ("majority vote", cluster purity) accuracy in percent: each cluster is labelled with its
    most frequent class, 100 · Σ_k max_c C[k, c] / N. Several clusters may share a class, so it never
    decreases as K grows (K = N gives 100 %)."""
    table = _contingency(assign, y)
    return float(100.0 * table.max(axis=1).sum() / table.sum())


def nmi(assign: ArrayLike, y: ArrayLike) -> float:
    """Normalised mutual information I(assign; y) / mean(H(assign), H(y)) in [0, 1] (sklearn's arithmetic
    normalisation), over the rows with y ≥ 0. Invariant to relabelling the clusters."""
    a, t = _labels(assign, "assign"), _labels(y, "y")
    _same_length(a, t, "assign", "y")
    keep = _labelled(t, "y")
    return float(normalized_mutual_info_score(t[keep], a[keep]))


# --------------------------------------------------------------------------------------------- internals


def _numpy(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise DataError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _labels(x: ArrayLike, name: str) -> np.ndarray:
    """A 1-D integer array; float arrays are accepted when every value is a whole number."""
    a = _numpy(x, name)
    if a.ndim != 1:
        raise DataError(f"{name} must be 1-D (N,), got shape {a.shape}")
    if a.size == 0:
        raise DataError(f"{name} is empty")
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise DataError(f"{name} must hold integer labels, got non-integer or non-finite values")
        return a.astype(np.int64)
    raise DataError(f"{name} must hold integer labels, got dtype {a.dtype}")


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    """A finite (N, K) float array of cluster probabilities."""
    a = _numpy(x, name)
    if a.ndim != 2:
        raise DataError(f"{name} must be (N, K) cluster probabilities, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{name} is empty: shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{name} must be numeric, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} has non-finite values (NaN or Inf)")
    return a


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataError(f"{name_a} and {name_b} must have the same number of rows, got {a.shape[0]} and {b.shape[0]}")


def _labelled(y: np.ndarray, name: str) -> np.ndarray:
    keep = y >= 0
    if not keep.any():
        raise DataError(f"{name} has no labelled rows: every label is negative (negative labels are ignored)")
    return keep


def _contingency(assign: ArrayLike, y: ArrayLike) -> np.ndarray:
    """C[k, c] = #{assign = k, y = c} over labelled rows, with clusters and classes indexed by np.unique."""
    a, t = _labels(assign, "assign"), _labels(y, "y")
    _same_length(a, t, "assign", "y")
    keep = _labelled(t, "y")
    _, ai = np.unique(a[keep], return_inverse=True)
    _, ti = np.unique(t[keep], return_inverse=True)
    table = np.zeros((ai.max() + 1, ti.max() + 1), dtype=np.int64)
    np.add.at(table, (ai, ti), 1)
    return table
