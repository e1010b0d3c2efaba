"""scikit-learn estimators over the adversarial autoencoders of Makhzani et al. (2016), §5-7.

Three estimators wrap the AAE models of :mod:`regae.models.aae` behind the scikit-learn API
(``fit`` / ``predict`` / ``transform``, ``get_params`` / ``set_params``, ``clone``, pipelines, grid search):

========================================  =====================================  ==================================
estimator                                 model                                  paper
========================================  =====================================  ==================================
:class:`SemiSupervisedAAEClassifier`      ``semi-supervised-aae``                §5, appendix A.2.1
:class:`AAEClusterer`                     ``clustering-aae``                     §6, appendix A.3
:class:`AAEEmbedding`                     ``aae-dim-reduction``                  §7, fig. 10-11
========================================  =====================================  ==================================

All three share the encoder q(y, z|x) = q(y|x) q(z|x) of fig. 8: a trunk of ReLU layers (``hidden``)
with a softmax head y (K categories) and a linear style head z. Adversaries impose
p(y) = Cat(K) on y and p(z) = N(0, I) on z; the decoder reconstructs x from (y, z) (from W_C·y + z in §7).
Each training step runs the paper's phases: *reconstruction*, *regularization* (discriminators, then the
encoder as generator) and, with labels, the *semi-supervised* cross-entropy on a labeled minibatch.

Data conventions
----------------
* ``X`` is a 2-D array (n_samples, n_features) of finite numbers; images are given flat.
* The reconstruction cost is chosen by ``reconstruction="auto"``: for training data inside [0, 1]
  (pixel intensities) it is the Bernoulli cross-entropy on sigmoid outputs (``"bce"``; appendix A's
  sigmoid + half Euclidean cost is ``"half_sse"``); otherwise it is half the squared error
  ½||x - x̂||² with a linear output layer (``"sse"``; standardize such data first).
* Semi-supervised labels follow scikit-learn's convention: ``y = -1`` marks an unlabeled row. Labels of
  any type are encoded with a :class:`~sklearn.preprocessing.LabelEncoder` over the labeled rows; string
  labels with unlabeled rows go in an object array holding the integer -1 (a numpy string array would turn
  -1 into the class ``"-1"``).

Training runs :class:`regae.engine.Trainer` in a temporary folder that is deleted afterwards, so nothing is
left on disk. With an integer ``random_state`` a fit is reproducible: the weights, the noise and the batch
order are seeded inside :func:`torch.random.fork_rng`, so the caller's global torch RNG is left untouched.

Example
-------
>>> import numpy as np
>>> from sklearn.datasets import load_digits
>>> from regae.sklearn import SemiSupervisedAAEClassifier
>>> X, y = load_digits(return_X_y=True)
>>> X = X / 16.0
>>> y_semi = np.where(np.arange(len(y)) % 10 == 0, y, -1)   # keep 10 % of the labels
>>> clf = SemiSupervisedAAEClassifier(hidden=(256,), epochs=5, random_state=0).fit(X, y_semi)
>>> clf.predict(X[:3]).shape
(3,)
"""

from __future__ import annotations

import numbers
import os
import tempfile
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _validate_data(estimator, X="no_validation", y="no_validation", reset=True, **check_params):
        return estimator._validate_data(X, y, reset=reset, **check_params)


__all__ = ["AAEClusterer", "AAEEmbedding", "SemiSupervisedAAEClassifier"]

_RECONSTRUCTIONS = ("auto", "bce", "half_sse", "sse")
_OPTIMIZERS = ("adam", "sgd")
_PREDICT_CHUNK = 1024  # rows per forward pass at prediction time


# ----------------------------------------------------------------------------------------------- helpers


def _unlabeled_mask(y: np.ndarray) -> np.ndarray:
    """True where ``y`` is the integer -1 (scikit-learn's mark for an unlabeled sample)."""
    if y.dtype.kind in "iuf":
        return y == -1
    if y.dtype.kind == "O":
        return np.fromiter(
            (isinstance(v, numbers.Real) and not isinstance(v, bool) and v == -1 for v in y), bool, len(y)
        )
    return np.zeros(len(y), dtype=bool)  # strings / bytes: every row is labeled


def _encode_labels(y: np.ndarray, who: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(classes, codes): codes in [0, n_classes) for labeled rows and -1 for unlabeled ones."""
    unlabeled = _unlabeled_mask(y)
    # object labels may mix strings with the integer -1: check the labeled ones
    check_classification_targets(y if unlabeled.all() else y[~unlabeled])
    codes = np.full(len(y), -1, dtype=np.int64)
    if unlabeled.all():
        return None, codes
    encoder = LabelEncoder().fit(y[~unlabeled])
    if len(encoder.classes_) < 2:
        raise ValueError(
            f"{who} needs at least 2 classes among the labeled samples, got 1 class ({encoder.classes_[0]!r})"
        )
    codes[~unlabeled] = encoder.transform(y[~unlabeled])
    return encoder.classes_, codes


@contextmanager
def _local_torch_state(seed: int, device: torch.device):
    """Seed torch and turn on deterministic algorithms for the block only; the caller's RNG streams and
    determinism flag are restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _clean_fitted_model(model: torch.nn.Module) -> torch.nn.Module:
    """Drop what training attached to the model (the training data, cached codes and phase closures), so the
    fitted estimator pickles small and keeps no copy of X."""
    for attr in ("_labeled", "_train", "_val", "_codes"):
        if attr in vars(model):
            setattr(model, attr, None)
    model._phase_losses = {}
    return model.eval()


class _AAEBase(BaseEstimator):
    """What the three estimators share: input checks, the experiment config, training and inference."""

    _model_type: str = ""

    # ------------------------------------------------------------------------------------ validation

    def _check_common_params(self) -> None:
        name = type(self).__name__
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: {key} must be an integer >= 1, got {value!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"{name}: optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.reconstruction not in _RECONSTRUCTIONS:
            raise ValueError(f"{name}: reconstruction must be one of {_RECONSTRUCTIONS}, got {self.reconstruction!r}")
        if self.lr is not None and not (isinstance(self.lr, numbers.Real) and self.lr > 0):
            raise ValueError(f"{name}: lr must be a number > 0 or None, got {self.lr!r}")
        if self.max_minutes is not None and not (isinstance(self.max_minutes, numbers.Real) and self.max_minutes > 0):
            raise ValueError(f"{name}: max_minutes must be a number > 0 or None, got {self.max_minutes!r}")

    def _device(self) -> torch.device:
        try:
            return torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"{type(self).__name__}: invalid device {self.device!r} ({e})") from None

    def _likelihood(self, X: np.ndarray) -> tuple[str, str]:
        """(model.likelihood, model.recon_loss) for the ``reconstruction`` setting and the data's range."""
        in_unit = bool(X.min() >= 0.0 and X.max() <= 1.0)
        mode = self.reconstruction
        if mode == "auto":
            mode = "bce" if in_unit else "sse"
        if mode in ("bce", "half_sse") and not in_unit:
            raise ValueError(
                f"{type(self).__name__}: reconstruction={mode!r} needs training data in [0, 1], got values in "
                f"[{X.min():.3g}, {X.max():.3g}]; scale X (e.g. MinMaxScaler) or use reconstruction='sse'"
            )
        if mode == "sse":  # linear output, ½||x - x̂||² (the Gaussian likelihood with σ = 1)
            return "gaussian", "bce"
        return "bernoulli", mode  # "bce": Bernoulli cross-entropy; "half_sse": ½||x - sigmoid(out)||²

    # -------------------------------------------------------------------------------------- training

    def _optim_config(self, labeled: bool) -> tuple[dict, dict]:
        """(train.optim, train.phase_optim). Adam: one learning rate for every phase. SGD: appendix A,
        momentum 0.9 and ``lr`` for the reconstruction, momentum 0.1 and 10·lr for both adversarial phases,
        momentum 0.9 and 10·lr for the semi-supervised cross-entropy."""
        if self.optimizer == "adam":
            return {"name": "adam", "lr": float(self.lr if self.lr is not None else 1e-3)}, {}
        lr = float(self.lr if self.lr is not None else 0.01)
        phase = {"discriminator": {"lr": 10 * lr, "momentum": 0.1}, "generator": {"lr": 10 * lr, "momentum": 0.1}}
        if labeled:
            phase["semi_supervised"] = {"lr": 10 * lr}
        return {"name": "sgd", "lr": lr, "momentum": 0.9}, phase

    def _train(self, X: np.ndarray, y: np.ndarray | None, model: dict[str, Any], labeled: bool):
        """Build the experiment, train the model in a temporary run folder and set ``model_``, ``history_``."""
        from lightning_fabric import Fabric

        from regae.config import build_experiment
        from regae.data.base import ArrayDataset, DataSplits
        from regae.engine import Trainer
        from regae.run import build_model

        device = self._device()
        n = X.shape[0]
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        batch_size = min(int(self.batch_size), n)
        likelihood, recon_loss = self._likelihood(X)
        hidden = [int(h) for h in self.hidden]
        disc_hidden = hidden if self.disc_hidden is None else [int(h) for h in self.disc_hidden]
        optim, phase_optim = self._optim_config(labeled)
        raw = {
            "model": {
                "type": self._model_type,
                "hidden": hidden,
                "disc_hidden": disc_hidden,
                "recon_loss": recon_loss,
                "input_noise_std": float(self.input_noise_std),
                "input_dropout": float(self.input_dropout),
                "prior": "gaussian",
                "prior_args": {"std": 1.0},
                **model,
            },
            "train": {
                "seed": seed,
                "epochs": int(self.epochs),
                "batch_size": batch_size,
                "max_minutes": self.max_minutes,
                "optim": optim,
                "phase_optim": phase_optim,
                "log_every": max(1, n // batch_size),  # one history row per epoch
                "best_metric": None,
                "keep_last": 1,
                "progress": bool(self.verbose),
                "accelerator": device.type,
            },
            "experiment": f"sklearn-{type(self).__name__}",
        }
        cfg = build_experiment(raw)
        x = torch.tensor(np.asarray(X, dtype=np.float32))  # a copy: X may be a read-only memmap
        data = ArrayDataset(x, None if y is None else torch.tensor(y))
        splits = DataSplits(name=type(self).__name__, train=data, likelihood=likelihood)
        index = device.index if device.type == "cuda" else None
        fabric = Fabric(accelerator=device.type, devices=1 if index is None else [index], precision="32-true")
        with _local_torch_state(seed, device), tempfile.TemporaryDirectory(prefix="regae-sklearn-") as run_dir:
            net = build_model(cfg, splits)
            trainer = Trainer(cfg, run_dir, fabric)
            net = trainer.fit(net, splits)
            history = [dict(row) for row in trainer.logger.rows] if trainer.logger is not None else []
        self.model_ = _clean_fitted_model(net)
        self.history_ = history
        return self.model_

    # ------------------------------------------------------------------------------------- inference

    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return _validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    @torch.no_grad()
    def _forward(self, X: np.ndarray, fn) -> np.ndarray:
        """``fn(model, x_chunk)`` over chunks of ``X``, in eval mode, concatenated as float64 numpy."""
        model = self.model_.eval()
        dev = next(model.parameters()).device
        x = torch.tensor(np.asarray(X, dtype=np.float32))
        out = [fn(model, x[i : i + _PREDICT_CHUNK].to(dev)).cpu() for i in range(0, len(x), _PREDICT_CHUNK)]
        return torch.cat(out).double().numpy()

    def _q_y(self, X: np.ndarray) -> np.ndarray:
        """q(y|x) for every row, renormalised in float64."""
        if not hasattr(self.model_, "predict_proba"):  # AAEClusterer(n_clusters=1): one category
            return np.ones((X.shape[0], 1))
        proba = self._forward(X, lambda m, x: m.predict_proba(x))
        return proba / proba.sum(axis=1, keepdims=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.non_deterministic = False  # deterministic for a fixed integer random_state
        return tags


# -------------------------------------------------------------------------------------- §5 classifier


class SemiSupervisedAAEClassifier(ClassifierMixin, _AAEBase):
    r"""Semi-supervised classification with an adversarial autoencoder (Makhzani et al. 2016, §5).

    The encoder predicts a class y ~ q(y|x) (softmax over the K classes) and a style z ~ q(z|x); the decoder
    reconstructs x from (y, z). Two adversaries impose p(y) = Cat(K) on the label representation and
    p(z) = N(0, I) on the style, so y cannot carry style and z cannot carry the class. Each minibatch runs

    1. reconstruction: encoder and decoder minimise the reconstruction cost of x,
    2. regularization: each discriminator learns to tell prior samples from encoded codes, then the encoder
       learns to fool it (−log D(q(·|x))),
    3. semi-supervised: q(y|x) minimises the cross-entropy −log q(y_i|x_i) on a minibatch of labeled rows.

    Unlabeled rows (``y == -1``) take part in phases 1-2 only, which is how they help the classifier.
    Prediction is argmax_y q(y|x) (the encoder in eval mode: no input noise).

    Parameters
    ----------
    style_dim : int, default=10
        Dimension of the style code z (appendix A.2.1: 10).
    hidden : tuple of int, default=(1000, 1000)
        Widths of the encoder's ReLU layers (the decoder mirrors them); appendix A.2.1: two layers of 1000.
    disc_hidden : tuple of int or None, default=None
        Widths of both discriminators; None uses ``hidden``.
    epochs : int, default=50
        Passes over the training set (the paper trains 5000; a few tens give a usable classifier).
    batch_size : int, default=100
        Minibatch size, clipped to the number of samples; the labeled minibatch has the same size and is
        drawn with replacement from the labeled rows.
    optimizer : {"adam", "sgd"}, default="adam"
        "adam": Adam with ``lr`` for every phase. "sgd": appendix A's momentum SGD (momentum 0.9 and ``lr``
        for the reconstruction, 0.1 and 10·lr for the adversaries, 0.9 and 10·lr for the cross-entropy;
        constant rates).
    lr : float or None, default=None
        Learning rate; None means 1e-3 for Adam and 0.01 for SGD (appendix A).
    reconstruction : {"auto", "bce", "half_sse", "sse"}, default="auto"
        Reconstruction cost. "bce": Bernoulli cross-entropy with a sigmoid output (data in [0, 1]);
        "half_sse": ½||x − sigmoid(out)||² (appendix A, data in [0, 1]); "sse": ½||x − out||² with a linear
        output (any real data; standardize it). "auto": "bce" if the training data lie in [0, 1], else "sse".
    input_noise_std : float, default=0.3
        Std of the Gaussian noise added to the input while training (appendix A.2.1: 0.3).
    input_dropout : float, default=0.0
        Dropout rate on the input while training.
    max_minutes : float or None, default=None
        Stop training after this many minutes even if epochs remain.
    device : str, default="cpu"
        Torch device to train and predict on ("cpu", "cuda", "cuda:1", ...).
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the noise and the batch order; an int makes ``fit`` reproducible.
    verbose : bool, default=False
        Show a progress bar while training.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels seen among the labeled rows (``-1`` excluded), in sorted order.
    model_ : regae.models.aae.SemiSupervisedAAE
        The trained torch model (eval mode, on ``device``).
    history_ : list of dict
        Per-epoch mean losses of each phase (``reconstruction/loss``, ``semi_supervised/loss``...).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` has string column names.

    See Also
    --------
    AAEClusterer : the same model without labels (§6).
    AAEEmbedding : a low-dimensional embedding W_C·y + z (§7).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from regae.sklearn import SemiSupervisedAAEClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> y_semi = np.where(np.arange(len(y)) % 10 == 0, y, -1)  # 10 % labeled, the rest -1
    >>> clf = SemiSupervisedAAEClassifier(hidden=(256,), epochs=5, random_state=0).fit(X / 16, y_semi)
    >>> clf.predict_proba(X[:2] / 16).shape
    (2, 10)
    """

    _model_type = "semi-supervised-aae"

    def __init__(
        self,
        style_dim=10,
        hidden=(1000, 1000),
        disc_hidden=None,
        epochs=50,
        batch_size=100,
        optimizer="adam",
        lr=None,
        reconstruction="auto",
        input_noise_std=0.3,
        input_dropout=0.0,
        max_minutes=None,
        device="cpu",
        random_state=None,
        verbose=False,
    ):
        self.style_dim = style_dim
        self.hidden = hidden
        self.disc_hidden = disc_hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.reconstruction = reconstruction
        self.input_noise_std = input_noise_std
        self.input_dropout = input_dropout
        self.max_minutes = max_minutes
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y):
        """Train on ``X`` with labels ``y``, where ``y = -1`` marks unlabeled rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (images flattened).
        y : array-like of shape (n_samples,)
            Class labels of any type (ints, strings...); the integer -1 marks an unlabeled sample.
            At least two classes must be labeled.

        Returns
        -------
        self : SemiSupervisedAAEClassifier
        """
        X, y = _validate_data(self, X, y, dtype=np.float32, ensure_min_samples=2)
        self._check_common_params()
        classes, codes = _encode_labels(y, type(self).__name__)
        if classes is None:
            raise ValueError(
                f"{type(self).__name__} needs labeled samples, but every y is -1 (unlabeled); "
                "to cluster unlabeled data use regae.sklearn.AAEClusterer"
            )
        self.classes_ = classes
        self._train(X, codes, {"num_classes": len(classes), "code_dim": int(self.style_dim)}, labeled=True)
        return self

    def predict_proba(self, X):
        """Class probabilities q(y|x), columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return self._q_y(self._check_X(X))

    def predict(self, X):
        """The most probable class argmax_y q(y|x) of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


# ---------------------------------------------------------------------------------------- §6 clusterer


class AAEClusterer(ClusterMixin, _AAEBase):
    r"""Unsupervised clustering with an adversarial autoencoder (Makhzani et al. 2016, §6).

    The architecture of §5 without the semi-supervised phase: the encoder outputs a cluster assignment
    q(y|x) over K = ``n_clusters`` categories and a style z; the adversary on y imposes a uniform Categorical
    p(y) = Cat(K), the one on z imposes N(0, I), and the decoder must rebuild x from (y, z). As z is squeezed
    into a Gaussian, the discrete factors of the data (class, and discrete styles such as slanted or upright
    digits) are pushed into y. A sample's cluster is argmax_k q(y = k|x).

    Parameters
    ----------
    n_clusters : int, default=16
        Number of categories K of y (§6: 16 or 30 on MNIST), an upper bound on the number of clusters:
        categories that no training sample is assigned to are dropped after training (``n_clusters_``
        tells how many remain). ``n_clusters=1`` is the degenerate case where y is constant: the model is
        then the plain AAE of §2 on z and every sample is in cluster 0.
    style_dim : int, default=5
        Dimension of the style code z (appendix A.3: 5). The smaller it is, the more of what tells samples
        apart must go into the cluster code y. On MNIST, in regae's runs, 30 clusters did best with a 2-D
        style and 16 clusters with a 4-D one, by NMI and majority-vote error (2-D was worse than 5-D
        there; ``reports/README.md``).
    hidden : tuple of int, default=(1000, 1000)
        Widths of the encoder's ReLU layers (the decoder mirrors them); appendix A.3 uses 3000 × 2.
    disc_hidden : tuple of int or None, default=None
        Widths of both discriminators; None uses ``hidden``.
    epochs : int, default=50
        Passes over the training set (the paper trains 1500).
    batch_size : int, default=100
        Minibatch size, clipped to the number of samples.
    optimizer : {"adam", "sgd"}, default="adam"
        "adam": Adam with ``lr`` for every phase. "sgd": appendix A's momentum SGD (0.9 and ``lr`` for the
        reconstruction, 0.1 and 10·lr for the adversaries; constant rates).
    lr : float or None, default=None
        Learning rate; None means 1e-3 for Adam and 0.01 for SGD.
    reconstruction : {"auto", "bce", "half_sse", "sse"}, default="auto"
        Reconstruction cost, see :class:`SemiSupervisedAAEClassifier`.
    input_noise_std : float, default=0.0
        Std of Gaussian noise added to the input while training.
    input_dropout : float, default=0.2
        Dropout rate on the input while training (appendix A.3: 20 %).
    batchnorm : bool, default=True
        Batch normalization in the encoder layers (appendix A.3: "crucial" for clustering).
    balance : float, default=0.0
        Not in the paper: weight λ_b of KL(q̄(y) || U(K)) added to the encoder's adversarial loss, q̄(y) the
        minibatch's mean of q(y|x) (the marginal-entropy term of RIM / IMSAT). It keeps every category in
        use where the categorical adversary, which judges one code at a time, lets some go empty.
    consistency : float, default=0.0
        Not in the paper: weight λ_c of KL(q(y|x') || q(y|x'')), x' and x'' two independent corruptions of
        each sample by ``input_dropout`` / ``input_noise_std`` (IMSAT's self-augmented training, Hu et al.
        2017): a sample should keep its cluster when a few of its features are hidden. Needs one of the two
        corruptions > 0. On scikit-learn's digits (16 clusters, style 4, hidden (256, 256), 60 epochs, three
        seeds) ``balance=1, consistency=0.3`` gave a mean NMI of 0.805 and majority-vote error of 10.5 %,
        against 0.784 and 12.2 % without either term.
    max_minutes : float or None, default=None
        Stop training after this many minutes even if epochs remain.
    device : str, default="cpu"
        Torch device to train and predict on.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the noise and the batch order; an int makes ``fit`` reproducible.
    verbose : bool, default=False
        Show a progress bar while training.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training sample (= ``predict(X)``), in [0, n_clusters_); every value is used.
    n_clusters_ : int
        Number of non-empty clusters (<= ``n_clusters``).
    categories_ : ndarray of shape (n_clusters_,)
        The category k of y behind each cluster label: label i is argmax_k q(y = k|x) = categories_[i].
    cluster_heads_ : ndarray of shape (n_clusters_, n_features)
        The decoded cluster heads (fig. 9, first column): the decoder's mean for y = e_k and z = 0.
    model_ : regae.models.aae.ClusteringAAE
        The trained torch model (eval mode, on ``device``).
    history_ : list of dict
        Per-epoch mean losses of each phase.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` has string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from regae.sklearn import AAEClusterer
    >>> X, _ = load_digits(return_X_y=True)
    >>> km = AAEClusterer(n_clusters=16, hidden=(256,), epochs=5, random_state=0).fit(X / 16)
    >>> km.labels_.shape, km.cluster_heads_.shape[1]
    ((1797,), 64)
    """

    _model_type = "clustering-aae"

    def __init__(
        self,
        n_clusters=16,
        style_dim=5,
        hidden=(1000, 1000),
        disc_hidden=None,
        epochs=50,
        batch_size=100,
        optimizer="adam",
        lr=None,
        reconstruction="auto",
        input_noise_std=0.0,
        input_dropout=0.2,
        batchnorm=True,
        balance=0.0,
        consistency=0.0,
        max_minutes=None,
        device="cpu",
        random_state=None,
        verbose=False,
    ):
        self.n_clusters = n_clusters
        self.style_dim = style_dim
        self.hidden = hidden
        self.disc_hidden = disc_hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.reconstruction = reconstruction
        self.input_noise_std = input_noise_std
        self.input_dropout = input_dropout
        self.batchnorm = batchnorm
        self.balance = balance
        self.consistency = consistency
        self.max_minutes = max_minutes
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Cluster ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (images flattened).
        y : ignored
            Not used; present for API consistency.

        Returns
        -------
        self : AAEClusterer
        """
        X = _validate_data(self, X, dtype=np.float32, ensure_min_samples=2)
        self._check_common_params()
        if not isinstance(self.n_clusters, numbers.Integral) or self.n_clusters < 1:
            raise ValueError(f"AAEClusterer: n_clusters must be an integer >= 1, got {self.n_clusters!r}")
        if self.batchnorm and min(self.batch_size, X.shape[0]) < 2:
            raise ValueError("AAEClusterer: batchnorm=True needs batch_size >= 2 (batch statistics of one sample)")
        for key in ("balance", "consistency"):
            value = getattr(self, key)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < np.inf:
                raise ValueError(f"AAEClusterer: {key} must be a finite number >= 0, got {value!r}")
        if self.consistency and not (self.input_dropout or self.input_noise_std):
            raise ValueError(
                "AAEClusterer: consistency > 0 compares q(y|x) under two random corruptions of x; set "
                "input_dropout or input_noise_std > 0 (with neither, both copies are x and the term is 0)"
            )
        model = {"code_dim": int(self.style_dim), "encoder_batchnorm": bool(self.batchnorm)}
        if self.n_clusters == 1:  # y is constant: the model is the plain AAE of §2 on the style z
            model["type"] = "aae"
        else:
            model["num_classes"] = int(self.n_clusters)
            model["cluster_balance"] = float(self.balance)
            model["cluster_consistency"] = float(self.consistency)
        self._train(X, None, model, labeled=False)
        assign = self._q_y(X).argmax(axis=1)
        # categories that no training sample falls in are dropped, so the labels are 0..n_clusters_-1
        self.categories_ = np.unique(assign)
        self.n_clusters_ = len(self.categories_)
        self.labels_ = np.searchsorted(self.categories_, assign)
        self.cluster_heads_ = self._decode_heads()[self.categories_]
        return self

    @torch.no_grad()
    def _decode_heads(self) -> np.ndarray:
        m = self.model_
        dev = next(m.parameters()).device
        d = m.config.code_dim
        if not hasattr(m, "represent"):  # n_clusters=1: the plain AAE, whose one head is decode(z = 0)
            heads = m.mean(m.decode(torch.zeros(1, d, device=dev)))
        else:
            k = m.config.num_classes
            heads = m.mean(m.decode(m.represent(torch.eye(k, device=dev), torch.zeros(k, d, device=dev))))
        return heads.flatten(1).cpu().double().numpy()

    def predict_proba(self, X):
        """Cluster probabilities q(y = k|x).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_clusters_)
            q(y|x) restricted to the non-empty categories ``categories_`` and renormalised.
        """
        proba = self._q_y(self._check_X(X))[:, self.categories_]
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The cluster of each row: the label i of argmax_k q(y = k|x) over the categories ``categories_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.predict_proba(X).argmax(axis=1)

    def fit_predict(self, X, y=None):
        """Fit and return ``labels_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.fit(X).labels_


# ----------------------------------------------------------------------------------------- §7 embedding


class AAEEmbedding(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _AAEBase):
    r"""Dimensionality reduction with an adversarial autoencoder (Makhzani et al. 2016, §7, fig. 10).

    The encoder gives a categorical q(y|x) over m categories and an n-D style z (n = ``n_components``); the
    representation is

        r(x) = W_C · q(y|x) + z,

    where the m rows of W_C ∈ R^{m×n} are learned cluster heads (or fixed to ``fixed_heads_scale``·I).
    The decoder reconstructs x from r alone. Adversaries impose Cat(m) on y and N(0, I) on z, and the
    reconstruction phase also pays Σ_{i<j} max(0, η − ||w_i − w_j||) (η = ``head_distance``) so the heads stay
    apart. With labels (``y`` given), q(y|x) is also trained on the labeled rows (the semi-supervised phase)
    and each class gets its own head (fig. 11a-b, d); without labels the m = ``n_clusters`` heads are
    discovered (fig. 11c). ``transform`` returns r(x) with the encoder in eval mode.

    Parameters
    ----------
    n_components : int, default=2
        Dimension n of the embedding (and of the style z).
    n_clusters : int, default=10
        Number of cluster heads m when fitting without labels. With labels, there is one head per class.
    head_distance : float, default=6.0
        η: heads closer than this are pushed apart (the paper does not give its value).
    fixed_heads_scale : float or None, default=None
        If set, W_C = scale·I instead of learned heads (§7, 10-D representation); needs m == n_components.
    hidden : tuple of int, default=(1000, 1000)
        Widths of the encoder's ReLU layers (the decoder mirrors them).
    disc_hidden : tuple of int or None, default=None
        Widths of both discriminators; None uses ``hidden``.
    epochs : int, default=50
        Passes over the training set.
    batch_size : int, default=100
        Minibatch size, clipped to the number of samples.
    optimizer : {"adam", "sgd"}, default="adam"
        See :class:`SemiSupervisedAAEClassifier`.
    lr : float or None, default=None
        Learning rate; None means 1e-3 for Adam and 0.01 for SGD.
    reconstruction : {"auto", "bce", "half_sse", "sse"}, default="auto"
        Reconstruction cost, see :class:`SemiSupervisedAAEClassifier`.
    input_noise_std : float, default=0.3
        Std of the Gaussian noise added to the input while training.
    input_dropout : float, default=0.0
        Dropout rate on the input while training.
    max_minutes : float or None, default=None
        Stop training after this many minutes even if epochs remain.
    device : str, default="cpu"
        Torch device to train and transform on.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the noise and the batch order; an int makes ``fit`` reproducible.
    verbose : bool, default=False
        Show a progress bar while training.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,) or None
        The labels whose heads are the rows of ``cluster_heads_`` (fit with labels), None otherwise.
    cluster_heads_ : ndarray of shape (n_heads, n_components)
        W_C: the cluster heads in the embedding space.
    model_ : regae.models.aae.DimReductionAAE
        The trained torch model (eval mode, on ``device``).
    history_ : list of dict
        Per-epoch mean losses of each phase.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` has string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from regae.sklearn import AAEEmbedding
    >>> X, y = load_digits(return_X_y=True)
    >>> emb = AAEEmbedding(n_components=2, hidden=(256,), epochs=5, random_state=0)
    >>> emb.fit_transform(X / 16, y).shape
    (1797, 2)
    """

    _model_type = "aae-dim-reduction"

    def __init__(
        self,
        n_components=2,
        n_clusters=10,
        head_distance=6.0,
        fixed_heads_scale=None,
        hidden=(1000, 1000),
        disc_hidden=None,
        epochs=50,
        batch_size=100,
        optimizer="adam",
        lr=None,
        reconstruction="auto",
        input_noise_std=0.3,
        input_dropout=0.0,
        max_minutes=None,
        device="cpu",
        random_state=None,
        verbose=False,
    ):
        self.n_components = n_components
        self.n_clusters = n_clusters
        self.head_distance = head_distance
        self.fixed_heads_scale = fixed_heads_scale
        self.hidden = hidden
        self.disc_hidden = disc_hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.reconstruction = reconstruction
        self.input_noise_std = input_noise_std
        self.input_dropout = input_dropout
        self.max_minutes = max_minutes
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Learn the embedding of ``X``, guided by the labels ``y`` where given.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (images flattened).
        y : array-like of shape (n_samples,) or None, default=None
            Optional class labels (any type; the integer -1 marks an unlabeled row). None, or -1 everywhere,
            fits without labels. Labels must be classes: a continuous (regression) target is refused.

        Returns
        -------
        self : AAEEmbedding
        """
        if y is None:
            X = _validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        else:
            X, y = _validate_data(self, X, y, dtype=[np.float64, np.float32], ensure_min_samples=2)
        self._check_common_params()
        name = type(self).__name__
        if not isinstance(self.n_components, numbers.Integral) or self.n_components < 1:
            raise ValueError(f"{name}: n_components must be an integer >= 1, got {self.n_components!r}")
        classes, codes = (None, None) if y is None else _encode_labels(y, name)
        if classes is None:
            if not isinstance(self.n_clusters, numbers.Integral) or self.n_clusters < 2:
                raise ValueError(f"{name}: n_clusters must be an integer >= 2, got {self.n_clusters!r}")
            n_heads, codes = int(self.n_clusters), None
        else:
            n_heads = len(classes)
        if self.fixed_heads_scale is not None and n_heads != self.n_components:
            raise ValueError(
                f"{name}: fixed_heads_scale sets W_C = scale·I, which needs as many heads as components; got "
                f"{n_heads} heads ({'classes in y' if classes is not None else 'n_clusters'}) and "
                f"n_components={self.n_components}"
            )
        model = {
            "num_classes": n_heads,
            "code_dim": int(self.n_components),
            "head_distance": float(self.head_distance),
            "fixed_heads_scale": None if self.fixed_heads_scale is None else float(self.fixed_heads_scale),
            "use_labels": classes is not None,
        }
        self.classes_ = classes
        self._train(X, codes, model, labeled=classes is not None)
        self.cluster_heads_ = self.model_.heads.detach().cpu().double().numpy()
        self._n_features_out = int(self.n_components)
        return self

    def transform(self, X):
        """The representation W_C·q(y|x) + z of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
            In the dtype of ``X`` when it is float32 or float64, else float64.
        """
        X = self._check_X(X)
        return self._forward(X, lambda m, x: m.encode(x)).astype(X.dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
