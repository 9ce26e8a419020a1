"""Meta models applied to and retrained on metrics tables: :func:`predict_table` and :func:`refit`.

:func:`predict_table` adds the columns the overlays and rankings read (``p_iou0``,
``iou_adj_pred``); :func:`refit` fits a model's configuration again on an extended dataset and
keeps the history of its training cases in ``provenance_``.
"""

from __future__ import annotations

import copy

import pandas as pd
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from .meta_dataset import MetaDataset
from .meta_estimators import MetaClassifier, MetaRegressor, check_columns, check_model_pair

__all__ = ["predict_table", "refit"]


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
    check_model_pair(classifier, regressor, what="pass a classifier, a regressor or both to predict_table")
    out = table.copy()
    if classifier is not None:
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
