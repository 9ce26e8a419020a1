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

This module gathers the meta-model API in one place; the code lives in one module per idea:

* :mod:`~napari_metaseg.core.meta_fitted`: the fitted representations (:class:`_LinearModel`,
  :class:`_TreeEnsemble` and its numba kernel);
* :mod:`~napari_metaseg.core.meta_solvers`: L1-penalised logistic regression (proximal Newton
  with coordinate descent), the LASSO path and the strength grid;
* :mod:`~napari_metaseg.core.meta_estimators`: :class:`MetaClassifier`, :class:`MetaRegressor`,
  :func:`check_columns`, :func:`library_versions` and the model-family constants;
* :mod:`~napari_metaseg.core.meta_tables`: :func:`predict_table` and :func:`refit`;
* :mod:`~napari_metaseg.core.meta_evaluation`: :func:`evaluate`, :class:`Evaluation`,
  :func:`evaluation_splits`, :func:`logistic_lasso_path` and :data:`MODEL_PAIRS`.
"""

from __future__ import annotations

# Private names are re-exported (marked noqa) because other modules and tests import them from
# here: meta_io (_LinearModel, _TreeEnsemble, _utc_now) and the tests (_auroc, the solvers).
from .meta_estimators import (
    CLASSIFIER_KINDS,
    INNER_FOLDS,  # noqa: F401
    LAMBDA_RATIO,  # noqa: F401
    MIN_SEGMENTS,
    N_LAMBDAS,  # noqa: F401
    REGRESSOR_KINDS,
    MetaClassifier,
    MetaRegressor,
    _single_threaded,  # noqa: F401
    _utc_now,  # noqa: F401
    check_columns,
    check_model_pair,
    library_versions,
)
from .meta_evaluation import (
    MODEL_PAIRS,
    Evaluation,
    _auroc,  # noqa: F401
    _regression_scores,  # noqa: F401
    evaluate,
    evaluation_splits,
    logistic_lasso_path,
)
from .meta_fitted import (
    _LinearModel,  # noqa: F401
    _TreeEnsemble,  # noqa: F401
)
from .meta_solvers import (
    _l1_logistic_path,  # noqa: F401
    _lambda_grid,  # noqa: F401
    _lasso_path,  # noqa: F401
    _logit_lambda_max,  # noqa: F401
)
from .meta_tables import predict_table, refit

__all__ = [
    "CLASSIFIER_KINDS",
    "MIN_SEGMENTS",
    "MODEL_PAIRS",
    "REGRESSOR_KINDS",
    "Evaluation",
    "MetaClassifier",
    "MetaRegressor",
    "check_columns",
    "check_model_pair",
    "evaluate",
    "evaluation_splits",
    "library_versions",
    "logistic_lasso_path",
    "predict_table",
    "refit",
]
