"""scikit-learn estimators over the AAE models (regae.sklearn): scikit-learn's own estimator checks, then
behaviour on small easy data (digits scaled to [0, 1], well separated blobs)."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, make_blobs
from sklearn.metrics import normalized_mutual_info_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from regae.models.aae import AAE, DimReductionAAE, SemiSupervisedAAE
from regae.sklearn import AAEClusterer, AAEEmbedding, SemiSupervisedAAEClassifier

# ------------------------------------------------------------------------------ scikit-learn's checks

# Short training: the checks fit each estimator ~100 times on 20-300 samples (check_classifiers_train wants
# 83 % training accuracy on 300 blobs: 5 epochs of 15 batches give about 92 %).
TINY = {"hidden": (16,), "disc_hidden": (16,), "epochs": 5, "batch_size": 20, "lr": 1e-2}
CHECKED = [
    SemiSupervisedAAEClassifier(style_dim=2, **TINY),
    # check_clustering wants ARI > 0.4 on 50 points in three 2-D blobs: no input dropout (20 % of a 2-feature
    # input hides much of what tells the blobs apart), smaller batches and a larger step, so 5 epochs reach it
    # for most seeds (it uses random_state=0)
    AAEClusterer(n_clusters=3, style_dim=2, input_dropout=0.0, **{**TINY, "batch_size": 10, "lr": 2e-2}),
    AAEEmbedding(**TINY),
]
EXPECTED_FAILED_CHECKS = {
    SemiSupervisedAAEClassifier: {
        "check_classifiers_classes": (
            "its last problem uses -1 as a class label; -1 marks unlabeled rows here (scikit-learn's "
            "semi-supervised convention, which the check exempts only for its own semi-supervised classifiers)"
        ),
    },
}


@parametrize_with_checks(
    CHECKED, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est), {}), xfail_strict=True
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits in [0, 1], and the labels with all but 10 per class set to -1."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.RandomState(0)
    keep = np.concatenate([rng.choice(np.flatnonzero(y == c), 10, replace=False) for c in range(10)])
    y_semi = np.full_like(y, -1)
    y_semi[keep] = y[keep]
    return X, y, y_semi


def blobs(n=60, centers=3, seed=0):
    X, y = make_blobs(n_samples=n, centers=centers, n_features=4, cluster_std=0.5, random_state=seed)
    return (X - X.mean(0)) / X.std(0), y


SMALL = {"hidden": (32,), "disc_hidden": (16,), "epochs": 15, "batch_size": 10, "lr": 1e-2, "random_state": 0}
DIGITS = {"hidden": (128,), "disc_hidden": (32,), "epochs": 20, "batch_size": 100, "lr": 3e-3, "random_state": 0}


# ------------------------------------------------------------------------------------- §5 classifier


@pytest.fixture(scope="module")
def digits_classifier(digits):
    X, _, y_semi = digits
    return SemiSupervisedAAEClassifier(style_dim=5, **DIGITS).fit(X, y_semi)


def test_classifier_with_10_labels_per_class_beats_chance(digits, digits_classifier):
    X, y, y_semi = digits
    clf = digits_classifier
    unlabeled = y_semi == -1
    assert clf.score(X[unlabeled], y[unlabeled]) > 0.7  # chance: 0.1 (about 0.9 in practice)
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    proba = clf.predict_proba(X[:50])
    assert proba.shape == (50, 10)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(X[:50]))
    assert isinstance(clf.model_, SemiSupervisedAAE) and not clf.model_.training
    assert len(clf.history_) == DIGITS["epochs"]
    assert {"reconstruction/loss", "discriminator/loss", "generator/loss", "semi_supervised/loss"} <= set(
        clf.history_[-1]
    )


def test_classifier_string_labels():
    X, y = blobs()
    names = np.array(["cat", "ant", "bee"])[y]
    clf = SemiSupervisedAAEClassifier(style_dim=2, **SMALL).fit(X, names)
    np.testing.assert_array_equal(clf.classes_, ["ant", "bee", "cat"])
    pred = clf.predict(X)
    assert pred.dtype == names.dtype and set(pred) <= set(clf.classes_)
    assert (pred == names).mean() > 0.9
    # object labels with the integer -1 for unlabeled rows: -1 is no class
    semi = names.astype(object)
    semi[::2] = -1
    clf2 = SemiSupervisedAAEClassifier(style_dim=2, **SMALL).fit(X, semi)
    np.testing.assert_array_equal(clf2.classes_, ["ant", "bee", "cat"])
    assert set(clf2.predict(X)) <= {"ant", "bee", "cat"}


def test_classifier_non_contiguous_int_labels():
    X, y = blobs()
    labels = np.array([42, 3, 7])[y]
    labels[1::3] = -1
    clf = SemiSupervisedAAEClassifier(style_dim=2, **SMALL).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, [3, 7, 42])
    assert clf.predict_proba(X).shape == (len(X), 3)
    truth = np.array([42, 3, 7])[y]
    assert (clf.predict(X) == truth).mean() > 0.9


def test_classifier_refuses_unlabeled_only_and_single_class():
    X, y = blobs(n=20)
    clf = SemiSupervisedAAEClassifier(**SMALL)
    with pytest.raises(ValueError, match="needs labeled samples.*AAEClusterer"):
        clf.fit(X, np.full(len(X), -1))
    one = np.full(len(X), -1)
    one[:5] = 2
    with pytest.raises(ValueError, match="at least 2 classes.*got 1 class"):
        clf.fit(X, one)
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, np.linspace(0, 1, len(X)))


def test_fit_is_reproducible_and_leaves_global_torch_state_alone():
    X, y = blobs()
    quick = {**SMALL, "epochs": 4}
    rng_before = torch.get_rng_state()
    det_before = torch.are_deterministic_algorithms_enabled()
    a = SemiSupervisedAAEClassifier(style_dim=2, **{**quick, "random_state": 3}).fit(X, y)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.are_deterministic_algorithms_enabled() == det_before
    b = clone(a).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = clone(a).set_params(random_state=4).fit(X, y)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
    e1 = AAEEmbedding(**quick).fit(X, y).transform(X)
    e2 = AAEEmbedding(**quick).fit(X, y).transform(X)
    np.testing.assert_array_equal(e1, e2)


def test_nothing_is_left_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    X, y = blobs(n=20)
    SemiSupervisedAAEClassifier(**{**SMALL, "epochs": 1}).fit(X, y)
    assert list(tmp_path.iterdir()) == []


def test_sgd_uses_the_appendix_learning_rates():
    X, y = blobs(n=40)
    clf = SemiSupervisedAAEClassifier(**{**SMALL, "optimizer": "sgd", "lr": None, "epochs": 2}).fit(X, y)
    last = clf.history_[-1]
    assert last["reconstruction/lr"] == pytest.approx(0.01)
    for phase in ("discriminator", "generator", "semi_supervised"):
        assert last[f"{phase}/lr"] == pytest.approx(0.1)


def test_bad_parameters_raise_value_errors():
    X, y = blobs(n=20)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        SemiSupervisedAAEClassifier(**{**SMALL, "reconstruction": "bce"}).fit(X, y)
    with pytest.raises(ValueError, match="optimizer"):
        SemiSupervisedAAEClassifier(**{**SMALL, "optimizer": "lbfgs"}).fit(X, y)
    with pytest.raises(ValueError, match="epochs"):
        AAEClusterer(**{**SMALL, "epochs": 0}).fit(X)
    with pytest.raises(ValueError, match="n_clusters"):
        AAEClusterer(**{**SMALL, "n_clusters": 0}).fit(X)


# ---------------------------------------------------------------------------------------- §6 clusterer


def test_clusterer_labels_on_digits(digits):
    X, y, _ = digits
    km = AAEClusterer(n_clusters=10, **{**DIGITS, "hidden": (64,), "epochs": 10}).fit(X)
    assert km.labels_.shape == (len(X),) and km.labels_.dtype.kind == "i"
    assert 1 <= km.n_clusters_ <= 10
    np.testing.assert_array_equal(np.unique(km.labels_), np.arange(km.n_clusters_))  # no empty cluster
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    proba = km.predict_proba(X[:20])
    assert proba.shape == (20, km.n_clusters_)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert km.cluster_heads_.shape == (km.n_clusters_, 64)
    assert km.cluster_heads_.min() >= 0 and km.cluster_heads_.max() <= 1  # bce: sigmoid outputs
    assert normalized_mutual_info_score(y, km.labels_) > 0.1  # chance: ~0 (about 0.2-0.35 in practice)


def test_clusterer_passes_the_balance_and_consistency_terms_to_the_model():
    X, _ = blobs(n=40)
    km = AAEClusterer(n_clusters=3, balance=1.0, consistency=0.3, **SMALL).fit(X)
    assert km.model_.config.cluster_balance == 1.0 and km.model_.config.cluster_consistency == 0.3
    assert km.labels_.shape == (40,)
    for bad in (-1.0, float("nan"), float("inf"), "0.3", True):
        with pytest.raises(ValueError, match="balance must be a finite number"):
            AAEClusterer(n_clusters=3, balance=bad, **SMALL).fit(X)
    with pytest.raises(ValueError, match="consistency must be a finite number"):
        AAEClusterer(n_clusters=3, consistency=-0.1, **SMALL).fit(X)
    with pytest.raises(ValueError, match="input_dropout or input_noise_std"):
        AAEClusterer(n_clusters=3, consistency=0.3, input_dropout=0.0, **SMALL).fit(X)


def test_clusterer_with_one_cluster_is_a_plain_aae():
    X, _ = blobs(n=20)
    km = AAEClusterer(n_clusters=1, **SMALL).fit(X)
    assert isinstance(km.model_, AAE)
    np.testing.assert_array_equal(km.labels_, 0)
    np.testing.assert_array_equal(km.predict_proba(X), 1.0)
    assert km.cluster_heads_.shape == (1, X.shape[1])


# --------------------------------------------------------------------------------------- §7 embedding


def test_embedding_separates_labeled_classes(digits):
    X, y, y_semi = digits
    emb = AAEEmbedding(n_components=2, **DIGITS)
    Z = emb.fit_transform(X, y_semi)
    assert Z.shape == (len(X), 2) and Z.dtype == np.float64
    assert isinstance(emb.model_, DimReductionAAE)
    np.testing.assert_array_equal(emb.classes_, np.arange(10))
    assert emb.cluster_heads_.shape == (10, 2)
    labeled = y_semi != -1
    knn = KNeighborsClassifier(n_neighbors=1).fit(Z[labeled], y[labeled])
    assert knn.score(Z[~labeled], y[~labeled]) > 0.5  # chance: 0.1 (about 0.8 in practice)
    assert emb.transform(X[:5].astype(np.float32)).dtype == np.float32
    np.testing.assert_array_equal(emb.get_feature_names_out(), ["aaeembedding0", "aaeembedding1"])


def test_embedding_without_labels_and_fixed_heads():
    X, y = blobs()
    emb = AAEEmbedding(n_components=2, n_clusters=4, **SMALL).fit(X)
    assert emb.classes_ is None and emb.cluster_heads_.shape == (4, 2)
    assert not emb.model_.uses_labels
    all_unlabeled = AAEEmbedding(n_components=2, n_clusters=4, **SMALL).fit(X, np.full(len(X), -1))
    np.testing.assert_array_equal(all_unlabeled.transform(X), emb.transform(X))
    fixed = AAEEmbedding(n_components=3, fixed_heads_scale=4.0, **SMALL).fit(X, y)
    np.testing.assert_array_equal(fixed.cluster_heads_, 4.0 * np.eye(3))
    assert fixed.transform(X).shape == (len(X), 3)
    with pytest.raises(ValueError, match="fixed_heads_scale"):
        AAEEmbedding(n_components=2, fixed_heads_scale=4.0, **SMALL).fit(X, y)
