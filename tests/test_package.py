"""Packaging contracts: a headless core, a valid manifest, the samples."""

import subprocess
import sys

import numpy as np
import pytest


def test_core_imports_neither_qt_nor_napari():
    code = (
        "import sys, napari_metaseg.core, napari_metaseg.io;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'vispy')];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_manifest_is_valid_and_ids_are_namespaced():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManifest.from_distribution("napari-metaseg")
    assert pm.name == "napari-metaseg"
    ids = [c.id for c in pm.contributions.commands]
    assert ids and all(i.startswith("napari-metaseg.") for i in ids)
    out = subprocess.run(["npe2", "validate", "napari-metaseg"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_nuclei_sample_layers_are_consistent():
    from napari_metaseg._sample_data import make_nuclei_sample

    layers = make_nuclei_sample()
    kinds = [k for *_, k in layers]
    assert kinds == ["image", "image", "labels"]
    image, probs, gt = (d for d, *_ in layers)
    assert probs.shape == (2, *image.shape) and gt.shape == image.shape
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)
    assert set(np.unique(gt)) == {0, 1}


def test_every_exported_core_name_resolves():
    import napari_metaseg.core as core

    assert len(core.__all__) == len(set(core.__all__))
    missing = [name for name in core.__all__ if getattr(core, name, None) is None]
    assert missing == []
    with pytest.raises(AttributeError, match="no attribute"):
        core.not_a_name  # noqa: B018


def test_sample_model_records_its_segmentation_and_predicts_the_sample_slice_wise(tmp_path):
    """The demo model was trained slice-wise along z: its file says so, so the CLI segments the
    brain sample the same way without --mode, and refuses a 3D run."""
    import pandas as pd

    from napari_metaseg._sample_data import SAMPLE_DIR
    from napari_metaseg.cli import main
    from napari_metaseg.core.meta_io import load_models

    model = SAMPLE_DIR / "brain3d_meta_model.json.gz"
    clf, reg, info = load_models(model)
    assert clf.kind == "lasso"
    assert info["segmentation"] == {"mode": "slices", "slice_axis": -1, "ignore_index": 255}
    assert info["training_cases"] == ["sub-01"] and reg.kind == "linear"
    image = info["image_quality"]  # the quality strip and the Triage tab rank slices by it
    assert image["by"] == "slice" and image["target"] == "mean_iou"
    assert main(["predict", str(model), str(SAMPLE_DIR), "--out", str(tmp_path / "p"), "-q"]) == 0
    pred = pd.read_parquet(tmp_path / "p" / "predictions.parquet")
    assert "slice" in pred.columns and pred["slice"].nunique() > 50
    assert main(["predict", str(model), str(SAMPLE_DIR), "--mode", "3d", "--out", str(tmp_path / "q"),
                 "-q"]) == 2
