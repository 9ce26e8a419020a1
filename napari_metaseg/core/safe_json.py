"""Reading untrusted JSON files with limits: size (also after gzip), nesting depth, numbers.

Model files and review sidecars come from other people. :func:`json.loads` on such a file can
allocate without bound (a gzip bomb, a huge file), recurse until ``RecursionError`` (100 000
nested brackets), or give numbers that later raise ``OverflowError`` (a 400-digit integer) or
turn into ``inf`` (``1e999``). :func:`load_json_file` checks all of these first and raises one
error type, :class:`JSONLimitError`, naming the limit, so that each loader can turn it into its
own error (``MetaModelFileError``, ``ReviewFileError``).

Standard library only.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import zlib
from pathlib import Path

__all__ = ["MAX_INT_DIGITS", "JSONLimitError", "check_depth", "load_json_bytes", "load_json_file",
           "read_limited", "short_repr"]

#: Longest integer literal accepted (digits, sign excluded): every int64 fits, 10**19 does not.
MAX_INT_DIGITS = 19
_CHUNK = 1 << 20


class JSONLimitError(ValueError):
    """A JSON file exceeds a limit (size, decompressed size, nesting, a number) or is not JSON."""


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages never quote a whole file)."""
    if isinstance(value, (list, dict)) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def read_limited(path, *, max_bytes: int) -> bytes:
    """The bytes of ``path``, gunzipped when they start with the gzip magic, at most ``max_bytes``.

    The file is read, and a gzip stream decompressed, in chunks: a file or stream longer than
    ``max_bytes`` is refused after reading ``max_bytes + 1`` bytes, never loaded whole.

    Raises
    ------
    JSONLimitError
        The file, or its decompressed content, exceeds ``max_bytes``, or the gzip stream is
        damaged.
    OSError
        The file cannot be read.
    """
    path = Path(path)
    size = os.stat(path).st_size
    if size > max_bytes:
        raise JSONLimitError(f"the file has {_mib(size)}, more than the {_mib(max_bytes)} this reader "
                             "accepts")
    buf = io.BytesIO()
    with open(path, "rb") as f:  # in chunks: f.read(n) would allocate n bytes at once
        while chunk := f.read(_CHUNK):
            buf.write(chunk)
            if buf.tell() > max_bytes:  # grew while being read
                raise JSONLimitError(f"the file has more than the {_mib(max_bytes)} this reader accepts")
    raw = buf.getvalue()
    if raw[:2] != b"\x1f\x8b":
        return raw
    return _gunzip_limited(raw, max_bytes=max_bytes)


def _gunzip_limited(raw: bytes, *, max_bytes: int) -> bytes:
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as z:
            while True:
                chunk = z.read(_CHUNK)
                if not chunk:
                    break
                if out.tell() + len(chunk) > max_bytes:
                    raise JSONLimitError(
                        f"the gzip stream decompresses to more than {_mib(max_bytes)} (from "
                        f"{_mib(len(raw))} compressed), more than this reader accepts")
                out.write(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise JSONLimitError(f"a damaged or truncated gzip file: {exc or type(exc).__name__}") from exc
    return out.getvalue()


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONLimitError(f"an integer of {len(text.lstrip('-'))} digits ({text[:12]}...); at most "
                             f"{MAX_INT_DIGITS} digits are accepted")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError(f"the number {text[:24]} is too large for a 64-bit float")
    return value


class _BadNumber:
    """Stands for a refused number in the second, locating parse (see :func:`load_json_bytes`)."""

    def __init__(self, problem):
        self.problem = problem


def _mark_int(text):
    try:
        return _parse_int(text)
    except JSONLimitError as exc:
        return _BadNumber(str(exc))


def _mark_float(text):
    try:
        return _parse_float(text)
    except JSONLimitError as exc:
        return _BadNumber(str(exc))


def _locate_bad_number(text: str) -> str | None:
    """``"<path>: <problem>"`` of the first refused number of ``text`` (which is valid JSON)."""
    try:
        doc = json.loads(text, parse_int=_mark_int, parse_float=_mark_float,
                         parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    stack = [(doc, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, _BadNumber):
            return f"{where or 'the document'}: {node.problem}"
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(list(items)))
    return None


def _reject_constant(name: str):
    raise JSONLimitError(f"not valid JSON (the non-standard constant {name})")


def check_depth(obj, max_depth: int) -> None:
    """Raise :class:`JSONLimitError` when ``obj`` nests lists/objects deeper than ``max_depth``.

    Iterative (a deep document cannot make it recurse).
    """
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise JSONLimitError(f"lists/objects are nested more than {max_depth} levels deep")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (list, dict)))


def load_json_bytes(raw: bytes, *, max_depth: int):
    """Parse UTF-8 JSON with the number and depth limits (see the module docstring).

    Raises
    ------
    JSONLimitError
        Not UTF-8, not valid JSON, ``NaN``/``Infinity`` constants, an integer of more than
        :data:`MAX_INT_DIGITS` digits, a float beyond the float64 range, nesting deeper than
        ``max_depth``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONLimitError(f"not valid JSON (not UTF-8 text: {exc})") from exc
    try:
        doc = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                         parse_constant=_reject_constant)
    except RecursionError:
        raise JSONLimitError(f"lists/objects are nested more than {max_depth} levels deep") from None
    except json.JSONDecodeError as exc:
        raise JSONLimitError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    except JSONLimitError as exc:
        if "JSON" in str(exc):
            raise
        where = _locate_bad_number(text)  # a second parse, only to say where the number is
        raise JSONLimitError(where or str(exc)) from None
    check_depth(doc, max_depth)
    return doc


def load_json_file(path, *, max_bytes: int, max_depth: int):
    """:func:`read_limited` then :func:`load_json_bytes`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> _ = p.write_text('{"a": [1, 2.5]}')
    >>> load_json_file(p, max_bytes=1000, max_depth=4)
    {'a': [1, 2.5]}
    """
    return load_json_bytes(read_limited(path, max_bytes=max_bytes), max_depth=max_depth)
