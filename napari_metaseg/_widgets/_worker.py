"""Worker plumbing shared by the panels: start a generator job in a thread, show its progress
(throttled), cancel it. Each panel keeps its own result, error, abort and finish handlers."""

from __future__ import annotations

import time

#: Minimum seconds between progress updates of a panel: repainting the panel makes Qt
#: recomposite the whole window, GL canvas included, which costs tens of milliseconds with
#: software OpenGL (measured, docs/gui.md); a short run shows no progress at all.
PROGRESS_INTERVAL = 0.25


class WorkerPanelMixin:
    """For a QWidget with ``progress`` (QProgressBar) and ``status`` (QLabel) and the handlers
    ``_on_returned``, ``_on_errored`` and ``_on_aborted``; when the worker has finished, the
    button gets its text back and ``_update_buttons()`` runs where the panel has one."""

    worker = None
    _worker_button = None
    _last_progress = 0.0
    #: Show the first progress report at once (long jobs: training, ranking a folder); else the
    #: first report waits PROGRESS_INTERVAL too (short jobs show no progress at all).
    show_first_progress = False

    def start_worker(self, job, *args, button, status, **kwargs):
        """Run ``job(*args, **kwargs)`` (a generator yielding ``(fraction, stage)``) in a thread;
        ``button`` becomes *Cancel* until the worker finishes. Returns the worker."""
        from napari.qt.threading import create_worker

        # errors go to our handler only (without _ignore_errors superqt re-raises them too)
        self.worker = create_worker(job, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        self._worker_button = button
        self._last_progress = -float("inf") if self.show_first_progress else time.monotonic()
        self.worker.yielded.connect(self._on_yielded)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self._worker_button_text = button.text()
        button.setText("Cancel")
        self.progress.setValue(0)
        self.status.setText(status)
        self.worker.start()
        return self.worker

    def cancel(self):
        """Ask the running worker to stop at its next step."""
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelling ...")
            if self._worker_button is not None:
                self._worker_button.setEnabled(False)

    def _on_yielded(self, value):
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        frac, stage = value
        self.progress.setValue(round(100 * frac))
        self.status.setText(stage)

    def _on_finished(self):
        self.worker = None
        button = self._worker_button
        if button is not None:
            button.setText(self._worker_button_text)
            button.setEnabled(True)
        update = getattr(self, "_update_buttons", None)
        if update is not None:
            update()
