"""Worker plumbing shared by the panels: start a generator job in a thread, show its progress
(throttled), cancel it. Each panel keeps its own result, error, abort and finish handlers."""

from __future__ import annotations

import time

#: Minimum seconds between progress updates of a panel: repainting the panel makes Qt
#: recomposite the whole window, GL canvas included, which costs tens of milliseconds with
#: software OpenGL (measured, docs/gui.md); a short run shows no progress at all.
PROGRESS_INTERVAL = 0.25


def progress_widgets():
    """The progress bar (0-100) and the word-wrapped status line a panel's worker reports to."""
    from qtpy.QtWidgets import QLabel, QProgressBar

    progress = QProgressBar()
    progress.setRange(0, 100)
    status = QLabel("")
    status.setWordWrap(True)
    return progress, status


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

    def start_worker(self, job, *args, button, status, post=None, **kwargs):
        """Run ``job(*args, **kwargs)`` (a workflow: a generator yielding ``(fraction, stage)``)
        in a thread; ``button`` becomes *Cancel* until the worker finishes. ``post(result)``,
        when given, runs in the worker thread too and its value is what ``_on_returned`` gets
        (display preparation that touches no layer). Returns the worker."""
        from napari.qt.threading import create_worker

        if post is not None:
            job = _then(job, post)
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

    def fail(self, message):
        """Show a failure in the status line and as a notification; reset the progress bar."""
        from napari.utils.notifications import show_error

        self.progress.setValue(0)
        self.status.setText(f"error: {message}")
        show_error(f"napari-metaseg: {message}")

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


def _then(job, post):
    """The generator function ``job`` followed by ``post`` on its result (in the same thread)."""

    def run(*args, **kwargs):
        result = yield from job(*args, **kwargs)
        return post(result)

    run.__name__ = getattr(job, "__name__", "job")
    return run
