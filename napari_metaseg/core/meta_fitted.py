"""Fitted meta models as plain arrays, shared by freshly fitted models and models read from files.

* :class:`_LinearModel`: ``raw = Z @ coef + intercept`` on standardised features (linear and
  logistic regression, with or without an L1 penalty);
* :class:`_TreeEnsemble`: gradient boosting copied out of scikit-learn into flat node arrays,
  evaluated by the numba kernel :func:`_ensemble_raw` with scikit-learn's accumulation order.

A fitted estimator (:mod:`napari_metaseg.core.meta_estimators`) and the same estimator read back by
:mod:`napari_metaseg.core.meta_io` predict through this code and give identical numbers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Internal to the meta-model modules: nothing here is public API.
__all__: list[str] = []


class _LinearModel:
    """``raw = Z @ coef + intercept`` on standardised features."""

    kind = "linear"

    def __init__(self, coef: np.ndarray, intercept: float):
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept = float(intercept)

    @property
    def n_features(self) -> int:
        return self.coef.shape[0]

    def raw(self, Z: np.ndarray) -> np.ndarray:
        return Z @ self.coef + self.intercept


class _TreeEnsemble:
    """Sum of regression trees, laid out as flat node arrays (one block per tree).

    Nodes follow scikit-learn's ``TreePredictor.nodes``: a non-leaf sends a row left when its
    feature value is ``<= threshold`` (NaN follows ``missing_left``), right otherwise. Child
    indices are relative to the tree's block.
    """

    kind = "trees"

    def __init__(self, baseline, offsets, feature, threshold, left, right, value, is_leaf,
                 missing_left, n_features):
        self.baseline = float(baseline)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.feature = np.ascontiguousarray(feature, dtype=np.int64)
        self.threshold = np.ascontiguousarray(threshold, dtype=np.float64)
        self.left = np.ascontiguousarray(left, dtype=np.int64)
        self.right = np.ascontiguousarray(right, dtype=np.int64)
        self.value = np.ascontiguousarray(value, dtype=np.float64)
        self.is_leaf = np.ascontiguousarray(is_leaf, dtype=np.bool_)
        self.missing_left = np.ascontiguousarray(missing_left, dtype=np.bool_)
        self.n_features = int(n_features)

    @property
    def n_trees(self) -> int:
        return self.offsets.shape[0] - 1

    @classmethod
    def from_sklearn(cls, est) -> _TreeEnsemble:
        """Copy the trees of a fitted HistGradientBoosting{Classifier,Regressor}."""
        if getattr(est, "n_trees_per_iteration_", 1) != 1:
            raise ValueError("only single-output gradient boosting can be exported")
        if np.any(getattr(est, "is_categorical_", None) or False):
            raise ValueError("gradient boosting with categorical features cannot be exported")
        nodes = [it[0].nodes for it in est._predictors]
        sizes = np.array([len(n) for n in nodes], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        if nodes:
            allnodes = np.concatenate(nodes)
        else:  # pragma: no cover - HGB always grows at least one tree
            allnodes = np.zeros(0, dtype=[("value", "f8"), ("feature_idx", "i8"),
                                          ("num_threshold", "f8"), ("missing_go_to_left", "u1"),
                                          ("left", "u4"), ("right", "u4"), ("is_leaf", "u1"),
                                          ("is_categorical", "u1")])
        if np.any(allnodes["is_categorical"]):
            raise ValueError("gradient boosting with categorical splits cannot be exported")
        baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
        return cls(
            baseline=baseline[0],
            offsets=offsets,
            feature=allnodes["feature_idx"],
            threshold=allnodes["num_threshold"],
            left=allnodes["left"],
            right=allnodes["right"],
            value=allnodes["value"],
            is_leaf=allnodes["is_leaf"].astype(bool),
            missing_left=allnodes["missing_go_to_left"].astype(bool),
            n_features=est.n_features_in_,
        )

    def raw(self, Z: np.ndarray) -> np.ndarray:
        out = np.empty(Z.shape[0], dtype=np.float64)
        _ensemble_raw(np.ascontiguousarray(Z, dtype=np.float64), self.baseline, self.offsets,
                      self.feature, self.threshold, self.left, self.right, self.value,
                      self.is_leaf, self.missing_left, out)
        return out


@njit(cache=True, nogil=True)
def _ensemble_raw(Z, baseline, offsets, feature, threshold, left, right, value, is_leaf,
                  missing_left, out):
    # Same accumulation order as scikit-learn (baseline, then tree by tree), so the sums are
    # bit-identical to HistGradientBoosting's raw predictions.
    n = Z.shape[0]
    for i in range(n):
        out[i] = 0.0
        out[i] += baseline
    for t in range(offsets.shape[0] - 1):
        base = offsets[t]
        for i in range(n):
            node = 0
            while not is_leaf[base + node]:
                k = base + node
                x = Z[i, feature[k]]
                if np.isnan(x):
                    node = left[k] if missing_left[k] else right[k]
                elif x <= threshold[k]:
                    node = left[k]
                else:
                    node = right[k]
            out[i] += value[base + node]
