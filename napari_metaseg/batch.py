"""Running a per-case workflow over many cases, serially or on a Dask cluster.

No logic of its own: a *task* is a function of :mod:`napari_metaseg.workflows` that takes a
case (and further arguments), reads its own files, writes its own result or returns a small
summary, so a worker holds one case in memory and the driver only paths and summaries.
:func:`run_case` guards one call (a failing case comes back as ``{"status": "failed",
"error": ...}`` and the run goes on; time, peak memory and process id are recorded);
:func:`run_tasks` runs them in-process (``workers=None``), on a local cluster of processes
(``workers=N``) or on an existing ``dask.distributed`` scheduler (``scheduler=ADDR``; the
workers must see the same file system).

Threads: each call can set numba's thread count (``threads``, the CLI's ``--threads``), to
share the cores between worker processes. Results do not depend on it: the engine cuts its
work into chunks by the input's size only (see :func:`napari_metaseg.core.segment_metrics`),
and ``tests/test_engine_determinism.py`` checks that tables are bit-identical for 1 and N threads.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

__all__ = ["DistributedMissingError", "run_case", "run_tasks"]


class DistributedMissingError(ImportError):
    """``--workers`` / ``--scheduler`` without ``dask.distributed`` installed."""


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


def error_text(exc: BaseException) -> str:
    """``"TypeName: first line of the message"`` (what a failed case reports)."""
    if isinstance(exc, MemoryError):
        return "MemoryError: the case does not fit in memory"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def run_case(fn, case, *args, threads=None) -> dict:
    """Call ``fn(case, *args)`` (which returns a dict) and never raise.

    Returns
    -------
    dict
        ``case`` (its name), ``status`` ("done" or "failed"), ``error``, the keys ``fn``
        returned, ``seconds``, ``peak_rss_mb`` (peak resident memory of the process so far)
        and ``pid``; with ``NAPARI_METASEG_TRACEBACK`` set, a failure carries ``traceback``.
    """
    t0 = time.perf_counter()
    previous = None
    try:
        previous = _set_threads(threads)
        result = fn(case, *args)
        status = {"status": "done", "error": ""}
    except Exception as exc:  # one bad case must not stop the run (MemoryError included)
        result = {}
        status = {"status": "failed", "error": error_text(exc)}
        if os.environ.get("NAPARI_METASEG_TRACEBACK"):
            status["traceback"] = traceback.format_exc()
    finally:
        if previous is not None:
            import numba

            numba.set_num_threads(previous)
    return {"case": case.name, **status, **result, "seconds": time.perf_counter() - t0,
            "peak_rss_mb": _peak_rss_mb(), "pid": os.getpid()}


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
    """Run ``fn(case, *args)`` for every case through :func:`run_case`; yield the results as
    they finish.

    Parameters
    ----------
    fn : callable
        A per-case task of :mod:`napari_metaseg.workflows` (importable by name, so Dask can send
        it to workers).
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
    >>> from napari_metaseg.workflows import metrics_task
    >>> for r in run_tasks(metrics_task, cases, args=("out", settings)):  # doctest: +SKIP
    ...     print(r["case"], r["status"])
    """
    cases = list(cases)
    if workers is None and scheduler is None:
        for case in cases:
            yield run_case(fn, case, *args, threads=threads)
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
            fut = client.submit(run_case, fn, case, *args, threads=threads, pure=False, retries=0,
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
