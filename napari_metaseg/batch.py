"""Batch processing of whole datasets, case by case, serially or on a Dask cluster.

Each case is one task that reads its own files and writes its own result
(:func:`metrics_task`, :func:`predict_task`) or returns a small summary (:func:`rank_task`),
so a worker holds one case in memory and the driver only paths and summaries. Tasks never
raise: a failing case comes back as ``{"status": "failed", "error": ...}`` and the run goes on.
:func:`run_tasks` runs them in-process (``workers=None``), on a local cluster of processes
(``workers=N``) or on an existing ``dask.distributed`` scheduler (``scheduler=ADDR``; the
workers must see the same file system).

Determinism: the engine sums per-segment statistics over ``4 x numba threads`` chunks, so the
last bits of the float64 sums depend on the number of numba threads. Every task therefore runs
with an explicit ``threads`` count, and results are bit-identical whenever that count is the
same (the CLI's ``--threads``); between different counts they differ by float rounding only
(about 1e-16 relative).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .io.cases import Case, is_nifti, read_case
from .io.results import read_settings, write_nifti_like, write_table

__all__ = [
    "DistributedMissingError",
    "case_table_path",
    "is_done",
    "label_errors_task",
    "metrics_task",
    "predict_task",
    "rank_task",
    "run_tasks",
]


class DistributedMissingError(ImportError):
    """``--workers`` / ``--scheduler`` without ``dask.distributed`` installed."""


def case_table_path(out_dir, case_name: str) -> Path:
    """``<out_dir>/cases/<case>.parquet``."""
    return Path(out_dir) / "cases" / f"{case_name}.parquet"


def is_done(out_dir, case: Case, settings: dict) -> bool:
    """Whether the case's table exists and was computed from the same files with ``settings``."""
    stored = read_settings(case_table_path(out_dir, case.name))
    return stored is not None and stored == _full_settings(case, settings)


def _full_settings(case: Case, settings: dict) -> dict:
    return {**settings, "softmax": str(case.softmax), "gt": None if case.gt is None else str(case.gt)}


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _set_threads(threads):
    """Set numba's thread count for this thread; returns the previous count (None: unchanged)."""
    if not threads:
        return None
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    return previous


def _compute(case: Case, settings: dict):
    from .core.metrics import segment_metrics

    probs, gt, affine = read_case(case, class_axis=settings.get("class_axis", -1))
    seg, table = segment_metrics(probs, gt, mode=settings["mode"], slice_axis=settings["slice_axis"],
                                 ignore_index=settings["ignore_index"])
    del probs, gt
    return seg, table, affine


def _with_case(table, name):
    out = table.copy()
    out.insert(0, "case", name)
    return out


def _run_guarded(fn, case: Case, threads):
    t0 = time.perf_counter()
    previous = None
    try:
        previous = _set_threads(threads)
        result = fn()
        status = {"status": "done", "error": ""}
    except MemoryError:
        result, status = {}, {"status": "failed", "error": "MemoryError: the case does not fit in memory"}
    except Exception as exc:  # one bad case must not stop the run
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        status = {"status": "failed", "error": f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__}
        if os.environ.get("NAPARI_METASEG_TRACEBACK"):
            status["traceback"] = traceback.format_exc()
        result = {}
    finally:
        if previous is not None:
            import numba

            numba.set_num_threads(previous)
    return {"case": case.name, **status, **result, "seconds": time.perf_counter() - t0,
            "peak_rss_mb": _peak_rss_mb(), "pid": os.getpid()}


def metrics_task(case: Case, out_dir, settings: dict, threads=None) -> dict:
    """Compute the metrics table of one case and write ``<out_dir>/cases/<case>.parquet``.

    Parameters
    ----------
    case : Case
    out_dir : str or os.PathLike
    settings : dict
        ``mode``, ``slice_axis``, ``ignore_index``, ``class_axis``: passed to
        :func:`napari_metaseg.core.segment_metrics`; stored in the file.
    threads : int, optional
        numba threads for this case (see the module docstring).

    Returns
    -------
    dict
        ``case``, ``status`` ("done" or "failed"), ``error``, ``n_segments``, ``seconds``,
        ``peak_rss_mb`` (peak resident memory of the process so far), ``pid``.

    Examples
    --------
    >>> metrics_task(case, "out", {"mode": "auto", "slice_axis": -1, "ignore_index": 255,
    ...                            "class_axis": -1})  # doctest: +SKIP
    """
    def work():
        _, table, _ = _compute(case, settings)
        write_table(_with_case(table, case.name), case_table_path(out_dir, case.name),
                    settings=_full_settings(case, settings))
        return {"n_segments": len(table)}

    return _run_guarded(work, case, threads)


def _predict(case: Case, settings: dict, model_path):
    from .core.meta_io import load_models
    from .core.meta_model import predict_table

    seg, table, affine = _compute(case, settings)
    clf, reg, _ = load_models(model_path, table=table)
    return seg, predict_table(table, clf, reg), affine


def predict_task(case: Case, out_dir, settings: dict, model_path, threads=None) -> dict:
    """Predict the quality of every segment of one case with a saved meta model.

    Writes ``<out_dir>/cases/<case>.parquet`` (the metrics table with ``p_iou0`` and
    ``iou_adj_pred``) and a map of the predicted IoU_adj per pixel/voxel:
    ``<out_dir>/maps/<case>_iou_adj_pred.nii.gz`` with the input's affine for NIfTI input,
    ``.npy`` otherwise (float32; only when the model file holds a regressor).

    Parameters and the returned dict are those of :func:`metrics_task`, plus ``model_path``.

    Examples
    --------
    >>> predict_task(case, "pred", settings, "model.json.gz")  # doctest: +SKIP
    """
    def work():
        seg, table, affine = _predict(case, settings, model_path)
        if "iou_adj_pred" in table:
            lut = np.concatenate([[np.nan], table["iou_adj_pred"].to_numpy(np.float32)]).astype(np.float32)
            values = lut[seg]
            maps = Path(out_dir) / "maps"
            if is_nifti(case.softmax):
                write_nifti_like(values, affine, maps / f"{case.name}_iou_adj_pred.nii.gz", like=case.softmax)
            else:
                from .io.results import atomic_path

                with atomic_path(maps / f"{case.name}_iou_adj_pred.npy") as tmp, tmp.open("wb") as f:
                    np.save(f, values)
        write_table(_with_case(table, case.name), case_table_path(out_dir, case.name),
                    settings=_full_settings(case, settings))
        return {"n_segments": len(table)}

    return _run_guarded(work, case, threads)


def rank_task(case: Case, settings: dict, model_path, threads=None) -> dict:
    """Summarise the predicted quality of one case for ranking (no files written).

    Returns the dict of :func:`metrics_task` with the row of
    :func:`napari_metaseg.core.active_learning.predicted_quality` for the whole case:
    ``n_segments``; ``size``; ``iou_adj_pred_mean``, the mean predicted IoU_adj weighted by
    segment size (NaN without a regressor); ``share_likely_wrong``, the share of segments with
    P(IoU_adj = 0) > 0.5 (NaN without a classifier); and, with ground truth, ``iou_adj_mean``,
    the size-weighted mean of the true IoU_adj. Segments of the class ``settings["background"]``
    (default 0; None keeps every class) are left out of all of these, and a case without any
    other segment gets NaN (ranked last). The driver orders the rows with
    :func:`~napari_metaseg.core.active_learning.order_ranking`.

    Examples
    --------
    >>> rank_task(case, settings, "model.json.gz")["iou_adj_pred_mean"]  # doctest: +SKIP
    0.73
    """
    def work():
        from .core.active_learning import predicted_quality
        from .core.meta_io import load_models

        _, table, _ = _compute(case, settings)
        clf, reg, _ = load_models(model_path, table=table)
        row = predicted_quality({case.name: table}, (clf, reg), by="case",
                                background=settings.get("background", 0)).iloc[0]
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k != "case"}

    return _run_guarded(work, case, threads)


def label_errors_task(case: Case, settings: dict, model_path, threshold=None, allow_training=False,
                      min_size=1, threads=None) -> dict:
    """Likely label errors of one case (see :func:`napari_metaseg.core.label_errors.find_label_errors`).

    Returns the dict of :func:`metrics_task` with ``proposals``, the ranked proposals table
    (no files written). A case without ground truth fails.

    Examples
    --------
    >>> label_errors_task(case, settings, "model.json.gz")["proposals"]  # doctest: +SKIP
    """
    def work():
        from .core.label_errors import find_label_errors
        from .core.meta_io import load_models
        from .core.metrics import segment_metrics

        probs, gt, _ = read_case(case, class_axis=settings.get("class_axis", -1))
        if gt is None:
            raise ValueError("no ground truth: label errors are looked for in a case's labels")
        seg, table = segment_metrics(probs, gt, mode=settings["mode"], slice_axis=settings["slice_axis"],
                                     ignore_index=settings["ignore_index"])
        clf, _, _ = load_models(model_path, table=table)
        found = find_label_errors(_with_case(table, case.name), clf,
                                  maps={case.name: (probs, gt, seg)}, threshold=threshold,
                                  allow_training_cases=allow_training, min_size=min_size,
                                  mode=settings["mode"],
                                  slice_axis=settings["slice_axis"], ignore_index=settings["ignore_index"])
        return {"n_segments": len(table), "proposals": found}

    return _run_guarded(work, case, threads)


# ============================================================================================
# Running tasks
# ============================================================================================
def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise DistributedMissingError(
            "--workers and --scheduler need dask.distributed, which is not installed: "
            "pip install 'napari-metaseg[distributed]' (or run without them, serially)"
        ) from exc
    return distributed


def run_tasks(fn, cases, *, args=(), workers=None, scheduler=None, threads=None):
    """Run ``fn(case, *args, threads=threads)`` for every case; yield the results as they finish.

    Parameters
    ----------
    fn : callable
        A task of this module (importable by name, so Dask can send it to workers).
    cases : sequence of Case
    args : tuple
        Further positional arguments of ``fn``.
    workers : int, optional
        Start a local Dask cluster of this many single-threaded worker processes.
    scheduler : str, optional
        Address of an existing ``dask.distributed`` scheduler (``tcp://host:8786``).
    threads : int, optional
        numba threads per case (default: all cores serially, cores / workers on a local
        cluster, the workers' default on a remote scheduler).

    Yields
    ------
    dict
        The task's result; a task lost on a worker (killed process, lost connection) comes
        back as a failed result.

    Raises
    ------
    DistributedMissingError
        ``workers`` or ``scheduler`` given without ``dask.distributed``.

    Examples
    --------
    >>> for r in run_tasks(metrics_task, cases, args=("out", settings)):  # doctest: +SKIP
    ...     print(r["case"], r["status"])
    """
    cases = list(cases)
    if workers is None and scheduler is None:
        for case in cases:
            yield fn(case, *args, threads=threads)
        return
    distributed = _distributed()
    import logging

    cluster = None
    if scheduler is None:
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // int(workers))
        cluster = distributed.LocalCluster(
            n_workers=int(workers), threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = distributed.Client(cluster)
    else:
        client = distributed.Client(scheduler, timeout="30s")
    try:
        futures = {}
        for case in cases:
            fut = client.submit(fn, case, *args, threads=threads, pure=False, retries=0,
                                key=f"{fn.__name__}-{case.name}-{os.getpid()}-{time.time_ns()}")
            futures[fut] = case
        for fut in distributed.as_completed(futures):
            case = futures[fut]
            try:
                yield fut.result()
            except Exception as exc:  # lost worker, killed process, serialisation
                yield {"case": case.name, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                       "seconds": float("nan"), "peak_rss_mb": float("nan"), "pid": None}
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
