"""Preparing the engine when the plugin loads, in a separate process.

On a new installation the first call of the engine compiles its numba kernels (about 8-9 s on 2
cores, `benchmarks/bench_coldstart.py`). The MetaSeg dock starts
:func:`napari_metaseg.workflows.warm_up_engine` in a child Python process as soon as it is
created: the compiled kernels land in numba's on-disk cache, from which the viewer's own process
then loads them in a fraction of a second. A child process, not a thread: numba compiling in a
worker thread while Mesa's llvmpipe draws the canvas (both run LLVM) crashed the viewer under
Xvfb. Until the child is done, the analysis panel says "preparing the engine (first run only)"
and starts a requested run as soon as it is ready. ``NAPARI_METASEG_WARM_UP=0`` turns this off.
"""

from __future__ import annotations

import os
import sys
import time

from qtpy.QtCore import QObject, QProcess, Signal

from ..workflows.warmup import WARM_UP_STAGE

__all__ = ["WARM_UP_STAGE", "EngineWarmUp", "engine_warm_up"]

_CODE = ("from napari_metaseg.core.progress import drain; "
         "from napari_metaseg.workflows.warmup import warm_up_engine; "
         "drain(warm_up_engine(label_errors=True, ood=True))")
_INSTANCE = None


class EngineWarmUp(QObject):
    """The warm-up child process of this viewer process (one for all viewers)."""

    #: emitted once when the engine is ready (the child finished, failed or was not needed)
    ready = Signal()

    def __init__(self):
        super().__init__()
        self.is_ready = False
        self.started = time.monotonic()
        self.seconds = None
        self.process = QProcess(self)
        self.process.setProgram(sys.executable)
        self.process.setArguments(["-c", _CODE])
        self.process.finished.connect(self._done)
        self.process.errorOccurred.connect(self._failed)
        self.process.start()

    def _done(self, *args):
        self._finish()

    def _failed(self, error):
        # no child process (sandbox, frozen app): the first run compiles in the viewer instead
        if error == QProcess.FailedToStart:
            self._finish()

    def _finish(self):
        if self.is_ready:
            return
        self.is_ready = True
        self.seconds = time.monotonic() - self.started
        self.ready.emit()


class _AlreadyWarm(QObject):
    ready = Signal()
    is_ready = True
    seconds = 0.0


def engine_warm_up():
    """Start the warm-up once per process (unless ``NAPARI_METASEG_WARM_UP=0``); returns it."""
    global _INSTANCE
    if _INSTANCE is None:
        _INSTANCE = _AlreadyWarm() if os.environ.get("NAPARI_METASEG_WARM_UP") == "0" else EngineWarmUp()
    return _INSTANCE
