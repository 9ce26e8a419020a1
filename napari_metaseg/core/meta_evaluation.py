"""Evaluation of the meta models as in the paper (MetaSeg, Rottmann et al., Table 2).

:func:`evaluate` fits classifier/regressor pairs (:data:`MODEL_PAIRS`) on repeated random
50/50 splits (:func:`evaluation_splits`, grouped by case by default) and scores accuracy,
AUROC, R^2 and residual sigma next to entropy-only and naive baselines; the result is an
:class:`Evaluation`. :func:`logistic_lasso_path` gives the coefficients of the L1 logistic
regression along a path of strengths.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit
from sklearn.preprocessing import StandardScaler

from ..names import MODEL_PAIRS
from .meta_dataset import SIZE_COLUMNS, MetaDataset, feature_columns, training_rows
from .meta_estimators import (
    CLASSIFIER_KINDS,
    MIN_SEGMENTS,
    REGRESSOR_KINDS,
    MetaClassifier,
    MetaRegressor,
    _check_finite_table,
    _check_random_state_param,
    _signed_log1p,
    _single_threaded,
)
from .meta_solvers import _l1_logistic_path, _lambda_grid, _logit_lambda_max

__all__ = [
    "MODEL_PAIRS",
    "Evaluation",
    "evaluate",
    "evaluation_splits",
    "logistic_lasso_path",
]


#: Named model pairs (classifier kind, regressor kind) for :func:`evaluate`.


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
    y, y01 = _evaluation_targets(data)
    n = len(data)
    cols = feature_columns(data)
    _check_finite_table(data[cols], "dataset")
    cases = data["case"].astype(str).to_numpy() if "case" in data.columns else None
    n_cases = len(np.unique(cases)) if cases is not None else 0
    details = {"random_state": rs, "log_sizes": bool(log_sizes), "min_interior": (
        dataset.min_interior if isinstance(dataset, MetaDataset) and min_interior is None
        else (1 if min_interior is None else min_interior))}

    splits, grouping = evaluation_splits(data, n_splits=n_splits, group=group,
                                         validation_cases=validation_cases, random_state=rs)
    details.update(_split_details(splits, grouping, cases, fixed=validation_cases is not None))

    rows: list[dict] = []
    for s, (tr, va) in enumerate(splits):
        rows.extend(_score_split(s, tr, va, data, y, y01, pairs, rs, log_sizes))
    agg = _aggregate_scores(rows, pairs)
    path = logistic_lasso_path(data, min_interior=0, log_sizes=log_sizes)
    corr = _correlations(data, cols)
    return Evaluation(
        table=agg.astype(np.float64), lasso_path=path, correlations=corr, grouping=grouping,
        n_splits=len(splits), n_segments=n, n_cases=n_cases, models=pairs, details=details,
    )


def _evaluation_targets(data):
    """IoU_adj and IoU_adj > 0 (0/1) of the usable segments; raises when they cannot be evaluated."""
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
    return y, y01


def _split_details(splits, grouping, cases, *, fixed):
    """Entries of :attr:`Evaluation.details` that describe the splits (cases per side, sizes)."""
    details = {}
    if fixed:
        is_val = np.zeros(len(cases), dtype=bool)
        is_val[splits[0][1]] = True
        details["validation_cases"] = sorted(set(cases[is_val]))
        details["training_cases"] = sorted(set(cases[~is_val]))
    elif cases is not None and grouping == "case":
        details["validation_cases_per_split"] = [sorted(set(cases[va])) for _, va in splits]
    details["split_sizes"] = [[len(tr), len(va)] for tr, va in splits]
    return details


def _score_split(s, tr, va, data, y, y01, pairs, rs, log_sizes):
    """Fit the baselines and every model pair on the training half ``tr`` of split ``s``; one row
    (task, model, metric, split, train, val) per score on both halves."""
    if y01[tr].min() == y01[tr].max():
        raise ValueError(
            f"split {s}: the training half holds a single target class "
            f"({len(tr)} segments); use more cases or group=None"
        )
    rows: list[dict] = []

    def add(task, model, metric, train, val):
        rows.append({"task": task, "model": model, "metric": metric, "split": s,
                     "train": train, "val": val})

    e_table = data[["E"]]
    t_tr, t_va = data.iloc[tr], data.iloc[va]
    # naive baseline: the majority class of the training half
    majority = int(y01[tr].mean() >= 0.5)
    add("classification", "naive", "ACC", float(np.mean(y01[tr] == majority)),
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
        add("classification", label, "ACC", float(np.mean((p_tr > 0.5) == y01[tr])),
            float(np.mean((p_va > 0.5) == y01[va])))
        add("classification", label, "AUROC", _auroc(y01[tr], p_tr), _auroc(y01[va], p_va))
    for label, (_clf, reg, x_tr, x_va) in fitted.items():
        sig_tr, r2_tr = _regression_scores(y[tr], reg.predict(x_tr))
        sig_va, r2_va = _regression_scores(y[va], reg.predict(x_va))
        add("regression", label, "sigma", sig_tr, sig_va)
        add("regression", label, "R2", r2_tr, r2_va)
    return rows


def _aggregate_scores(rows, pairs):
    """Mean and standard deviation over the splits, rows in the order of the paper's Table 2."""
    long = pd.DataFrame(rows)
    order = (["naive", "entropy", *pairs])
    long["_task"] = long["task"].map({"classification": 0, "regression": 1})
    long["_model"] = long["model"].map({m: i for i, m in enumerate(order)})
    long["_metric"] = long["metric"].map({"ACC": 0, "AUROC": 1, "sigma": 0, "R2": 1})
    agg = long.groupby(["_task", "_model", "_metric", "task", "model", "metric"], sort=True).agg(
        train_mean=("train", "mean"), train_std=("train", "std"),
        val_mean=("val", "mean"), val_std=("val", "std"),
    )
    return agg.reset_index(level=["_task", "_model", "_metric"], drop=True)
