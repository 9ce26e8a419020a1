"""NIfTI input: volumes and quantised probability maps, without float64 detours."""

from __future__ import annotations

import numpy as np

from ..core.inputs import as_probabilities


def read_nifti(path):
    """Read a NIfTI file as stored (no reorientation).

    Parameters
    ----------
    path : str or os.PathLike
        ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    data : numpy.ndarray
        The stored array with the header's scaling applied only when it is not the identity
        (integer label volumes stay integer).
    affine : numpy.ndarray
        4 x 4 voxel-to-world affine.

    Raises
    ------
    ValueError
        The file is not a readable NIfTI image.

    Examples
    --------
    >>> data, affine = read_nifti("gt.nii.gz")  # doctest: +SKIP
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        slope, inter = img.dataobj.slope, img.dataobj.inter
        raw = np.asanyarray(img.dataobj.get_unscaled())
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise ValueError(f"cannot read {path} as NIfTI: {exc}") from exc
    if (slope in (1.0, None) or np.isnan(slope)) and (inter in (0.0, None) or np.isnan(inter)):
        return raw, img.affine
    return raw * np.float32(slope) + np.float32(inter), img.affine


def read_nifti_probabilities(path, *, class_axis=-1):
    """Read a 4D NIfTI softmax (``(x, y, z, class)``) as float32 probabilities.

    Quantised maps (e.g. uint8 with ``scl_slope = 1/255``) are scaled in float32 and
    renormalised by :func:`napari_metaseg.core.as_probabilities`.

    Parameters
    ----------
    path : str or os.PathLike
        NIfTI file with a class axis.
    class_axis : int, default -1
        Class axis of the stored array.

    Returns
    -------
    probs : numpy.ndarray
        float32, classes last.
    affine : numpy.ndarray
        4 x 4 voxel-to-world affine.

    Examples
    --------
    >>> probs, affine = read_nifti_probabilities("softmax_rf.nii.gz")  # doctest: +SKIP
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        slope, inter = img.dataobj.slope, img.dataobj.inter
        raw = np.asanyarray(img.dataobj.get_unscaled())
    except Exception as exc:
        raise ValueError(f"cannot read {path} as NIfTI: {exc}") from exc
    no_slope = slope is None or np.isnan(slope) or slope == 1.0
    no_inter = inter is None or np.isnan(inter) or inter == 0.0
    if raw.dtype.kind == "u" and no_inter and not no_slope:
        return as_probabilities(raw, class_axis=class_axis, scale=float(slope)), img.affine
    if not (no_slope and no_inter):
        raw = raw * np.float32(1.0 if no_slope else slope) + np.float32(0.0 if no_inter else inter)
    return as_probabilities(raw, class_axis=class_axis), img.affine
