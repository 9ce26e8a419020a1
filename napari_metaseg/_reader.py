"""npe2 reader: NIfTI, NumPy, TIFF and PNG files as image, labels or probability layers.

A thin wrapper over :func:`napari_metaseg.io.read_layers`. Files with a suffix this plugin does
not handle get ``None`` (napari then asks another reader); files it should handle but cannot
read produce an error notification naming the problem and no layer, never an exception that
would reach napari's event loop.
"""

from __future__ import annotations

from .io.layers import SUFFIXES, read_layers, suffix_of


def get_reader(path):
    """Return a reader function for ``path`` or None when this plugin does not handle it."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if suffix_of(path) not in SUFFIXES:
        return None
    return read_path


def read_path(path, *, kind="auto"):
    """Read ``path`` into layer data tuples; on failure notify and return napari's empty sentinel."""
    if isinstance(path, list):
        path = path[0]
    try:
        return read_layers(path, kind=kind)
    except (ValueError, TypeError, OSError, MemoryError) as exc:
        from napari.utils.notifications import show_error

        show_error(f"napari-metaseg could not read {path}: {exc}")
        return [(None,)]
