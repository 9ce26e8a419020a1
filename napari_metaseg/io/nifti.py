"""NIfTI input: volumes and quantised probability maps, without float64 detours."""

from __future__ import annotations

import os

import numpy as np

from ..core.inputs import as_probabilities
from .budget import check_claim, check_stored, describe_error


def load_nifti(path, *, max_bytes=None):
    """Open a NIfTI file and read its stored (unscaled) array within the input budget.

    The header's shape and data type are checked against the budget
    (:func:`napari_metaseg.io.budget.check_claim`) and against what the file can hold
    (:func:`~napari_metaseg.io.budget.check_stored`: a ``.nii`` must be that long, a ``.nii.gz``
    cannot expand more than deflate allows) before any voxel is read, so a tiny file claiming
    gigabytes is refused without allocating them, whatever the budget.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int or str, optional
        The input budget (default: ``NAPARI_METASEG_MAX_BYTES``, else half the available memory).

    Returns
    -------
    img : nibabel image
    raw : numpy.ndarray
        The stored array, unscaled.
    slope, inter : float or None
        The header's scaling.

    Raises
    ------
    InputTooLargeError
        The header claims more than the budget.
    ValueError
        The file is not a readable NIfTI image (the message names the cause, or at least the
        error type).

    Examples
    --------
    >>> img, raw, slope, inter = load_nifti("gt.nii.gz")  # doctest: +SKIP
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))  # reads the header only
        shape, dtype = img.shape, img.get_data_dtype()
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise ValueError(f"cannot read {path} as NIfTI: {describe_error(exc)}") from exc
    what = f"{path} (NIfTI header)"
    nbytes = check_claim(shape, dtype, what=what, max_bytes=max_bytes)
    size = os.stat(path).st_size
    if str(path).lower().endswith(".gz"):
        check_stored(nbytes, size, what=what, compressed=True)
    else:
        check_stored(nbytes, size - int(getattr(img.dataobj, "offset", 0)), what=what, compressed=False)
    try:
        slope, inter = img.dataobj.slope, img.dataobj.inter
        raw = np.asanyarray(img.dataobj.get_unscaled())
    except Exception as exc:
        raise ValueError(f"cannot read {path} as NIfTI: {describe_error(exc)}") from exc
    return img, raw, slope, inter


def read_nifti(path, *, max_bytes=None):
    """Read a NIfTI file as stored (no reorientation).

    Parameters
    ----------
    path : str or os.PathLike
        ``.nii`` or ``.nii.gz`` file.
    max_bytes : int or str, optional
        The input budget (see :func:`load_nifti`).

    Returns
    -------
    data : numpy.ndarray
        The stored array with the header's scaling applied only when it is not the identity
        (integer label volumes stay integer).
    affine : numpy.ndarray
        4 x 4 voxel-to-world affine.

    Raises
    ------
    InputTooLargeError
        The header claims more than the input budget.
    ValueError
        The file is not a readable NIfTI image.

    Examples
    --------
    >>> data, affine = read_nifti("gt.nii.gz")  # doctest: +SKIP
    """
    img, raw, slope, inter = load_nifti(path, max_bytes=max_bytes)
    if (slope in (1.0, None) or np.isnan(slope)) and (inter in (0.0, None) or np.isnan(inter)):
        return raw, img.affine
    return raw * np.float32(slope) + np.float32(inter), img.affine


def read_nifti_probabilities(path, *, class_axis=-1, max_bytes=None):
    """Read a 4D NIfTI softmax (``(x, y, z, class)``) as float32 probabilities.

    Quantised maps (e.g. uint8 with ``scl_slope = 1/255``) are scaled in float32 and
    renormalised by :func:`napari_metaseg.core.as_probabilities`.

    Parameters
    ----------
    path : str or os.PathLike
        NIfTI file with a class axis.
    class_axis : int, default -1
        Class axis of the stored array.
    max_bytes : int or str, optional
        The input budget (see :func:`load_nifti`).

    Returns
    -------
    probs : numpy.ndarray
        float32, classes last.
    affine : numpy.ndarray
        4 x 4 voxel-to-world affine.

    Raises
    ------
    InputTooLargeError
        The header claims more than the input budget.
    ValueError
        Not a readable NIfTI file, or one that looks like an image, a label map or a volume
        whose classes are not last (the message says which).

    Examples
    --------
    >>> probs, affine = read_nifti_probabilities("softmax_rf.nii.gz")  # doctest: +SKIP
    """
    from .layers import MAX_CLASSES, wrong_kind_message

    img, raw, slope, inter = load_nifti(path, max_bytes=max_bytes)
    no_slope = slope is None or np.isnan(slope) or slope == 1.0
    no_inter = inter is None or np.isnan(inter) or inter == 0.0
    if raw.ndim == 3 and raw.shape[-1] > MAX_CLASSES:
        raise ValueError(f"{path} looks like a 3D volume (an image or labels), not class probabilities: "
                         f"shape {raw.shape}, {raw.dtype}; NIfTI softmax files are 4D (x, y, z, class). "
                         "Give the softmax file of the case (e.g. softmax_rf.nii.gz)")
    if raw.ndim >= 2 and no_inter and (no_slope or raw.dtype.kind == "u"):  # stored values judgeable
        wrong = wrong_kind_message(raw, class_axis, name=str(path), scale=None if no_slope else float(slope),
                                   fix="NIfTI softmax files hold (x, y, z, class): save it with the "
                                       "classes last")
        if wrong:
            raise ValueError(wrong)
    if raw.dtype.kind == "u" and no_inter and not no_slope:
        return as_probabilities(raw, class_axis=class_axis, scale=float(slope)), img.affine
    if not (no_slope and no_inter):
        raw = raw * np.float32(1.0 if no_slope else slope) + np.float32(0.0 if no_inter else inter)
    return as_probabilities(raw, class_axis=class_axis), img.affine
