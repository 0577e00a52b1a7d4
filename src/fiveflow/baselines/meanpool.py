"""Mean-pooling baseline: the bag's mean feature vector + standardised logistic regression."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..train.data import BagStore
from .mil_loop import post_attention

C = 1.0  # inverse L2 strength of the logistic regression


def mean_features(store: BagStore, slide_ids: Sequence[str]) -> np.ndarray:
    return np.stack([store.get(s).features.mean(0).numpy() for s in slide_ids]).astype(np.float64)


def fit_predict(
    store: BagStore, train_ids: Sequence[str], train_y: np.ndarray, test_ids: Sequence[str], seed: int, device=None
) -> np.ndarray:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    clf.fit(mean_features(store, train_ids), train_y)
    prob = clf.predict_proba(mean_features(store, test_ids))[:, list(clf.classes_).index(1)]
    post_attention(instance_logits(clf, store, test_ids))
    return prob


def instance_logits(clf, store: BagStore, slide_ids: Sequence[str]) -> list[np.ndarray]:
    """Per test bag, the probe's logit for the positive class of each standardised instance ``[N_i]``:
    the probe is linear, so their mean is the bag's logit (an instance-score map for heatmaps)."""
    sign = 1.0 if list(clf.classes_).index(1) == 1 else -1.0
    return [sign * clf.decision_function(store.get(s).features.numpy().astype(np.float64)) for s in slide_ids]
