"""The progress protocol every long job speaks, and the two helpers that consume it.

A long job is a generator that yields ``(fraction, stage)`` pairs (``fraction`` in [0, 1],
``stage`` a short text for a status line) and *returns* its result (``StopIteration.value``).
The napari panels run such generators in a ``thread_worker`` (a bar, a status line, cancel at
the next yield); the CLI and the tests run them to the end with :func:`drain`; one job nests
another with ``result = yield from rescaled(inner, start, stop)``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

__all__ = ["Job", "drain", "rescaled"]

#: Type of a long job: yields ``(fraction, stage)``, returns the result.
Job = Generator[tuple[float, str], None, Any]


def drain(job: Job, on_progress: Callable[[float, str], None] | None = None):
    """Run a job to its end and return its result.

    Parameters
    ----------
    job : generator
        Yields ``(fraction, stage)``; its return value is the result.
    on_progress : callable, optional
        Called with ``(fraction, stage)`` for every step (e.g. to move a progress bar).

    Returns
    -------
    object
        What the job returned.

    Example
    -------
    >>> def job():
    ...     yield 0.5, "half"
    ...     return 42
    >>> drain(job())
    42
    """
    while True:
        try:
            fraction, stage = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(fraction, stage)


def rescaled(job: Job, start: float, stop: float, *, prefix: str = ""):
    """Re-yield a nested job's steps mapped onto ``[start, stop]``; return its result.

    Use it as ``result = yield from rescaled(inner(), 0.3, 0.9)`` inside an outer job.

    Parameters
    ----------
    job : generator
        The nested job.
    start, stop : float
        Where the nested job's 0 and 1 fall in the outer job's progress.
    prefix : str, optional
        Put in front of every stage text (e.g. ``"case 2/5: "``).

    Returns
    -------
    object
        What the nested job returned.

    Example
    -------
    >>> def inner():
    ...     yield 0.5, "half"
    ...     return "done"
    >>> def outer():
    ...     r = yield from rescaled(inner(), 0.2, 0.6, prefix="a: ")
    ...     return r
    >>> g = outer()
    >>> next(g)
    (0.4, 'a: half')
    """
    span = stop - start
    while True:
        try:
            fraction, stage = next(job)
        except StopIteration as done:
            return done.value
        yield start + span * float(fraction), prefix + stage
