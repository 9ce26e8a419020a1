"""A self-contained HTML report of metrics tables: per-case summary, evaluation, plots."""

from __future__ import annotations

import datetime as dt
import html

import numpy as np
import pandas as pd

__all__ = ["case_summary", "report"]


def case_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per case: segments, share and mean of IoU_adj, predicted quality where present."""
    rows = []
    for case, t in table.groupby("case", sort=False):
        row = {"case": case, "segments": len(t)}
        if "iou_adj" in t:
            v = t["iou_adj"].to_numpy(np.float64)
            fin = v[np.isfinite(v)]
            row["IoU_adj = 0 %"] = 100.0 * float(np.mean(fin == 0)) if fin.size else np.nan
            row["mean IoU_adj"] = float(fin.mean()) if fin.size else np.nan
        if "p_iou0" in t:
            row["p_iou0 > 0.5 %"] = 100.0 * float(np.mean(t["p_iou0"] > 0.5))
        if "iou_adj_pred" in t:
            row["mean predicted IoU_adj"] = float(t["iou_adj_pred"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _stored_predictions_in_sample(sources, cases) -> list:
    """Notes on predictions that ``predict`` stored in the tables: the model file each source
    records is read (when it is still there, unchanged) and its training cases are compared
    with ``cases``."""
    from pathlib import Path

    from ..io.results import read_settings
    from .models import _sha256, load_model

    notes, seen_models = [], set()
    for src in sources:
        src = Path(str(src))
        target = src / "predictions.parquet" if src.is_dir() else src
        settings = read_settings(target) if target.suffix.lower() in (".parquet", ".pq") else None
        model = (settings or {}).get("model")
        if not model or model in seen_models:
            continue
        seen_models.add(model)
        path = Path(model)
        if not path.is_file() or _sha256(path) != settings.get("model_sha256"):
            notes.append(f"the predictions in {src} come from model {model}, which is missing or changed "
                         "since: whether these cases were in its training data cannot be checked")
            continue
        try:
            m = load_model(path)
        except (ValueError, OSError) as exc:
            notes.append(f"the model {model} of the predictions in {src} cannot be read ({exc})")
            continue
        ref = m.classifier if m.classifier is not None else m.regressor
        seen = sorted(set(map(str, ref.training_cases_)) & set(map(str, cases)))
        if seen:
            more = " …" if len(seen) > 5 else ""
            notes.append(f"in-sample: the predictions in {src} come from model {path.name}, trained on "
                         f"{len(seen)} of these cases ({', '.join(seen[:5])}{more}); their scores here "
                         "are optimistic")
    return notes


def report(table: pd.DataFrame, *, sources=(), model=None, splits=10, min_interior=1, random_state=0):
    """Job: the HTML text of a report on stacked metrics tables (``case`` column).

    Predictions come from ``model`` (a model file), else from the tables' own ``p_iou0`` /
    ``iou_adj_pred`` columns, else from an in-sample fit (said so). With ground truth and at
    least 2 cases, ``splits`` grouped splits evaluate the linear models (0: none). A model
    scored on cases it was trained on is said to be in-sample.

    Yields ``(fraction, stage)``; returns ``(html_text, notes)``.
    """
    from ..core.meta_dataset import MetaDataset
    from ..core.meta_model import MetaClassifier, MetaRegressor, evaluate, predict_table
    from ..core.plots import plot_iou_scatter, plot_lasso_path, plot_roc
    from ..io.report import figure_html, html_page
    from .models import load_model

    ds = MetaDataset.from_table(table, min_interior=min_interior)
    notes, ev, pred_source = [], None, None
    yield 0.1, "predictions"
    if model is not None:
        m = load_model(model, table=table)
        table = predict_table(table, m.classifier, m.regressor)
        ev = m.evaluation
        pred_source = f"model {model}"
        ref = m.classifier if m.classifier is not None else m.regressor
        seen = sorted(set(map(str, ref.training_cases_)) & set(ds.cases))
        if seen:
            notes.append(f"in-sample: the model was trained on {len(seen)} of these cases "
                         f"({', '.join(seen[:5])}{' …' if len(seen) > 5 else ''}); its scores here are "
                         "optimistic")
    elif "p_iou0" in table or "iou_adj_pred" in table:
        pred_source = "predictions stored in the tables"
        notes.extend(_stored_predictions_in_sample(sources, ds.cases))
    elif ds.has_targets:
        usable = ds.training_table()
        clf = MetaClassifier(kind="lasso", random_state=random_state).fit(usable)
        reg = MetaRegressor(kind="linear", random_state=random_state).fit(usable)
        table = predict_table(table, clf, reg)
        pred_source = "an in-sample fit on these tables (optimistic; pass --model for held-out predictions)"
    yield 0.3, "evaluation"
    if ds.has_targets and splits > 0 and len(ds.cases) >= 2:
        try:
            ev = evaluate(ds, n_splits=splits, models=("linear",), random_state=random_state)
        except ValueError as exc:
            notes.append(f"evaluation skipped: {exc}")
    elif ds.has_targets and len(ds.cases) < 2:
        notes.append("evaluation needs at least 2 cases (splits are grouped by case)")
    yield 0.6, "plots"
    figs = []
    usable = table.loc[ds.training_rows()] if ds.has_targets else table
    if ds.has_targets and "p_iou0" in usable:
        try:
            figs.append(figure_html(plot_roc(usable),
                                    caption="ROC: IoU_adj = 0 detected by p_iou0 vs entropy"))
        except ValueError as exc:
            notes.append(f"no ROC: {exc}")
    if ds.has_targets and "iou_adj_pred" in usable:
        figs.append(figure_html(plot_iou_scatter(usable), caption="predicted vs true IoU_adj"))
    if ev is not None and ev.lasso_path is not None and len(ev.lasso_path):
        figs.append(figure_html(plot_lasso_path(ev), caption="LASSO path of the meta classifier"))
    intro = (f"<p>{len(ds.cases)} case(s), {len(table)} segments, from "
             f"{html.escape(', '.join(str(t) for t in sources))}. Generated "
             f"{dt.datetime.now().isoformat(timespec='seconds')}.</p>")
    if pred_source:
        intro += f"<p class='note'>Predictions: {html.escape(pred_source)}.</p>"
    for n in notes:
        intro += f"<p class='note'>{html.escape(n)}</p>"
    blocks = [("Data", intro + case_summary(table).to_html(index=False, float_format="%.3f", na_rep=""))]
    if ev is not None:
        blocks.append((f"Meta models: evaluation ({ev.grouping}, {ev.n_splits} split(s))",
                       ev.summary().reset_index().to_html(index=False)))
    if figs:
        blocks.append(("Figures", "\n".join(figs)))
    yield 1.0, "written"
    return html_page("napari-metaseg report", blocks), notes
