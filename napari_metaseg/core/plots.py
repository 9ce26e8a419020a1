"""Figures for meta-model results, as matplotlib ``Figure`` objects.

The functions build figures with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no GUI backend or window is involved, so they work headless (CLI reports) and can be
embedded in a Qt canvas by the GUI. matplotlib is imported when a function is called, so
importing :mod:`napari_metaseg.core` does not import it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["plot_iou_scatter", "plot_lasso_path", "plot_roc"]


def _figure_and_axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _column(table, name, what):
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if name not in table.columns:
        raise ValueError(f"table has no {name!r} column ({what})")
    return table[name].to_numpy(dtype=np.float64, na_value=np.nan)


def _roc_curve(positive, score):
    """False/true positive rates over all thresholds (ties handled as one step)."""
    order = np.argsort(-score, kind="mergesort")
    s, pos = score[order], positive[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), s.shape[0] - 1]
    tp = np.cumsum(pos)[distinct]
    fp = (distinct + 1) - tp
    n_pos, n_neg = pos.sum(), pos.shape[0] - pos.sum()
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def plot_iou_scatter(
    table: pd.DataFrame,
    *,
    truth: str = "iou_adj",
    prediction: str = "iou_adj_pred",
    size: str = "S",
    ax=None,
    figsize=(4.5, 4.5),
):
    """Predicted against true IoU_adj, one dot per segment, dot area growing with its size.

    Parameters
    ----------
    table : pandas.DataFrame
        A table from :func:`~napari_metaseg.core.meta_model.predict_table` with ground truth.
        Rows with NaN in ``truth`` are not drawn.
    truth, prediction, size : str
        Column names.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    figsize : tuple, default (4.5, 4.5)

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If a column is missing or no row has a finite truth.

    Example
    -------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"iou_adj": [0.0, 0.5, 0.9], "iou_adj_pred": [0.1, 0.4, 0.8],
    ...                   "S": [3, 50, 400]})
    >>> fig = plot_iou_scatter(t)
    >>> fig.axes[0].get_xlabel()
    'true IoU_adj'
    """
    y = _column(table, truth, "true IoU_adj")
    p = _column(table, prediction, "predicted IoU_adj; see predict_table")
    s = _column(table, size, "segment size")
    keep = np.isfinite(y) & np.isfinite(p)
    if not keep.any():
        raise ValueError(f"no row has a finite {truth!r} and {prediction!r}")
    y, p, s = y[keep], p[keep], s[keep]
    fig, ax = _figure_and_axes(ax, figsize)
    area = 4.0 + 40.0 * np.log1p(np.maximum(s, 0)) / max(np.log1p(np.nanmax(s)), 1e-12)
    ax.scatter(y, p, s=area, alpha=0.35, linewidths=0, color="tab:blue")
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--")
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - p) ** 2)) / ss_tot if ss_tot > 0 else np.nan
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel=f"true {_label(truth)}",
           ylabel=f"predicted {_label(truth)}", aspect="equal")
    ax.set_title(f"meta regression, R² = {r2:.3f} (n = {y.shape[0]})", fontsize="medium")
    return fig


def plot_roc(
    table: pd.DataFrame,
    *,
    truth: str = "iou_adj",
    score: str = "p_iou0",
    baseline: str | None = "E",
    ax=None,
    figsize=(4.5, 4.5),
):
    """ROC curves for detecting segments with IoU_adj = 0: meta classifier against entropy.

    The positive class is IoU_adj = 0. The meta classifier's score is ``p_iou0`` =
    P(IoU_adj = 0); the baseline ranks segments by their mean entropy ``E`` (higher entropy =
    more suspicious), which has the same ROC as any increasing model of ``E`` alone.

    Parameters
    ----------
    table : pandas.DataFrame
        Table with ground truth, ``score`` and ``baseline`` columns (see
        :func:`~napari_metaseg.core.meta_model.predict_table`).
    truth, score : str
        Column names.
    baseline : str or None, default "E"
        Column drawn as the baseline curve; None draws none.
    ax : matplotlib.axes.Axes, optional
    figsize : tuple, default (4.5, 4.5)

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If a column is missing or the usable rows hold a single class.

    Example
    -------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"iou_adj": [0.0, 0.0, 0.6, 0.9], "p_iou0": [0.9, 0.6, 0.3, 0.1],
    ...                   "E": [0.5, 0.2, 0.3, 0.1]})
    >>> fig = plot_roc(t)
    >>> [line.get_label() for line in fig.axes[0].get_lines()][:2]
    ['meta classifier (AUROC 1.000)', 'entropy E (AUROC 0.750)']
    """
    y = _column(table, truth, "true IoU_adj")
    curves = [(score, "meta classifier", _column(table, score, "P(IoU_adj = 0); see predict_table"))]
    if baseline is not None:
        curves.append((baseline, f"entropy {baseline}" if baseline == "E" else baseline,
                       _column(table, baseline, "baseline score")))
    keep = np.isfinite(y)
    for _, _, v in curves:
        keep &= np.isfinite(v)
    positive = y[keep] == 0
    if positive.all() or not positive.any():
        raise ValueError("the rows hold a single class (all IoU_adj = 0 or all > 0): no ROC curve")
    fig, ax = _figure_and_axes(ax, figsize)
    for _, label, v in curves:
        fpr, tpr = _roc_curve(positive, v[keep])
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
        ax.plot(fpr, tpr, lw=1.5, label=f"{label} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":", label="_chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate",
           ylabel="true positive rate", aspect="equal")
    ax.set_title(f"detecting IoU_adj = 0 (n = {int(keep.sum())})", fontsize="medium")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_lasso_path(path, *, top: int | None = 10, ax=None, figsize=(6.5, 4.0)):
    """Coefficients of the L1 logistic regression against 1/lambda (log axis).

    Parameters
    ----------
    path : pandas.DataFrame or Evaluation
        :func:`~napari_metaseg.core.meta_model.logistic_lasso_path` output, or an
        :class:`~napari_metaseg.core.meta_model.Evaluation` (its ``lasso_path``).
    top : int or None, default 10
        Label the ``top`` features that enter the model first (the others are drawn in grey);
        None labels all.
    ax : matplotlib.axes.Axes, optional
    figsize : tuple, default (6.5, 4.0)

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If the path is empty.
    TypeError
        If ``path`` has the wrong type.

    Example
    -------
    >>> import pandas as pd
    >>> p = pd.DataFrame({"E": [0.0, -0.5, -1.0], "S": [0.0, 0.0, 0.3]},
    ...                  index=pd.Index([1.0, 10.0, 100.0], name="1/lambda"))
    >>> fig = plot_lasso_path(p)
    >>> fig.axes[0].get_xscale()
    'log'
    """
    if hasattr(path, "lasso_path") and not isinstance(path, pd.DataFrame):
        path = path.lasso_path
    if not isinstance(path, pd.DataFrame):
        raise TypeError(f"path must be a DataFrame or an Evaluation, got {type(path).__name__}")
    if path.empty:
        raise ValueError("the LASSO path is empty")
    x = path.index.to_numpy(dtype=np.float64)
    coef = path.to_numpy(dtype=np.float64)
    nonzero = np.abs(coef) > 1e-10
    # order features by the point at which they enter the model
    entry = np.where(nonzero.any(axis=0), nonzero.argmax(axis=0), coef.shape[0])
    order = np.argsort(entry, kind="stable")
    labelled = set(order[: (len(order) if top is None else int(top))])
    fig, ax = _figure_and_axes(ax, figsize)
    for j in order:
        if j in labelled and entry[j] < coef.shape[0]:
            ax.plot(x, coef[:, j], lw=1.5, label=str(path.columns[j]))
        else:
            ax.plot(x, coef[:, j], lw=0.8, color="0.75")
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="1/λ", ylabel="coefficient (standardised metric)")
    ax.set_title("LASSO path, meta classification IoU_adj > 0", fontsize="medium")
    if labelled:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    return fig


def _label(col: str) -> str:
    return {"iou_adj": "IoU_adj", "iou": "IoU"}.get(col, col)
