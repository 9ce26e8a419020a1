"""CLI `errors flag` / `errors evaluate` (voxel error maps) on small synthetic case files: the maps
are flag_errors' on the same input, NIfTI maps keep the input's affine, bad arguments exit 2
with a message and write nothing, a failing case leaves no partial file."""

import numpy as np
import pandas as pd
import pytest
from _cases import smooth_volume

from napari_metaseg.cli import main
from napari_metaseg.core import calibrate_errors, error_detection_scores, flag_errors

SHAPE = (14, 16, 6)


def _volume(seed):
    return smooth_volume(seed, SHAPE)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import nibabel as nib

    root = tmp_path_factory.mktemp("errors")
    arrays = {}
    for i in range(3):
        p, gt = _volume(i)
        np.save(root / f"c{i}_softmax.npy", p)
        np.save(root / f"c{i}_gt.npy", gt)
        arrays[f"c{i}"] = (p, gt)
    np.save(root / "nogt_softmax.npy", _volume(7)[0])
    arrays["nogt"] = (_volume(7)[0], None)
    # a NIfTI case stored in a non-canonical orientation (x flipped, axes scaled and shifted)
    nii = root / "nii"
    nii.mkdir()
    affine = np.array([[-2.0, 0, 0, 40], [0, 1.5, 0, -20], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    p, gt = _volume(11)
    nib.save(nib.Nifti1Image(p, affine), nii / "n1_softmax.nii.gz")
    nib.save(nib.Nifti1Image(gt, affine), nii / "n1_gt.nii.gz")
    arrays["n1"] = (p, gt)
    return root, arrays, affine


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _fg(p):
    return p.argmax(-1) != 0


def test_flag_fixed_and_quantile_maps_are_flag_errors(data, tmp_path, capsys):
    root, arrays, _ = data
    for argv, kwargs, mask in (
            (["--threshold", "0.3"], {"method": "fixed", "threshold": 0.3}, None),
            (["--method", "quantile", "--share", "0.1", "--measure", "D", "--mask", "foreground"],
             {"method": "quantile", "share": 0.1, "measure": "D"}, _fg)):
        out = tmp_path / argv[1]
        code, stdout, err = _run(capsys, "errors", "flag", root / "c0_softmax.npy", root / "c1_softmax.npy",
                                 root / "nogt_softmax.npy", "--out", out, *argv)
        assert code == 0, err
        rows = pd.read_csv(out / "flagged.csv").set_index("case")
        for name in ("c0", "c1", "nogt"):
            p, gt = arrays[name]
            m = None if mask is None else mask(p)
            want = flag_errors(p, mask=m, **kwargs)
            got = np.load(out / "maps" / f"{name}_flagged.npy")
            assert got.dtype == np.uint8 and got.shape == SHAPE
            np.testing.assert_array_equal(got == 1, want)
            row = rows.loc[name]
            n = want.size if m is None else int(m.sum())
            assert row["n_flagged"] == want.sum() and row["share_flagged"] == pytest.approx(want.sum() / n)
            if gt is None:
                assert np.isnan(row["recall"])
                continue
            err_vox = (p.argmax(-1) != gt) & (True if m is None else m)
            assert row["recall"] == pytest.approx((want & err_vox).sum() / err_vox.sum())
            assert row["precision"] == pytest.approx((want & err_vox).sum() / want.sum())
        assert "| c0 |" in stdout and "nogt" in stdout


def test_flag_nifti_keeps_the_affine(data, tmp_path, capsys):
    import nibabel as nib

    root, _, affine = data
    code, _, err = _run(capsys, "errors", "flag", root / "nii", "--out", tmp_path / "o", "--threshold", "0.4",
                        "-q")
    assert code == 0, err
    img = nib.load(tmp_path / "o" / "maps" / "n1_flagged.nii.gz")
    np.testing.assert_allclose(img.affine, affine)
    src = nib.load(root / "nii" / "n1_softmax.nii.gz")
    assert int(img.header["sform_code"]) == int(src.header["sform_code"]) > 0
    p = np.asarray(src.dataobj, dtype=np.float32)  # the stored orientation, as the map is stored
    np.testing.assert_array_equal(np.asarray(img.dataobj) == 1, flag_errors(p, threshold=0.4))
    assert img.get_data_dtype() == np.uint8


def test_flag_calibrated_learns_from_the_training_cases(data, tmp_path, capsys):
    root, arrays, _ = data
    code, _, err = _run(capsys, "errors", "flag", root / "c2_softmax.npy", "--out", tmp_path / "o",
                        "--method", "calibrated", "--target-recall", "0.7", "--train",
                        root / "c0_softmax.npy", root / "c1_softmax.npy", "-q")
    assert code == 0, err
    (p0, g0), (p1, g1), (p2, _) = arrays["c0"], arrays["c1"], arrays["c2"]
    cal = calibrate_errors([p0, p1], [g0, g1], measure="E")  # the engine's own fit, done here
    want = flag_errors(p2, method="calibrated", calibration=cal, target_recall=0.7)
    assert 0 < want.sum() < want.size
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "maps" / "c2_flagged.npy") == 1, want)
    # fixed with a target recall: the threshold that reached it on the training cases
    code, _, err = _run(capsys, "errors", "flag", root / "c2_softmax.npy", "--out", tmp_path / "f",
                        "--target-recall", "0.7", "--train", root / "c0_softmax.npy", root / "c1_softmax.npy",
                        "-q")
    assert code == 0, err
    want = flag_errors(p2, method="fixed", calibration=cal, target_recall=0.7)
    np.testing.assert_array_equal(np.load(tmp_path / "f" / "maps" / "c2_flagged.npy") == 1, want)


@pytest.mark.parametrize("argv, says", [
    (["--method", "calibrated"], "--train"),
    (["--method", "quantile"], "share"),
    (["--method", "quantile", "--threshold", "0.2"], "threshold is for the fixed rule"),
    (["--share", "0.2"], "share is for the quantile rule"),
    (["--method", "quantile", "--share", "0"], "--share must lie in (0, 1]"),
    (["--target-recall", "0.8"], "training cases"),
    (["--method", "calibrated", "--train", "NOGT"], "need ground truth"),
    (["--method", "calibrated", "--train", "MISSING"], "--train"),
    (["--mask", "foreground", "--background", "none"], "--background"),
])
def test_bad_arguments_exit_2_and_write_nothing(data, tmp_path, capsys, argv, says):
    root, _, _ = data
    argv = [str(root / "nogt_softmax.npy") if a == "NOGT" else str(tmp_path / "nope.npy") if a == "MISSING"
            else a for a in argv]
    out = tmp_path / "o"
    code, _, err = _run(capsys, "errors", "flag", root / "c0_softmax.npy", "--out", out, *argv)
    assert code == 2 and says in err, err
    assert not out.exists()


def test_out_of_range_values_are_refused_by_the_parser(data, tmp_path, capsys):
    root, _, _ = data
    for argv in (["--threshold", "1.5"], ["--share", "x"], ["--method", "mean"]):
        with pytest.raises(SystemExit) as exc:
            main(["errors", "flag", str(root / "c0_softmax.npy"), "--out", str(tmp_path / "o"), *argv])
        assert exc.value.code == 2
        assert argv[0] in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_failing_case_leaves_no_partial_file(data, tmp_path, capsys, monkeypatch):
    root, _, _ = data
    real_save = np.save

    def save_then_fail(f, arr, *args, **kwargs):  # the disk fills up in the middle of c1's map
        if arr.shape == SHAPE and arr.dtype == np.uint8 and getattr(f, "name", "").find("c1_flagged") >= 0:
            f.write(b"\x93NUMPY partial")
            raise OSError("No space left on device")
        return real_save(f, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_then_fail)
    out = tmp_path / "o"
    code, _, err = _run(capsys, "errors", "flag", root / "c0_softmax.npy", root / "c1_softmax.npy",
                        "--out", out, "-q")
    assert code == 1 and "c1" in err and "No space left" in err
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["c0_flagged.npy"]  # no partial, no temp file
    assert pd.read_csv(out / "flagged.csv")["case"].tolist() == ["c0"]
    assert "c1" in (out / "failed.csv").read_text()


def test_evaluate_prints_and_writes_the_scores(data, tmp_path, capsys):
    root, arrays, _ = data
    code, stdout, err = _run(capsys, "errors", "evaluate", root / "c2_softmax.npy", "--train",
                             root / "c0_softmax.npy", "--out", tmp_path / "e", "--measures", "E", "V",
                             "--target-recall", "0.5", "0.8", "-q")
    assert code == 0, err
    scores = pd.read_csv(tmp_path / "e" / "error_scores.csv")
    p, gt = arrays["c2"]
    want = error_detection_scores(p, gt, measures=("E", "V")).set_index("measure")
    test = scores[scores["role"] == "test"].set_index("measure")
    for m in ("E", "V"):
        assert test.loc[m, "auroc"] == pytest.approx(want.loc[m, "auroc"])
        assert test.loc[m, "auprc"] == pytest.approx(want.loc[m, "auprc"])
        assert f"| c2 | {m} | {want.loc[m, 'auroc']:.4f} | {want.loc[m, 'auprc']:.4f} |" in stdout
    flags = pd.read_csv(tmp_path / "e" / "error_flags.csv")
    assert set(flags["method"]) == {"fixed", "quantile", "calibrated"}
    assert set(flags["target_recall"]) == {0.5, 0.8}
    # the calibrated rule's recall on the test case, recomputed from its flags here
    cal = calibrate_errors([arrays["c0"][0]], [arrays["c0"][1]], measure="E")
    f = flag_errors(p, method="calibrated", calibration=cal, target_recall=0.8)
    errors = p.argmax(-1) != gt
    row = flags[(flags["role"] == "test") & (flags["measure"] == "E") & (flags["method"] == "calibrated")
                & (flags["target_recall"] == 0.8)].iloc[0]
    assert row["recall"] == pytest.approx((f & errors).sum() / errors.sum())
    assert "| E | 0.8 | calibrated |" in stdout
    # every case needs ground truth
    code, _, err = _run(capsys, "errors", "evaluate", root / "nogt_softmax.npy", "--train",
                        root / "c0_softmax.npy")
    assert code == 2 and "nogt" in err and "ground truth" in err


def test_calibration_over_files_counts_a_case_without_errors(data, tmp_path):
    """calibrate_cases sums the counts of every training file and fits once: a perfect case
    (no error) counts its voxels instead of failing, as in calibrate_errors over both arrays."""
    from napari_metaseg.core.progress import drain
    from napari_metaseg.io.cases import find_cases
    from napari_metaseg.workflows import calibrate_cases

    _, arrays, _ = data
    p, _ = arrays["c0"]
    perfect = p.argmax(-1).astype(np.uint8)
    np.save(tmp_path / "ok_softmax.npy", p)
    np.save(tmp_path / "ok_gt.npy", perfect)
    np.save(tmp_path / "c1_softmax.npy", arrays["c1"][0])
    np.save(tmp_path / "c1_gt.npy", arrays["c1"][1])
    cases = find_cases([str(tmp_path)])
    for mask, m in (("all", None), ("foreground", [_fg(p), _fg(arrays["c1"][0])])):
        got = drain(calibrate_cases(cases, {"background": 0}, measure="V", mask=mask))
        want = calibrate_errors([p, arrays["c1"][0]], [perfect, arrays["c1"][1]], measure="V", masks=m)
        np.testing.assert_array_equal(got.voxels_, want.voxels_)
        np.testing.assert_array_equal(got.errors_, want.errors_)
        np.testing.assert_allclose(got.error_rate_, want.error_rate_)
        assert got.n_cases_ == 2
