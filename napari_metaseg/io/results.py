"""Result files of batch runs, written atomically so that a killed run never leaves half a file.

Every file goes through :func:`napari_metaseg.core.atomic.atomic_path`: it is written to a new
temporary file in the destination folder, fsync'ed and renamed (``os.replace``, atomic on one
file system): a reader, or a resumed run, sees either the whole file or none. Per-case tables
carry the settings they were computed with in their Parquet metadata, so a resumed run can tell
a finished case from one computed with other settings.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

# the one atomic writer of the package, re-exported here for the callers that import it from io
from ..core.atomic import TMP_SUFFIX, atomic_path

__all__ = [
    "TMP_SUFFIX",
    "atomic_path",
    "read_settings",
    "write_failed_csv",
    "write_nifti_like",
    "write_table",
]

_META_KEY = b"napari_metaseg"


def write_table(table, path, *, settings: dict | None = None) -> Path:
    """Write a pandas table to Parquet atomically, with ``settings`` in the file's metadata.

    Parameters
    ----------
    table : pandas.DataFrame
    path : str or os.PathLike
        Destination ``.parquet`` file.
    settings : dict, optional
        JSON-serialisable; read back with :func:`read_settings`.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> write_table(df, "cases/a.parquet", settings={"mode": "2d"})  # doctest: +SKIP
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    t = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(t.schema.metadata or {})
    meta[_META_KEY] = json.dumps(settings or {}, sort_keys=True).encode()
    t = t.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp)
    return path


def read_settings(path) -> dict | None:
    """The settings stored by :func:`write_table`, or None if the file is missing or unreadable.

    Examples
    --------
    >>> read_settings("cases/a.parquet")  # doctest: +SKIP
    {'mode': '2d'}
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(_META_KEY, b"{}"))
    except Exception:  # a damaged file counts as not done
        return None


def write_failed_csv(path, failures) -> Path:
    """Write ``failures`` (pairs of case and error message) as CSV with the header ``case,error``.

    Examples
    --------
    >>> write_failed_csv("out/failed.csv", [("b", "ValueError: 3 NaN values")])  # doctest: +SKIP
    """
    from ..core.csv_safe import escape_row

    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case", "error"])
        for case, error in failures:  # user text: no cell may start a spreadsheet formula
            w.writerow(escape_row([str(case), str(error)]))
    return path


def write_nifti_like(values, affine, path, *, like=None) -> Path:
    """Write a float32 volume as NIfTI with the given affine (and ``like``'s qform/sform codes).

    Parameters
    ----------
    values : numpy.ndarray
        2D or 3D array in the stored orientation of the input.
    affine : numpy.ndarray
        4 x 4 voxel-to-world affine of the input.
    path : str or os.PathLike
        ``.nii`` or ``.nii.gz`` destination.
    like : str or os.PathLike, optional
        NIfTI file whose spatial units and qform/sform codes are copied.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> write_nifti_like(pred_map, affine, "maps/a_iou_adj_pred.nii.gz")  # doctest: +SKIP
    """
    import nibabel as nib

    path = Path(path)
    img = nib.Nifti1Image(np.asarray(values, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    if like is not None:
        src = nib.load(str(like)).header
        qcode, scode = int(src["qform_code"]), int(src["sform_code"])
        img.set_qform(affine, code=qcode or 1)
        img.set_sform(affine, code=scode or 1)
        xyz, _ = src.get_xyzt_units()
        img.header.set_xyzt_units(xyz=xyz)
    return save_nifti_atomic(img, path)


def save_nifti_atomic(img, path) -> Path:
    """Save a nibabel image to ``path`` (``.nii`` or ``.nii.gz``) atomically.

    A crash, a full disk or a kill never leaves a partial file under the final name.

    Parameters
    ----------
    img : nibabel.Nifti1Image
    path : str or os.PathLike

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> save_nifti_atomic(nib.Nifti1Image(values, affine), "out/a.nii.gz")  # doctest: +SKIP
    """
    import nibabel as nib

    path = Path(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    # nibabel picks the compression from the name: the temporary carries the suffix
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return path
