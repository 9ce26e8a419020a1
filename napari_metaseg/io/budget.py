"""One input budget: refuse a file whose header claims more bytes than the budget, before reading.

A 68-byte ``.nii.gz`` can claim 1000 x 1000 x 200 x 4 float32 voxels (3.2 GB) and a 3 MB
``.npz`` can decompress to 4 GB: a reader that trusts the header allocates first and fails
later, or takes the machine down. Every reader of :mod:`napari_metaseg.io` asks this module
first, with the shape and dtype the file *claims* (NIfTI header, ``.npy`` header, ``.npz``
member header and declared size, TIFF series, PNG header), and the data of ``.npz`` members is
then streamed into an array of exactly the claimed size, so a member holding more than its
header says is refused after one extra byte.

The budget, in bytes, is the first of:

1. the ``max_bytes`` keyword of the reader;
2. the environment variable ``NAPARI_METASEG_MAX_BYTES`` (an integer, optionally with a
   ``K``/``M``/``G``/``T`` suffix, powers of 1024: ``"8G"``);
3. half of the memory available now (``MemAvailable`` of ``/proc/meminfo``, else
   ``sysconf(SC_AVPHYS_PAGES) * SC_PAGE_SIZE``), at least 64 MiB; 4 GiB where neither is known.

The budget applies to each file as stored (the sum over the arrays of an ``.npz``), not to the
float32 copies made from it later.

Independently of the budget, a claim is refused when the file cannot hold it
(:func:`check_stored`): an uncompressed file must be at least as long as its data, and deflate
(gzip, zip, PNG) expands at most :data:`MAX_DEFLATE_RATIO` times, so a 68-byte ``.nii.gz``
cannot hold 3.2 GB whatever the budget.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["ENV_MAX_BYTES", "MAX_DEFLATE_RATIO", "InputTooLargeError", "check_claim", "check_stored",
           "describe_error", "format_bytes", "input_budget", "read_npy", "read_npz"]

#: Environment variable overriding the input budget (bytes; ``K``/``M``/``G``/``T`` suffixes).
ENV_MAX_BYTES = "NAPARI_METASEG_MAX_BYTES"
#: Smallest default budget, whatever the free memory says.
MIN_DEFAULT = 64 * 2**20
#: Budget when the available memory cannot be read.
FALLBACK = 4 * 2**30
#: Largest expansion of deflate (gzip, zip, PNG): one 258-byte match per 2 bits at best, ~1032:1.
MAX_DEFLATE_RATIO = 1032
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_CHUNK = 1 << 22


class InputTooLargeError(ValueError):
    """A file claims (or holds) more data than the input budget allows; nothing was allocated."""


def format_bytes(n: int) -> str:
    """``"3.2 GB (3200000000 bytes)"``-style text for messages."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def describe_error(exc: BaseException) -> str:
    """``str(exc)``, or the exception's type name when that is empty (``MemoryError()``)."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _parse_bytes(text: str, origin: str) -> int:
    m = re.fullmatch(r"\s*([0-9]+)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if m is None or int(m[1]) <= 0:
        raise ValueError(f"{origin} must be a positive number of bytes such as 2000000000 or 8G, "
                         f"got {text!r}")
    return int(m[1]) * _UNITS[m[2].upper()]


def input_budget(max_bytes=None) -> int:
    """The input budget in bytes (see the module docstring for the order of the sources).

    Parameters
    ----------
    max_bytes : int or str, optional
        Explicit budget; ``"8G"`` style strings are accepted.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        ``max_bytes`` or the environment variable is not a positive size.

    Examples
    --------
    >>> input_budget(1000)
    1000
    >>> input_budget("2K")
    2048
    """
    if max_bytes is not None:
        if isinstance(max_bytes, (int, np.integer)) and not isinstance(max_bytes, bool):
            if max_bytes <= 0:
                raise ValueError(f"max_bytes must be positive, got {max_bytes}")
            return int(max_bytes)
        return _parse_bytes(max_bytes, "max_bytes")
    env = os.environ.get(ENV_MAX_BYTES, "").strip()
    if env:
        return _parse_bytes(env, ENV_MAX_BYTES)
    avail = _available_memory()
    return FALLBACK if avail is None else max(MIN_DEFAULT, avail // 2)


def _budget_origin(max_bytes) -> str:
    if max_bytes is not None:
        return "the max_bytes given"
    if os.environ.get(ENV_MAX_BYTES, "").strip():
        return f"{ENV_MAX_BYTES}"
    return f"half the available memory; set {ENV_MAX_BYTES} (e.g. 16G) to change it"


def check_claim(shape, dtype, *, what, max_bytes=None, already: int = 0) -> int:
    """Refuse an array of ``shape`` and ``dtype`` that does not fit the input budget.

    Parameters
    ----------
    shape : sequence of int
        The shape a file claims.
    dtype : numpy dtype-like
    what : str
        Names the file (and member) in the message.
    max_bytes : int or str, optional
        See :func:`input_budget`.
    already : int, default 0
        Bytes already claimed by earlier arrays of the same file.

    Returns
    -------
    int
        The claimed bytes of this array.

    Raises
    ------
    InputTooLargeError
        ``already`` + the claimed bytes exceed the budget; the message names the claimed shape,
        dtype, bytes and the budget.
    ValueError
        A negative dimension.

    Examples
    --------
    >>> check_claim((4, 4), "float32", what="a.npy", max_bytes=1000)
    64
    """
    return _check(shape, dtype, what, input_budget(max_bytes), _budget_origin(max_bytes), already)


def _check(shape, dtype, what, budget, origin, already=0):
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"{what}: the header claims a negative dimension, shape {shape}")
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if already + nbytes > budget:
        more = f" (plus {format_bytes(already)} in its other arrays)" if already else ""
        raise InputTooLargeError(
            f"{what} claims an array of shape {shape} {dtype.name} = {format_bytes(nbytes)}{more}, "
            f"more than the input budget of {format_bytes(budget)} ({origin}); nothing was read")
    return nbytes


def check_stored(nbytes: int, stored: int, *, what: str, compressed: bool) -> None:
    """Refuse a claim of ``nbytes`` of data that ``stored`` bytes of file cannot hold.

    Parameters
    ----------
    nbytes : int
        Bytes of data the header claims.
    stored : int
        Bytes of the file (or member) that hold them: the data part of an uncompressed file, the
        compressed size of a deflated one.
    what : str
        Names the file in the message.
    compressed : bool
        Deflated data (gzip, zip, PNG): at most :data:`MAX_DEFLATE_RATIO` times ``stored``.

    Raises
    ------
    ValueError
        The file is truncated, or its header was crafted; nothing is allocated.

    Examples
    --------
    >>> check_stored(3_200_000_000, 68, what="bomb.nii.gz", compressed=True)
    Traceback (most recent call last):
    ...
    ValueError: bomb.nii.gz claims 3.0 GiB (3200000000 bytes) of data, but its 68 bytes cannot ...
    """
    if compressed:
        if nbytes > stored * MAX_DEFLATE_RATIO + 4096:
            raise ValueError(f"{what} claims {format_bytes(nbytes)} of data, but its {format_bytes(stored)} "
                             f"cannot hold that much even at deflate's best ratio ({MAX_DEFLATE_RATIO}:1): "
                             "the file is truncated or crafted; nothing was read")
    elif nbytes > stored:
        raise ValueError(f"{what} claims {format_bytes(nbytes)} of data but holds {format_bytes(stored)}: "
                         "the file is truncated or crafted; nothing was read")


# ============================================================================================
# .npy and .npz with the budget
# ============================================================================================
def _npy_header(f, what):
    """``(shape, fortran_order, dtype)`` from an open ``.npy`` stream positioned at its start."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise ValueError(f"{what} is not a readable .npy array: {describe_error(exc)}") from exc
    if dtype.hasobject:
        raise ValueError(f"{what} holds Python objects (dtype {dtype}), which would need pickle; "
                         "only numeric arrays are read")
    return shape, fortran, dtype


def _fill(f, arr, what, claimed):
    """Read exactly ``arr.nbytes`` bytes of ``f`` into ``arr``; refuse a longer or shorter stream."""
    view = memoryview(arr.reshape(-1, order="A").view(np.uint8))
    got = 0
    while got < len(view):
        n = f.readinto(view[got: got + _CHUNK])
        if not n:
            raise ValueError(f"{what} is truncated: its header claims {format_bytes(claimed)} of data, "
                             f"it holds {format_bytes(got)}")
        got += n
    if f.read(1):
        raise InputTooLargeError(f"{what} holds more data than its header claims "
                                 f"({format_bytes(claimed)}); refused after reading that much")


def read_npy(path, *, max_bytes=None) -> np.ndarray:
    """Read a ``.npy`` file after checking its header against the input budget.

    Raises
    ------
    InputTooLargeError
        The header claims more than the budget.
    ValueError
        Not a ``.npy`` file, object dtype, truncated, or longer than claimed.

    Examples
    --------
    >>> read_npy("a.npy")  # doctest: +SKIP
    """
    what = str(path)
    with open(path, "rb") as f:
        shape, fortran, dtype = _npy_header(f, what)
        nbytes = check_claim(shape, dtype, what=what, max_bytes=max_bytes)
        check_stored(nbytes, os.fstat(f.fileno()).st_size - f.tell(), what=what, compressed=False)
        arr = np.empty(shape, dtype, order="F" if fortran else "C")
        _fill(f, arr, what, nbytes)
    return arr


def read_npz(path, *, max_bytes=None) -> list:
    """The arrays of an ``.npz`` archive as ``[(name, array)]``, within the input budget.

    Each member's declared uncompressed size and its ``.npy`` header are checked against the
    budget (summed over the members) before anything is decompressed; the data is then
    decompressed in chunks straight into an array of the claimed size, and a member that holds
    more is refused after one extra byte. The archive is not extracted to disk.

    Raises
    ------
    InputTooLargeError
        A declared or claimed size beyond the budget, or a member longer than its header says.
    ValueError
        Not a zip archive, a member that is not a ``.npy`` array, object dtype, truncation,
        a CRC error.

    Examples
    --------
    >>> read_npz("case.npz")  # doctest: +SKIP
    [('softmax', array(...))]
    """
    budget, origin = input_budget(max_bytes), _budget_origin(max_bytes)
    out, claimed = [], 0
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as a .npz archive: {describe_error(exc)}") from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        declared = sum(i.file_size for i in infos)
        if declared > budget:
            raise InputTooLargeError(
                f"{path}: its members declare {format_bytes(declared)} uncompressed (from "
                f"{format_bytes(Path(path).stat().st_size)} on disk), more than the input budget of "
                f"{format_bytes(budget)} ({origin}); nothing was decompressed")
        for info in infos:
            name = info.filename
            what = f"{path} member {name}"
            if not name.endswith(".npy"):
                raise ValueError(f"{what} is not a .npy array; an .npz archive holds only arrays")
            try:
                with zf.open(info) as f:
                    shape, fortran, dtype = _npy_header(f, what)
                    nbytes = _check(shape, dtype, what, budget, origin, claimed)
                    claimed += nbytes
                    header = f.tell() if f.seekable() else 0
                    # the member's declared size, and what its compressed bytes can expand to
                    check_stored(nbytes, info.file_size - header, what=what, compressed=False)
                    check_stored(nbytes, info.compress_size, what=what,
                                 compressed=info.compress_type != zipfile.ZIP_STORED)
                    arr = np.empty(shape, dtype, order="F" if fortran else "C")
                    _fill(f, arr, what, nbytes)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError,
                    NotImplementedError) as exc:  # CRC errors, encryption, unknown compression
                raise ValueError(f"cannot read {what}: {describe_error(exc)}") from exc
            out.append((name[: -len(".npy")], arr))
    return out
