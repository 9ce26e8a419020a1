"""Label errors: find likely errors in a case's ground truth, in memory or over case files."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..core.progress import drain, rescaled
from .cases import over_cases, resolve_models, with_case

__all__ = ["LabelErrorsResult", "find_in_case", "label_errors", "label_errors_task"]


def find_in_case(probs, gt, *, classifier, case_id, mode, slice_axis=-1, ignore_index=255, seg=None,
                 table=None, allow_training_cases=False, restore_only=False, min_size=1, threshold=None,
                 return_voxels=True, class_axis=-1):
    """Job: the ranked label-error proposals of one case held in memory.

    Parameters
    ----------
    probs, gt : numpy.ndarray
        Probabilities (classes on ``class_axis``) and the ground truth under review.
    classifier : MetaClassifier
        Fitted on other cases (see :func:`napari_metaseg.core.find_label_errors`).
    case_id : str
        The case's id (a classifier trained on it is refused unless ``allow_training_cases``).
    mode, slice_axis, ignore_index
        How segments, GT objects and regions are made.
    seg, table : optional
        Segments and their metrics computed against this ``gt`` (reused, not recomputed).
    restore_only : bool
        Only the segments and GT objects (a saved review is being reopened); no proposals.
    min_size, threshold, return_voxels
        See :func:`~napari_metaseg.core.find_label_errors` (``return_voxels`` keeps each
        proposal's voxels, which the review store saves).

    Yields ``(fraction, stage)``; returns ``(proposals or None, seg, gt_objects)``.
    """
    from ..core import as_probabilities, find_label_errors, iter_segment_metrics
    from ..core.segments import label_segments

    probs = as_probabilities(probs, class_axis=class_axis)
    yield 0.1, "validated"
    found = None
    if restore_only:
        if seg is None:
            seg, _ = label_segments(probs.argmax(-1), mode=mode, slice_axis=slice_axis)
        yield 0.6, "segments"
    else:
        if table is None:
            seg, table = yield from rescaled(
                iter_segment_metrics(probs, gt, mode=mode, slice_axis=slice_axis,
                                     ignore_index=ignore_index), 0.1, 0.7)
        table = with_case(table, case_id)
        yield 0.75, "metrics"
        found = find_label_errors(table, classifier, maps={case_id: (probs, gt, seg)},
                                  allow_training_cases=allow_training_cases, mode=mode,
                                  slice_axis=slice_axis, ignore_index=ignore_index, threshold=threshold,
                                  min_size=min_size, return_voxels=return_voxels)
    yield 0.9, "proposals"
    gt_objects, _ = label_segments(gt, mode=mode, slice_axis=slice_axis)
    return found, seg, gt_objects


def label_errors_task(case, settings: dict, models, threshold=None, allow_training=False, min_size=1) -> dict:
    """Likely label errors of one case file (no files written).

    Returns ``{"n_segments": n, "proposals": DataFrame}``. A case without ground truth fails;
    ``models``: a model file path, a ``MetaModels`` or a pair (its classifier is used).
    """
    from ..core.metrics import segment_metrics
    from ..io.cases import read_case

    probs, gt, _ = read_case(case, class_axis=settings.get("class_axis", -1))
    if gt is None:
        raise ValueError("no ground truth: label errors are looked for in a case's labels")
    seg, table = segment_metrics(probs, gt, mode=settings["mode"], slice_axis=settings["slice_axis"],
                                 ignore_index=settings["ignore_index"],
                                 iou_adj=settings.get("iou_adj", "paper"))
    clf, _ = resolve_models(models, table)
    if clf is None:
        raise ValueError("the model holds no classifier: label errors need one")
    found, _, _ = drain(find_in_case(probs, gt, classifier=clf, case_id=case.name, mode=settings["mode"],
                                     slice_axis=settings["slice_axis"],
                                     ignore_index=settings["ignore_index"], seg=seg, table=table,
                                     allow_training_cases=allow_training, min_size=min_size,
                                     threshold=threshold, return_voxels=False))
    return {"n_segments": len(table), "proposals": found}


@dataclass
class LabelErrorsResult:
    """All cases' proposals ranked together (``rank`` first, most likely first) and the
    failed cases ``[(case, error)]``."""

    proposals: pd.DataFrame
    failed: list = field(default_factory=list)
    n_cases: int = 0


def label_errors(cases, models, settings, *, threshold=None, allow_training=False, min_size=1,
                 workers=None, scheduler=None, threads=None):
    """Job: likely label errors of every case, ranked together (see :func:`label_errors_task`).

    Yields ``(fraction, stage)``; returns a :class:`LabelErrorsResult`.
    """
    from ..core.label_errors import _COLUMNS

    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    results = yield from over_cases(label_errors_task, cases,
                                    (settings, models, threshold, allow_training, min_size),
                                    workers=workers, scheduler=scheduler, threads=threads, what="case")
    parts = [r["proposals"] for r in results if r["status"] == "done" and len(r["proposals"])]
    if parts:
        table = pd.concat(parts, ignore_index=True).sort_values("score", ascending=False, kind="stable")
    else:
        table = pd.DataFrame(columns=_COLUMNS)
    table.insert(0, "rank", range(1, len(table) + 1))
    failed = [(r["case"], r["error"]) for r in results if r["status"] != "done"]
    return LabelErrorsResult(table.reset_index(drop=True), failed, len(results) - len(failed))
