"""Run a serial, GIL-free numba kernel over chunks of work in a few threads.

numba's ``parallel=True`` compiles a kernel twice (the kernel and its parallel loop body) after
extra passes over its whole code; for the engine's kernels that was three quarters of the 30 s a
new installation spent compiling before its first result. A serial kernel compiled with
``nogil=True`` and called on disjoint chunks from a few Python threads runs as fast (the threads
run the compiled code concurrently) and compiles in a fraction of the time.

Results never depend on the number of threads: what a chunk computes and where it writes are
functions of the chunk's index only, and partial results are combined in chunk order.
"""

from __future__ import annotations

import threading

__all__ = ["bounds", "run_chunks", "thread_count"]


def thread_count():
    """Threads the engine's kernels may use in the calling thread: numba's setting
    (``numba.set_num_threads``, per thread; ``NUMBA_NUM_THREADS``), which the CLI's ``--threads``,
    the batch runner and the panels set."""
    import numba

    return int(numba.get_num_threads())


def bounds(n, nchunks, ch):
    """``(lo, hi)`` of chunk ``ch`` when ``range(n)`` is cut into ``nchunks`` near-equal parts.

    Example
    -------
    >>> [bounds(10, 3, ch) for ch in range(3)]
    [(0, 3), (3, 6), (6, 10)]
    """
    return ch * n // nchunks, (ch + 1) * n // nchunks


def run_chunks(work, nchunks, *, threads=None):
    """Call ``work(ch)`` for every ``ch`` in ``range(nchunks)``, spread over threads.

    Parameters
    ----------
    work : callable
        Takes a chunk index; calls a ``nogil`` kernel on that chunk (it must not touch what other
        chunks write).
    nchunks : int
        Number of chunks.
    threads : int, optional
        At most this many threads, the calling one included; default :func:`thread_count`.
        Chunks are handed out one at a time, so a thread slowed by other work takes fewer.

    Raises
    ------
    Exception
        The first exception raised by ``work`` (the other threads stop at their next chunk).

    Example
    -------
    >>> out = [0] * 4
    >>> run_chunks(lambda ch: out.__setitem__(ch, ch * ch), 4, threads=2)
    >>> out
    [0, 1, 4, 9]
    """
    nthreads = max(1, min(thread_count() if threads is None else int(threads), nchunks))
    if nthreads == 1:
        for ch in range(nchunks):
            work(ch)
        return
    lock = threading.Lock()
    state = {"next": 0}
    errors = []

    def worker():
        while True:
            with lock:
                ch = state["next"]
                state["next"] = ch + 1
            if ch >= nchunks or errors:
                return
            try:
                work(ch)
            except BaseException as exc:  # re-raised in the calling thread
                errors.append(exc)
                return

    helpers = [threading.Thread(target=worker, name=f"napari-metaseg-chunks-{i}", daemon=True)
               for i in range(nthreads - 1)]
    for t in helpers:
        t.start()
    worker()
    for t in helpers:
        t.join()
    if errors:
        raise errors[0]
