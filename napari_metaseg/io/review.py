"""The label-error review store: a sidecar JSON file holding the proposals and the decisions.

No Qt, no napari. One review of one case lives in one file, ``<gt stem>.metaseg-review.json``
next to the ground truth (GT) when its folder is writable, else in a per-user folder (see
:func:`sidecar_path`). The file holds a format version, the case identity (paths, SHA-256 of the
GT, shapes), the ranked proposals of :func:`napari_metaseg.core.find_label_errors` and, for each
proposal, the reviewer's decision (``"label_error"``, ``"not_error"``, ``"unsure"`` or none),
a note and a timestamp, plus the corrected GT files written back.

Reliability:

* every change is written at once, atomically: a temporary file in the same folder is written,
  flushed and fsync'ed, then renamed over the sidecar (``os.replace``); a crash or a kill loses
  at most the change being written, never the earlier ones;
* a lock file ``<sidecar>.lock`` (:mod:`napari_metaseg.io.locks`: created with
  ``O_CREAT | O_EXCL``, holding pid, host and a token) keeps a second viewer or process from
  writing the same review: it gets :class:`ReviewLockedError` (it may still open the review
  read-only). A lock left by a dead process on this host, or an empty or unreadable lock file
  older than a few seconds, raises :class:`StaleLockError` and can be taken over explicitly
  (``take_over_stale=True``). Before each write the store checks that the lock is still its own;
* the sidecar is read only *after* the lock is taken, so a store that gets the lock the moment
  another one closes starts from that one's last decision, never from an older copy;
* temporaries of killed saves beside the sidecar are removed when the lock is taken (those of a
  writer that no longer runs, or older than 10 minutes);
* loading validates the file: invalid JSON, another format, a newer format version, a GT whose
  hash or shape differs from the recorded one, malformed proposals, a file beyond
  :data:`MAX_SIDECAR_BYTES`, nesting deeper than :data:`MAX_SIDECAR_DEPTH` or numbers beyond
  64 bits raise a :class:`ReviewFileError` naming the problem, and the file is left untouched.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as _dt
import hashlib
import json
import os
import socket
import sysconfig
import weakref
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_path, remove_leftovers
from ..core.atomic import atomic_write_bytes as _atomic_write_bytes
from ..core.atomic import leftover_temporaries as _leftover_temporaries
from ..core.safe_json import JSONLimitError, load_json_file, short_repr
from .locks import LockBusy, holds, release_lock, take_lock
from .results import save_nifti_atomic

__all__ = [
    "DECISIONS",
    "FORMAT_VERSION",
    "SIDECAR_SUFFIX",
    "CaseChangedError",
    "LockedSidecar",
    "ReviewFileError",
    "ReviewLockedError",
    "ReviewStore",
    "StaleLockError",
    "array_sha256",
    "case_identity",
    "file_sha256",
    "reviews_dir",
    "sidecar_path",
    "write_labels_like",
]

FORMAT = "napari-metaseg-review"
FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".metaseg-review.json"
DECISIONS = ("label_error", "not_error", "unsure")
#: Proposal fields kept in the sidecar (the columns of ``find_label_errors``).
PROPOSAL_FIELDS = ("case", "kind", "class", "label_class", "predicted_class", "index", "gt_object",
                   "score", "size", "slice", "bbox", "centroid")
#: Proposal fields holding counts or ids: stored as JSON integers (None when missing), even when
#: a missing value made pandas hold the column as floats.
INTEGER_FIELDS = ("class", "label_class", "predicted_class", "index", "gt_object", "size", "slice")
#: Test hook: seconds to sleep half-way through writing the temporary file.
SLOW_WRITE_ENV = "NAPARI_METASEG_REVIEW_SLOW_WRITE"
#: Largest sidecar read (bytes). The brain sample's 483 proposals take 279 KiB.
MAX_SIDECAR_BYTES = 256 * 2**20
#: Deepest nesting of lists/objects in a sidecar (a real one nests 5 levels).
MAX_SIDECAR_DEPTH = 16
#: Most proposals a sidecar may hold.
MAX_PROPOSALS = 1_000_000


class ReviewFileError(ValueError):
    """The sidecar file cannot be used (corrupt, other format, newer version); it is left as is."""


class CaseChangedError(ReviewFileError):
    """The sidecar belongs to another version of the case (the GT's hash differs)."""


class ReviewLockedError(RuntimeError):
    """Another viewer or process holds the review's lock."""

    def __init__(self, message, holder=None):
        super().__init__(message)
        self.holder = holder or {}


class StaleLockError(ReviewLockedError):
    """The lock was left by a process of this host that no longer runs; it may be taken over."""


# ============================================================================================
# Identity and location
# ============================================================================================
def array_sha256(a) -> str:
    """SHA-256 of an array's dtype, shape and C-order bytes.

    Examples
    --------
    >>> array_sha256(np.zeros((2, 2), np.uint8))[:12]
    '0f4c62411b61'
    """
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a.reshape(-1)).cast("B"))
    return h.hexdigest()


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes.

    Examples
    --------
    >>> file_sha256("gt.nii.gz")  # doctest: +SKIP
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def case_identity(gt, *, probs_shape, gt_path=None, probs_path=None, case_id=None) -> dict:
    """The identity of a case under review, as stored in (and checked against) the sidecar.

    Parameters
    ----------
    gt : numpy.ndarray
        The GT as it was when the review started (hashed when there is no ``gt_path``).
    probs_shape : tuple of int
        Shape of the probability map.
    gt_path, probs_path : str or os.PathLike, optional
        Files the layers came from. The GT *file* is hashed when given: its hash does not change
        when the reviewer edits the layer in place.
    case_id : str, optional
        Name of the case (the ``case`` column of the proposals).

    Returns
    -------
    dict
        ``case_id``, ``gt_path``, ``probs_path``, ``gt_sha256``, ``gt_hash_of`` (``"file"`` or
        ``"array"``), ``gt_shape``, ``probs_shape``.

    Examples
    --------
    >>> case_identity(np.zeros((4, 4), np.uint8), probs_shape=(4, 4, 2))["gt_hash_of"]
    'array'
    """
    gt = np.asarray(gt)
    if gt_path is not None and Path(gt_path).is_file():
        sha, of = file_sha256(gt_path), "file"
        gt_path = str(Path(gt_path).resolve())
    else:
        sha, of, gt_path = array_sha256(gt), "array", None
    if probs_path is not None and Path(probs_path).is_file():
        probs_path = str(Path(probs_path).resolve())
    else:
        probs_path = None
    return {"case_id": None if case_id is None else str(case_id), "gt_path": gt_path,
            "probs_path": probs_path, "gt_sha256": sha, "gt_hash_of": of,
            "gt_shape": [int(s) for s in gt.shape], "probs_shape": [int(s) for s in probs_shape]}


def reviews_dir() -> Path:
    """The per-user folder of sidecars whose data folder is not writable.

    ``NAPARI_METASEG_REVIEW_DIR`` overrides it; else ``platformdirs.user_data_dir`` +
    ``/reviews`` when platformdirs is installed, else ``~/.local/share/napari-metaseg/reviews``.

    Examples
    --------
    >>> reviews_dir().name
    'reviews'
    """
    env = os.environ.get("NAPARI_METASEG_REVIEW_DIR")
    if env:
        return Path(env) / "reviews"
    try:
        from platformdirs import user_data_dir
    except ImportError:
        return Path.home() / ".local" / "share" / "napari-metaseg" / "reviews"
    return Path(user_data_dir("napari-metaseg", appauthor=False)) / "reviews"


def _read_only_roots():
    roots = {sysconfig.get_paths().get(k) for k in ("purelib", "platlib")}
    # the package's sample files are shared assets: their reviews go to the user's folder
    roots.add(str(Path(__file__).resolve().parents[2] / "sample_data"))
    return [Path(r).resolve() for r in roots if r]


def _writable_folder(path) -> bool:
    """Whether a sidecar may go beside ``path``: its folder is writable for this user and not
    marked read-only (no write bit at all: root passes ``os.access`` on such folders, but a
    shared read-only data folder is not the place for a user's review)."""
    folder = Path(path).resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK) or not folder.stat().st_mode & 0o222:
        return False
    return not any(folder == r or r in folder.parents for r in _read_only_roots())


def _stem(path):
    name = Path(path).name
    for suf in (".nii.gz", ".nii", ".npy", ".npz", ".tiff", ".tif", ".png"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def sidecar_path(case: dict) -> Path:
    """Where the review of ``case`` (from :func:`case_identity`) is kept.

    ``<gt folder>/<gt stem>.metaseg-review.json`` when the GT has a file in a writable folder
    (not inside site-packages or the package's ``sample_data``); else
    ``<reviews_dir()>/<name>-<key>.metaseg-review.json`` with ``key`` the first 16 hex digits of
    SHA-256(GT hash, probabilities shape), so the same case finds its review again.

    Examples
    --------
    >>> c = case_identity(np.zeros((4, 4), np.uint8), probs_shape=(4, 4, 2), case_id="a")
    >>> sidecar_path(c).name.endswith(SIDECAR_SUFFIX)
    True
    """
    gt_path = case.get("gt_path")
    if gt_path and _writable_folder(gt_path):
        return Path(gt_path).resolve().with_name(_stem(gt_path) + SIDECAR_SUFFIX)
    key = hashlib.sha256(f"{case['gt_sha256']}{tuple(case['probs_shape'])}".encode()).hexdigest()[:16]
    name = _stem(gt_path) if gt_path else (case.get("case_id") or "case")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))[:60]
    return reviews_dir() / f"{safe}-{key}{SIDECAR_SUFFIX}"


# ============================================================================================
# Atomic writes and locks
# ============================================================================================
def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically with the package's writer.

    See :func:`napari_metaseg.core.atomic.atomic_write_bytes`; this wrapper adds the test hook
    :data:`SLOW_WRITE_ENV` (a pause half-way through the temporary file).

    Examples
    --------
    >>> atomic_write_bytes("case.metaseg-review.json", b"{}")  # doctest: +SKIP
    """
    slow = float(os.environ.get(SLOW_WRITE_ENV, "0") or 0)
    return _atomic_write_bytes(path, data, _pause_halfway=slow)


def _check_box_code(code, shape):
    """Validate a :func:`voxel_box_bits` code against ``shape`` without building its mask.

    Raises ``ValueError`` (or ``TypeError``/``KeyError``/``binascii.Error``) for a bad code."""
    lo, size, bits = code["lo"], code["size"], code["bits"]
    if not (isinstance(lo, list) and isinstance(size, list) and isinstance(bits, str)):
        raise TypeError("lo and size must be lists, bits a string")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (*lo, *size)):
        raise TypeError("lo and size must hold integers")
    if len(lo) != len(shape) or len(size) != len(shape) or any(
            a < 0 or n < 0 or a + n > s for a, n, s in zip(lo, size, shape, strict=True)):
        raise ValueError(f"voxel code (box at {short_repr(lo)}, size {short_repr(size)}) does not fit "
                         f"an array of shape {tuple(shape)}")
    n = 1
    for k in size:
        n *= k
    raw = base64.b64decode(bits, validate=True)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"voxel code holds {len(raw)} bytes, its box needs {(n + 7) // 8}")


def _check_runs(runs, shape):
    total = 1
    for s in shape:
        total *= s
    if not isinstance(runs, list):
        raise TypeError("runs must be a list")
    for r in runs:
        if (not isinstance(r, list) or len(r) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in r)
                or r[0] < 0 or r[1] < 0 or r[0] + r[1] > total):
            raise ValueError(f"run {short_repr(r)} does not fit an array of {total} voxels")


# ============================================================================================
# The store
# ============================================================================================
def _json_value(v):
    if v is None:
        return None
    try:
        import pandas as pd

        if v is pd.NA or (not isinstance(v, (list, tuple, np.ndarray, str)) and pd.isna(v)):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_json_value(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    return str(v) if not isinstance(v, str) else v


def voxel_runs(flat) -> list:
    """Run-length code of flat voxel indices: ``[[start, length], ...]`` over the sorted indices."""
    v = np.unique(np.asarray(flat, np.int64).ravel())
    if v.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(v) != 1) + 1
    starts = v[np.r_[0, breaks]]
    lengths = np.diff(np.r_[0, breaks, v.size])
    return [[int(a), int(n)] for a, n in zip(starts, lengths, strict=True)]


def voxel_box_bits(flat, shape) -> dict:
    """Compact code of flat (C-order) voxel indices of an array of ``shape``: the voxels' box
    (``lo``, ``size``) and the box's mask, bit-packed (C order) and base64-coded (``bits``).

    A slice-wise proposal of a volume sliced along its last axis has no two voxels adjacent in C
    order, so run-length codes are as long as the voxel lists; the box mask costs one bit per
    box voxel (the sidecar of the brain sample's 483 proposals: 279 KiB instead of 1.4 MiB).
    """
    v = np.unique(np.asarray(flat, np.int64).ravel())
    if v.size == 0:
        return {"lo": [0] * len(shape), "size": [0] * len(shape), "bits": ""}
    coords = np.stack(np.unravel_index(v, tuple(shape)), axis=1)
    lo = coords.min(0)
    size = coords.max(0) - lo + 1
    box = np.zeros(tuple(size), bool)
    box[tuple((coords - lo).T)] = True
    bits = base64.b64encode(np.packbits(box.ravel()).tobytes()).decode("ascii")
    return {"lo": lo.tolist(), "size": size.tolist(), "bits": bits}


def box_bits_to_mask(code, shape):
    """The boolean mask of ``shape`` whose voxels :func:`voxel_box_bits` coded.

    Raises ``ValueError`` for a code that does not fit ``shape``."""
    lo = [int(x) for x in code["lo"]]
    size = [int(x) for x in code["size"]]
    if len(lo) != len(shape) or len(size) != len(shape) or any(
            a < 0 or n < 0 or a + n > s for a, n, s in zip(lo, size, shape, strict=True)):
        raise ValueError(f"voxel code (box at {lo}, size {size}) does not fit an array of shape "
                         f"{tuple(shape)}")
    n = int(np.prod(size))
    raw = np.frombuffer(base64.b64decode(code["bits"]), np.uint8)
    if raw.size != (n + 7) // 8:
        raise ValueError(f"voxel code holds {raw.size} bytes, its box needs {(n + 7) // 8}")
    mask = np.zeros(tuple(shape), bool)
    if n:
        box = np.unpackbits(raw)[:n].astype(bool).reshape(size)
        mask[tuple(slice(a, a + k) for a, k in zip(lo, size, strict=True))] = box
    return mask


def runs_to_mask(runs, shape):
    """The boolean mask of ``shape`` (C order) whose voxels :func:`voxel_runs` coded."""
    mask = np.zeros(int(np.prod(shape)), bool)
    for start, length in runs:
        mask[int(start):int(start) + int(length)] = True
    return mask.reshape(shape)


def _int_or_none(v):
    v = _json_value(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def proposals_to_records(table, shape=None) -> list:
    """JSON-safe proposal records (``id`` = rank) from a ``find_label_errors`` table.

    Missing values (``None``, NaN, ``pd.NA``, e.g. ``index`` and ``gt_object`` of a ``"region"``
    proposal) become ``None``; any ``kind`` string is kept. A ``voxels`` column (flat indices,
    ``return_voxels=True``) is stored as ``voxels`` (:func:`voxel_box_bits`, given the GT's
    ``shape``; run-length coded as ``runs``, :func:`voxel_runs`, without it), so a restored
    review highlights each proposal exactly whatever its kind.
    """
    cols = [c for c in PROPOSAL_FIELDS if c in table.columns]
    voxels = table["voxels"].tolist() if "voxels" in table.columns else None
    out = []
    for i, row in enumerate(table[cols].itertuples(index=False, name=None)):
        rec = {"id": i}
        rec.update({c: _int_or_none(v) if c in INTEGER_FIELDS else _json_value(v)
                    for c, v in zip(cols, row, strict=True)})
        if voxels is not None and voxels[i] is not None:
            if shape is not None:
                rec["voxels"] = voxel_box_bits(voxels[i], shape)
            else:
                rec["runs"] = voxel_runs(voxels[i])
        rec.update(decision=None, note="", decided_at=None)
        out.append(rec)
    return out


class LockedSidecar:
    """A sidecar written by one store at a time: its lock, the lock's errors and its release.

    The base of :class:`ReviewStore` and :class:`~napari_metaseg.io.ood_review.OodReviewStore`.
    A subclass sets ``case`` (its ``case_id`` names the holder in the lock) and ``_load``, calls
    :meth:`_open_locked` from ``__init__`` and :meth:`_check_writable` before every write; the
    messages name the file as :attr:`sidecar_kind` says.
    """

    #: What the messages call the file ("the review x.json is open in ...").
    sidecar_kind = "review"

    def _open_locked(self, path, *, read_only, take_over_stale):
        """Take the lock (unless ``read_only``), then read the sidecar with ``self._load``.

        Returns the loaded document (None when there is no file yet). A file that fails
        validation is left as it is, and the lock is released again.
        """
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.read_only = bool(read_only)
        self._token = None
        self._finalizer = None
        if not self.read_only:
            # the lock first, then the file: read before the lock, the file could be an older copy
            # than the one the previous holder leaves when it closes (its last decision lost)
            self._acquire(take_over_stale)
        try:
            doc = self._load() if self.path.exists() else None
            if not self.read_only:
                remove_leftovers(self.path.parent, self.path.name)  # temporaries of killed saves
        except BaseException:
            self.close()
            raise
        return doc

    # -- context / lifetime ------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Release the lock (the file stays)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._token = None

    @property
    def holds_lock(self):
        return self._token is not None

    def _acquire(self, take_over_stale):
        kind = self.sidecar_kind
        try:
            token = take_lock(self.lock_path, what=f"{kind} of {self.case.get('case_id') or self.path.name}",
                              take_over_stale=take_over_stale)
        except LockBusy as busy:
            holder = busy.holder
            if busy.stale:
                if isinstance(holder.get("pid"), int):
                    raise StaleLockError(
                        f"the {kind} {self.path.name} is locked by {busy.reason} (it probably crashed); "
                        f"its decisions are saved. Take the lock over to continue (lock file: "
                        f"{self.lock_path})", holder) from None
                raise StaleLockError(
                    f"the {kind} {self.path.name} is locked, but {busy.reason}; its decisions are saved. "
                    f"Take the lock over to continue (lock file: {self.lock_path})", holder) from None
            what = ("another viewer of this process" if holder.get("pid") == os.getpid()
                    and holder.get("host") == socket.gethostname() else busy.reason)
            if holder.get("pid") is not None:
                what = f"{what} (since {holder.get('created', '?')})" if "since" not in what else what
            raise ReviewLockedError(
                f"the {kind} {self.path.name} is open in {what}; open it read-only or close it there "
                f"first (lock file: {self.lock_path})", holder) from None
        self._token = token
        self._finalizer = weakref.finalize(self, release_lock, str(self.lock_path), token)

    def _record_decision(self, rec, decision, note):
        """Set ``decision`` (and ``note``, ``decided_at``) on record ``rec`` of this sidecar and save at
        once; when the save fails the record is put back (memory stays equal to the file). Returns a
        copy of the record."""
        self._check_writable()
        old = dict(rec)
        rec["decision"] = decision
        if note is not None:
            rec["note"] = str(note)
        rec["decided_at"] = _now() if decision is not None else None
        try:
            self.save()
        except Exception:
            rec.clear()
            rec.update(old)
            raise
        return dict(rec)

    def _check_writable(self):
        """Raise :class:`ReviewLockedError` unless this store may write (it still holds the lock)."""
        kind = self.sidecar_kind
        if self.read_only:
            raise ReviewLockedError(f"the {kind} {self.path.name} is open read-only")
        if self._token is None:
            raise ReviewLockedError(f"the {kind} {self.path.name} is closed")
        if not holds(self.lock_path, self._token):
            gone = "taken over by another process" if self.lock_path.exists() else "removed"
            raise ReviewLockedError(f"the lock of {self.path.name} was {gone}; this viewer no longer "
                                    f"writes the {kind} and saved nothing: reopen it to continue "
                                    f"(lock file: {self.lock_path})")


class ReviewStore(LockedSidecar):
    """One case's review in its sidecar file; every change is saved at once, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The sidecar file (see :func:`sidecar_path`); read when it exists.
    case : dict
        The case identity (:func:`case_identity`); an existing file must hold the same
        ``gt_sha256``.
    read_only : bool, default False
        Open without the lock; every change raises :class:`ReviewLockedError`.
    take_over_stale : bool, default False
        Take over a lock left by a dead process of this host (else :class:`StaleLockError`).

    Raises
    ------
    ReviewLockedError
        Another live process (or another store of this process) holds the lock.
    StaleLockError
        The lock's process is dead and ``take_over_stale`` is false.
    ReviewFileError
        The file is not valid JSON, not a review file, from a newer format version or malformed.
    CaseChangedError
        The file's GT hash differs from ``case["gt_sha256"]``.

    Examples
    --------
    >>> case = case_identity(gt, probs_shape=probs.shape, case_id="a")  # doctest: +SKIP
    >>> with ReviewStore(sidecar_path(case), case) as store:  # doctest: +SKIP
    ...     if not store.proposals:
    ...         store.set_proposals(find_label_errors(table, clf, maps=(probs, gt)))
    ...     store.set_decision(0, "label_error")
    """

    def __init__(self, path, case, *, read_only=False, take_over_stale=False):
        self.case = dict(case)
        self._doc = None
        doc = self._open_locked(path, read_only=read_only, take_over_stale=take_over_stale)
        self.restored = doc is not None
        self._doc = doc or {
            "format": FORMAT, "format_version": FORMAT_VERSION, "created": _now(), "updated": None,
            "case": self.case, "settings": {}, "proposals": [], "corrections": [],
        }

    # -- reading -----------------------------------------------------------------------------
    def _load(self):
        where = f"review file {self.path}"
        keep = "the file was left as it is; move it away to start the review again"
        try:
            doc = load_json_file(self.path, max_bytes=MAX_SIDECAR_BYTES, max_depth=MAX_SIDECAR_DEPTH)
        except JSONLimitError as exc:
            sep = " is " if str(exc).startswith("not ") else ": "
            raise ReviewFileError(f"{where}{sep}{exc}; {keep}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ReviewFileError(f"{where} is not a napari-metaseg review file; {keep}")
        version = doc.get("format_version")
        if not isinstance(version, int):
            raise ReviewFileError(f"{where} has no integer format_version; {keep}")
        if version > FORMAT_VERSION:
            raise ReviewFileError(f"{where} has format version {version}, newer than this napari-"
                                  f"metaseg reads ({FORMAT_VERSION}); update napari-metaseg")
        case, props = doc.get("case"), doc.get("proposals")
        if not isinstance(case, dict) or not isinstance(props, list):
            raise ReviewFileError(f"{where} lacks its case or proposals; {keep}")
        if not isinstance(doc.get("corrections", []), list) or not isinstance(doc.get("settings", {}), dict):
            raise ReviewFileError(f"{where}: corrections must be a list and settings an object; {keep}")
        if len(props) > MAX_PROPOSALS:
            raise ReviewFileError(f"{where} holds {len(props)} proposals, more than the {MAX_PROPOSALS} "
                                  f"accepted; {keep}")
        # the recorded GT shape decides how voxel codes are read: it must be this GT's shape
        shape = case.get("gt_shape")
        mine = self.case.get("gt_shape")
        if shape is not None and (not isinstance(shape, list) or list(shape) != list(mine or [])):
            raise CaseChangedError(f"{where} was made for a ground truth of shape {short_repr(shape)}, "
                                   f"this one has {mine}; {keep}")
        for i, p in enumerate(props):
            if not isinstance(p, dict) or p.get("id") != i or p.get("decision") not in (None, *DECISIONS):
                raise ReviewFileError(f"{where}: proposal {i} is malformed ({short_repr(p, 80)}); {keep}")
            try:
                if p.get("voxels") is not None and shape is not None:
                    _check_box_code(p["voxels"], shape)
                if p.get("runs") is not None and shape is not None:
                    _check_runs(p["runs"], shape)
            except (KeyError, TypeError, ValueError, binascii.Error) as exc:
                raise ReviewFileError(f"{where}: proposal {i} has unreadable voxels "
                                      f"({short_repr(str(exc), 200)}); {keep}") from exc
        if case.get("gt_sha256") != self.case.get("gt_sha256"):
            raise CaseChangedError(
                f"{where} was made for a ground truth with SHA-256 {str(case.get('gt_sha256'))[:12]}... "
                f"({case.get('gt_path') or 'an array'}), but this one has "
                f"{str(self.case.get('gt_sha256'))[:12]}...: the GT changed since the review; {keep}")
        if list(case.get("probs_shape", [])) != list(self.case.get("probs_shape", [])):
            raise CaseChangedError(f"{where} was made for probabilities of shape {case.get('probs_shape')}, "
                                   f"these have {self.case.get('probs_shape')}; {keep}")
        doc.setdefault("corrections", [])
        doc.setdefault("settings", {})
        return doc

    @property
    def proposals(self) -> list:
        """The proposal records (dicts; ``id`` is the rank), with their decisions."""
        return self._doc["proposals"]

    @property
    def settings(self) -> dict:
        return self._doc["settings"]

    @property
    def corrections(self) -> list:
        return self._doc["corrections"]

    def table(self):
        """The proposals and decisions as a pandas DataFrame (one row per proposal, by rank)."""
        import pandas as pd

        cols = ["id", *PROPOSAL_FIELDS, "decision", "note", "decided_at"]
        df = pd.DataFrame({c: pd.Series([p.get(c) for p in self.proposals], dtype=object)
                           for c in cols})
        if "slice" in df and df["slice"].isna().all():
            df = df.drop(columns="slice")
        return df

    # -- writing -----------------------------------------------------------------------------
    def save(self):
        """Write the whole review atomically (done by every change already)."""
        self._check_writable()
        self._doc["updated"] = _now()
        data = json.dumps(self._doc, indent=1, allow_nan=False).encode("utf-8")
        atomic_write_bytes(self.path, data)

    def set_proposals(self, table, *, settings=None, replace=False):
        """Store the proposals of ``find_label_errors`` (ranked) and save.

        Raises ``ValueError`` when the review already has decisions and ``replace`` is false.
        """
        if any(p.get("decision") for p in self.proposals) and not replace:
            raise ValueError(f"the review {self.path.name} already holds decisions; pass replace=True "
                             "to start over")
        self._check_writable()
        self._doc["proposals"] = proposals_to_records(table, shape=self.case.get("gt_shape"))
        self._doc["settings"] = {k: _json_value(v) for k, v in (settings or {}).items()}
        self.save()

    def set_decision(self, proposal_id, decision, *, note=None):
        """Record (and save at once) the decision on one proposal; ``decision=None`` clears it.

        Returns the updated record.
        """
        if decision not in (None, *DECISIONS):
            raise ValueError(f"decision must be one of {DECISIONS} or None, got {decision!r}")
        props = self.proposals
        if not isinstance(proposal_id, (int, np.integer)) or not 0 <= int(proposal_id) < len(props):
            raise ValueError(f"proposal_id must be in 0..{len(props) - 1}, got {proposal_id!r}")
        return self._record_decision(props[int(proposal_id)], decision, note)

    # -- export ------------------------------------------------------------------------------
    def export_json(self, path) -> Path:
        """Write the case, proposals and decisions as JSON (atomically)."""
        doc = {"case": self._doc["case"], "exported": _now(), "proposals": self.proposals,
               "corrections": self.corrections}
        atomic_write_bytes(path, json.dumps(doc, indent=1, allow_nan=False).encode("utf-8"))
        return Path(path)

    def export_csv(self, path) -> Path:
        """Write one row per proposal (``bbox``/``centroid`` as space-separated numbers); text that
        a spreadsheet would run as a formula (a note ``=...``) gets a leading ``'``
        (:mod:`napari_metaseg.core.csv_safe`)."""
        from ..core.csv_safe import escape_cell

        cols = ["id", *PROPOSAL_FIELDS, "decision", "note", "decided_at"]
        path = Path(path)
        with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(cols)
            for p in self.proposals:
                row = []
                for c in cols:
                    v = p.get(c)
                    if isinstance(v, list):
                        v = " ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
                    else:  # notes and case names are user text: never a spreadsheet formula
                        v = escape_cell(v)
                    row.append("" if v is None else v)
                w.writerow(row)
        return path

    # -- write-back --------------------------------------------------------------------------
    def write_corrected_gt(self, data, path, *, source=None, affine=None, original_affine=None,
                           overwrite=False) -> Path:
        """Save the corrected GT as a new file and record it in the review.

        See :func:`write_labels_like`; ``original`` is the case's GT file. Returns the path.
        """
        self._check_writable()
        originals = [p for p in (self.case.get("gt_path"), source) if p]
        out = write_labels_like(data, path, source=source, affine=affine,
                                original_affine=original_affine, overwrite=overwrite,
                                originals=originals)
        decided = sum(1 for p in self.proposals if p.get("decision") == "label_error")
        self._doc["corrections"].append({
            "path": str(Path(out).resolve()), "written_at": _now(), "sha256": file_sha256(out),
            "overwrote_original": any(Path(out).resolve() == Path(o).resolve() for o in originals),
            "n_label_error_decisions": decided})
        self.save()
        return out


def write_labels_like(data, path, *, source=None, affine=None, original_affine=None,
                      overwrite=False, originals=()) -> Path:
    """Write a label volume in the format its name asks for, atomically.

    Parameters
    ----------
    data : numpy.ndarray of int
        The labels as shown (for NIfTI sources: the reader's RAS+ orientation).
    path : str or os.PathLike
        ``.nii``/``.nii.gz`` (needs ``affine``), ``.npy`` or ``.tif``/``.tiff``.
    source : str or os.PathLike, optional
        The file the labels were read from; a NIfTI source lends its header (dtype, qform/sform
        codes, units).
    affine, original_affine : numpy.ndarray, optional
        4 x 4 affine of ``data`` (the layer's ``metadata["affine"]``) and of the source file as
        stored (``metadata["original_affine"]``). With both, ``data`` is turned back into the
        source's stored orientation and written with the original affine.
    overwrite : bool, default False
        Replace an existing file. Without it an existing ``path`` raises: the original GT is
        never overwritten by accident.
    originals : sequence of path
        Files named as "the original" in the refusal message.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    ValueError
        Unsupported suffix, a NIfTI path without an affine, non-integer data.

    Examples
    --------
    >>> write_labels_like(gt_fixed, "gt_corrected.nii.gz", source="gt.nii.gz",
    ...                   affine=meta["affine"], original_affine=meta["original_affine"])  # doctest: +SKIP
    """
    data = np.asarray(data)
    if data.dtype.kind not in "iub":
        raise ValueError(f"labels must be integers, got dtype {data.dtype}")
    path = Path(path)
    if path.exists() and not overwrite:
        is_orig = any(path.resolve() == Path(o).resolve() for o in originals if o)
        what = "the original ground truth" if is_orig else "an existing file"
        raise FileExistsError(f"{path} is {what}; choose a new name, or pass overwrite=True to "
                              "replace it")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        _write_nifti_labels(data, path, source=source, affine=affine, original_affine=original_affine)
    elif name.endswith(".npy"):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, data, allow_pickle=False)
    elif name.endswith((".tif", ".tiff")):
        import tifffile

        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, data, photometric="minisblack")
    else:
        raise ValueError(f"{path}: cannot write labels as {Path(name).suffix!r} "
                         "(use .nii.gz, .nii, .npy or .tif)")
    return path


def _write_nifti_labels(data, path, *, source, affine, original_affine):
    import nibabel as nib
    from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

    if affine is None and original_affine is None:
        raise ValueError(f"{path}: writing NIfTI needs the labels' affine (layer.metadata['affine'])")
    out, out_affine = data, np.asarray(affine if affine is not None else original_affine, float)
    if original_affine is not None and affine is not None and data.ndim == 3:
        original_affine = np.asarray(original_affine, float)
        ornt = io_orientation(original_affine)
        # the reader applied `ornt` (stored -> RAS+); undo it to get the stored orientation back
        back = ornt_transform(np.array([[0, 1], [1, 1], [2, 1]]), ornt)
        out = np.ascontiguousarray(apply_orientation(data, back))
        out_affine = original_affine
    header = None
    if source is not None and str(source).lower().endswith((".nii", ".nii.gz")) and Path(source).is_file():
        header = nib.load(str(source)).header.copy()
    img = nib.Nifti1Image(out, out_affine, header=header)
    img.set_data_dtype(out.dtype)
    if header is not None:
        img.set_qform(out_affine, code=int(header["qform_code"]) or 1)
        img.set_sform(out_affine, code=int(header["sform_code"]) or 1)
    img.header.set_slope_inter(1.0, 0.0)
    save_nifti_atomic(img, path)


def leftover_temporaries(path) -> list:
    """Temporary files of the atomic writer beside the sidecar ``path``, a running writer's too.

    See :func:`napari_metaseg.core.atomic.leftover_temporaries` (and
    :func:`~napari_metaseg.core.atomic.remove_leftovers` to delete the stale ones).

    Examples
    --------
    >>> leftover_temporaries("case.metaseg-review.json")  # doctest: +SKIP
    []
    """
    return _leftover_temporaries(path)
