"""File -> layer tuples without Qt: kind guessing, NIfTI reorientation, broken files."""

from pathlib import Path

import numpy as np
import pytest

from napari_metaseg.io import guess_kind, read_layers

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


def _nifti(path, data, affine, slope=None):
    nib = pytest.importorskip("nibabel")
    img = nib.Nifti1Image(data, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    return path


def test_guess_kind_examples():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=(8, 9)).astype(np.float32)
    assert guess_kind(p) == ("probabilities", 2)
    assert guess_kind(np.moveaxis(p, -1, 0)) == ("probabilities", 0)
    assert guess_kind((p * 255).round().astype(np.uint8)) == ("probabilities", 2)
    assert guess_kind(rng.integers(0, 4, (5, 6, 7)).astype(np.uint8)) == ("labels", None)
    assert guess_kind(rng.integers(0, 4000, (5, 6, 7)).astype(np.int16)) == ("image", None)
    assert guess_kind(rng.random((5, 6, 7))) == ("image", None)


def test_nifti_reoriented_to_ras_with_scale_translate_and_affines(tmp_path):
    rng = np.random.default_rng(1)
    ras = rng.integers(0, 1000, (6, 7, 5)).astype(np.int16)
    ras_affine = np.diag([2.0, 3.0, 1.5, 1.0])
    ras_affine[:3, 3] = (-10.0, -20.0, 5.0)
    # the same volume stored LPS (x and y flipped)
    lps = ras[::-1, ::-1, :].copy()
    lps_affine = np.diag([-2.0, -3.0, 1.5, 1.0])
    lps_affine[:3, 3] = (-10.0 + 2.0 * 5, -20.0 + 3.0 * 6, 5.0)
    path = _nifti(tmp_path / "t1.nii.gz", lps, lps_affine)
    ((data, meta, kind),) = read_layers(path)
    assert kind == "image"
    np.testing.assert_array_equal(data, ras)
    np.testing.assert_allclose(meta["scale"], (2.0, 3.0, 1.5))
    np.testing.assert_allclose(meta["translate"], (-10.0, -20.0, 5.0))
    np.testing.assert_allclose(meta["metadata"]["original_affine"], lps_affine)
    np.testing.assert_allclose(meta["metadata"]["affine"], ras_affine)


def test_nifti_kinds_and_override(tmp_path):
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 3, (6, 7, 5)).astype(np.uint8)
    probs = rng.dirichlet(np.ones(3), size=(6, 7, 5))
    q = np.round(probs * 255).astype(np.uint8)
    _nifti(tmp_path / "gt.nii", gt, np.eye(4))
    _nifti(tmp_path / "sm.nii.gz", q, np.eye(4), slope=1 / 255)
    ((d, m, k),) = read_layers(tmp_path / "gt.nii")
    assert k == "labels" and d.dtype == np.uint8
    ((d, m, k),) = read_layers(tmp_path / "sm.nii.gz")
    assert k == "image" and m["metadata"]["metaseg"] == {"kind": "probabilities", "class_axis": 0}
    assert d.shape == (3, 6, 7, 5) and d.dtype == np.float32
    np.testing.assert_allclose(d.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(d, np.moveaxis(probs, -1, 0), atol=3 / 255)
    assert m["scale"] == (1.0, 1.0, 1.0, 1.0)
    # the user's override wins over the guess
    ((d, m, k),) = read_layers(tmp_path / "gt.nii", kind="image")
    assert k == "image"


def test_numpy_tiff_png(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from skimage.io import imsave

    rng = np.random.default_rng(3)
    img = rng.integers(0, 60000, (20, 30)).astype(np.uint16)
    mask = (img > 30000).astype(np.uint8)
    probs = rng.dirichlet(np.ones(2), size=(20, 30)).astype(np.float32)
    np.save(tmp_path / "p.npy", probs)
    np.savez(tmp_path / "case.npz", image=img, gt=mask, softmax=probs)
    tifffile.imwrite(tmp_path / "img.tif", img)
    imsave(tmp_path / "mask.png", mask * 255, check_contrast=False)
    ((d, m, k),) = read_layers(tmp_path / "p.npy")
    assert m["metadata"]["metaseg"]["kind"] == "probabilities" and d.shape == (2, 20, 30)
    layers = read_layers(tmp_path / "case.npz")
    kinds = {m["name"]: (k, m["metadata"]["metaseg"]["kind"]) for _, m, k in layers}
    assert kinds == {"case image": ("image", "image"), "case gt": ("labels", "labels"),
                     "case softmax": ("image", "probabilities")}
    ((d, m, k),) = read_layers(tmp_path / "img.tif")
    assert k == "image"
    np.testing.assert_array_equal(d, img)
    ((d, m, k),) = read_layers(tmp_path / "mask.png")
    assert k == "labels" and set(np.unique(d)) == {0, 255}


@pytest.mark.parametrize("name", ["bad.nii.gz", "bad.nii", "bad.npy", "bad.npz", "bad.tif", "bad.png"])
def test_corrupt_files_raise_valueerror_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image " * 20)
    with pytest.raises(ValueError, match="bad"):
        read_layers(path)


def test_wrong_content_and_type(tmp_path):
    np.save(tmp_path / "vec.npy", np.arange(10))
    with pytest.raises(ValueError, match="not an image"):
        read_layers(tmp_path / "vec.npy")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_layers(tmp_path / "notes.txt")
    np.save(tmp_path / "img.npy", np.random.default_rng(0).random((8, 8)))
    with pytest.raises(ValueError, match="probabilities"):
        read_layers(tmp_path / "img.npy", kind="probabilities")
    with pytest.raises(ValueError, match="kind must be"):
        read_layers(tmp_path / "img.npy", kind="mask")


def test_brain_sample_files_are_consistent():
    layers = {k: read_layers(SAMPLES / f"brain3d_{k}.nii.gz")[0] for k in ("t1", "softmax", "gt")}
    (t1, mt, kt), (sm, ms, ks), (gt, mg, kg) = layers["t1"], layers["softmax"], layers["gt"]
    assert (kt, ks, kg) == ("image", "image", "labels")
    assert ms["metadata"]["metaseg"]["kind"] == "probabilities"
    assert t1.shape == gt.shape == sm.shape[1:] == (98, 116, 78)
    assert mt["scale"] == mg["scale"] == ms["scale"][1:] == (2.0, 2.0, 2.0)
    assert mt["translate"] == mg["translate"] == ms["translate"][1:] == (-97.5, -133.5, -71.5)
    assert set(np.unique(gt)) == {0, 1, 2, 3}
    size = sum((SAMPLES / f"brain3d_{k}.nii.gz").stat().st_size for k in ("t1", "softmax", "gt"))
    assert size < 3_000_000


def test_probability_volume_with_few_slices_is_not_shown_as_rgb(tmp_path):
    """A volume of 4 slices along its last axis (> 30 x 30 in-plane): napari would take that
    axis for RGBA channels."""
    from napari.layers import Image

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(40, 36, 4)).astype(np.float32)
    np.save(tmp_path / "vol_softmax.npy", probs)
    ((d, m, k),) = read_layers(tmp_path / "vol_softmax.npy", kind="probabilities")
    assert k == "image" and d.shape == (3, 40, 36, 4)
    layer = Image(d, **m)
    assert layer.rgb is False and layer.ndim == 4
