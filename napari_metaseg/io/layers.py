"""Files as napari-style layer tuples ``(data, meta, kind)``, without importing napari.

The npe2 reader (:mod:`napari_metaseg._reader`) is a thin wrapper over :func:`read_layers`; the
same function serves scripts and tests. The *kind* of each array (``"image"``, ``"labels"`` or
``"probabilities"``) is guessed from its dtype, shape and values (:func:`guess_kind`) and can be
forced with ``kind=``. Probability maps are returned as float32 with the class axis **first** (a
slider in napari) and ``meta["metadata"]["metaseg"] = {"kind": "probabilities", "class_axis": 0}``,
which is what the analysis panel reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.inputs import as_probabilities
from .budget import check_claim, check_stored, describe_error, read_npy, read_npz

__all__ = ["KINDS", "NIFTI_SUFFIXES", "SUFFIXES", "guess_kind", "read_layers", "suffix_of",
           "wrong_kind_message"]

KINDS = ("auto", "image", "labels", "probabilities")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SUFFIXES = (*NIFTI_SUFFIXES, ".npy", ".npz", ".tif", ".tiff", ".png")
#: An integer array with at most this many distinct values is a label map.
MAX_LABEL_VALUES = 64
#: Largest class axis considered for a probability map.
MAX_CLASSES = 64
_SAMPLE = 200_000


def suffix_of(path):
    """The lower-case suffix that decides the reader (``".nii.gz"`` counts as one suffix)."""
    name = Path(str(path)).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def _sample(a, n=_SAMPLE):
    flat = a.reshape(-1)
    step = max(1, flat.size // n)
    return flat[::step]


def _class_axis_candidates(shape, spatial_ndim=(2, 3)):
    out = []
    if len(shape) - 1 in spatial_ndim:
        if 2 <= shape[-1] <= MAX_CLASSES:
            out.append(len(shape) - 1)
        if 2 <= shape[0] <= MAX_CLASSES:
            out.append(0)
    return out


def _sums_to_one(a, axis, scale):
    moved = np.moveaxis(a, axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    step = max(1, rows.shape[0] // 20_000)
    s = rows[::step].astype(np.float64).sum(axis=1) * scale
    return bool(s.size) and bool(np.all(np.abs(s - 1.0) <= 0.02)) and float(rows[::step].min()) >= 0


def guess_kind(a, *, slope=None):
    """Guess what an array holds.

    Parameters
    ----------
    a : numpy.ndarray
        The stored array (before any scaling).
    slope : float, optional
        A stored scale factor (NIfTI ``scl_slope``); an unsigned array with a slope whose class
        axis sums to about 1 after scaling is a quantised probability map.

    Returns
    -------
    kind : {"image", "labels", "probabilities"}
    class_axis : int or None
        Class axis of a probability map, else None.

    Examples
    --------
    >>> guess_kind(np.full((4, 4, 2), 0.5))
    ('probabilities', 2)
    >>> guess_kind(np.eye(4, dtype=np.uint8))
    ('labels', None)
    """
    a = np.asarray(a)
    if a.dtype.kind in "fu" and a.ndim in (3, 4):
        if a.dtype.kind == "u":
            scales = [slope] if slope else []
            scales.append(1.0 / np.iinfo(a.dtype).max)
        else:
            scales = [1.0]
        for axis in _class_axis_candidates(a.shape):
            if any(_sums_to_one(a, axis, s) for s in scales):
                return "probabilities", axis
    if a.dtype.kind in "iub" and a.ndim in (2, 3) and a.size:
        if a.dtype.kind == "b" or np.unique(_sample(a)).size <= MAX_LABEL_VALUES:
            return "labels", None
    return "image", None


def _pixel_sample(a, class_axis, n=20_000):
    """About ``n`` pixels of ``a`` as rows ``(pixels, classes)``, float64, without copying ``a``."""
    cax = class_axis % a.ndim
    spatial = [s for i, s in enumerate(a.shape) if i != cax]
    step = max(1, int(np.ceil((np.prod(spatial, dtype=np.float64) / n) ** (1.0 / max(len(spatial), 1)))))
    view = a[tuple(slice(None) if i == cax else slice(None, None, step) for i in range(a.ndim))]
    return np.moveaxis(view, cax, -1).reshape(-1, a.shape[cax]).astype(np.float64)


def wrong_kind_message(a, class_axis=-1, *, name, fix="pass --class-axis {axis}", scale=None):
    """Why ``a`` read as class probabilities with ``class_axis`` is probably the wrong input, or None.

    Recognises an image or a label map given as probabilities (a signed integer array, or an
    unsigned one whose "class" values are far from summing to 1) and a probability map whose
    classes are on another axis (the values sum to 1 over the first or last axis, not over
    ``class_axis``). Float maps that sum to 1 nowhere stay for :func:`~napari_metaseg.core.
    as_probabilities` to judge (logits).

    Parameters
    ----------
    a : numpy.ndarray
        The stored array.
    class_axis : int
        The class axis it would be read with.
    name : str
        Names the file or layer in the message.
    fix : str, default "pass --class-axis {axis}"
        What to tell when the classes are on another axis (``{axis}`` is filled in): the option
        of the front end that reads the input.
    scale : float, optional
        Value of one step of an unsigned integer map (NIfTI ``scl_slope``); default 1 / max.

    Returns
    -------
    str or None

    Examples
    --------
    >>> p = np.full((2, 8, 8), 0.5, np.float32)
    >>> wrong_kind_message(p, -1, name="a.npy")[:33]
    'a.npy looks like a classes-first '
    """
    a = np.asarray(a)
    if a.ndim < 2 or a.size == 0 or a.dtype.kind not in "iuf":
        return None
    cax = class_axis % a.ndim
    if a.dtype.kind == "i":
        sample = _sample(a)
        lo, hi, distinct = int(sample.min()), int(sample.max()), np.unique(sample).size
        what = ("a label map (ground truth)" if distinct <= MAX_LABEL_VALUES
                else "an image (e.g. an MRI volume)")
        return (f"{name} looks like {what}, not class probabilities: it holds {a.dtype} values "
                f"{lo}..{hi} ({distinct} distinct) in an array of shape {a.shape}; probabilities are "
                "floats in [0, 1] (or unsigned integers with a scale) that sum to 1 over a class axis. "
                "Give the softmax file of the case (e.g. <case>_softmax.npy or softmax_rf.nii.gz)")
    step = 1.0
    if a.dtype.kind == "u":
        step = float(scale) if scale else 1.0 / np.iinfo(a.dtype).max
    rows = _pixel_sample(a, cax)
    off = np.abs(rows.sum(axis=1) * step - 1.0)
    if float(np.median(off)) <= 0.02:
        return None  # sums to 1 over the class axis asked for
    for axis in sorted({0, a.ndim - 1} - {cax}):
        if not 2 <= a.shape[axis] <= MAX_CLASSES or a.ndim - 1 not in (2, 3):
            continue
        other = _pixel_sample(a, axis)
        if other.min() >= 0 and float(np.max(np.abs(other.sum(axis=1) * step - 1.0))) <= 0.02:
            return (f"{name} looks like a classes-first probability map: its values sum to 1 over axis "
                    f"{axis} ({a.shape[axis]} entries), not over the class axis {class_axis} "
                    f"({a.shape[cax]} entries) of shape {a.shape}; {fix.format(axis=axis)}")
    if a.dtype.kind == "u" and not scale and float(np.median(off)) > 0.25:
        return (f"{name} looks like an image, not class probabilities: its {a.dtype} values over the "
                f"class axis {class_axis} ({a.shape[cax]} entries) sum to {np.median(rows.sum(axis=1)):.0f} "
                f"(median), not to {np.iinfo(a.dtype).max} as quantised probabilities would; give the "
                "softmax file of the case")
    return None


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _as_layer(a, kind, class_axis, *, name, slope=None, scale=None, translate=None, extra_meta=None):
    """One ``(data, meta, layer_type)`` tuple for ``a`` of the given kind."""
    metadata = dict(extra_meta or {})
    meta = {"name": name}
    spatial_scale = scale
    if kind == "probabilities":
        if class_axis is None:
            cands = _class_axis_candidates(a.shape)
            if not cands:
                raise ValueError(
                    f"{name}: cannot read an array of shape {a.shape} as probabilities "
                    f"(expected 2 or 3 spatial axes and a class axis of 2..{MAX_CLASSES} entries)"
                )
            class_axis = cands[0]
        probs_scale = float(slope) if (slope and a.dtype.kind == "u") else None
        wrong = wrong_kind_message(a, class_axis, name=name, scale=probs_scale,
                                   fix="its classes are on axis {axis}; open it without forcing the kind")
        if wrong:
            raise ValueError(wrong)
        probs = as_probabilities(a, class_axis=class_axis, scale=probs_scale)
        data = np.moveaxis(probs, -1, 0)
        metadata["metaseg"] = {"kind": "probabilities", "class_axis": 0}
        # rgb=False: a last spatial axis of 3 or 4 entries is not colour channels
        meta.update(colormap="magma", contrast_limits=(0.0, 1.0), visible=False, rgb=False)
        if spatial_scale is not None:
            meta["scale"] = (1.0, *spatial_scale)
            meta["translate"] = (0.0, *translate)
        meta["metadata"] = metadata
        return data, meta, "image"
    if spatial_scale is not None:
        meta["scale"] = tuple(spatial_scale)
        meta["translate"] = tuple(translate)
    if kind == "labels":
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                raise ValueError(f"{name}: a float array with non-integer values cannot be labels")
            a = a.astype(np.int32)
        elif a.dtype.kind == "b":
            a = a.astype(np.uint8)
        elif a.dtype.kind not in "iu":
            raise ValueError(f"{name}: dtype {a.dtype} cannot be labels")
        metadata["metaseg"] = {"kind": "labels"}
        meta.update(opacity=0.5, metadata=metadata)
        return a, meta, "labels"
    if a.dtype.kind not in "iufb":
        raise ValueError(f"{name}: dtype {a.dtype} is not an image")
    metadata["metaseg"] = {"kind": "image"}
    if slope and a.dtype.kind in "iu":
        a = a * np.float32(slope)
    meta.update(colormap="gray", metadata=metadata)
    return a, meta, "image"


def _read_nifti_layer(path, kind, max_bytes=None):
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    from .nifti import load_nifti

    img, raw, slope, inter = load_nifti(path, max_bytes=max_bytes)
    original_affine = np.asarray(img.affine, dtype=np.float64)
    affine = original_affine
    if raw.ndim >= 3:
        # closest canonical (RAS+) orientation on the stored values: flips and axis swaps only
        ornt = io_orientation(original_affine)
        if not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
            raw = np.ascontiguousarray(apply_orientation(raw, ornt))
            affine = original_affine @ inv_ornt_aff(ornt, img.shape[:3])
    if raw.ndim == 4 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim not in (2, 3, 4):
        raise ValueError(f"{path}: NIfTI with {raw.ndim} dimensions {raw.shape} is not supported")
    no_slope = slope is None or np.isnan(slope) or slope == 1.0
    no_inter = inter is None or np.isnan(inter) or inter == 0.0
    if not no_inter:
        raw = raw * np.float32(1.0 if no_slope else slope) + np.float32(inter)
        slope = None
    elif no_slope:
        slope = None
    nsp = 3 if raw.ndim >= 3 else 2
    zooms = np.sqrt((affine[:3, :nsp] ** 2).sum(axis=0))
    translate = affine[:nsp, 3]
    class_axis = None
    if kind == "auto":
        kind, class_axis = guess_kind(raw, slope=slope)
        if kind == "probabilities" and class_axis != raw.ndim - 1:
            kind, class_axis = "image", None  # NIfTI keeps x, y, z first: classes are last
    elif kind == "probabilities":
        class_axis = raw.ndim - 1
    extra = {
        "affine": affine,
        "original_affine": original_affine,
        "source": str(path),
        "nifti_shape": tuple(int(s) for s in img.shape),
    }
    name = Path(str(path)).name
    for suf in NIFTI_SUFFIXES[::-1]:
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    return _as_layer(raw, kind, class_axis, name=name, slope=slope, scale=tuple(zooms.tolist()),
                     translate=tuple(translate.tolist()), extra_meta=extra)


#: Samples per pixel of each PNG colour type (a palette may be expanded to RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}


def _png_claim(path):
    """``(shape, dtype)`` that a PNG file's IHDR claims, or None when it has no valid one."""
    import struct

    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None  # not a PNG: the decoder says so
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return (height, width, _PNG_CHANNELS.get(colour, 4)), np.uint16 if depth == 16 else np.uint8


def _read_array_file(path, suffix, max_bytes=None):
    """``[(name, array)]`` of a numpy, TIFF or PNG file; every header is checked against the
    input budget (:mod:`napari_metaseg.io.budget`) before the data is read."""
    from .budget import InputTooLargeError

    if suffix == ".npy":
        try:
            arr = read_npy(path, max_bytes=max_bytes)
        except InputTooLargeError:
            raise
        except Exception as exc:
            raise ValueError(f"cannot read {path} as a .npy array: {describe_error(exc)}") from exc
        return [(Path(str(path)).stem, arr)]
    if suffix == ".npz":
        items = [(f"{Path(str(path)).stem} {k}", a) for k, a in read_npz(path, max_bytes=max_bytes)]
        if not items:
            raise ValueError(f"{path}: the .npz archive holds no arrays")
        return items
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(str(path)) as tif:
                series = tif.series[0]
                what = f"{path} (TIFF header)"
                nbytes = check_claim(series.shape, series.dtype, what=what, max_bytes=max_bytes)
                if all(page.compression == 1 for page in tif.pages):  # uncompressed: the file holds it all
                    check_stored(nbytes, Path(str(path)).stat().st_size, what=what, compressed=False)
                arr = series.asarray()
        except InputTooLargeError:
            raise
        except Exception as exc:
            raise ValueError(f"cannot read {path} as TIFF: {describe_error(exc)}") from exc
        return [(Path(str(path)).stem, arr)]
    if suffix == ".png":
        from skimage.io import imread

        try:
            claim = _png_claim(path)
            if claim is not None:
                what = f"{path} (PNG header)"
                nbytes = check_claim(*claim, what=what, max_bytes=max_bytes)
                check_stored(nbytes // 4, Path(str(path)).stat().st_size, what=what,  # palette: 4x
                             compressed=True)
            arr = imread(str(path))
        except InputTooLargeError:
            raise
        except Exception as exc:
            raise ValueError(f"cannot read {path} as PNG: {describe_error(exc)}") from exc
        return [(Path(str(path)).stem, arr)]
    raise ValueError(f"{path}: unsupported file type {suffix!r} (supported: {', '.join(SUFFIXES)})")


def read_layers(path, *, kind="auto", max_bytes=None):
    """Read a file into layer tuples ``(data, meta, layer_type)``.

    Parameters
    ----------
    path : str or os.PathLike
        ``.nii``/``.nii.gz`` (reoriented to the closest canonical RAS+ orientation; ``scale`` from
        the voxel sizes, ``translate`` from the affine, original affine kept in
        ``meta["metadata"]["original_affine"]``), ``.npy``/``.npz`` (one layer per array),
        ``.tif``/``.tiff``/``.png``.
    kind : {"auto", "image", "labels", "probabilities"}, default "auto"
        Force how every array of the file is read; ``"auto"`` guesses (:func:`guess_kind`).
    max_bytes : int or str, optional
        The input budget: a file whose header claims more is refused before it is read
        (default: ``NAPARI_METASEG_MAX_BYTES``, else half the available memory; see
        :mod:`napari_metaseg.io.budget`).

    Returns
    -------
    list of tuple
        ``(data, meta, layer_type)`` with ``layer_type`` ``"image"`` or ``"labels"``.
        Probability maps are float32 ``"image"`` layers with the class axis first.

    Raises
    ------
    ValueError
        The file cannot be read, or its content cannot be read as ``kind``
        (:class:`~napari_metaseg.io.budget.InputTooLargeError` when it claims more than the budget).

    Examples
    --------
    >>> layers = read_layers("softmax_rf.nii.gz")  # doctest: +SKIP
    >>> layers[0][1]["metadata"]["metaseg"]["kind"]  # doctest: +SKIP
    'probabilities'
    """
    _check_kind(kind)
    suffix = suffix_of(path)
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r} (supported: {', '.join(SUFFIXES)})")
    if not Path(str(path)).is_file():
        raise ValueError(f"{path}: no such file")
    if suffix in NIFTI_SUFFIXES:
        return _with_class_names([_read_nifti_layer(path, kind, max_bytes)], path)
    out = []
    for name, arr in _read_array_file(path, suffix, max_bytes):
        if arr.dtype.kind not in "iufb" or arr.ndim < 2:
            raise ValueError(f"{name}: an array of dtype {arr.dtype} and shape {arr.shape} is not an image")
        k, axis = guess_kind(arr) if kind == "auto" else (kind, None)
        out.append(_as_layer(arr, k, axis, name=name, extra_meta={"source": str(path)}))
    return _with_class_names(out, path)


def _with_class_names(layers, path):
    """Probability layers get the class names of a sidecar beside ``path`` (see
    :mod:`napari_metaseg.io.class_names`), when there is one."""
    from .class_names import class_names_beside

    names = None
    for _, meta, _ in layers:
        ms = meta.get("metadata", {}).get("metaseg", {})
        if ms.get("kind") == "probabilities" and "class_names" not in ms:
            names = class_names_beside(path) if names is None else names
            if names:
                ms["class_names"] = names
    return layers
