"""Lock files: one writer at a time for a review sidecar or an output folder.

A lock is a small JSON file (pid, host, token, time, what) created with ``O_CREAT | O_EXCL``.
Whoever created it holds it; :func:`holds` tells a holder whether it still does (a lock can be
taken over), :func:`release_lock` removes it only when the token is still the holder's.

A lock is *stale* when its holder cannot be running any more:

* it names a process of this host that no longer runs, or
* it is empty or unreadable (a process killed between creating and writing it, a full disk)
  and older than :data:`UNREADABLE_GRACE` seconds (younger, it may be being written right now).

Taking a stale lock over renames it to a unique name first and checks that the renamed file is
the one judged stale; a fresh lock renamed by mistake (another process took the stale one over
in between) is put back. Locks of other hosts are never judged stale: their pids mean nothing
here.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import time
import uuid
from pathlib import Path

__all__ = ["UNREADABLE_GRACE", "LockBusy", "holds", "lock_holder", "release_lock", "take_lock"]

#: Seconds after which an empty or unreadable lock file counts as stale.
UNREADABLE_GRACE = 5.0


class LockBusy(Exception):
    """The lock is held. ``holder`` is its content (``{}`` when unreadable); ``stale`` says
    whether its holder is certainly gone (see the module docstring), ``reason`` why."""

    def __init__(self, holder: dict, stale: bool, reason: str):
        super().__init__(reason)
        self.holder, self.stale, self.reason = holder, stale, reason


def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or a pid we cannot judge: assume it runs
    return True


def _read_raw(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(65536)
    except FileNotFoundError:
        return None
    except OSError:
        return b""


def _parse(raw: bytes) -> dict:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def lock_holder(path) -> dict:
    """The content of the lock file (``{}`` when missing, empty or unreadable)."""
    raw = _read_raw(Path(path))
    return {} if raw is None else _parse(raw)


def _judge(path: Path, raw: bytes) -> tuple[bool, str, dict]:
    """``(stale, reason, holder)`` of the lock whose content is ``raw``."""
    holder = _parse(raw)
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(host, str):
        try:
            age = time.time() - os.lstat(path).st_mtime
        except OSError:
            age = 0.0
        state = "empty" if not raw.strip() else "unreadable"
        if age >= UNREADABLE_GRACE:
            return True, (f"the lock file is {state} and {age:.0f} s old (left by a process killed while "
                          "taking it)"), holder
        return False, f"the lock file is {state} (being written just now?)", holder
    if host == socket.gethostname() and not _pid_alive(pid):
        return True, f"process {pid} on {host}, which is no longer running", holder
    same = host == socket.gethostname() and pid == os.getpid()
    who = "this process" if same else f"process {pid} on {host}"
    return False, f"{who} (since {holder.get('created', '?')})", holder


def _remove_stale(path: Path, judged: bytes) -> None:
    grave = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return  # someone else removed it: try to create ours
    try:
        if _read_raw(grave) != judged:  # not the lock judged stale: a fresh one, give it back
            with contextlib.suppress(OSError):
                os.link(grave, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(grave)


def take_lock(path, *, what: str = "", take_over_stale: bool = False) -> str:
    """Create the lock file ``path``; return the new holder's token.

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        Recorded in the lock (e.g. ``"metrics run"``), for the messages of others.
    take_over_stale : bool, default False
        Remove a stale lock (see the module docstring) and take it.

    Returns
    -------
    str
        The token; pass it to :func:`holds` and :func:`release_lock`.

    Raises
    ------
    LockBusy
        The lock is held (``stale`` false), or is stale and ``take_over_stale`` is false.
    OSError
        The lock file cannot be created (e.g. a read-only folder).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> lock = pathlib.Path(tempfile.mkdtemp()) / "x.lock"
    >>> token = take_lock(lock)
    >>> holds(lock, token), release_lock(lock, token), lock.exists()
    (True, None, False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    me = {"pid": os.getpid(), "host": socket.gethostname(), "token": token, "created": _now(),
          "what": what}
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        except FileExistsError:
            raw = _read_raw(path)
            if raw is None:  # released meanwhile
                continue
            stale, reason, holder = _judge(path, raw)
            if not stale or not take_over_stale:
                raise LockBusy(holder, stale, reason) from None
            _remove_stale(path, raw)
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return token
    raise LockBusy(lock_holder(path), False, "the lock changed hands repeatedly while taking it")


def holds(path, token) -> bool:
    """Whether the lock file ``path`` still holds ``token``."""
    return token is not None and lock_holder(path).get("token") == token


def release_lock(path, token) -> None:
    """Remove the lock file when it still holds ``token`` (a lock taken over is left alone)."""
    if holds(path, token):
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
