"""Meta models: predict the quality of each segment from its metrics (MetaSeg, Rottmann et al.).

Two scikit-learn compatible estimators work on metrics tables:

* :class:`MetaClassifier` predicts P(IoU_adj > 0), i.e. whether a segment touches the ground
  truth of its class at all ("meta classification");
* :class:`MetaRegressor` predicts IoU_adj itself ("meta regression").

Both standardise the features and then fit one of a few model families. Linear models are held
as coefficient vectors and gradient boosting as plain node arrays (:class:`_LinearModel`,
:class:`_TreeEnsemble`), so that a fitted model and the same model read back from a file
(:mod:`napari_metaseg.core.meta_io`) predict through the same code and give identical numbers.

:func:`evaluate` reproduces the paper's evaluation (repeated random 50/50 splits, mean and
standard deviation of accuracy, AUROC, R^2 and residual sigma, next to entropy-only and naive
baselines), by default grouped by case so that segments of one case never sit on both sides.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import itertools
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sklearn
from numba import njit
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit, StratifiedShuffleSplit
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from .meta_dataset import (
    SIZE_COLUMNS,
    MetaDataset,
    _describe_column_difference,
    feature_columns,
    training_rows,
)

__all__ = [
    "CLASSIFIER_KINDS",
    "MIN_SEGMENTS",
    "MODEL_PAIRS",
    "REGRESSOR_KINDS",
    "Evaluation",
    "MetaClassifier",
    "MetaRegressor",
    "check_columns",
    "evaluate",
    "evaluation_splits",
    "library_versions",
    "logistic_lasso_path",
    "predict_table",
    "refit",
]

#: Model families of :class:`MetaClassifier`.
CLASSIFIER_KINDS = ("lasso", "logistic", "gbm")
#: Model families of :class:`MetaRegressor`.
REGRESSOR_KINDS = ("linear", "lasso", "gbm")
#: Fewest segments a meta model is fitted on.
MIN_SEGMENTS = 10
#: Number of regularisation strengths tried when a LASSO model selects its strength.
N_LAMBDAS = 12
#: Weakest / strongest regularisation of the selection grid.
LAMBDA_RATIO = 1e-3
#: Share of the training segments held out to select the LASSO strength.
INNER_VALIDATION = 0.25

_SKLEARN_VERSION = tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit())


# ============================================================================================
# Fitted model representations (shared by freshly fitted and loaded models)
# ============================================================================================
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


# ============================================================================================
# L1-penalised logistic regression (proximal Newton with coordinate descent, as in glmnet)
# ============================================================================================
@njit(cache=True, nogil=True)
def _cd_quadratic(H, c, beta, lam, tol, max_sweeps):
    """Minimise 0.5 b'Hb - c'b + lam * sum_{j>=1} |b_j| by cyclic coordinate descent.

    Coordinate 0 is the intercept and is not penalised. ``beta`` is updated in place.
    """
    p = beta.shape[0]
    Hb = np.zeros(p)
    for j in range(p):
        for k in range(p):
            Hb[j] += H[j, k] * beta[k]
    for _ in range(max_sweeps):
        max_change = 0.0
        for j in range(p):
            hjj = H[j, j]
            if hjj <= 0.0:
                continue
            old = beta[j]
            r = c[j] - Hb[j] + hjj * old
            if j == 0:
                new = r / hjj
            elif r > lam:
                new = (r - lam) / hjj
            elif r < -lam:
                new = (r + lam) / hjj
            else:
                new = 0.0
            d = new - old
            if d != 0.0:
                beta[j] = new
                for k in range(p):
                    Hb[k] += H[k, j] * d
                change = abs(d) * math.sqrt(hjj)
                if change > max_change:
                    max_change = change
        if max_change < tol:
            break
    return beta


def _logistic_objective(eta, y, beta, lam):
    return float(np.mean(np.logaddexp(0.0, eta) - y * eta) + lam * np.abs(beta[1:]).sum())


def _l1_logistic_fit(Z1, y, lam, beta, *, tol=1e-10, max_iter=100):
    """Minimise mean log-loss + lam * ||b||_1 (intercept free); Z1 has a leading column of ones.

    Proximal Newton: each step minimises the penalised quadratic model of the loss by
    coordinate descent, followed by a backtracking line search on the true objective.
    """
    n = Z1.shape[0]
    beta = np.array(beta, dtype=np.float64)
    eta = Z1 @ beta
    f = _logistic_objective(eta, y, beta, lam)
    for _ in range(max_iter):
        prob = expit(eta)
        g = Z1.T @ (prob - y) / n
        # A'A with A = sqrt(w) Z1 is a symmetric rank-k update, several times faster than Z1'WZ1.
        A = Z1 * np.sqrt(np.maximum(prob * (1.0 - prob), 1e-10))[:, None]
        H = A.T @ A / n
        c = H @ beta - g
        new = _cd_quadratic(H, c, beta.copy(), lam, 1e-9, 2000)
        d = new - beta
        decrease = float(g @ d + lam * (np.abs(new[1:]).sum() - np.abs(beta[1:]).sum()))
        if decrease > -tol:
            break
        step = 1.0
        Zd = Z1 @ d
        while True:
            cand = beta + step * d
            eta_c = eta + step * Zd
            f_c = _logistic_objective(eta_c, y, cand, lam)
            if f_c <= f + 0.25 * step * decrease or step < 1e-8:
                break
            step *= 0.5
        if step < 1e-8:
            break
        beta, eta, f = cand, eta_c, f_c
    return beta


def _logit_lambda_max(Z, y):
    """Smallest lambda at which every L1 logistic coefficient is 0 (intercept-only model)."""
    return float(np.max(np.abs(Z.T @ (y - y.mean())) / Z.shape[0])) if Z.shape[1] else 0.0


def _l1_logistic_path(Z, y, lambdas):
    """Coefficients (intercept first) along decreasing ``lambdas``, warm-started."""
    Z1 = np.column_stack([np.ones(Z.shape[0]), Z])
    beta = np.zeros(Z1.shape[1])
    ybar = float(np.clip(y.mean(), 1e-12, 1 - 1e-12))
    beta[0] = math.log(ybar / (1 - ybar))
    out = []
    for lam in lambdas:
        beta = _l1_logistic_fit(Z1, y, lam, beta)
        out.append(beta.copy())
    return out, Z1


def _lasso_path(Z, y, alphas):
    """Least squares + alpha * ||b||_1 (scikit-learn's Lasso objective), intercept first.

    One Gram matrix for the whole path, then coordinate descent warm-started along it.
    """
    n = Z.shape[0]
    Z1 = np.column_stack([np.ones(n), Z])
    H = Z1.T @ Z1 / n
    c = Z1.T @ y / n
    beta = np.zeros(Z1.shape[1])
    beta[0] = float(y.mean())
    out = []
    for a in alphas:
        beta = _cd_quadratic(H, c, beta.copy(), float(a), 1e-10, 100000)
        out.append(beta.copy())
    return out


def _lambda_grid(lam_max, n, ratio):
    if lam_max <= 0:
        return np.array([0.0])
    return lam_max * np.logspace(0.0, math.log10(ratio), n)


def _mean_log_loss(y, raw):
    return float(np.mean(np.logaddexp(0.0, raw) - y * raw))


# ============================================================================================
# Estimators
# ============================================================================================
def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict:
    """Versions recorded with fitted models (provenance) and in model files."""
    from .. import __version__

    return {
        "napari_metaseg": __version__,
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
    }


def _check_random_state_param(random_state):
    if random_state is None:
        return None
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise TypeError(
            f"random_state must be None or an int (a seed), got {type(random_state).__name__}"
        )
    return int(random_state)


def _single_threaded(func):
    """Run ``func`` with one BLAS and one OpenMP thread.

    The problems here are narrow (about 40 features): threads gain little, and when they
    compete with other work (the napari GUI, other processes) BLAS and OpenMP threads spin and a
    fit slows down 5-100x (measured on 2 cores). One thread each keeps fits fast and the CPU
    use modest.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1):
            return func(*args, **kwargs)

    return wrapper


def _signed_log1p(x):
    return np.sign(x) * np.log1p(np.abs(x))


class _MetaEstimator(BaseEstimator):
    """Shared machinery: table handling, validation, standardisation, provenance."""

    _kinds: tuple = ()
    _target_name = ""

    def _check_params(self):
        if self.kind not in self._kinds:
            raise ValueError(
                f"kind must be one of {list(self._kinds)}, got {self.kind!r}"
            )
        if not isinstance(self.log_sizes, (bool, np.bool_)):
            raise TypeError(f"log_sizes must be a bool, got {type(self.log_sizes).__name__}")
        return _check_random_state_param(self.random_state)

    # -- input handling --------------------------------------------------------------------
    def _fit_inputs(self, X, y):
        """Feature matrix, raw target, case ids and provenance details for ``fit``."""
        info = {"min_interior": None}
        if isinstance(X, MetaDataset):
            info["min_interior"] = X.min_interior
            if y is not None:
                raise ValueError("y must be None when X is a MetaDataset (the target is iou_adj)")
            info["dataset"] = X  # for error messages that name its filter
            X = X.training_table()
        if isinstance(X, pd.DataFrame):
            cols = feature_columns(X)
            if not cols:
                raise ValueError(
                    "X has no feature columns: expected the numeric metric columns of a "
                    "segment_metrics table (identifiers and iou/iou_adj are not features)"
                )
            if y is None:
                if "iou_adj" not in X.columns:
                    raise ValueError(
                        f"{type(self).__name__}.fit requires y to be passed, but the target y "
                        "is None and X has no 'iou_adj' column: fit on a metrics table computed "
                        "with ground truth (segment_metrics(..., gt=...)) or pass y"
                    )
                target = X["iou_adj"].to_numpy(dtype=np.float64, na_value=np.nan)
                keep = np.isfinite(target)
                target = target[keep]
                info["target"] = self._target_name
            else:
                target = np.asarray(y)
                if target.ndim != 1 or target.shape[0] != len(X):
                    raise ValueError(
                        f"y must be 1-D with one entry per row of X ({len(X)}), "
                        f"got shape {target.shape}"
                    )
                keep = np.ones(len(X), dtype=bool)
                info["target"] = "y"
            table = X.loc[keep]
            feats = table[cols]
            _check_finite_table(feats, "X")
            cases = table["case"].astype(str).to_numpy() if "case" in table.columns else None
            self._check_n_segments(len(feats))
            Z = validate_data(self, feats, reset=True, dtype=np.float64)
            return Z, target, cases, info
        if y is None:
            raise ValueError(
                f"{type(self).__name__}.fit requires y to be passed, but the target y is None "
                "(X is an array, not a metrics table with an 'iou_adj' column)"
            )
        Z, target = validate_data(self, X, y, reset=True, dtype=np.float64,
                                  y_numeric=isinstance(self, RegressorMixin))
        self._check_n_segments(Z.shape[0])
        info["target"] = "y"
        return Z, target, None, info

    def _check_n_segments(self, n):
        if n < MIN_SEGMENTS:
            raise ValueError(
                f"X has {n} usable segments (n_samples={n}); at least {MIN_SEGMENTS} are "
                "needed to fit a meta model"
            )

    def _predict_inputs(self, X):
        check_is_fitted(self)
        if isinstance(X, MetaDataset):
            X = X.table
        if isinstance(X, pd.DataFrame) and hasattr(self, "feature_names_in_"):
            check_columns(self, X)
            feats = X[list(self.feature_names_in_)]
            _check_finite_table(feats, "X")
            return validate_data(self, feats, reset=False, dtype=np.float64)
        if isinstance(X, pd.DataFrame):
            feats = X[feature_columns(X)]
            _check_finite_table(feats, "X")
            return validate_data(self, feats, reset=False, dtype=np.float64)
        return validate_data(self, X, reset=False, dtype=np.float64)

    # -- fitting ---------------------------------------------------------------------------
    def _standardise(self, Z):
        names = [str(c) for c in getattr(self, "feature_names_in_", [])]
        self.log_features_ = [c for c in names if c in SIZE_COLUMNS] if self.log_sizes else []
        scaler = StandardScaler().fit(self._log(Z))
        self.scaler_mean_ = scaler.mean_.astype(np.float64)
        self.scaler_scale_ = scaler.scale_.astype(np.float64)
        return self._transform(Z)

    def _log(self, Z):
        if not self.log_features_:
            return Z
        names = [str(c) for c in self.feature_names_in_]
        idx = [names.index(c) for c in self.log_features_]
        Z = np.array(Z, dtype=np.float64, copy=True)
        Z[:, idx] = _signed_log1p(Z[:, idx])
        return Z

    def _transform(self, Z):
        return (self._log(Z) - self.scaler_mean_) / self.scaler_scale_

    def _raw(self, X):
        Z = self._predict_inputs(X)
        return self.model_.raw(self._transform(Z))

    def _record(self, cases, n, info, extra):
        self.training_cases_ = [] if cases is None else list(pd.unique(cases))
        self.n_segments_ = int(n)
        record = {
            "estimator": type(self).__name__,
            "kind": self.kind,
            "fitted_at": _utc_now(),
            "cases": list(self.training_cases_),
            "n_segments": int(n),
            "target": info.get("target"),
            "min_interior": info.get("min_interior"),
            **extra,
            "versions": library_versions(),
        }
        self.provenance_ = [record]

    def _inner_split(self, n, y_cls, cases, rs):
        """Indices (train, validation) used to select a LASSO strength, or None."""
        idx = np.arange(n)
        if cases is not None and len(np.unique(cases)) >= 3:
            splitter = GroupShuffleSplit(n_splits=1, test_size=INNER_VALIDATION, random_state=rs)
            tr, va = next(splitter.split(idx, groups=cases))
            if y_cls is None or (len(np.unique(y_cls[tr])) == 2 and len(np.unique(y_cls[va])) == 2):
                return tr, va
        if y_cls is not None:
            counts = np.bincount(y_cls.astype(np.int64), minlength=2)
            if counts.min() < 2:
                return None
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=INNER_VALIDATION,
                                              random_state=rs)
            return next(splitter.split(idx, y_cls))
        splitter = ShuffleSplit(n_splits=1, test_size=INNER_VALIDATION, random_state=rs)
        return next(splitter.split(idx))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = True
        return tags


class MetaClassifier(ClassifierMixin, _MetaEstimator):
    """Meta classifier: probability that a segment overlaps the ground truth (IoU_adj > 0).

    A pipeline of standardisation and one model family. Fitted on a metrics table (with
    ``y=None``) the target is ``iou_adj > 0`` and the rows with NaN ``iou_adj`` (segments on
    ignored pixels) are left out; fitted on a :class:`~napari_metaseg.core.meta_dataset.MetaDataset`
    its ``min_interior`` filter applies too. The features are :func:`feature_columns` of the
    table, matched by name at prediction time.

    Parameters
    ----------
    kind : {"lasso", "logistic", "gbm"}, default "lasso"
        ``"lasso"``: L1-penalised logistic regression; the penalty is chosen by validation
        log-loss on an inner split (25 % of the cases when the table has >= 3 cases, of the
        segments otherwise) among 12 strengths, then the model is refitted on all data.
        ``"logistic"``: unpenalised logistic regression. ``"gbm"``: scikit-learn's
        HistGradientBoostingClassifier with default settings.
    random_state : int, optional
        Seed of the inner split and of the gradient boosting.
    log_sizes : bool, default True
        Use log(1 + x) of the size columns (``S``, ``S_in``, ``S_bd``, ``S_rel``,
        ``S_rel_in``, when fitted on a table) before standardising. Sizes are heavy-tailed
        (large background segments next to one-voxel specks), which otherwise squeezes the
        standardised sizes of almost all segments into a narrow band. False reproduces the
        paper's raw standardised metrics.

    Attributes
    ----------
    classes_ : numpy.ndarray
        The two class labels; ``[0, 1]`` (IoU_adj = 0, IoU_adj > 0) when fitted on a table.
    feature_names_in_ : numpy.ndarray of str
        Feature columns in the order the model uses them (fitted on a table).
    n_features_in_ : int
    log_features_ : list of str
        Features taken as log(1 + x) before standardising.
    scaler_mean_, scaler_scale_ : numpy.ndarray
        Standardisation applied before the model (after the log of ``log_features_``).
    model_ : object
        The fitted model on standardised features (coefficients or trees).
    coef_ : numpy.ndarray
        Coefficients on standardised features (linear kinds only).
    intercept_ : float
        Intercept (linear kinds only).
    lambda_ : float
        Selected L1 strength (``kind="lasso"``), in the mean-log-loss parametrisation
        (scikit-learn's ``C`` = 1 / (n_segments * lambda)).
    training_cases_ : list of str
        Cases (values of the ``case`` column) the model was fitted on; empty without one.
    n_segments_ : int
        Number of segments fitted on.
    provenance_ : list of dict
        One record per fit (the last one is this fit; :func:`refit` prepends earlier ones).

    Raises
    ------
    ValueError
        From ``fit``: unknown ``kind``; fewer than 10 usable segments; a single target class
        (all IoU_adj = 0 or all > 0) or more than two classes; NaN/inf in features; a table
        without ``iou_adj`` and no ``y``. From ``predict*``: columns that do not match the
        fitted features.

    Example
    -------
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> table = synthetic_metrics_table(500, random_state=0)
    >>> clf = MetaClassifier(kind="logistic").fit(table)
    >>> clf.predict_proba(table).shape
    (500, 2)
    """

    _kinds = CLASSIFIER_KINDS
    _target_name = "iou_adj > 0"

    def __init__(self, kind: str = "lasso", random_state: int | None = None, log_sizes: bool = True):
        self.kind = kind
        self.random_state = random_state
        self.log_sizes = log_sizes

    @_single_threaded
    def fit(self, X, y=None):
        """Fit on a metrics table (target from ``iou_adj``) or on ``X``, ``y``.

        Parameters
        ----------
        X : pandas.DataFrame, MetaDataset or array-like of shape (n_samples, n_features)
            Metrics table(s). An array is used as it is (all columns are features).
        y : array-like of shape (n_samples,), optional
            Binary labels. When None, ``X`` must be a table with an ``iou_adj`` column and
            the label is ``iou_adj > 0``.

        Returns
        -------
        MetaClassifier
            ``self``.

        Raises
        ------
        ValueError
            See the class docstring.

        Example
        -------
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> clf = MetaClassifier(kind="logistic").fit(synthetic_metrics_table(200, random_state=1))
        >>> clf.classes_.tolist()
        [0, 1]
        """
        rs = self._check_params()
        Z, target, cases, info = self._fit_inputs(X, y)
        if info["target"] == "y":
            check_classification_targets(target)
            classes = np.unique(target)
            if classes.shape[0] < 2:
                raise ValueError(
                    f"y holds a single class ({classes[0]!r}); a classifier needs two classes"
                )
            if classes.shape[0] > 2:
                raise ValueError(
                    "Only binary classification is supported: MetaClassifier predicts "
                    f"IoU_adj = 0 vs > 0, but y has {classes.shape[0]} classes"
                )
        else:
            target = (target > 0).astype(np.int64)
            if target.min() == target.max():
                which = "IoU_adj > 0" if target[0] == 1 else "IoU_adj = 0"
                hint = _interior_filter_hint(info.get("dataset")) if target[0] == 1 else ""
                raise ValueError(
                    f"the training data hold a single target class: every segment has {which}; "
                    "a meta classifier needs segments with IoU_adj = 0 and with IoU_adj > 0" + hint
                )
            classes = np.array([0, 1])
        self.classes_ = classes
        y01 = (target == classes[1]).astype(np.float64)
        Zs = self._standardise(Z)
        extra = {"n_iou0": int((y01 == 0).sum()), "n_iou_pos": int((y01 == 1).sum())}
        if self.kind == "lasso":
            self.model_, self.lambda_, extra["lambda"] = self._fit_lasso(Zs, y01, cases, rs)
        elif self.kind == "logistic":
            self.model_ = _fit_unpenalised_logistic(Zs, y01)
        else:
            est = _fit_boosting(HistGradientBoostingClassifier(random_state=rs), Zs,
                                y01.astype(np.int64))
            self.model_ = _TreeEnsemble.from_sklearn(est)
        self._set_linear_attributes()
        self._record(cases, Zs.shape[0], info, extra)
        return self

    def _fit_lasso(self, Zs, y01, cases, rs):
        split = self._inner_split(Zs.shape[0], y01, cases, rs)
        if split is None:
            # Too few minority segments to hold any out: the weakest penalty of the grid.
            lam = _lambda_grid(_logit_lambda_max(Zs, y01), N_LAMBDAS, LAMBDA_RATIO)[-1]
            warm = None
        else:
            tr, va = split
            lams = _lambda_grid(_logit_lambda_max(Zs[tr], y01[tr]), N_LAMBDAS, LAMBDA_RATIO)
            path, _ = _l1_logistic_path(Zs[tr], y01[tr], lams)
            losses = [_mean_log_loss(y01[va], Zs[va] @ b[1:] + b[0]) for b in path]
            # The first strength of the grid gives the intercept-only model, which ranks nothing;
            # a few minority segments in the inner validation part can make it look best.
            best = 1 + int(np.argmin(losses[1:])) if len(losses) > 1 else 0
            lam, warm = float(lams[best]), path[best]
        Z1 = np.column_stack([np.ones(Zs.shape[0]), Zs])
        if warm is None:
            warm = np.zeros(Z1.shape[1])
        beta = _l1_logistic_fit(Z1, y01, lam, warm)
        return _LinearModel(beta[1:], beta[0]), float(lam), float(lam)

    def _set_linear_attributes(self):
        if isinstance(self.model_, _LinearModel):
            self.coef_ = self.model_.coef.copy()
            self.intercept_ = self.model_.intercept

    def decision_function(self, X):
        """Log-odds of IoU_adj > 0 (of ``classes_[1]``).

        Parameters
        ----------
        X : pandas.DataFrame or array-like
            Metrics table with the fitted feature columns (or an array of them).

        Returns
        -------
        numpy.ndarray of shape (n_samples,)

        Raises
        ------
        ValueError
            If the columns do not match the fitted features or contain NaN/inf.

        Example
        -------
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> t = synthetic_metrics_table(200, random_state=1)
        >>> MetaClassifier(kind="logistic").fit(t).decision_function(t).shape
        (200,)
        """
        return self._raw(X)

    def predict_proba(self, X):
        """Class probabilities; column 1 is P(IoU_adj > 0).

        Parameters
        ----------
        X : pandas.DataFrame or array-like
            Metrics table with the fitted feature columns (or an array of them).

        Returns
        -------
        numpy.ndarray of shape (n_samples, 2)

        Raises
        ------
        ValueError
            If the columns do not match the fitted features or contain NaN/inf.

        Example
        -------
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> t = synthetic_metrics_table(200, random_state=1)
        >>> p = MetaClassifier(kind="logistic").fit(t).predict_proba(t)
        >>> bool(((p >= 0) & (p <= 1)).all())
        True
        """
        p1 = expit(self._raw(X))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X):
        """Predicted class: ``classes_[1]`` (IoU_adj > 0) where P > 0.5.

        Parameters
        ----------
        X : pandas.DataFrame or array-like
            Metrics table with the fitted feature columns (or an array of them).

        Returns
        -------
        numpy.ndarray of shape (n_samples,)

        Raises
        ------
        ValueError
            If the columns do not match the fitted features or contain NaN/inf.

        Example
        -------
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> t = synthetic_metrics_table(200, random_state=1)
        >>> set(MetaClassifier(kind="logistic").fit(t).predict(t)) <= {0, 1}
        True
        """
        positive = self._raw(X) > 0
        return self.classes_[positive.astype(np.int64)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


class MetaRegressor(RegressorMixin, _MetaEstimator):
    """Meta regressor: predicted IoU_adj of each segment, clipped to [0, 1].

    A pipeline of standardisation and one model family. Fitted on a metrics table (with
    ``y=None``) the target is ``iou_adj`` and rows where it is NaN are left out; fitted on a
    :class:`~napari_metaseg.core.meta_dataset.MetaDataset` its ``min_interior`` filter applies
    too.

    Parameters
    ----------
    kind : {"linear", "lasso", "gbm"}, default "linear"
        ``"linear"``: ordinary least squares. ``"lasso"``: L1-penalised least squares with the
        strength chosen by validation error on an inner split (as for
        :class:`MetaClassifier`). ``"gbm"``: HistGradientBoostingRegressor, default settings.
    random_state : int, optional
        Seed of the inner split and of the gradient boosting.
    log_sizes : bool, default True
        Use log(1 + x) of the size columns before standardising (see :class:`MetaClassifier`).

    Attributes
    ----------
    feature_names_in_ : numpy.ndarray of str
    n_features_in_ : int
    log_features_ : list of str
    scaler_mean_, scaler_scale_ : numpy.ndarray
    model_ : object
    coef_, intercept_ : numpy.ndarray, float
        Linear kinds only.
    lambda_ : float
        Selected L1 strength (``kind="lasso"``), scikit-learn's ``Lasso(alpha=...)``.
    training_cases_ : list of str
    n_segments_ : int
    provenance_ : list of dict

    Raises
    ------
    ValueError
        As :class:`MetaClassifier` (except the class-count checks).

    Example
    -------
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> table = synthetic_metrics_table(500, random_state=0)
    >>> pred = MetaRegressor().fit(table).predict(table)
    >>> bool((pred >= 0).all() and (pred <= 1).all())
    True
    """

    _kinds = REGRESSOR_KINDS
    _target_name = "iou_adj"

    def __init__(self, kind: str = "linear", random_state: int | None = None, log_sizes: bool = True):
        self.kind = kind
        self.random_state = random_state
        self.log_sizes = log_sizes

    @_single_threaded
    def fit(self, X, y=None):
        """Fit on a metrics table (target ``iou_adj``) or on ``X``, ``y``.

        Parameters
        ----------
        X : pandas.DataFrame, MetaDataset or array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
            Target values; when None, ``X`` must have an ``iou_adj`` column.

        Returns
        -------
        MetaRegressor
            ``self``.

        Raises
        ------
        ValueError
            See the class docstring.

        Example
        -------
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> reg = MetaRegressor(kind="lasso", random_state=0)
        >>> reg.fit(synthetic_metrics_table(300, random_state=1)).lambda_ > 0
        True
        """
        rs = self._check_params()
        Z, target, cases, _info = self._fit_inputs(X, y)
        target = np.asarray(target, dtype=np.float64)
        if not np.isfinite(target).all():
            raise ValueError("y contains NaN or infinite values")
        Zs = self._standardise(Z)
        extra = {"iou_adj_mean": float(target.mean())}
        if self.kind == "linear":
            est = LinearRegression().fit(Zs, target)
            self.model_ = _LinearModel(est.coef_, est.intercept_)
        elif self.kind == "lasso":
            self.model_, self.lambda_ = self._fit_lasso(Zs, target, cases, rs)
            extra["lambda"] = self.lambda_
        else:
            est = _fit_boosting(HistGradientBoostingRegressor(random_state=rs), Zs, target)
            self.model_ = _TreeEnsemble.from_sklearn(est)
        if isinstance(self.model_, _LinearModel):
            self.coef_ = self.model_.coef.copy()
            self.intercept_ = self.model_.intercept
        self._record(cases, Zs.shape[0], _info, extra)
        return self

    def _fit_lasso(self, Zs, y, cases, rs):
        tr, va = self._inner_split(Zs.shape[0], None, cases, rs)
        Xc = Zs[tr] - Zs[tr].mean(axis=0)
        alpha_max = float(np.max(np.abs(Xc.T @ (y[tr] - y[tr].mean()))) / len(tr))
        if alpha_max <= 0:
            alpha = 0.0
        else:
            alphas = _lambda_grid(alpha_max, N_LAMBDAS, LAMBDA_RATIO)
            path = _lasso_path(Zs[tr], y[tr], alphas)
            errors = [float(np.mean((y[va] - Zs[va] @ b[1:] - b[0]) ** 2)) for b in path]
            alpha = float(alphas[int(np.argmin(errors))])
        beta = _lasso_path(Zs, y, [alpha])[0]
        return _LinearModel(beta[1:], beta[0]), alpha

    def predict(self, X):
        """Predicted IoU_adj, clipped to [0, 1].

        Parameters
        ----------
        X : pandas.DataFrame or array-like
            Metrics table with the fitted feature columns (or an array of them).

        Returns
        -------
        numpy.ndarray of shape (n_samples,)

        Raises
        ------
        ValueError
            If the columns do not match the fitted features or contain NaN/inf.

        Example
        -------
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> t = synthetic_metrics_table(200, random_state=1)
        >>> MetaRegressor().fit(t).predict(t).shape
        (200,)
        """
        return np.clip(self._raw(X), 0.0, 1.0)


def _interior_filter_hint(dataset):
    """Message part when a MetaDataset's ``min_interior`` filter left out every IoU_adj = 0
    segment ("" otherwise). Only called to build an error message."""
    if dataset is None or dataset.min_interior <= 0:
        return ""
    every = dataset.table
    n_zero = int((every["iou_adj"] == 0).sum() - (dataset.training_table()["iou_adj"] == 0).sum())
    if n_zero <= 0:
        return ""
    return (f" ({n_zero} segments with IoU_adj = 0 were left out because their interior is smaller "
            f"than min_interior = {dataset.min_interior}; min_interior = 0 keeps them, as in 3D mode)")


def _fit_boosting(est, Z, y):
    with threadpool_limits(limits=1):
        return est.fit(Z, y)


def _fit_unpenalised_logistic(Zs, y01):
    if _SKLEARN_VERSION >= (1, 8):
        est = LogisticRegression(C=np.inf, max_iter=1000)
    else:  # pragma: no cover - older scikit-learn
        est = LogisticRegression(penalty=None, max_iter=1000)
    est.fit(Zs, y01.astype(np.int64))
    return _LinearModel(est.coef_[0], est.intercept_[0])


def _check_finite_table(feats: pd.DataFrame, name: str) -> None:
    values = feats.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        counts = bad.sum(axis=0)
        cols = {str(c): int(k) for c, k in zip(feats.columns, counts, strict=True) if k}
        raise ValueError(
            f"{name} has NaN or infinite feature values (column: count) {cols}; "
            "meta models need finite metrics"
        )


def check_columns(model, table: pd.DataFrame) -> None:
    """Raise a ValueError when ``table``'s feature columns differ from the model's features.

    Parameters
    ----------
    model : MetaClassifier or MetaRegressor
        Fitted on a metrics table.
    table : pandas.DataFrame
        Table the model is to be applied to.

    Returns
    -------
    None

    Raises
    ------
    ValueError
        When a fitted feature is missing from ``table`` or ``table`` has feature columns the
        model was not fitted on (for example a different number of ``cprob`` columns because
        the segmentation has a different number of classes).

    Example
    -------
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> clf = MetaClassifier(kind="logistic").fit(synthetic_metrics_table(100, random_state=0))
    >>> check_columns(clf, synthetic_metrics_table(5, n_classes=3))
    Traceback (most recent call last):
    ...
    ValueError: The feature names should match those that were passed during fit. ...
    """
    expected = [str(c) for c in model.feature_names_in_]
    got = [str(c) for c in feature_columns(table)]
    if set(expected) != set(got):
        raise ValueError(
            "The feature names should match those that were passed during fit. "
            f"The table's metric columns do not match the {type(model).__name__}'s features: "
            + _describe_column_difference(expected, got)
        )


# ============================================================================================
# Tables, refit
# ============================================================================================
def predict_table(table: pd.DataFrame, classifier=None, regressor=None) -> pd.DataFrame:
    """Copy of ``table`` with the meta-model predictions used by the overlays.

    Adds ``p_iou0`` = P(IoU_adj = 0) (from ``classifier``) and ``iou_adj_pred`` (from
    ``regressor``); existing columns of those names are replaced. Segments with an empty
    interior (which training leaves out) are predicted too.

    Parameters
    ----------
    table : pandas.DataFrame
        Metrics table with the models' feature columns.
    classifier : MetaClassifier, optional
        Fitted on the target IoU_adj > 0 (``classes_`` = [0, 1]).
    regressor : MetaRegressor, optional
        Fitted.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ValueError
        If neither model is given, a model was fitted on custom labels, or the columns do not
        match.
    TypeError
        If ``table`` is not a DataFrame or a model has the wrong type.

    Example
    -------
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> t = synthetic_metrics_table(300, random_state=0)
    >>> out = predict_table(t, MetaClassifier(kind="logistic").fit(t), MetaRegressor().fit(t))
    >>> list(out.columns[-2:])
    ['p_iou0', 'iou_adj_pred']
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if classifier is None and regressor is None:
        raise ValueError("pass a classifier, a regressor or both to predict_table")
    if classifier is not None and not isinstance(classifier, MetaClassifier):
        raise TypeError(f"classifier must be a MetaClassifier, got {type(classifier).__name__}")
    if regressor is not None and not isinstance(regressor, MetaRegressor):
        raise TypeError(f"regressor must be a MetaRegressor, got {type(regressor).__name__}")
    out = table.copy()
    if classifier is not None:
        check_is_fitted(classifier)
        if list(np.asarray(classifier.classes_).tolist()) != [0, 1]:
            raise ValueError(
                "classifier was fitted on custom labels, not on IoU_adj > 0 (classes_ must be "
                f"[0, 1], got {list(classifier.classes_)})"
            )
        out["p_iou0"] = classifier.predict_proba(table)[:, 0]
    if regressor is not None:
        out["iou_adj_pred"] = regressor.predict(table)
    return out


def refit(model, dataset, *, min_interior: int | None = None):
    """Train the configuration of ``model`` again on an extended dataset.

    The fitted ``model`` is not modified; a new estimator with the same parameters is fitted
    on ``dataset`` (with selection of the LASSO strength repeated). Its ``provenance_`` lists
    the records of ``model`` followed by the new one, which also names the cases added and any
    earlier cases no longer present.

    Parameters
    ----------
    model : MetaClassifier or MetaRegressor
        A fitted model (for example one read by :func:`~napari_metaseg.core.meta_io.load_models`).
    dataset : MetaDataset or pandas.DataFrame
        Training data with ground truth; its metric columns must match the model's features.
    min_interior : int, optional
        Override of the dataset's ``min_interior`` (only for a MetaDataset).

    Returns
    -------
    MetaClassifier or MetaRegressor
        The newly fitted model.

    Raises
    ------
    TypeError
        If ``model`` is not a meta model or ``dataset`` has the wrong type.
    ValueError
        If the columns of ``dataset`` do not match the model's features, or from ``fit``.

    Example
    -------
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> ds = MetaDataset().add("a", synthetic_metrics_table(300, random_state=0))
    >>> clf = MetaClassifier(kind="logistic").fit(ds)
    >>> ds.add("b", synthetic_metrics_table(300, random_state=1))  # doctest: +ELLIPSIS
    MetaDataset(2 cases, ...)
    >>> new = refit(clf, ds)
    >>> [r["cases"] for r in new.provenance_]
    [['a'], ['a', 'b']]
    """
    if not isinstance(model, (MetaClassifier, MetaRegressor)):
        raise TypeError(
            f"model must be a fitted MetaClassifier or MetaRegressor, got {type(model).__name__}"
        )
    check_is_fitted(model)
    if isinstance(dataset, MetaDataset):
        table = dataset.table
        if min_interior is not None:
            dataset = MetaDataset.from_table(table, min_interior=min_interior)
    elif isinstance(dataset, pd.DataFrame):
        table = dataset
    else:
        raise TypeError(
            f"dataset must be a MetaDataset or a pandas DataFrame, got {type(dataset).__name__}"
        )
    if hasattr(model, "feature_names_in_"):
        check_columns(model, table)
    new = clone(model).fit(dataset)
    record = new.provenance_[-1]
    before = list(model.training_cases_)
    record["refit"] = True
    record["previous_cases"] = before
    record["added_cases"] = [c for c in new.training_cases_ if c not in before]
    record["dropped_cases"] = [c for c in before if c not in new.training_cases_]
    new.provenance_ = [*copy.deepcopy(model.provenance_), record]
    return new


# ============================================================================================
# Evaluation
# ============================================================================================
#: Named model pairs (classifier kind, regressor kind) for :func:`evaluate`.
MODEL_PAIRS = {
    "linear": ("lasso", "linear"),
    "logistic": ("logistic", "linear"),
    "lasso": ("lasso", "lasso"),
    "gbm": ("gbm", "gbm"),
}


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    table : pandas.DataFrame
        Rows (task, model, metric) in the order of the paper's Table 2, columns
        ``train_mean, train_std, val_mean, val_std``. Metrics: ACC and AUROC for
        classification (IoU_adj = 0 vs > 0), sigma (residual standard deviation, estimated as
        the root mean squared residual like the reference implementation) and R2
        for regression. Models: ``naive`` (majority class, ACC only), ``entropy`` (a model on
        ``E`` alone) and the requested models.
    lasso_path : pandas.DataFrame
        Coefficients (standardised features, columns) of the L1 logistic regression on all
        usable segments, one row per 1/lambda (index).
    correlations : pandas.Series
        Pearson correlation of every feature with IoU_adj (usable segments).
    grouping : str
        How training and validation were split: ``"case"`` (grouped), ``"segment"`` (the
        paper's per-segment splits), ``"case+slice"`` etc., or ``"fixed"``.
    n_splits : int
    n_segments : int
        Usable segments (after the ``min_interior`` and NaN filters).
    n_cases : int
    models : dict
        Model label -> (classifier kind, regressor kind).
    details : dict
        Everything else worth keeping (random state, min_interior, fixed validation cases).
    """

    table: pd.DataFrame
    lasso_path: pd.DataFrame
    correlations: pd.Series
    grouping: str
    n_splits: int
    n_segments: int
    n_cases: int
    models: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def summary(self, *, percent: bool = True, digits: int = 2) -> pd.DataFrame:
        """The table as ``mean ± std`` strings, ACC/AUROC/R2 in percent (as in the paper).

        Parameters
        ----------
        percent : bool, default True
            Show ACC, AUROC and R2 in percent.
        digits : int, default 2

        Returns
        -------
        pandas.DataFrame
            Columns ``train`` and ``validation``.

        Example
        -------
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> t = synthetic_metrics_table(400, random_state=0)
        >>> ev = evaluate(t, group=None, n_splits=2, models=("logistic",))
        >>> list(ev.summary().columns)
        ['train', 'validation']
        """
        rows = []
        for (_task, _model, metric), r in self.table.iterrows():
            scale = 100.0 if (percent and metric != "sigma") else 1.0
            d = digits if scale == 100.0 else digits + 2
            rows.append({
                "train": _pm(r["train_mean"], r["train_std"], scale, d),
                "validation": _pm(r["val_mean"], r["val_std"], scale, d),
            })
        return pd.DataFrame(rows, index=self.table.index)

    def to_markdown(self, *, percent: bool = True, digits: int = 2) -> str:
        """The summary as a Markdown table (no extra dependency).

        Parameters
        ----------
        percent : bool, default True
        digits : int, default 2

        Returns
        -------
        str

        Example
        -------
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> ev = evaluate(synthetic_metrics_table(400, random_state=0), group=None, n_splits=2,
        ...               models=("logistic",))
        >>> ev.to_markdown().splitlines()[0]
        '| task | model | metric | train | validation |'
        """
        s = self.summary(percent=percent, digits=digits)
        lines = ["| task | model | metric | train | validation |", "|---|---|---|---|---|"]
        for (task, model, metric), r in s.iterrows():
            label = metric + (" %" if percent and metric != "sigma" else "")
            lines.append(f"| {task} | {model} | {label} | {r['train']} | {r['validation']} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-serialisable form (NaN become None); inverse of :meth:`from_dict`.

        Returns
        -------
        dict

        Example
        -------
        >>> import json
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> ev = evaluate(synthetic_metrics_table(400, random_state=0), group=None, n_splits=2,
        ...               models=("logistic",))
        >>> Evaluation.from_dict(json.loads(json.dumps(ev.to_dict()))).grouping
        'segment'
        """
        table = self.table.reset_index()
        return {
            "table": {
                "columns": [str(c) for c in table.columns],
                "data": [[_json_value(v) for v in row] for row in table.itertuples(index=False)],
            },
            "lasso_path": {
                "inv_lambda": [_json_value(v) for v in self.lasso_path.index],
                "features": [str(c) for c in self.lasso_path.columns],
                "coef": [[_json_value(v) for v in row] for row in self.lasso_path.to_numpy()],
            },
            "correlations": {str(k): _json_value(v) for k, v in self.correlations.items()},
            "grouping": self.grouping,
            "n_splits": int(self.n_splits),
            "n_segments": int(self.n_segments),
            "n_cases": int(self.n_cases),
            "models": {k: list(v) for k, v in self.models.items()},
            "details": copy.deepcopy(self.details),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Evaluation:
        """Rebuild from :meth:`to_dict` output.

        Parameters
        ----------
        d : dict

        Returns
        -------
        Evaluation

        Raises
        ------
        ValueError
            If ``d`` lacks a required entry or has inconsistent shapes.

        Example
        -------
        >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
        >>> ev = evaluate(synthetic_metrics_table(400, random_state=0), group=None, n_splits=2,
        ...               models=("logistic",))
        >>> Evaluation.from_dict(ev.to_dict()).table.shape == ev.table.shape
        True
        """
        try:
            t = d["table"]
            table = pd.DataFrame(
                [[np.nan if v is None else v for v in row] for row in t["data"]],
                columns=t["columns"],
            ).set_index(["task", "model", "metric"])
            lp = d["lasso_path"]
            path = pd.DataFrame(
                np.array([[np.nan if v is None else v for v in row] for row in lp["coef"]],
                         dtype=np.float64).reshape(len(lp["inv_lambda"]), len(lp["features"])),
                index=pd.Index(np.array(lp["inv_lambda"], dtype=np.float64), name="1/lambda"),
                columns=list(lp["features"]),
            )
            corr = pd.Series({k: (np.nan if v is None else float(v))
                              for k, v in d["correlations"].items()}, dtype=np.float64,
                             name="pearson_r")
            return cls(
                table=table.astype(np.float64), lasso_path=path, correlations=corr,
                grouping=str(d["grouping"]), n_splits=int(d["n_splits"]),
                n_segments=int(d["n_segments"]), n_cases=int(d["n_cases"]),
                models={str(k): tuple(v) for k, v in d.get("models", {}).items()},
                details=dict(d.get("details", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed evaluation record: {err}") from err


def _pm(mean, std, scale, digits):
    if mean is None or not np.isfinite(mean):
        return "n/a"
    if std is None or not np.isfinite(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _json_value(v):
    if isinstance(v, (np.floating, float)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _resolve_models(models) -> dict:
    if isinstance(models, str):
        models = (models,)
    if not isinstance(models, Sequence) or len(models) == 0:
        raise ValueError(f"models must be a non-empty sequence, got {models!r}")
    out = {}
    for m in models:
        if isinstance(m, str):
            if m not in MODEL_PAIRS:
                raise ValueError(
                    f"unknown model {m!r} in models; use one of {list(MODEL_PAIRS)} or a "
                    "(classifier kind, regressor kind) pair"
                )
            out[m] = MODEL_PAIRS[m]
        elif isinstance(m, (tuple, list)) and len(m) == 2:
            c, r = m
            if c not in CLASSIFIER_KINDS or r not in REGRESSOR_KINDS:
                raise ValueError(
                    f"model pair {tuple(m)!r} in models: classifier kind must be one of "
                    f"{list(CLASSIFIER_KINDS)}, regressor kind one of {list(REGRESSOR_KINDS)}"
                )
            out[f"{c}/{r}"] = (c, r)
        else:
            raise ValueError(f"models entries must be names or (classifier, regressor) pairs, "
                             f"got {m!r}")
    return out


def _auroc(y01, score):
    """Area under the ROC curve (Mann-Whitney U with average ranks), NaN for one class."""
    y01 = np.asarray(y01, dtype=bool)
    n1 = int(y01.sum())
    n0 = y01.shape[0] - n1
    if n1 == 0 or n0 == 0:
        return np.nan
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[y01].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _regression_scores(y, pred):
    """sigma (root mean squared residual, as in the reference implementation) and R^2."""
    resid = y - pred
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else np.nan
    return float(np.sqrt(np.mean(resid**2))), r2


def _split_groups(table, group):
    if group is None:
        return None, "segment"
    names = (group,) if isinstance(group, str) else tuple(group)
    if not names or not all(isinstance(g, str) for g in names):
        raise ValueError(f"group must be None, a column name or a tuple of names, got {group!r}")
    missing = [g for g in names if g not in table.columns]
    if missing:
        raise ValueError(
            f"group={group!r}: the table has no column {missing}; build it with MetaDataset "
            "(which adds 'case') or pass group=None for per-segment splits"
        )
    key = table[list(names)].astype(str).agg("/".join, axis=1) if len(names) > 1 \
        else table[names[0]].astype(str)
    return key.to_numpy(), "+".join(names)


@_single_threaded
def logistic_lasso_path(
    table,
    *,
    n_lambdas: int = 30,
    ratio: float = 1e-4,
    min_interior: int | None = None,
    log_sizes: bool = True,
) -> pd.DataFrame:
    """Coefficients of the L1 logistic regression (IoU_adj > 0) along a path of strengths.

    Features are standardised; the objective is mean log-loss + lambda * ||coef||_1, so
    scikit-learn's ``C`` equals 1 / (n_segments * lambda). The path starts at the strength at
    which every coefficient is 0 and goes down to ``ratio`` times that.

    Parameters
    ----------
    table : pandas.DataFrame or MetaDataset
        Training data with ``iou_adj``.
    n_lambdas : int, default 30
    ratio : float, default 1e-4
    min_interior : int, optional
        For a DataFrame (default 1) or to override a MetaDataset's setting.
    log_sizes : bool, default True
        Log-transform the size columns first, as the meta models do.

    Returns
    -------
    pandas.DataFrame
        Index ``1/lambda`` (increasing), one column per feature.

    Raises
    ------
    ValueError
        If the table has no ground truth, fewer than 10 usable segments or a single class.

    Example
    -------
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> path = logistic_lasso_path(synthetic_metrics_table(300, random_state=0), n_lambdas=5)
    >>> bool((path.iloc[0] == 0).all())
    True
    """
    data = _usable_table(table, min_interior)
    cols = feature_columns(data)
    feats = data[cols]
    _check_finite_table(feats, "table")
    y01 = (data["iou_adj"].to_numpy(dtype=np.float64) > 0).astype(np.float64)
    if len(y01) < MIN_SEGMENTS:
        raise ValueError(f"table has {len(y01)} usable segments; at least {MIN_SEGMENTS} needed")
    if y01.min() == y01.max():
        raise ValueError("the segments hold a single target class; the LASSO path needs both")
    X = feats.to_numpy(dtype=np.float64)
    if log_sizes:
        idx = [j for j, c in enumerate(cols) if c in SIZE_COLUMNS]
        X[:, idx] = _signed_log1p(X[:, idx])
    Z = StandardScaler().fit_transform(X)
    lams = _lambda_grid(_logit_lambda_max(Z, y01), int(n_lambdas), float(ratio))
    path, _ = _l1_logistic_path(Z, y01, lams)
    coef = np.array([b[1:] for b in path])
    with np.errstate(divide="ignore"):
        inv = 1.0 / lams
    return pd.DataFrame(coef, index=pd.Index(inv, name="1/lambda"), columns=[str(c) for c in cols])


def _usable_table(data, min_interior):
    if isinstance(data, MetaDataset):
        return data.training_table(min_interior=min_interior)
    if isinstance(data, pd.DataFrame):
        mi = 1 if min_interior is None else min_interior
        return data.loc[training_rows(data, min_interior=mi)].reset_index(drop=True)
    raise TypeError(f"dataset must be a MetaDataset or a pandas DataFrame, got "
                    f"{type(data).__name__}")


def _correlations(data, cols):
    y = data["iou_adj"].to_numpy(dtype=np.float64)
    X = data[cols].to_numpy(dtype=np.float64)
    Xc = X - X.mean(axis=0)
    yc = y - y.mean()
    den = np.sqrt((Xc**2).sum(axis=0) * (yc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (Xc * yc[:, None]).sum(axis=0) / np.where(den > 0, den, 1), np.nan)
    return pd.Series(r, index=[str(c) for c in cols], name="pearson_r")


def evaluation_splits(
    table: pd.DataFrame,
    *,
    n_splits: int = 10,
    group: str | tuple | None = "case",
    validation_cases: Sequence | None = None,
    random_state: int | None = 0,
) -> tuple[list, str]:
    """Training/validation index pairs used by :func:`evaluate`.

    Parameters
    ----------
    table : pandas.DataFrame
        The rows to split (positions 0..n-1 are returned).
    n_splits : int, default 10
        Number of random 50/50 splits. When the groups allow at most ``n_splits`` distinct
        splits (2 cases: 2; 4 cases: 6), each distinct split is used exactly once instead.
    group : str, tuple of str or None, default "case"
        Column(s) whose values are never split between training and validation; None draws
        segments independently (the paper's protocol).
    validation_cases : sequence of str, optional
        A single fixed split: these values of ``case`` validate, the rest trains.
    random_state : int, optional, default 0

    Returns
    -------
    splits : list of (numpy.ndarray, numpy.ndarray)
        Positional indices (training, validation) per split.
    grouping : str
        ``"segment"``, ``"fixed"`` or the grouping columns joined by ``+``.

    Raises
    ------
    ValueError
        On a missing group column, fewer than 2 groups, unknown validation cases or
        validation cases that cover every case.

    Example
    -------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"case": list("aabbcc")})
    >>> splits, how = evaluation_splits(t, n_splits=3, random_state=0)
    >>> how, all(set(t["case"].iloc[tr]).isdisjoint(t["case"].iloc[va]) for tr, va in splits)
    ('case', True)
    """
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive int, got {n_splits!r}")
    rs = _check_random_state_param(random_state)
    n = len(table)
    idx = np.arange(n)
    if validation_cases is not None:
        if "case" not in table.columns:
            raise ValueError("validation_cases needs a 'case' column in the dataset")
        if isinstance(validation_cases, str):
            validation_cases = [validation_cases]
        cases = table["case"].astype(str).to_numpy()
        val = [str(c) for c in validation_cases]
        unknown = sorted(set(val) - set(cases))
        if unknown:
            raise ValueError(f"validation_cases {unknown} are not cases of the dataset "
                             f"(usable cases: {sorted(set(cases))})")
        is_val = np.isin(cases, val)
        if is_val.all():
            raise ValueError("validation_cases cover every case: nothing is left to train on")
        return [(np.flatnonzero(~is_val), np.flatnonzero(is_val))], "fixed"
    groups, grouping = _split_groups(table, group)
    if groups is None:
        splitter = ShuffleSplit(n_splits=int(n_splits), test_size=0.5, random_state=rs)
        return list(splitter.split(idx)), grouping
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(
            f"grouped splits need at least 2 groups, the dataset has {n_groups} "
            f"({grouping}); pass group=None for per-segment splits"
        )
    # Half of the groups validate (rounded up, as GroupShuffleSplit(test_size=0.5) does). With
    # few groups there are few distinct splits: 10 random draws over 2 cases repeat the same 2
    # splits in unequal numbers, which weights one direction more and makes the std look like
    # 10 measurements. Then every distinct split is used once instead.
    n_val = math.ceil(0.5 * n_groups)
    if math.comb(n_groups, n_val) <= n_splits:
        _, codes = np.unique(groups, return_inverse=True)
        codes = codes.ravel()
        out = []
        for val in itertools.combinations(range(n_groups), n_val):
            is_val = np.isin(codes, val)
            out.append((np.flatnonzero(~is_val), np.flatnonzero(is_val)))
        return out, grouping
    splitter = GroupShuffleSplit(n_splits=int(n_splits), test_size=0.5, random_state=rs)
    return list(splitter.split(idx, groups=groups)), grouping


@_single_threaded
def evaluate(
    dataset,
    *,
    n_splits: int = 10,
    group: str | tuple | None = "case",
    models: Sequence = ("linear", "gbm"),
    validation_cases: Sequence | None = None,
    random_state: int | None = 0,
    min_interior: int | None = None,
    log_sizes: bool = True,
) -> Evaluation:
    """Evaluate meta classification and regression on repeated random 50/50 splits.

    For each split the models are fitted on one half and scored on both halves (training and
    validation). The splits are grouped (``group="case"``: all segments of a case fall on the
    same side; half of the cases train, half validate) unless ``group=None``, which draws
    segments independently as in the paper. With ``validation_cases`` there is a single fixed
    split instead: those cases validate, all others train.

    Each model label in ``models`` stands for a classifier and a regressor:
    ``"linear"`` = L1 logistic regression ("lasso") + linear regression, as in the paper;
    ``"logistic"`` = unpenalised logistic + linear; ``"lasso"`` = L1 for both;
    ``"gbm"`` = gradient boosting for both; or a pair ``(classifier_kind, regressor_kind)``.
    Baselines: ``entropy`` = unpenalised logistic / linear regression on ``E`` alone; ``naive``
    = the majority class of the training half (ACC only).

    Parameters
    ----------
    dataset : MetaDataset or pandas.DataFrame
        Metrics tables with ground truth (a DataFrame needs a ``case`` column for grouping).
    n_splits : int, default 10
        Number of random splits.
    group : str, tuple of str or None, default "case"
        Column(s) whose values are kept together (e.g. ``("case", "slice")`` for slices).
    models : sequence, default ("linear", "gbm")
    validation_cases : sequence of str, optional
        Fixed validation cases (train on the rest); ``n_splits`` and ``group`` are then unused.
    random_state : int, optional, default 0
        Seed of the splits and the models.
    min_interior : int, optional
        Override of the dataset's ``min_interior`` (DataFrame default 1).
    log_sizes : bool, default True
        Passed to the models (see :class:`MetaClassifier`); False reproduces the paper.

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        On a dataset without ground truth, fewer than 10 usable segments, a single target
        class, a missing ``E`` column, fewer than 2 groups, unknown model names or validation
        cases, or a split whose training half has a single class.

    Example
    -------
    >>> from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    >>> ds = MetaDataset()
    >>> for i in range(4):
    ...     _ = ds.add(f"img{i}", synthetic_metrics_table(150, random_state=i))
    >>> ev = evaluate(ds, n_splits=3, models=("logistic",))
    >>> ev.grouping
    'case'
    """
    rs = _check_random_state_param(random_state)
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive int, got {n_splits!r}")
    pairs = _resolve_models(models)
    data = _usable_table(dataset, min_interior)
    if "E" not in data.columns:
        raise ValueError("the table has no 'E' (mean entropy) column, needed for the baseline")
    n = len(data)
    if n < 2 * MIN_SEGMENTS:
        raise ValueError(
            f"the dataset has {n} usable segments; evaluation needs at least {2 * MIN_SEGMENTS} "
            f"(each half is fitted on >= {MIN_SEGMENTS})"
        )
    y = data["iou_adj"].to_numpy(dtype=np.float64)
    y01 = (y > 0).astype(np.int64)
    if y01.min() == y01.max():
        which = "IoU_adj > 0" if y01[0] == 1 else "IoU_adj = 0"
        raise ValueError(
            f"every usable segment has {which}: a single target class cannot be evaluated"
        )
    cols = feature_columns(data)
    _check_finite_table(data[cols], "dataset")
    cases = data["case"].astype(str).to_numpy() if "case" in data.columns else None
    n_cases = len(np.unique(cases)) if cases is not None else 0
    details = {"random_state": rs, "log_sizes": bool(log_sizes), "min_interior": (
        dataset.min_interior if isinstance(dataset, MetaDataset) and min_interior is None
        else (1 if min_interior is None else min_interior))}

    splits, grouping = evaluation_splits(data, n_splits=n_splits, group=group,
                                         validation_cases=validation_cases, random_state=rs)
    if validation_cases is not None:
        is_val = np.zeros(n, dtype=bool)
        is_val[splits[0][1]] = True
        details["validation_cases"] = sorted(set(cases[is_val]))
        details["training_cases"] = sorted(set(cases[~is_val]))
    elif cases is not None and grouping == "case":
        details["validation_cases_per_split"] = [sorted(set(cases[va])) for _, va in splits]
    details["split_sizes"] = [[len(tr), len(va)] for tr, va in splits]

    rows: list[dict] = []

    def add(task, model, metric, split, train, val):
        rows.append({"task": task, "model": model, "metric": metric, "split": split,
                     "train": train, "val": val})

    e_table = data[["E"]]
    for s, (tr, va) in enumerate(splits):
        if y01[tr].min() == y01[tr].max():
            raise ValueError(
                f"split {s}: the training half holds a single target class "
                f"({len(tr)} segments); use more cases or group=None"
            )
        t_tr, t_va = data.iloc[tr], data.iloc[va]
        # naive baseline: the majority class of the training half
        majority = int(y01[tr].mean() >= 0.5)
        add("classification", "naive", "ACC", s, float(np.mean(y01[tr] == majority)),
            float(np.mean(y01[va] == majority)))
        fitted = {"entropy": (
            MetaClassifier(kind="logistic", random_state=rs).fit(e_table.iloc[tr], y01[tr]),
            MetaRegressor(kind="linear", random_state=rs).fit(e_table.iloc[tr], y[tr]),
            e_table.iloc[tr], e_table.iloc[va])}
        for label, (ck, rk) in pairs.items():
            fitted[label] = (
                MetaClassifier(kind=ck, random_state=rs, log_sizes=log_sizes).fit(t_tr),
                MetaRegressor(kind=rk, random_state=rs, log_sizes=log_sizes).fit(t_tr),
                t_tr, t_va,
            )
        for label, (clf, _reg, x_tr, x_va) in fitted.items():
            p_tr = clf.predict_proba(x_tr)[:, 1]
            p_va = clf.predict_proba(x_va)[:, 1]
            add("classification", label, "ACC", s, float(np.mean((p_tr > 0.5) == y01[tr])),
                float(np.mean((p_va > 0.5) == y01[va])))
            add("classification", label, "AUROC", s, _auroc(y01[tr], p_tr), _auroc(y01[va], p_va))
        for label, (_clf, reg, x_tr, x_va) in fitted.items():
            sig_tr, r2_tr = _regression_scores(y[tr], reg.predict(x_tr))
            sig_va, r2_va = _regression_scores(y[va], reg.predict(x_va))
            add("regression", label, "sigma", s, sig_tr, sig_va)
            add("regression", label, "R2", s, r2_tr, r2_va)

    long = pd.DataFrame(rows)
    order = (["naive", "entropy", *pairs])
    long["_task"] = long["task"].map({"classification": 0, "regression": 1})
    long["_model"] = long["model"].map({m: i for i, m in enumerate(order)})
    long["_metric"] = long["metric"].map({"ACC": 0, "AUROC": 1, "sigma": 0, "R2": 1})
    agg = long.groupby(["_task", "_model", "_metric", "task", "model", "metric"], sort=True).agg(
        train_mean=("train", "mean"), train_std=("train", "std"),
        val_mean=("val", "mean"), val_std=("val", "std"),
    )
    agg = agg.reset_index(level=["_task", "_model", "_metric"], drop=True)
    path = logistic_lasso_path(data, min_interior=0, log_sizes=log_sizes)
    corr = _correlations(data, cols)
    return Evaluation(
        table=agg.astype(np.float64), lasso_path=path, correlations=corr, grouping=grouping,
        n_splits=len(splits), n_segments=n, n_cases=n_cases, models=pairs, details=details,
    )
