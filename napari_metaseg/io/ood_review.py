"""The OoD review sidecar: candidate regions of one case and the reviewer's "unknown" flags.

No Qt, no napari. One JSON file per case, ``<softmax stem>.metaseg-ood.json`` beside the
softmax file when its folder is writable, else in the per-user review folder
(:func:`napari_metaseg.io.review.reviews_dir`). It holds a format version, the case identity
(softmax path and SHA-256, shape), the settings the regions were made with (threshold, measure,
mode, slice axis, excluded classes), one record per region (id, size, slice, centroid, bounding
box, P(OoD) of the region model, the model file) and per region the decision: ``"unknown"``
(flagged as out of distribution), ``"known"`` (not OoD) or none, with a note and a timestamp.

Every change is written at once through :func:`napari_metaseg.core.atomic.atomic_write_bytes`
(temporary file, fsync, rename): a crash loses at most the change being written. Regions made
with the same settings from the same softmax are the same (the engine is deterministic), so a
reopened review restores its decisions; regions made otherwise replace the old ones only with
``replace=True``.

One writer at a time, as for the label-error review (the store's locking is
:class:`~napari_metaseg.io.review.LockedSidecar`, shared with
:class:`~napari_metaseg.io.review.ReviewStore`): the store takes the lock file
``<sidecar>.lock`` (:mod:`napari_metaseg.io.locks`, created with ``O_CREAT | O_EXCL``) before it
reads the sidecar, so it starts from the last decision of a store that has just closed. A second
store, of this or another process, gets :class:`~napari_metaseg.io.review.ReviewLockedError`
naming the holder and may open the review read-only (``read_only=True``: no lock, every change
refused). A lock left by a process of this host that no longer runs (or an empty or unreadable
lock file older than a few seconds) raises :class:`~napari_metaseg.io.review.StaleLockError` and
is taken over only with ``take_over_stale=True``. Before every write the store checks that the
lock file still holds its token: a lock removed or taken over meanwhile refuses the write
(``ReviewLockedError``) and the sidecar is left as it is. :meth:`OodReviewStore.close` (or the
end of a ``with`` block) releases the lock.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_write_bytes
from ..core.safe_json import JSONLimitError, load_json_file
from .review import (
    MAX_SIDECAR_BYTES,
    MAX_SIDECAR_DEPTH,
    LockedSidecar,
    _now,
    _stem,
    _writable_folder,
    array_sha256,
    file_sha256,
    reviews_dir,
)

__all__ = ["DECISIONS", "FORMAT", "FORMAT_VERSION", "OodReviewError", "OodReviewStore", "ood_case_identity",
           "ood_sidecar_path", "region_records"]

FORMAT = "napari-metaseg-ood-review"
FORMAT_VERSION = 1
SUFFIX = ".metaseg-ood.json"
#: ``unknown``: the reviewer flags the region as out of distribution; ``known``: not OoD.
DECISIONS = ("unknown", "known")
#: Settings that decide the regions: a review holds regions made with one set of them.
REGION_SETTINGS = ("threshold", "measure", "mode", "slice_axis", "exclude_classes")


class OodReviewError(ValueError):
    """The sidecar cannot be used (not JSON, another format, a newer version, another case)."""


def ood_case_identity(probs, *, probs_path=None, case_id=None) -> dict:
    """The identity of a case under OoD review: the softmax file's SHA-256 when it has a file,
    else the array's (:func:`~napari_metaseg.io.review.array_sha256`), and its shape.

    Examples
    --------
    >>> ood_case_identity(np.full((2, 2, 2), 0.5, np.float32), case_id="a")["hash_of"]
    'array'
    """
    probs = np.asarray(probs)
    if probs_path is not None and Path(probs_path).is_file():
        path = str(Path(probs_path).resolve())
        sha, of = file_sha256(path), "file"
    else:
        path, sha, of = None, array_sha256(probs), "array"
    return {"case_id": None if case_id is None else str(case_id), "probs_path": path, "probs_sha256": sha,
            "hash_of": of, "probs_shape": [int(s) for s in probs.shape]}


def ood_sidecar_path(case: dict) -> Path:
    """``<softmax folder>/<stem>.metaseg-ood.json`` when writable, else ``<reviews_dir()>/
    <name>-<key>.metaseg-ood.json`` (``key``: 16 hex digits of the softmax hash).

    Examples
    --------
    >>> c = ood_case_identity(np.full((2, 2, 2), 0.5, np.float32), case_id="a")
    >>> ood_sidecar_path(c).name.endswith(".metaseg-ood.json")
    True
    """
    path = case.get("probs_path")
    # a folder whose mode forbids writing is shared data, even for a user (root) who could write
    if path and _writable_folder(path):
        return Path(path).resolve().with_name(_stem(path) + SUFFIX)
    name = _stem(path) if path else (case.get("case_id") or "case")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))[:60]
    return reviews_dir() / f"{safe}-{case['probs_sha256'][:16]}{SUFFIX}"


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    return v


def region_records(table, region_ids) -> list:
    """JSON-safe records of the regions of a table (``index``, ``S``, ``slice``, ``p_hit``) with
    each region's centroid and bounding box (``lo`` then ``hi``, exclusive) from ``region_ids``."""
    from scipy import ndimage as ndi

    ids = table["index"].to_numpy(np.int64)
    n = len(ids)
    out = []
    if n == 0:
        return out
    centroids = ndi.center_of_mass(np.ones(region_ids.shape, np.uint8), region_ids, ids)
    boxes = ndi.find_objects(region_ids, max_label=int(ids.max()))
    has_slice = "slice" in table.columns
    has_p = "p_hit" in table.columns
    for k, rid in enumerate(ids):
        box = boxes[rid - 1]
        rec = {"index": int(rid), "size": int(table["S"].iloc[k]),
               "slice": int(table["slice"].iloc[k]) if has_slice else None,
               "p_hit": _jsonable(float(table["p_hit"].iloc[k])) if has_p else None,
               "centroid": [float(c) for c in centroids[k]],
               "bbox": [int(s.start) for s in box] + [int(s.stop) for s in box],
               "decision": None, "note": "", "decided_at": None}
        out.append(rec)
    return out


class OodReviewStore(LockedSidecar):
    """One case's OoD review in its sidecar; every change is saved at once, atomically, by the
    one store that holds the sidecar's lock.

    Parameters
    ----------
    path : str or os.PathLike
        The sidecar (see :func:`ood_sidecar_path`); read when it exists (after the lock is taken).
    case : dict
        The case identity (:func:`ood_case_identity`); an existing file must hold the same hash.
    read_only, take_over_stale : bool, default False
        Lock handling as in :class:`~napari_metaseg.io.review.LockedSidecar` (see the module
        docstring): ``read_only`` opens without the lock and refuses every change;
        ``take_over_stale`` takes over the lock of a process of this host that no longer runs.

    Raises
    ------
    ReviewLockedError, StaleLockError
        From :mod:`napari_metaseg.io.review`: the lock is held by a live store (this process's
        or another's), or by a dead process and ``take_over_stale`` is false.
    OodReviewError
        The file is not valid JSON, not an OoD review, from a newer version, malformed, or made
        for another softmax (the lock is released again, the file left as it is).

    Examples
    --------
    >>> with OodReviewStore(ood_sidecar_path(case), case) as store:  # doctest: +SKIP
    ...     store.set_regions(table, region_ids, settings)
    ...     store.set_decision(3, "unknown")
    """

    sidecar_kind = "OoD review"

    def __init__(self, path, case, *, read_only=False, take_over_stale=False):
        self.case = dict(case)
        self._doc = None
        doc = self._open_locked(path, read_only=read_only, take_over_stale=take_over_stale)
        self.restored = doc is not None
        self._doc = doc or {"format": FORMAT, "format_version": FORMAT_VERSION, "created": _now(),
                            "updated": None, "case": self.case, "settings": {}, "regions": []}

    def _load(self):
        where = f"OoD review file {self.path}"
        keep = "the file was left as it is; move it away to start the review again"
        try:  # the same size, nesting and number limits as the label-error review's file
            doc = load_json_file(self.path, max_bytes=MAX_SIDECAR_BYTES, max_depth=MAX_SIDECAR_DEPTH)
        except JSONLimitError as exc:
            sep = " is " if str(exc).startswith("not ") else ": "
            raise OodReviewError(f"{where}{sep}{exc}; {keep}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise OodReviewError(f"{where} is not a napari-metaseg OoD review; {keep}")
        version = doc.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise OodReviewError(f"{where} has no integer format_version; {keep}")
        if version > FORMAT_VERSION:
            raise OodReviewError(f"{where} has format version {version}, newer than this napari-metaseg "
                                 f"reads ({FORMAT_VERSION}); update napari-metaseg")
        regions, case, settings = doc.get("regions"), doc.get("case"), doc.get("settings")
        if not isinstance(regions, list) or not isinstance(case, dict) or not isinstance(settings, dict):
            raise OodReviewError(f"{where} lacks its case, settings or regions; {keep}")
        for i, r in enumerate(regions):
            if (not isinstance(r, dict) or not isinstance(r.get("index"), int)
                    or r.get("decision") not in (None, *DECISIONS)):
                raise OodReviewError(f"{where}: region record {i} is malformed; {keep}")
        if case.get("probs_sha256") != self.case.get("probs_sha256"):
            raise OodReviewError(f"{where} was made for another softmax (SHA-256 "
                                 f"{str(case.get('probs_sha256'))[:12]}..., this one "
                                 f"{str(self.case.get('probs_sha256'))[:12]}...); {keep}")
        return doc

    # -- reading -----------------------------------------------------------------------------
    @property
    def regions(self) -> list:
        """The region records (dicts), in region-id order, with their decisions."""
        return self._doc["regions"]

    @property
    def settings(self) -> dict:
        return self._doc["settings"]

    def decisions(self) -> dict:
        """``{region id: decision}`` of the decided regions."""
        return {r["index"]: r["decision"] for r in self.regions if r.get("decision")}

    def same_regions(self, settings) -> bool:
        """Whether regions made with ``settings`` are the ones stored (same region settings)."""
        return bool(self.regions) and all(
            _jsonable(self.settings.get(k)) == _jsonable(settings.get(k)) for k in REGION_SETTINGS)

    # -- writing -----------------------------------------------------------------------------
    def save(self):
        """Write the whole review atomically (every change does); refused without the lock."""
        self._check_writable()
        self._doc["updated"] = _now()
        atomic_write_bytes(self.path, json.dumps(self._doc, indent=1, allow_nan=False).encode("utf-8"))

    def set_regions(self, table, region_ids, settings, *, model=None, replace=False):
        """Store the regions of a region table and save; decisions of the same regions stay.

        With stored regions made with other settings that carry decisions, raises ValueError
        unless ``replace`` (their decisions are then dropped). Returns the number of decisions
        kept. Raises ``ReviewLockedError`` (before anything changes) without the lock.
        """
        self._check_writable()
        same = self.same_regions(settings)
        decided = self.decisions()
        if decided and not same and not replace:
            made = {k: self.settings.get(k) for k in REGION_SETTINGS}
            raise ValueError(f"the OoD review {self.path.name} holds {len(decided)} decisions on regions "
                             f"made with other settings ({made}); pass replace=True to start over")
        records = region_records(table, region_ids)
        kept = 0
        if same:
            old = {r["index"]: r for r in self.regions}
            for rec in records:
                prev = old.get(rec["index"])
                if prev is not None and prev.get("size") == rec["size"] and prev.get("decision"):
                    rec.update(decision=prev["decision"], note=prev.get("note", ""),
                               decided_at=prev.get("decided_at"))
                    kept += 1
        old = dict(self._doc)
        self._doc["regions"] = records
        self._doc["settings"] = {k: _jsonable(settings.get(k)) for k in REGION_SETTINGS}
        self._doc["model"] = None if model is None else str(model)
        try:
            self.save()
        except Exception:
            self._doc.clear()
            self._doc.update(old)  # memory stays equal to the file
            raise
        return kept

    def set_decision(self, index, decision, *, note=None):
        """Record (and save at once) the decision on region ``index``; None clears it.

        Returns the updated record. Raises ValueError for an unknown region or decision,
        ``ReviewLockedError`` (nothing changed) without the lock.
        """
        if decision not in (None, *DECISIONS):
            raise ValueError(f"decision must be one of {DECISIONS} or None, got {decision!r}")
        rec = next((r for r in self.regions if r["index"] == int(index)), None)
        if rec is None:
            raise ValueError(f"no region {index} in the OoD review {self.path.name}")
        return self._record_decision(rec, decision, note)
