"""Warm the engine: compile its numba kernels, or load them from numba's on-disk cache.

The first call of a kernel in a new installation compiles it (about 10 s for all of the engine on
2 cores); later processes load the compiled code from numba's cache in well under a second. Front
ends run :func:`warm_up_engine` before the first real case, so that time is spent while they say
why ("preparing the engine (first run only)") rather than inside a frozen progress bar.

Where numba's cache lives, and how Dask workers share one, is in ``docs/engine.md``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

__all__ = ["WARM_UP_STAGE", "warm_up_engine"]

#: The stage text of every step of :func:`warm_up_engine` (status lines show it as is).
WARM_UP_STAGE = "preparing the engine (first run only)"


def _tiny_case(spatial, n_classes, seed):
    """Probabilities (float32, classes last) and uint8 ground truth, as the readers give them,
    with prediction and labels disagreeing in places so every branch of the engine runs."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((*spatial, n_classes)).astype(np.float32) * 3
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    gt = probs.argmax(-1).astype(np.uint8)
    # a labelled object the prediction never gives its class, and a block labelled otherwise
    gt[(slice(0, 2),) * len(spatial)] = n_classes - 1
    gt[(slice(-3, None),) * len(spatial)] = 0
    gt[(-1,) * len(spatial)] = 255  # unlabelled (the default ignore_index)
    return probs, gt


def _label_error_steps(cases):
    """The label-error search on the tiny cases, with a classifier fitted on a synthetic table."""
    from ..core import find_label_errors, segment_metrics
    from ..core.meta_dataset import synthetic_metrics_table
    from ..core.meta_estimators import MetaClassifier

    q = cases[0][1].shape[-1]
    classifier = MetaClassifier(kind="logistic").fit(synthetic_metrics_table(80, n_classes=q,
                                                                              random_state=0))
    for mode, probs, gt in cases:
        seg, table = segment_metrics(probs, gt, mode=mode, slice_axis=-1)
        find_label_errors(table, classifier, maps=(probs, gt, seg), mode=mode, slice_axis=-1,
                          return_voxels=True)
        yield


def _ood_steps(cases):
    """The OoD job (candidate regions, their hits on an annotation, the evaluation) on the tiny
    cases, with a region classifier fitted on their own region tables."""
    from ..core.meta_estimators import MetaClassifier
    from ..core.progress import drain
    from .ood import find_ood, ood_settings

    for mode, probs, gt in cases:
        ood = (gt == gt.flat[0]).astype(np.uint8)  # some annotated voxels, some not
        result = drain(find_ood(probs, settings=ood_settings(mode=mode, threshold=0.05), ood=ood))
        table = result.table
        if len(table) >= 2 and table["hit"].nunique() == 2:
            clf = MetaClassifier(kind="logistic").fit(table.drop(columns=["hit"]), table["hit"])
            drain(find_ood(probs, settings=ood_settings(mode=mode, threshold=0.05), ood=ood, classifier=clf))
        yield


def warm_up_engine(*, label_errors=False, ood=False):
    """Job: run every engine kernel once on tiny inputs, so later calls start at full speed.

    Calls :func:`~napari_metaseg.core.as_probabilities` (quantised maps and logits),
    :func:`~napari_metaseg.core.dispersion_maps`, :func:`~napari_metaseg.core.label_segments` and
    :func:`~napari_metaseg.core.segment_metrics` (and the image scores of
    :func:`~napari_metaseg.core.scores.segmentation_scores`) with ground truth in 2D, slice-wise (slices along
    the last axis, as the NIfTI readers give axial slices) and 3D mode, with the dtypes the
    readers produce (float32 probabilities; uint8 ground truth, which is what int16/int32 labels
    with ids up to 255 become). With an empty numba cache this compiles them (seconds); with a
    warm one it loads them (a fraction of a second). Nothing is written except numba's cache.

    Parameters
    ----------
    label_errors : bool, default False
        Also run the label-error search (:func:`~napari_metaseg.core.find_label_errors`, with a
        classifier fitted on a synthetic table): imports the meta-model stage (scikit-learn,
        about a second) and compiles its kernels.
    ood : bool, default False
        Also run the OoD job (:func:`~napari_metaseg.workflows.ood.find_ood`: candidate regions,
        hits on an annotation, evaluation) and compile its kernels.

    Yields
    ------
    (float, str)
        Progress and the stage text :data:`WARM_UP_STAGE`.

    Returns
    -------
    float
        Seconds the warm-up took.

    Example
    -------
    >>> from napari_metaseg.core.progress import drain
    >>> seconds = drain(warm_up_engine())  # doctest: +SKIP
    """
    from ..core import (
        ProbabilityWarning,
        as_probabilities,
        dispersion_maps,
        label_segments,
        segment_metrics,
    )

    t0 = time.perf_counter()
    cases = [("2d", *_tiny_case((12, 10), 3, 0)), ("slices", *_tiny_case((6, 7, 5), 3, 1)),
             ("3d", *_tiny_case((6, 7, 5), 3, 2))]
    steps = 2 + 2 * len(cases) + (1 + len(cases) if label_errors else 0) + (len(cases) if ood else 0)
    done = 0

    def step():
        nonlocal done
        done += 1
        return min(done / steps, 1.0), WARM_UP_STAGE

    probs = cases[0][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbabilityWarning)
        as_probabilities(np.round(probs * 255).astype(np.uint8))  # quantised: renormalised
        as_probabilities(np.log(probs) * 2)  # logits: softmax
    yield step()
    dispersion_maps(probs)
    yield step()
    from ..core.scores import segmentation_scores

    for mode, probs, gt in cases:
        segment_metrics(probs, gt, mode=mode, slice_axis=-1)
        yield step()
        label_segments(probs.argmax(-1), mode=mode, slice_axis=-1)
        # the image scores an analysis with ground truth adds (uint8 maps, as the readers give)
        segmentation_scores(probs.argmax(-1).astype(np.uint8), gt,
                            per="slice" if mode == "slices" else "image")
        yield step()
    if label_errors:
        yield step()  # the meta-model stage is imported and a classifier fitted first
        for _ in _label_error_steps(cases):
            yield step()
    if ood:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny fits: convergence warnings say nothing here
            for _ in _ood_steps(cases):
                yield step()
    return time.perf_counter() - t0
