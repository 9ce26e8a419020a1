"""Active-learning ranking: order cases (or slices) by predicted quality, worst first."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from .cases import measure_file, over_cases, resolve_models

__all__ = ["RankResult", "rank", "rank_task"]


@dataclass
class RankResult:
    """The ranking (:func:`~napari_metaseg.core.active_learning.order_ranking`'s columns), the
    failed cases ``[(case, error)]``, what a row is (``case`` or ``slice``) and the time taken."""

    ranking: pd.DataFrame
    failed: list = field(default_factory=list)
    by: str = "case"
    seconds: float = 0.0


def rank_task(case, settings: dict, models, by="case", background=0) -> dict:
    """Summarise the predicted quality of one case (no files written).

    Returns ``{"n_segments": n, "rows": DataFrame}`` with the rows of
    :func:`napari_metaseg.core.active_learning.predicted_quality` (one per case, or per slice
    with ``by="slice"``; a 2D image is slice 0). Segments of class ``background`` are left out
    (None keeps every class). ``models``: a model file path, a ``MetaModels`` or a pair.
    """
    from ..core.active_learning import predicted_quality

    _, table, _ = measure_file(case, settings)
    pair = resolve_models(models, table)
    if by == "slice" and "slice" not in table.columns:
        table = table.assign(slice=0)
    rows = predicted_quality({case.name: table}, pair, by=by, background=background)
    return {"n_segments": len(table), "rows": rows}


def rank(cases, models, settings, *, by="case", background=0, workers=None, scheduler=None, threads=None):
    """Job: rank cases (or their slices) for annotation, worst predicted quality first.

    Each case is read, measured and summarised by :func:`rank_task`; the rows are ordered by
    :func:`~napari_metaseg.core.active_learning.order_ranking` (ties keep the order of
    ``cases``). Ground truth, where a case has it, adds ``iou_adj_mean``. A case that fails is
    listed in ``failed``; the others go on.

    Yields ``(fraction, stage)``; returns a :class:`RankResult`.
    """
    from ..core.active_learning import RANKING_COLUMNS, order_ranking

    if by not in ("case", "slice"):
        raise ValueError(f"by={by!r}; expected 'case' or 'slice'")
    if by == "slice" and settings.get("mode") == "3d":
        raise ValueError("ranking by slice needs slice-wise segments (mode 'slices'), not 3d")
    t0 = time.perf_counter()
    results = yield from over_cases(rank_task, cases, (settings, models, by, background), workers=workers,
                                    scheduler=scheduler, threads=threads, what="case")
    rows = [r["rows"] for r in results if r["status"] == "done"]
    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    if rows:
        ranking = order_ranking(pd.concat(rows, ignore_index=True))
    else:
        ranking = pd.DataFrame(columns=[c for c in RANKING_COLUMNS if c != "slice" or by == "slice"])
    return RankResult(ranking, failed, by, time.perf_counter() - t0)
