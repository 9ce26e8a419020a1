"""Class names from a sidecar file beside a softmax or label file.

Looked for, in this order, beside ``<stem>.<ext>`` (``<stem>`` = the name without its suffix):

* ``<stem>.json`` with ``"class_names": ["background", "CSF", ...]`` (names of classes 0, 1, ...)
  or ``"labels": {"0": "background", "1": "CSF", ...}``;
* ``<stem>.tsv``, else ``dseg.tsv`` in the same folder (BIDS' segmentation look-up table): a
  tab-separated table with the columns ``index`` and ``name``.

Missing or unreadable sidecars give None (the panels then say ``class k``); a sidecar is never
executed and is read only up to :data:`MAX_BYTES`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .layers import suffix_of

__all__ = ["MAX_BYTES", "class_names_beside", "parse_class_names"]

#: Largest sidecar read (a look-up table of a few hundred classes is a few KiB).
MAX_BYTES = 1 << 20
MAX_CLASSES = 4096


def _read(path: Path):
    if not path.is_file() or path.stat().st_size > MAX_BYTES:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _from_mapping(mapping):
    out = {}
    for key, name in mapping.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            continue
        if 0 <= k < MAX_CLASSES and isinstance(name, str):
            out[k] = name.strip()
    if not out:
        return None
    return [out.get(k, f"class {k}") for k in range(max(out) + 1)]


def parse_class_names(text, *, kind):
    """Names of classes 0, 1, ... from a sidecar's text (``kind``: ``"json"`` or ``"tsv"``), or None."""
    if kind == "json":
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        names = doc.get("class_names")
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return [n.strip() for n in names[:MAX_CLASSES]]
        labels = doc.get("labels")
        return _from_mapping(labels) if isinstance(labels, dict) else None
    rows = csv.DictReader(io.StringIO(text), delimiter="\t")
    if not rows.fieldnames or "index" not in rows.fieldnames or "name" not in rows.fieldnames:
        return None
    return _from_mapping({r.get("index"): r.get("name") for r in rows})


def class_names_beside(path):
    """Class names from the sidecar of ``path`` (see the module docstring), or None."""
    path = Path(str(path))
    stem = path.name[: len(path.name) - len(suffix_of(path.name))] if suffix_of(path.name) else path.stem
    for candidate, kind in ((path.with_name(stem + ".json"), "json"), (path.with_name(stem + ".tsv"), "tsv"),
                            (path.with_name("dseg.tsv"), "tsv")):
        text = _read(candidate)
        if text is not None:
            names = parse_class_names(text, kind=kind)
            if names:
                return names
    return None
