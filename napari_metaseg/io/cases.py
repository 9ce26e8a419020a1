"""Cases of a dataset on disk: finding softmax / ground-truth pairs and reading them.

A *case* is one image or volume: a softmax file and, optionally, its ground truth. Cases are
found by one of three rules (:func:`find_cases`, :func:`read_pairs_csv`):

* files ``<case>_softmax.<ext>`` with ``<case>_gt.<ext>`` beside them (any supported extension,
  not necessarily the same);
* a folder per case holding one ``softmax*.<ext>`` file (``softmax.npy``, ``softmax_rf.nii.gz``)
  and optionally ``gt.<ext>``; the case is named after the folder;
* a CSV file with the header ``case,softmax,gt`` (``gt`` may be empty; relative paths are
  relative to the CSV file).

Supported files: ``.nii``/``.nii.gz`` (4D ``(x, y, z, class)``, read as stored, without
reorientation, so results can be written back with the input's affine), ``.npy``, ``.npz``
(the array ``softmax``/``probs``/``gt``, else the only one), ``.tif``/``.tiff``, ``.png``
(ground truth only).
"""

from __future__ import annotations

import csv
import glob
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .layers import NIFTI_SUFFIXES, SUFFIXES, _read_array_file, suffix_of

__all__ = ["IMAGE_STEMS", "Case", "CaseError", "case_id_from_path", "find_cases", "image_beside", "is_nifti",
           "read_case", "read_pairs_csv"]

#: Stems of an image file beside a case's softmax (``<folder>/t1.nii.gz``, ``<case>_image.npy``).
IMAGE_STEMS = ("image", "img", "t1", "t1w", "t2", "flair", "raw")

_SOFTMAX_SUFFIX = re.compile(r"^(?P<case>.+)_softmax$", re.IGNORECASE)
_GT_SUFFIX = re.compile(r"^(?P<case>.+)_gt$", re.IGNORECASE)
_NAME_OK = re.compile(r"^[^/\\\x00]+$")


class CaseError(ValueError):
    """The cases named on the command line cannot be found or paired (a usage error)."""


@dataclass(frozen=True)
class Case:
    """One case: a name, a softmax file and an optional ground-truth file."""

    name: str
    softmax: Path
    gt: Path | None = None


def _stem(path: Path) -> str:
    name = path.name
    suf = suffix_of(name)
    return name[: -len(suf)] if suf else name


def is_nifti(path) -> bool:
    """Whether ``path`` is a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return suffix_of(path) in NIFTI_SUFFIXES


def _supported(path: Path) -> bool:
    return path.is_file() and suffix_of(path) in SUFFIXES


def _partner_gt(softmax: Path, case: str) -> Path | None:
    found = sorted(p for p in softmax.parent.glob(f"{glob.escape(case)}_gt.*") if _supported(p))
    if len(found) > 1:
        raise CaseError(f"case {case!r}: several ground-truth files {[p.name for p in found]}")
    return found[0] if found else None


def _case_folder(folder: Path) -> Case | None:
    """The case held by ``folder`` (``softmax*.<ext>`` + optional ``gt.<ext>``), or None."""
    soft = sorted(p for p in folder.iterdir() if _supported(p) and _stem(p).lower().startswith("softmax"))
    if not soft:
        return None
    if len(soft) > 1:
        raise CaseError(
            f"{folder}: several softmax files {[p.name for p in soft]}; name the pairs with --pairs CSV"
        )
    gts = sorted(p for p in folder.iterdir() if _supported(p) and _stem(p).lower() == "gt")
    if len(gts) > 1:
        raise CaseError(f"{folder}: several ground-truth files {[p.name for p in gts]}")
    return Case(folder.name, soft[0], gts[0] if gts else None)


def _case_of_file(path: Path) -> Case | None:
    """The case whose softmax is ``path``; None for a ground-truth file."""
    stem = _stem(path)
    if _GT_SUFFIX.match(stem) or stem.lower() == "gt":
        return None
    m = _SOFTMAX_SUFFIX.match(stem)
    if m:
        return Case(m["case"], path, _partner_gt(path, m["case"]))
    if stem.lower().startswith("softmax"):
        folder_case = _case_folder(path.parent)
        if folder_case is not None and folder_case.softmax == path:
            return folder_case
    return Case(stem, path, None)


def _cases_in_folder(folder: Path) -> list[Case]:
    own = _case_folder(folder)
    if own is not None:
        return [own]
    cases = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            sub = _case_folder(entry)
            if sub is not None:
                cases.append(sub)
        elif _supported(entry) and _SOFTMAX_SUFFIX.match(_stem(entry)):
            cases.append(_case_of_file(entry))
    return cases


def _check_unique(cases: list[Case]) -> list[Case]:
    seen: dict[str, Case] = {}
    out = []
    for c in cases:
        if not _NAME_OK.match(c.name) or c.name.startswith("."):
            raise CaseError(f"case name {c.name!r} cannot be used as a file name")
        if c.name in seen:
            if seen[c.name] == c:
                continue  # the same case named twice (e.g. a file and its folder)
            raise CaseError(
                f"two different cases are named {c.name!r} ({seen[c.name].softmax} and {c.softmax}); "
                "rename them or list them with --pairs CSV"
            )
        seen[c.name] = c
        out.append(c)
    return out


def find_cases(inputs) -> list[Case]:
    """Cases from files, folders or glob patterns, in the order given (folders sorted by name).

    Parameters
    ----------
    inputs : iterable of str or os.PathLike
        A softmax file (``<case>_softmax.<ext>``, ``softmax*.<ext>`` in a case folder, or any
        other probabilities file, which then has no ground truth); a case folder; a folder of
        case files or case folders; or a glob pattern of any of these. Ground-truth files
        (``*_gt.*``, ``gt.*``) among the inputs are skipped: they are found from their softmax.

    Returns
    -------
    list of Case

    Raises
    ------
    CaseError
        A path does not exist, a folder or pattern holds no case, a folder holds several
        softmax files, or two different cases have the same name.

    Examples
    --------
    >>> find_cases(["data/"])  # doctest: +SKIP
    [Case(name='a', softmax=PosixPath('data/a_softmax.npy'), gt=PosixPath('data/a_gt.npy'))]
    """
    cases: list[Case] = []
    for item in inputs:
        text = str(item)
        paths = [Path(text)]
        if not paths[0].exists() and any(ch in text for ch in "*?["):
            paths = [Path(p) for p in sorted(glob.glob(text))]
            if not paths:
                raise CaseError(f"{text}: the pattern matches no file")
        found = []
        for path in paths:
            if path.is_dir():
                found.extend(_cases_in_folder(path))
            elif path.is_file():
                if suffix_of(path) not in SUFFIXES:
                    if len(paths) == 1:
                        raise CaseError(
                            f"{path}: unsupported file type {suffix_of(path)!r} "
                            f"(supported: {', '.join(SUFFIXES)})"
                        )
                    continue
                case = _case_of_file(path)
                if case is not None:
                    found.append(case)
            else:
                raise CaseError(f"{path}: no such file or folder")
        if not found:
            raise CaseError(
                f"{text}: no case found (expected <case>_softmax.<ext> files, folders with softmax.<ext>, "
                "or --pairs CSV)"
            )
        cases.extend(found)
    return _check_unique(cases)


def read_pairs_csv(path) -> list[Case]:
    """Cases listed in a CSV file with the header ``case,softmax,gt`` (``gt`` may be empty).

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file; relative paths in it are relative to its folder.

    Returns
    -------
    list of Case

    Raises
    ------
    CaseError
        The file is missing, its header is not ``case,softmax,gt``, a row is incomplete, a
        listed file does not exist, or a case name repeats.

    Examples
    --------
    >>> read_pairs_csv("pairs.csv")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise CaseError(f"--pairs {path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if header[:2] != ["case", "softmax"] or (len(header) > 2 and header[2] != "gt"):
            raise CaseError(f"--pairs {path}: the header must be case,softmax,gt (got {','.join(header)})")
        cases = []
        for lineno, row in enumerate(reader, start=2):
            name = (row.get("case") or "").strip()
            soft = (row.get("softmax") or "").strip()
            gt = (row.get("gt") or "").strip()
            if not name or not soft:
                raise CaseError(f"--pairs {path}, line {lineno}: case and softmax must not be empty")
            soft_p = (path.parent / soft) if not Path(soft).is_absolute() else Path(soft)
            gt_p = None
            if gt:
                gt_p = (path.parent / gt) if not Path(gt).is_absolute() else Path(gt)
            for p in (soft_p, gt_p):
                if p is not None and not p.is_file():
                    raise CaseError(f"--pairs {path}, line {lineno} (case {name!r}): {p} does not exist")
            cases.append(Case(name, soft_p, gt_p))
    if not cases:
        raise CaseError(f"--pairs {path}: no case listed")
    return _check_unique(cases)


def _pick_npz(items, preferred, path):
    if len(items) == 1:
        return items[0][1]
    for name, arr in items:
        if name.split(" ", 1)[-1].lower() in preferred:
            return arr
    names = ", ".join(n.split(" ", 1)[-1] for n, _ in items)
    raise ValueError(
        f"{path}: the .npz archive holds several arrays ({names}); "
        f"name the one to use {' or '.join(preferred)}"
    )


def _read_plain(path: Path, preferred, max_bytes=None) -> np.ndarray:
    items = _read_array_file(path, suffix_of(path), max_bytes)
    return items[0][1] if len(items) == 1 else _pick_npz(items, preferred, path)


def read_case(case: Case, *, class_axis: int = -1, max_bytes=None):
    """Read the softmax (validated float32, classes last) and ground truth of a case.

    Parameters
    ----------
    case : Case
    class_axis : int, default -1
        Class axis of a non-NIfTI softmax file (NIfTI softmax maps are ``(x, y, z, class)``).
    max_bytes : int or str, optional
        The input budget of each file (see :mod:`napari_metaseg.io.budget`).

    Returns
    -------
    probs : numpy.ndarray
        float32 probabilities, classes last (see :func:`napari_metaseg.core.as_probabilities`).
    gt : numpy.ndarray or None
        Ground-truth class ids (not yet checked against ``probs``).
    affine : numpy.ndarray or None
        The softmax file's affine for NIfTI input, else None.

    Raises
    ------
    ValueError
        A file cannot be read, claims more than the input budget
        (:class:`~napari_metaseg.io.budget.InputTooLargeError`), or does not hold valid
        probabilities; a softmax that looks like an image, a label map or a classes-first map
        is refused with a message saying so and naming the option that fixes it.

    Examples
    --------
    >>> probs, gt, affine = read_case(Case("a", Path("a_softmax.npy"), Path("a_gt.npy")))  # doctest: +SKIP
    """
    from ..core.inputs import as_probabilities
    from .layers import wrong_kind_message
    from .nifti import read_nifti, read_nifti_probabilities

    affine = None
    if is_nifti(case.softmax):
        probs, affine = read_nifti_probabilities(case.softmax, max_bytes=max_bytes)
        affine = np.asarray(affine, dtype=np.float64)
    else:
        raw = _read_plain(case.softmax, ("softmax", "probs", "probabilities"), max_bytes)
        if isinstance(class_axis, int) and -raw.ndim <= class_axis < raw.ndim:
            wrong = wrong_kind_message(raw, class_axis, name=str(case.softmax))
            if wrong:
                raise ValueError(wrong)
        probs = as_probabilities(raw, class_axis=class_axis)
    gt = None
    if case.gt is not None:
        if is_nifti(case.gt):
            gt, _ = read_nifti(case.gt, max_bytes=max_bytes)
        else:
            gt = _read_plain(case.gt, ("gt", "labels"), max_bytes)
    return probs, gt, affine


def image_beside(case):
    """The image file of ``case`` beside its softmax, or None.

    ``<case>_<stem>.<ext>`` next to a ``<case>_softmax`` file, or ``<stem>.<ext>`` in a case
    folder, for ``stem`` in :data:`IMAGE_STEMS` (first match in that order).
    """
    folder = case.softmax.parent
    stem = case.softmax.name[: -len(suffix_of(case.softmax.name))]
    prefix = "" if stem.lower().startswith("softmax") else f"{case.name}_"
    files = {p.name.lower(): p for p in folder.iterdir() if p.is_file() and suffix_of(p.name) in SUFFIXES}
    for want in IMAGE_STEMS:
        for low, path in sorted(files.items()):
            suf = suffix_of(low)
            if low[: len(low) - len(suf)] == f"{prefix}{want}".lower():
                return path
    return None


_BIDS_ENTITY = re.compile(r"^(sub|ses)-[A-Za-z0-9]+$")
_BIDS_IN_NAME = re.compile(r"(?:^|_)((?:sub|ses)-[A-Za-z0-9]+)")
#: File stems that name the kind of file, not the case (the case is then the folder).
_GENERIC = re.compile(r"^(softmax|probs|probabilities|prediction|pred|seg|gt|labels?|t1w?|t2|flair|image|img)"
                      r"([_-].*)?$", re.IGNORECASE)


def case_id_from_path(path) -> str:
    """The case a file belongs to, from its path.

    BIDS entities win (``.../sub-02/ses-1/anat/...`` or ``sub-02_ses-1_dseg.nii.gz`` give
    ``sub-02_ses-1``); else ``<case>_softmax.<ext>`` / ``<case>_gt.<ext>`` give ``<case>``; a
    generic file name (``softmax_rf.nii.gz``, ``gt.nii.gz``) gives its folder's name.

    Examples
    --------
    >>> case_id_from_path("data/brain/sub-02/softmax_rf.nii.gz")
    'sub-02'
    >>> case_id_from_path("runs/case07_softmax.npy"), case_id_from_path("cases/lung3/softmax.npy")
    ('case07', 'lung3')
    """
    path = Path(str(path))
    stem = _stem(path)
    entities = [m for m in _BIDS_IN_NAME.findall(stem)]
    if not entities:
        entities = [p for p in path.parent.parts if _BIDS_ENTITY.match(p)]
    if entities:
        return "_".join(dict.fromkeys(entities))
    for pattern in (_SOFTMAX_SUFFIX, _GT_SUFFIX):
        m = pattern.match(stem)
        if m:
            return m.group("case")
    if _GENERIC.match(stem) and path.parent.name:
        return path.parent.name
    return stem
