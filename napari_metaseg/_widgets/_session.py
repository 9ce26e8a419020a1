"""Per-viewer state shared by the panels: the loaded meta models."""

from __future__ import annotations

import weakref

from psygnal import Signal

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Session:
    """The meta models in use for one viewer; ``models_changed`` fires when they change."""

    models_changed = Signal()

    def __init__(self):
        self.classifier = None
        self.regressor = None
        self.model_path = None

    @property
    def has_models(self):
        return self.classifier is not None or self.regressor is not None

    def set_models(self, classifier, regressor, path=None):
        self.classifier, self.regressor, self.model_path = classifier, regressor, path
        self.models_changed.emit()


def session_for(viewer):
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]
