"""Meta-model estimators: :class:`MetaClassifier` and :class:`MetaRegressor` (scikit-learn compatible).

Both standardise the features (with the size columns optionally log-transformed) and then fit one
of a few model families, held as a :mod:`napari_metaseg.core.meta_fitted` representation. Also
here: the validation helpers they share (:func:`check_columns`, finite-feature and
``random_state`` checks), provenance (:func:`library_versions`) and :func:`_single_threaded`,
which runs a fit with one BLAS/OpenMP thread.
"""

from __future__ import annotations

import datetime as _dt
import functools
import platform

import numpy as np
import pandas as pd
import sklearn
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from ..names import CLASSIFIER_KINDS, REGRESSOR_KINDS
from .meta_dataset import SIZE_COLUMNS, MetaDataset, _describe_column_difference, feature_columns
from .meta_fitted import _LinearModel, _TreeEnsemble
from .meta_solvers import (
    _l1_logistic_fit,
    _l1_logistic_path,
    _lambda_grid,
    _lasso_path,
    _logit_lambda_max,
    _mean_log_loss,
)

__all__ = [
    "CLASSIFIER_KINDS",
    "MIN_SEGMENTS",
    "REGRESSOR_KINDS",
    "MetaClassifier",
    "MetaRegressor",
    "check_columns",
    "check_model_pair",
    "library_versions",
]

#: Fewest segments a meta model is fitted on.
MIN_SEGMENTS = 10
#: Number of regularisation strengths tried when a LASSO model selects its strength.
N_LAMBDAS = 12
#: Weakest / strongest regularisation of the selection grid.
LAMBDA_RATIO = 1e-3
#: Cross-validation folds that select the LASSO strength (mean validation loss over the folds).
INNER_FOLDS = 5

_SKLEARN_VERSION = tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit())


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

    def _inner_folds(self, n, y_cls, cases, rs):
        """Cross-validation folds ``[(train, validation), ...]`` that select a LASSO strength, or None.

        :data:`INNER_FOLDS` folds of whole cases when the table has at least 3 cases (as many folds
        as cases when fewer than that), else of segments (stratified by class for a classifier);
        a classifier's folds keep both classes in every training part. None when a classifier has
        fewer than 2 segments of a class.
        """
        idx = np.arange(n)
        if cases is not None and len(np.unique(cases)) >= 3:
            k = min(INNER_FOLDS, len(np.unique(cases)))
            folds = list(GroupKFold(n_splits=k, shuffle=True, random_state=rs).split(idx, groups=cases))
            if y_cls is not None:
                folds = [(tr, va) for tr, va in folds if len(np.unique(y_cls[tr])) == 2]
            if len(folds) >= 2:
                return folds
        if y_cls is None:
            return list(KFold(n_splits=min(INNER_FOLDS, n), shuffle=True, random_state=rs).split(idx))
        counts = np.bincount(y_cls.astype(np.int64), minlength=2)
        if counts.min() < 2:
            return None
        k = int(min(INNER_FOLDS, counts.min()))
        return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=rs).split(idx, y_cls))

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
        ``"lasso"``: L1-penalised logistic regression; the penalty is chosen among 12
        strengths by the validation log-loss of 5-fold cross-validation (folds of whole cases
        when the table has >= 3 cases, stratified folds of segments otherwise), then the model
        is refitted on all data.
        ``"logistic"``: unpenalised logistic regression. ``"gbm"``: scikit-learn's
        HistGradientBoostingClassifier with default settings.
    random_state : int, optional
        Seed of the cross-validation folds and of the gradient boosting.
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
        folds = self._inner_folds(Zs.shape[0], y01, cases, rs)
        lams = _lambda_grid(_logit_lambda_max(Zs, y01), N_LAMBDAS, LAMBDA_RATIO)
        if folds is None:
            # Too few minority segments to hold any out: the weakest penalty of the grid.
            best = len(lams) - 1
        else:
            # validation log-loss summed over the folds' segments, for each strength
            loss = np.zeros(len(lams))
            for tr, va in folds:
                path, _ = _l1_logistic_path(Zs[tr], y01[tr], lams)
                loss += [len(va) * _mean_log_loss(y01[va], Zs[va] @ b[1:] + b[0]) for b in path]
            # The first strength of the grid gives the intercept-only model, which ranks nothing;
            # a few minority segments in the validation parts can make it look best.
            best = 1 + int(np.argmin(loss[1:])) if len(loss) > 1 else 0
        lam = float(lams[best])
        path, _ = _l1_logistic_path(Zs, y01, lams[: best + 1])  # warm start along the path
        Z1 = np.column_stack([np.ones(Zs.shape[0]), Zs])
        beta = _l1_logistic_fit(Z1, y01, lam, path[-1])
        return _LinearModel(beta[1:], beta[0]), lam, lam

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
        strength chosen by the validation error of 5-fold cross-validation (as for
        :class:`MetaClassifier`). ``"gbm"``: HistGradientBoostingRegressor, default settings.
    random_state : int, optional
        Seed of the cross-validation folds and of the gradient boosting.
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
        Xc = Zs - Zs.mean(axis=0)
        alpha_max = float(np.max(np.abs(Xc.T @ (y - y.mean()))) / len(y))
        if alpha_max <= 0:
            alpha = 0.0
        else:
            alphas = _lambda_grid(alpha_max, N_LAMBDAS, LAMBDA_RATIO)
            errors = np.zeros(len(alphas))  # validation squared error summed over the folds
            for tr, va in self._inner_folds(Zs.shape[0], None, cases, rs):
                path = _lasso_path(Zs[tr], y[tr], alphas)
                errors += [float(np.sum((y[va] - Zs[va] @ b[1:] - b[0]) ** 2)) for b in path]
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


def check_model_pair(classifier=None, regressor=None, *, what="pass a classifier, a regressor or both",
                     same_features=False):
    """Check a (classifier, regressor) pair: the one validation every user of a pair calls.

    Parameters
    ----------
    classifier : MetaClassifier or None
        Must be fitted on the target IoU_adj > 0 (``classes_`` = [0, 1]).
    regressor : MetaRegressor or None
        Must be fitted.
    what : str
        The message when both are None (say what the caller needs).
    same_features : bool
        Also require both models to have the same feature columns (a model file holds one list).

    Returns
    -------
    (classifier, regressor)

    Raises
    ------
    ValueError
        Both None, a classifier fitted on other labels, different features.
    TypeError
        A model of the wrong type.
    sklearn.exceptions.NotFittedError
        A model not fitted.

    Example
    -------
    >>> check_model_pair(None, None)
    Traceback (most recent call last):
    ...
    ValueError: pass a classifier, a regressor or both
    """
    if classifier is None and regressor is None:
        raise ValueError(what)
    if classifier is not None and not isinstance(classifier, MetaClassifier):
        raise TypeError(f"classifier must be a MetaClassifier, got {type(classifier).__name__}")
    if regressor is not None and not isinstance(regressor, MetaRegressor):
        raise TypeError(f"regressor must be a MetaRegressor, got {type(regressor).__name__}")
    for model in (classifier, regressor):
        if model is not None:
            check_is_fitted(model)
    if classifier is not None and list(np.asarray(classifier.classes_).tolist()) != [0, 1]:
        raise ValueError(
            "classifier was fitted on custom labels, not on IoU_adj > 0 (classes_ must be "
            f"[0, 1], got {list(classifier.classes_)})"
        )
    pair = (classifier, regressor)
    if same_features and all(m is not None and hasattr(m, "feature_names_in_") for m in pair):
        names = [[str(c) for c in m.feature_names_in_] for m in pair]
        if names[0] != names[1]:
            raise ValueError("classifier and regressor were fitted on different feature columns; save "
                             "them to separate files")
    return classifier, regressor
