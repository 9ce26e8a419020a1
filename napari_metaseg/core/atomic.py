"""Atomic file writes: a reader, or a resumed run, sees the old file or the new one, never half.

Every file the package writes goes through this module. The data is written to a temporary file
in the destination folder, flushed to disk (``fsync``) and renamed over the destination
(``os.replace``, atomic within one file system); the folder is then fsync'ed so that the rename
survives a power cut. When anything fails (a full disk, a library error, Ctrl-C) the temporary
file is removed and the old destination is left byte-identical.

The temporary file is created by this module with ``O_CREAT | O_EXCL`` under an unpredictable
name, so it is never a file or symlink planted by someone else, and a library that then writes
through the path writes into our own new file.

Temporary names follow one recognisable pattern::

    .<target name>.<pid>.<host tag><random>.tmp[<suffix>]

``pid`` is the writing process, ``host tag`` the first 8 hex digits of the SHA-256 of the host
name and ``random`` 24 hex digits from :mod:`secrets`; ``suffix`` (e.g. ``.nii.gz``) is there
for libraries that pick the format from the name. A killed writer leaves such a file behind:
:func:`leftover_temporaries` lists them and :func:`remove_leftovers` removes the stale ones
(writer dead, or untouched for ``older_than`` seconds), never a running writer's.

Standard library only: this module is imported by ``core``, ``io`` and the widgets alike.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "STALE_AFTER",
    "TMP_SUFFIX",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "leftover_temporaries",
    "remove_leftovers",
]

#: Marker of this writer's temporary files (followed only by an optional format suffix).
TMP_SUFFIX = ".tmp"
#: Seconds after which a temporary file whose writer may still run counts as left over.
STALE_AFTER = 600.0

# file names must stay below NAME_MAX (255 bytes) with the pid, the token and the suffixes added
_NAME_BYTES = 120
_SUFFIX_RE = re.compile(r"(?:\.[A-Za-z0-9]{1,10}){0,3}")
_TMP_RE = re.compile(
    r"\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})\.(?P<token>[0-9a-f]{12,64})"
    + re.escape(TMP_SUFFIX)
    + r"(?P<suffix>(?:\.[A-Za-z0-9]{1,10}){0,3})",
    re.DOTALL,
)
_HOST_TAG = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def _random_token() -> str:
    """The unpredictable part of a temporary name (tests replace it to force a collision)."""
    return _HOST_TAG + secrets.token_hex(12)


def _short_name(name: str) -> str:
    """``name`` cut to at most ``_NAME_BYTES`` bytes in the file system encoding."""
    while len(os.fsencode(name)) > _NAME_BYTES:
        name = name[:-1]
    return name


def _create(path: Path, suffix: str) -> tuple[Path, int]:
    """Create this writer's new temporary file beside ``path``; return its path and a write fd."""
    if not _SUFFIX_RE.fullmatch(suffix):
        raise ValueError(f"suffix must look like '.nii.gz' (up to 3 short extensions), got {suffix!r}")
    if not path.name:
        raise ValueError(f"path must name a file, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{_short_name(path.name)}.{os.getpid()}.{_random_token()}{TMP_SUFFIX}{suffix}")
    # O_EXCL: fails on any existing entry, a symlink included, instead of writing through it;
    # the mode is reduced by the umask as for any new file
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW | _O_BINARY
    return tmp, os.open(tmp, flags, 0o644)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:  # file systems without fsync; real failures (EIO, ENOSPC) propagate
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


def _fsync_path(tmp: Path) -> None:
    # fsync works on a read-only descriptor on POSIX; Windows needs write access
    flags = (os.O_RDWR if os.name == "nt" else os.O_RDONLY) | _O_CLOEXEC | _O_NOFOLLOW | _O_BINARY
    fd = os.open(tmp, flags)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:  # makes the rename durable on POSIX; not possible on every platform
        fd = os.open(folder, os.O_RDONLY | _O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    if not stat.S_ISREG(os.lstat(tmp).st_mode):
        raise OSError(errno.EEXIST, "the temporary file was replaced by something else", str(tmp))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path, *, suffix: str = "") -> Iterator[Path]:
    """Context manager giving a new temporary path beside ``path``, renamed onto it on success.

    The temporary file already exists (empty, created by this function with ``O_EXCL``) when the
    block starts; write it by name with any library. When the block ends normally the file is
    fsync'ed, renamed onto ``path`` and the folder fsync'ed. When it raises, the temporary file
    is removed, ``path`` is left as it was and the exception propagates. Missing parent folders
    of ``path`` are created.

    Parameters
    ----------
    path : str or os.PathLike
        The destination file.
    suffix : str, default ""
        Appended to the temporary name, for libraries that choose the format from the name
        (``".nii.gz"`` for nibabel). At most three extensions of letters and digits.

    Yields
    ------
    pathlib.Path
        The temporary file, in the destination's folder.

    Raises
    ------
    ValueError
        If ``suffix`` is not a plain extension.
    OSError
        If the temporary file cannot be created (``FileExistsError`` when its name is taken,
        which only a deliberately planted file can cause), written, synced or renamed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("a,b\\n1,2\\n")
    >>> out.read_text()
    'a,b\\n1,2\\n'
    """
    path = Path(path)
    tmp, fd = _create(path, suffix)
    try:
        os.close(fd)
        yield tmp
        _fsync_path(tmp)
        _commit(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def atomic_write_bytes(path, data, *, _pause_halfway: float = 0.0) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, folder fsync).

    Parameters
    ----------
    path : str or os.PathLike
        The destination file; missing parent folders are created.
    data : bytes-like
        The whole new content.
    _pause_halfway : float, default 0
        Test hook: seconds to sleep after half of ``data`` is written, so that a test can kill
        the process with a half-written temporary file.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    TypeError
        If ``data`` is not bytes-like (a ``str`` goes to :func:`atomic_write_text`).
    OSError
        If writing fails (e.g. ``ENOSPC``); ``path`` is then unchanged and no temporary is left.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = atomic_write_bytes(pathlib.Path(tempfile.mkdtemp()) / "x.bin", b"\\x00\\x01")
    >>> p.read_bytes()
    b'\\x00\\x01'
    """
    if isinstance(data, str):
        raise TypeError("data must be bytes-like, got str; use atomic_write_text")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"data must be bytes-like, got {type(data).__name__}") from None
    path = Path(path)
    tmp, fd = _create(path, "")
    try:
        try:
            half = view.nbytes // 2
            flat = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
            _write_all(fd, flat[:half])
            if _pause_halfway:
                time.sleep(_pause_halfway)
            _write_all(fd, flat[half:])
            _fsync(fd)
        finally:
            os.close(fd)
        _commit(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    return path


def atomic_write_text(path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Newlines are written as they are in ``text`` (no translation to ``os.linesep``).

    Parameters
    ----------
    path : str or os.PathLike
    text : str
    encoding : str, default "utf-8"

    Returns
    -------
    pathlib.Path

    Raises
    ------
    TypeError
        If ``text`` is not a ``str``.
    OSError
        If writing fails; ``path`` is then unchanged and no temporary is left.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> atomic_write_text(pathlib.Path(tempfile.mkdtemp()) / "s.json", "{}").read_text()
    '{}'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode(encoding))


def _pid_dead(pid: int) -> bool:
    """True only when ``pid`` certainly runs no more on this host."""
    if os.name != "posix" or pid <= 0:
        return False  # on Windows os.kill(pid, 0) would send CTRL_C_EVENT
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: another user's live process
        return False
    return False


def _stale(match, st, older_than: float, now: float) -> bool:
    if now - st.st_mtime >= older_than:
        return True
    pid = int(match["pid"])
    # a pid is only meaningful on the host that wrote it (shared folders, containers)
    mine = match["token"].startswith(_HOST_TAG) and len(match["token"]) == len(_HOST_TAG) + 24
    return mine and pid != os.getpid() and _pid_dead(pid)


def _scan(folder: Path, name: str | None, older_than: float | None) -> list[Path]:
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    want = None if name is None else _short_name(name)
    now = time.time()
    found = []
    for entry in entries:
        m = _TMP_RE.fullmatch(entry.name)
        if m is None or (want is not None and m["name"] != want):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):  # never a symlink, folder or device
            continue
        if older_than is None or _stale(m, st, older_than, now):
            found.append(Path(entry.path))
    return sorted(found)


def leftover_temporaries(path_or_folder, *, older_than: float | None = None) -> list[Path]:
    """This writer's temporary files beside a target file, or in a folder.

    Only regular files whose name follows this module's pattern are listed; symlinks and
    folders never are.

    Parameters
    ----------
    path_or_folder : str or os.PathLike
        A folder (every temporary in it) or a target file (its temporaries, beside it).
    older_than : float, optional
        When given, only stale temporaries: untouched for ``older_than`` seconds, or written
        on this host by a process that no longer runs. By default every one, a running
        writer's included.

    Returns
    -------
    list of pathlib.Path
        Sorted.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> leftover_temporaries(pathlib.Path(tempfile.mkdtemp()) / "table.parquet")
    []
    """
    p = Path(path_or_folder)
    if p.is_dir():
        return _scan(p, None, older_than)
    return _scan(p.parent, p.name, older_than)


def remove_leftovers(folder, name: str | None = None, *, older_than: float = STALE_AFTER) -> list[Path]:
    """Delete the stale temporary files that killed writers left in ``folder``.

    A temporary counts as stale when its writer, on this host, no longer runs (its pid is in
    the name), or when it has not been modified for ``older_than`` seconds (a writer on another
    host, a reused pid). A temporary being written right now by another process or thread is
    kept. Symlinks and anything else that is not a regular file are never touched.

    Parameters
    ----------
    folder : str or os.PathLike
    name : str, optional
        Only the temporaries of this target file name.
    older_than : float, default STALE_AFTER (600 s)
        ``0`` removes every temporary, a running writer's included.

    Returns
    -------
    list of pathlib.Path
        The files removed.

    Raises
    ------
    ValueError
        If ``older_than`` is negative.

    Examples
    --------
    >>> import tempfile
    >>> remove_leftovers(tempfile.mkdtemp())
    []
    """
    if not older_than >= 0:
        raise ValueError(f"older_than must be >= 0 seconds, got {older_than!r}")
    removed = []
    for tmp in _scan(Path(folder), name, float(older_than)):
        try:
            os.unlink(tmp)  # removes the entry itself, never what it might point to
        except FileNotFoundError:
            continue
        removed.append(tmp)
    return removed
