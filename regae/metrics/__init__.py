"""Evaluation metrics: Parzen-window log-likelihood (AAE §3, table 1) and clustering scores (AAE §6, table 3)."""

from regae.metrics.clustering import (
    classification_error,
    cluster_labels_paper,
    cluster_log_odds,
    cluster_table,
    hungarian_accuracy,
    majority_accuracy,
    nmi,
    paper_cluster_error,
)
from regae.metrics.parzen import DEFAULT_SIGMAS, grey_share, parzen_evaluate, parzen_log_likelihood, select_sigma

__all__ = [
    "DEFAULT_SIGMAS",
    "parzen_log_likelihood",
    "select_sigma",
    "parzen_evaluate",
    "grey_share",
    "classification_error",
    "cluster_labels_paper",
    "cluster_log_odds",
    "cluster_table",
    "paper_cluster_error",
    "hungarian_accuracy",
    "majority_accuracy",
    "nmi",
]
