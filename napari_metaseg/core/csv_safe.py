"""CSV files that a spreadsheet opens as data: cells that would start a formula are quoted.

Case names, notes and file names are user text. A cell beginning with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return is run as a formula by Excel, LibreOffice and Google Sheets
when the CSV is opened (``=HYPERLINK(...)``, ``=cmd|...``). Every CSV the package writes goes
through this module, which prefixes such *text* cells with a single quote ``'`` (the
spreadsheets' own "this is text" mark); numbers are written as they are (``-0.5`` stays a
number). Reading the package's own CSV files back (:func:`unescape_frame`) removes exactly the
quote that was added, so a case named ``=A1`` round-trips.

The rule is reversible: a text whose first character after any leading quotes is a trigger gets
one more quote; only such texts lose one quote when read back.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FORMULA_TRIGGERS", "escape_cell", "escape_frame", "escape_row", "unescape_cell",
           "unescape_frame", "write_csv"]

#: First characters that make a spreadsheet treat a cell as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _needs_quote(text: str) -> bool:
    return text.lstrip("'")[:1] in FORMULA_TRIGGERS


def escape_cell(value):
    """``value`` with a leading ``'`` when it is a text a spreadsheet would run as a formula.

    Examples
    --------
    >>> escape_cell("=HYPERLINK(1)"), escape_cell("case_01"), escape_cell(-0.5)
    ("'=HYPERLINK(1)", 'case_01', -0.5)
    """
    if isinstance(value, str) and _needs_quote(value):
        return "'" + value
    return value


def unescape_cell(value):
    """The inverse of :func:`escape_cell`.

    Examples
    --------
    >>> unescape_cell("'=A1"), unescape_cell("'quoted"), unescape_cell("''=A1")
    ('=A1', "'quoted", "'=A1")
    """
    if isinstance(value, str) and value.startswith("'") and _needs_quote(value):
        return value[1:]
    return value


def escape_row(row) -> list:
    """A row for :class:`csv.writer` with :func:`escape_cell` applied to every cell."""
    return [escape_cell(v) for v in row]


def _text_columns(frame):
    from pandas.api.types import is_object_dtype, is_string_dtype

    return [c for c in frame.columns if is_object_dtype(frame[c].dtype) or is_string_dtype(frame[c].dtype)]


def escape_frame(frame):
    """A copy of a pandas DataFrame whose text cells and column names are escaped."""
    out = frame.copy()
    for c in _text_columns(out):
        out[c] = out[c].map(escape_cell)
    out.columns = [escape_cell(c) if isinstance(c, str) else c for c in out.columns]
    return out


def unescape_frame(frame):
    """A copy of a DataFrame read from a CSV of this package, with :func:`unescape_cell` applied to
    its text cells and column names."""
    out = frame.copy()
    for c in _text_columns(out):
        out[c] = out[c].map(unescape_cell)
    out.columns = [unescape_cell(c) if isinstance(c, str) else c for c in out.columns]
    return out


def write_csv(frame, path, **kwargs) -> Path:
    """Write a DataFrame as CSV atomically (:mod:`napari_metaseg.core.atomic`), text cells escaped.

    Parameters
    ----------
    frame : pandas.DataFrame
    path : str or os.PathLike
    **kwargs
        Passed to :meth:`pandas.DataFrame.to_csv` (``index=False`` unless given).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib, pandas as pd
    >>> p = write_csv(pd.DataFrame({"case": ["=1+1"], "x": [-1]}), pathlib.Path(tempfile.mkdtemp()) / "t.csv")
    >>> p.read_text().splitlines()
    ['case,x', "'=1+1,-1"]
    """
    from .atomic import atomic_path

    kwargs.setdefault("index", False)
    path = Path(path)
    with atomic_path(path) as tmp:
        escape_frame(frame).to_csv(tmp, **kwargs)
    return path
