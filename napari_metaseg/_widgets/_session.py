"""Per-viewer state shared by the panels: the meta models in use (a ``workflows.MetaModels``)."""

from __future__ import annotations

import weakref

from psygnal import Signal

from ..workflows.models import MetaModels

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Session:
    """The meta models in use for one viewer; ``models_changed`` fires when they change.

    ``models`` carries the pair with its training data, evaluation and segmentation settings,
    so every panel applies, refits and saves the same thing.
    """

    models_changed = Signal()
    #: a new case was analysed (the meta panel takes its id)
    case_changed = Signal()
    #: a case was opened for review (dict: ``probabilities``, ``ground_truth`` layer names,
    #: ``mode``, ``slice_axis``): the analysis panel analyses it with the session's models
    case_opened = Signal(object)

    def __init__(self):
        self.models = MetaModels()
        #: whether the canvas was set to the axial view for a volume (done once per viewer)
        self.view_arranged = False

    @property
    def classifier(self):
        return self.models.classifier

    @property
    def regressor(self):
        return self.models.regressor

    @property
    def model_path(self):
        return self.models.path

    @model_path.setter
    def model_path(self, path):
        self.models.path = path

    @property
    def has_models(self):
        return self.models.has_models

    def set(self, models: MetaModels):
        """Use ``models`` in every panel of this viewer."""
        self.models = models
        self.models_changed.emit()

    def set_models(self, classifier, regressor, path=None, **more):
        """Use this pair (``more``: ``dataset``, ``evaluation``, ``segmentation``)."""
        self.set(MetaModels(classifier, regressor, path=path, **more))


def session_for(viewer):
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]
