"""Make ``sample_data/brain3d_*.nii.gz`` from the shared benchmark subject sub-02.

Deterministic: crop to the brain's axial range, 2 x 2 x 2 block reduction, requantise.
Run from the repository root: ``python tools/make_brain_sample.py ../shared/data/brain/sub-02``.
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

CROP = (slice(0, 196), slice(0, 232), slice(0, 156))  # even sizes; z >= 156 is background only
F = 2


def blocks(a):
    """(X, Y, Z, ...) -> (X/2, Y/2, Z/2, 8, ...): the 8 voxels of each 2 x 2 x 2 block."""
    x, y, z = (s // F for s in a.shape[:3])
    b = a.reshape(x, F, y, F, z, F, *a.shape[3:])
    b = np.moveaxis(b, (1, 3, 5), (3, 4, 5))
    return b.reshape(x, y, z, F**3, *a.shape[3:])


def main(src, dst="sample_data"):
    src, dst = Path(src), Path(dst)
    t1_img = nib.load(src / "t1.nii.gz")
    gt_img = nib.load(src / "gt.nii.gz")
    sm_img = nib.load(src / "softmax_rf.nii.gz")
    affine = t1_img.affine.copy()
    # new voxel (i, j, k) is the centre of old voxels 2i..2i+1: origin moves by half an old voxel
    new_affine = affine @ np.diag([F, F, F, 1.0])
    new_affine[:3, 3] = (affine @ np.array([0.5, 0.5, 0.5, 1.0]))[:3]

    t1 = np.asanyarray(t1_img.dataobj)[CROP].astype(np.float64)
    t1 = np.round(blocks(t1).mean(axis=3)).astype(np.int16)

    probs = sm_img.get_fdata(dtype=np.float32)[CROP]          # q / 255 per class
    probs = probs / probs.sum(axis=-1, keepdims=True)
    probs = blocks(probs).mean(axis=3)                         # mean probability of the block
    probs_u8 = np.round(probs * 255).astype(np.uint8)

    gt = np.asanyarray(gt_img.dataobj)[CROP]
    counts = np.stack([(blocks(gt) == c).sum(axis=3) for c in range(4)], axis=-1)
    gt = counts.argmax(axis=-1).astype(np.uint8)               # majority, ties to the lower class

    def save(a, name, slope=None):
        img = nib.Nifti1Image(a, new_affine)
        img.header.set_qform(new_affine, code=4)
        img.header.set_sform(new_affine, code=4)
        if slope is not None:
            img.header.set_slope_inter(slope, 0.0)
        nib.save(img, dst / name)

    save(t1, "brain3d_t1.nii.gz")
    save(gt, "brain3d_gt.nii.gz")
    save(probs_u8, "brain3d_softmax.nii.gz", slope=1 / 255)
    print(t1.shape, new_affine.tolist())


if __name__ == "__main__":
    main(*sys.argv[1:])
