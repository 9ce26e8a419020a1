"""The panels' parameter forms: one magicgui ``Container`` built from a declarative spec.

A spec is a sequence of ``(name, kind, options, label, tooltip)`` rows; :func:`make_form` turns
it into a labelled :class:`magicgui.widgets.Container` whose widgets are reached by name
(``form.mode.value``), also those placed side by side in a ``row``. The panel puts
``form.native`` into its Qt layout; tables, plots, progress bars and action buttons stay Qt.
"""

from __future__ import annotations

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    RadioButtons,
    SpinBox,
)
from magicgui.widgets.bases import ValuedContainerWidget
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QLabel


class CheckRow(ValuedContainerWidget):
    """A row of check boxes, one per choice; ``value`` is the list of checked choices.

    Each box is reachable by its choice (``row.E.value = True``).
    """

    def __init__(self, choices=(), value=(), tooltips=None, **kwargs):
        tooltips = tooltips or {}
        self._boxes = [CheckBox(name=str(c), text=str(c), value=c in value, tooltip=tooltips.get(c))
                       for c in choices]
        kwargs.update(widgets=self._boxes, labels=False, layout="horizontal")
        super().__init__(**kwargs)
        self.margins = (0, 0, 0, 0)
        for box in self._boxes:
            box.changed.connect(lambda _=None: self.changed.emit(self.value))

    def get_value(self):
        return [box.name for box in self._boxes if box.value]

    def set_value(self, value):
        for box in self._boxes:
            box.value = box.name in value


class _Row(Container):
    """Fields side by side (``row`` in a spec): the row's label names the first field, the
    others have theirs in front of them."""


class Form(Container):
    """The labelled form; a field inside a row is reached by its name too (``form.regressor``)."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if not name.startswith("_"):
                for widget in self:
                    for sub in widget if isinstance(widget, _Row) else ():
                        if sub.name == name:
                            return sub
            raise


class _LabelAligner(QObject):
    """Gives the form's row labels one width once the style (napari's font) applies.

    magicgui measures label widths with the application font before napari's stylesheet sets
    the panel's, so the fields of a docked form would not line up.
    """

    def __init__(self, form):
        super().__init__(form.native)
        self._layout = form.native.layout()
        form.native.installEventFilter(self)

    def eventFilter(self, obj, event):
        if event.type() in (QEvent.Type.Show, QEvent.Type.StyleChange, QEvent.Type.FontChange):
            self.align()
        return False

    def labels(self):
        for i in range(self._layout.count()):
            row = self._layout.itemAt(i).widget()
            inner = row.layout() if row is not None else None
            first = inner.itemAt(0).widget() if inner is not None and inner.count() else None
            if isinstance(first, QLabel):
                yield first

    def align(self):
        labels = list(self.labels())
        for label in labels:
            label.ensurePolished()
            label.setMinimumWidth(0)
        width = max((label.sizeHint().width() for label in labels), default=0)
        for label in labels:
            label.setMinimumWidth(width)


#: widget kind -> magicgui widget class (``row``: fields side by side, see :func:`make_form`)
KINDS = {"combo": ComboBox, "spin": SpinBox, "check": CheckBox, "line": LineEdit, "file": FileEdit,
         "radio": RadioButtons, "checks": CheckRow, "row": _Row}
#: options applied to the Qt widget (magicgui has no argument for them)
_QT_OPTIONS = ("placeholder", "button")


def _choice_values(choices):
    return [c[1] if isinstance(c, tuple) else c for c in choices]


def _make_widget(name, kind, options, label, tooltip):
    if not name.isidentifier() or hasattr(Container, name):
        raise ValueError(f"form field name {name!r} is not usable: it must be an identifier that is "
                         "not an attribute of magicgui's Container (e.g. label, name, enabled)")
    if kind not in KINDS:
        raise ValueError(f"form field {name!r}: unknown kind {kind!r}, expected one of {sorted(KINDS)}")
    opts = dict(options or {})
    if kind == "row":
        widgets = []
        for i, field in enumerate(opts.pop("fields")):
            if i and field[3]:
                widgets.append(Label(value=field[3], tooltip=field[4] or None))
            widgets.append(_make_widget(*field))
        row = _Row(widgets=widgets, layout="horizontal", labels=False, name=name, label=label,
                   tooltip=tooltip or None, **opts)
        row.margins = (0, 0, 0, 0)
        return row
    qt = {k: opts.pop(k) for k in _QT_OPTIONS if k in opts}
    if kind in ("combo", "radio") and "value" in opts:
        if opts["value"] not in _choice_values(opts.get("choices", ())):
            del opts["value"]  # a stored value that is no longer offered: the first choice
    if kind == "spin" and "value" in opts:
        lo, hi = opts.get("min", 0), opts.get("max", 999)
        opts["value"] = min(max(int(opts["value"]), lo), hi)  # Qt clamps, magicgui raises
    if kind == "file":
        opts.setdefault("nullable", True)  # empty stays empty (not the working directory)
        if not opts.get("value"):
            opts.pop("value", None)
    widget = KINDS[kind](name=name, label=label, tooltip=tooltip or None, **opts)
    edit = widget.line_edit.native if kind == "file" else widget.native
    if "placeholder" in qt:
        edit.setPlaceholderText(qt["placeholder"])
    if "button" in qt:
        widget.choose_btn.text = qt["button"]
    if kind == "file" and tooltip:
        widget.line_edit.tooltip = tooltip
    if kind == "radio":  # no group-box frame: one line like the other fields
        widget.native.setFlat(True)
        widget.native.setStyleSheet("QGroupBox { border: 0; margin: 0; padding: 0; }")
        widget.native.layout().setContentsMargins(0, 0, 0, 0)
    return widget


def _names(spec):
    names = []
    for name, kind, options, *_ in spec:
        names.append(name)
        if kind == "row":
            names += _names(options["fields"])
    return names


def make_form(spec):
    """A labelled magicgui ``Container`` with one widget per row of ``spec``.

    Parameters
    ----------
    spec : sequence of tuple
        ``(name, kind, options, label, tooltip)``. ``kind`` is one of :data:`KINDS`
        (``combo``, ``spin``, ``check``, ``line``, ``file``, ``radio``, ``checks``, ``row``: the
        fields of ``options["fields"]``, a spec too, side by side, reached as ``form.<field>``;
        the row's label names the first field); ``options`` are the magicgui widget's arguments
        (``value``, ``choices``, ``min``, ``max``, ``mode``, ``filter``, ``text``, ...) plus
        ``placeholder`` (line and file edits) and ``button`` (the file edit's button text).
        magicgui's spin box (superqt's ``QLargeIntSpinBox``) has no suffix or special-value text:
        say those in the label or tooltip. A combo or radio ``value`` that is not a choice gives
        the first choice, a spin ``value`` out of range is clamped, an empty file value stays
        empty.

    Returns
    -------
    Form
        A magicgui ``Container``; widgets reached by name (``form.mode.value``); insert
        ``form.native`` in a Qt layout.

    Raises
    ------
    ValueError
        For a name that is not an identifier, is an attribute of ``Container`` (``label``,
        ``name``, ``enabled``, ...: the attribute would win) or is used twice, or an unknown kind.

    Example
    -------
    >>> form = make_form([("mode", "combo", {"choices": ("2d", "3d"), "value": "3d"}, "mode", "")])
    >>> form.mode.value
    '3d'
    """
    names = _names(spec)
    if len(set(names)) < len(names):
        raise ValueError(f"form field names must be unique, got {names}")
    form = Form(widgets=[_make_widget(*row) for row in spec], labels=True)
    form.margins = (0, 0, 0, 0)
    form._aligner = _LabelAligner(form)
    return form


def set_choices(combo, names, *, prefer=()):
    """Offer ``names`` in ``combo`` without emitting ``changed``.

    The current value stays when it is still offered, else the first of ``prefer`` that is, else
    the first name. The choices are kept by a callable, so magicgui's ``reset_choices`` (when the
    form is re-parented) keeps them too.
    """
    names = tuple(names)
    with combo.changed.blocked():
        current = combo.value
        combo.choices = ()  # rebuilt in the order given
        combo.choices = lambda _widget: names
        if current in names:
            combo.value = current
        else:
            for name in prefer:
                if name in names:
                    combo.value = name
                    break


def path_text(file_edit):
    """The text of a magicgui ``FileEdit`` as typed ("" when empty; several paths stay as typed)."""
    return file_edit.line_edit.value
