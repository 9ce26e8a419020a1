"""Sample data contributions (npe2 ``sample_data``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"


def _sample_path(name):
    path = SAMPLE_DIR / name
    if not path.exists():
        raise FileNotFoundError(
            f"sample file {path} is missing; the samples ship with the source tree "
            "(install from a clone with `pip install -e .`)"
        )
    return path


def load_nuclei_arrays():
    """The nuclei 2D sample as arrays: image (uint16), probabilities (float32, classes last), GT.

    The softmax is stored quantised (uint8, q/255); it is validated and renormalised by
    :func:`napari_metaseg.core.as_probabilities`.
    """
    from .core import as_probabilities

    with np.load(_sample_path("nuclei2d.npz")) as f:
        image = f["image"]
        probs = as_probabilities(f["softmax"])
        gt = f["gt"]
    return image, probs, gt


def make_nuclei_sample():
    """Fluorescence nuclei (2018 Data Science Bowl image, via stardist) with softmax and GT."""
    image, probs, gt = load_nuclei_arrays()
    meta = {"metaseg": {"kind": "probabilities", "class_axis": 0, "class_names": ["background", "nucleus"]}}
    return [
        (image, {"name": "nuclei image", "colormap": "gray"}, "image"),
        (
            np.moveaxis(probs, -1, 0),
            {"name": "nuclei softmax", "colormap": "magma", "contrast_limits": (0.0, 1.0),
             "visible": False, "metadata": meta},
            "image",
        ),
        (gt.astype(np.int32), {"name": "nuclei ground truth", "opacity": 0.4, "visible": False}, "labels"),
    ]


BRAIN_FILES = {"t1": "brain3d_t1.nii.gz", "softmax": "brain3d_softmax.nii.gz", "gt": "brain3d_gt.nii.gz"}


def make_brain_sample():
    """T1 MRI volume (MNI ICBM 2009 derivative, 2 mm) with a random-forest softmax and GT.

    Read through :func:`napari_metaseg.io.read_layers`: RAS+ orientation, ``scale`` from the voxel
    size (2 mm), ``translate`` from the affine, the affine kept in each layer's metadata.
    """
    from .io import read_layers

    names = {"t1": "brain T1", "softmax": "brain softmax", "gt": "brain ground truth"}
    kinds = {"t1": "image", "softmax": "probabilities", "gt": "labels"}
    out = []
    for key, fname in BRAIN_FILES.items():
        (data, meta, layer_type), = read_layers(_sample_path(fname), kind=kinds[key])
        meta["name"] = names[key]
        if key == "gt":
            meta["visible"] = False
            meta["opacity"] = 0.4
        out.append((data, meta, layer_type))
    return out
