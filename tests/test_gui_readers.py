"""Readers and samples through napari: each file type, broken files, both samples."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def errors(monkeypatch):
    """Messages of the error notifications shown while the test runs."""
    from napari.utils import notifications

    seen = []
    monkeypatch.setattr(notifications, "show_error", lambda msg: seen.append(str(msg)))
    return seen


def _open(viewer, path, **kwargs):
    return viewer.open(str(path), plugin="napari-metaseg", **kwargs)


def test_nifti_reader_kinds_scale_translate(make_napari_viewer):
    from napari_metaseg._sample_data import SAMPLE_DIR

    viewer = make_napari_viewer()
    (t1,) = _open(viewer, SAMPLE_DIR / "brain3d_t1.nii.gz")
    (gt,) = _open(viewer, SAMPLE_DIR / "brain3d_gt.nii.gz")
    (sm,) = _open(viewer, SAMPLE_DIR / "brain3d_softmax.nii.gz")
    assert (t1._type_string, gt._type_string, sm._type_string) == ("image", "labels", "image")
    # class names from the sidecar brain3d_softmax.json
    assert sm.metadata["metaseg"] == {"kind": "probabilities", "class_axis": 0,
                                      "class_names": ["background", "CSF", "grey matter", "white matter"]}
    np.testing.assert_allclose(t1.scale, (2, 2, 2))
    np.testing.assert_allclose(sm.scale, (1, 2, 2, 2))
    np.testing.assert_allclose(gt.translate, (-97.5, -133.5, -71.5))
    assert gt.metadata["original_affine"].shape == (4, 4)
    # the user overrides the guess with napari's own layer_type
    (as_image,) = _open(viewer, SAMPLE_DIR / "brain3d_gt.nii.gz", layer_type="image")
    assert as_image._type_string == "image"


def test_numpy_tiff_png_readers(make_napari_viewer, tmp_path):
    import tifffile
    from skimage.io import imsave

    rng = np.random.default_rng(0)
    img = rng.integers(0, 60000, (20, 30)).astype(np.uint16)
    np.save(tmp_path / "p.npy", rng.dirichlet(np.ones(3), size=(20, 30)).astype(np.float32))
    np.savez(tmp_path / "case.npz", image=img, gt=(img > 30000).astype(np.uint8))
    tifffile.imwrite(tmp_path / "img.tif", img)
    imsave(tmp_path / "mask.png", (img > 30000).astype(np.uint8) * 255, check_contrast=False)
    viewer = make_napari_viewer()
    (p,) = _open(viewer, tmp_path / "p.npy")
    assert p.metadata["metaseg"]["kind"] == "probabilities" and p.data.shape == (3, 20, 30)
    layers = _open(viewer, tmp_path / "case.npz")
    assert [la._type_string for la in layers] == ["image", "labels"]
    (t,) = _open(viewer, tmp_path / "img.tif")
    np.testing.assert_array_equal(t.data, img)
    (m,) = _open(viewer, tmp_path / "mask.png")
    assert m._type_string == "labels"


@pytest.mark.parametrize("name", ["broken.nii.gz", "broken.npy", "broken.npz", "broken.tif", "broken.png"])
def test_corrupt_file_notifies_and_adds_nothing(make_napari_viewer, tmp_path, errors, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 definitely not an image " * 50)
    viewer = make_napari_viewer()
    assert _open(viewer, path) == []
    assert len(viewer.layers) == 0
    assert len(errors) == 1 and "could not read" in errors[0] and name in errors[0]


def test_wrong_type_files(make_napari_viewer, tmp_path, errors):
    from napari_metaseg._reader import get_reader

    (tmp_path / "notes.txt").write_text("not ours")
    assert get_reader(str(tmp_path / "notes.txt")) is None  # napari asks another reader
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))
    viewer = make_napari_viewer()
    assert _open(viewer, tmp_path / "strings.npy") == []
    assert len(viewer.layers) == 0 and "not an image" in errors[0]


def test_nuclei_sample_opens_all_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-metaseg", "nuclei2d")
    assert [la.name for la in viewer.layers] == ["nuclei image", "nuclei softmax", "nuclei ground truth"]
    assert viewer.layers["nuclei softmax"].metadata["metaseg"]["kind"] == "probabilities"


def test_brain_sample_opens_all_layers_aligned(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-metaseg", "brain3d")
    t1, sm, gt = (viewer.layers[n] for n in ("brain T1", "brain softmax", "brain ground truth"))
    assert (t1._type_string, sm._type_string, gt._type_string) == ("image", "image", "labels")
    assert t1.data.shape == gt.data.shape == sm.data.shape[1:]
    np.testing.assert_allclose(t1.scale, gt.scale)
    np.testing.assert_allclose(sm.scale[1:], gt.scale)
    np.testing.assert_allclose(sm.translate[1:], t1.translate)
    # world extents agree, so the layers overlay voxel for voxel
    np.testing.assert_allclose(t1.extent.world, gt.extent.world)
