"""Analyse one case held in memory: heatmaps, segments, metrics, and predictions of a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.progress import rescaled

__all__ = ["Analysis", "analyse", "warm_up"]


@dataclass
class Analysis:
    """Result of :func:`analyse`: heatmaps ``{name: map}``, segment ids, the metrics table
    (with predictions when a model was given) and the segmentation record (``mode``,
    ``slice_axis``, ``ignore_index``, and ``iou_adj`` when it is the local one) the table was made
    with."""

    maps: dict
    seg: np.ndarray
    table: object
    segmentation: dict


def analyse(probs, gt=None, *, class_axis=-1, mode="auto", slice_axis=-1, ignore_index=255,
            heatmaps=("E",), models=None, threads=None, iou_adj=None):
    """Job: heatmaps, segments and segment metrics of one case (and the model's predictions).

    Parameters
    ----------
    probs : array_like
        Probabilities with the class axis ``class_axis``.
    gt : array_like, optional
        Ground truth (adds ``iou``, ``iou_adj`` and the image scores ``image_mean_iou`` /
        ``image_mean_dice`` of each segment's slice or image).
    mode, slice_axis, ignore_index
        See :func:`napari_metaseg.core.segment_metrics`.
    heatmaps : sequence of str
        Dispersion maps to return (``E``, ``D``, ``V``).
    models : MetaModels or (classifier, regressor), optional
        Adds ``p_iou0`` / ``iou_adj_pred``; the model's segmentation is checked against ``mode``.
    threads : int, optional
        numba threads for this job (the panel leaves one core to the event loop and canvas).
    iou_adj : {"paper", "local"}, optional
        Definition of the true IoU_adj (with ``gt``); default: the model's (the one its regressor
        was trained on), else the paper's. A definition other than the model's is refused.

    Yields ``(fraction, stage)``; returns an :class:`Analysis`.
    """
    from ..core import as_probabilities, dispersion_maps, iter_segment_metrics
    from ..core.segments import resolve_mode
    from .models import check_segmentation, iou_adj_of, segmentation_of

    if threads:
        import numba

        # numba's thread count is per calling thread: this affects this job's thread only
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    model_seg = getattr(models, "segmentation", None)
    if iou_adj is None:
        iou_adj = iou_adj_of(model_seg)
    elif model_seg is not None and iou_adj != iou_adj_of(model_seg):
        raise ValueError(f"the model was trained on the {iou_adj_of(model_seg)} IoU_adj; iou_adj={iou_adj!r} "
                         "would compare its predictions with another quantity (leave iou_adj out)")
    probs = as_probabilities(probs, class_axis=class_axis)
    mode, axis = resolve_mode(mode, probs.ndim - 1, slice_axis)
    segmentation = segmentation_of({"mode": mode, "slice_axis": slice_axis if axis is not None else None,
                                    "ignore_index": ignore_index, "iou_adj": iou_adj})
    pair = None
    if models is not None:
        pair = models.pair if hasattr(models, "pair") else tuple(models)
        if hasattr(models, "segmentation"):
            check_segmentation(models.segmentation, mode=mode, slice_axis=slice_axis)
        if pair[0] is None and pair[1] is None:
            pair = None
    yield 0.1, "validated"
    maps = dispersion_maps(probs, measures=tuple(heatmaps)) if heatmaps else {}
    yield 0.3, "heatmaps"
    seg, table = yield from rescaled(
        iter_segment_metrics(probs, gt, mode=mode, slice_axis=slice_axis, ignore_index=ignore_index,
                             iou_adj=iou_adj), 0.3, 0.95)
    if gt is not None:  # the image scores of each segment's slice (image): the image regressor's target
        from .quality import predicted_classes, with_image_scores

        table = with_image_scores(table, predicted_classes(seg, table), gt, segmentation=segmentation)
    if pair is not None:
        from ..core.meta_model import predict_table

        table = predict_table(table, *pair)
        yield 1.0, "meta model"
    return Analysis(maps, seg, table, segmentation)


def warm_up(gt_dtype, n_classes, ndim, mode, slice_axis):
    """Compile (or load from numba's cache) the engine's kernels for these dtypes on a tiny case.

    The review panel calls it on the main thread before its worker starts: numba compiling in
    a worker while Mesa's llvmpipe draws the canvas (both run LLVM) crashed the process under
    Xvfb; once cached it costs milliseconds.
    """
    from ..core import segment_metrics
    from ..core.segments import label_segments

    shape = (3,) * ndim
    probs = np.full((*shape, n_classes), 1.0 / n_classes, np.float32)
    probs[..., 0] += 0.01
    probs /= probs.sum(-1, keepdims=True)
    gt = np.zeros(shape, gt_dtype)
    segment_metrics(probs, gt, mode=mode, slice_axis=slice_axis)
    label_segments(probs.argmax(-1), mode=mode, slice_axis=slice_axis)
    label_segments(gt, mode=mode, slice_axis=slice_axis)
