"""The `napari-metaseg` command line: pairing, resume, failures, Dask, train/predict/report."""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.cli import main
from napari_metaseg.core import segment_metrics

HAS_DISTRIBUTED = importlib.util.find_spec("distributed") is not None
needs_distributed = pytest.mark.skipif(not HAS_DISTRIBUTED, reason="dask.distributed is not installed")


def blocky_case(shape, q=3, *, cell=4, seed=0):
    """Probabilities with blocky, noisy class regions and a ground truth that partly disagrees."""
    rng = np.random.default_rng(seed)
    big = rng.normal(size=(*(s // cell + 1 for s in shape), q)) * 3
    for ax, s in enumerate(shape):
        big = np.repeat(big, cell, axis=ax).take(range(s), axis=ax)
    big = big + rng.normal(size=big.shape) * 0.8
    p = np.exp(big - big.max(-1, keepdims=True)).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    gt = (big + rng.normal(size=big.shape) * 1.5).argmax(-1).astype(np.uint8)
    return p, gt


def write_npy_cases(folder, n, shape=(48, 48), q=3, first_seed=0):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i in range(n):
        name = f"case{i:02d}"
        p, gt = blocky_case(shape, q, seed=first_seed + i)
        np.save(folder / f"{name}_softmax.npy", p)
        np.save(folder / f"{name}_gt.npy", gt)
        arrays[name] = (p, gt)
    return arrays


def write_nifti_case(folder, shape=(20, 18, 8), q=3, seed=0, affine=None):
    import nibabel as nib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    p, gt = blocky_case(shape, q, seed=seed)
    if affine is None:
        affine = np.array([[-1.5, 0, 0, 30.0], [0, 1.2, 0, -20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(p, affine)
    img.set_sform(affine, code=4)
    nib.save(img, folder / "softmax.nii.gz")
    nib.save(nib.Nifti1Image(gt, affine), folder / "gt.nii.gz")
    return p, gt, affine


def run(argv, capsys=None):
    code = main([str(a) for a in argv])
    out = capsys.readouterr() if capsys is not None else None
    return code, out


def cases_dir_tables(out):
    return {p.stem: pd.read_parquet(p) for p in sorted((Path(out) / "cases").glob("*.parquet"))}


# ---------------------------------------------------------------------------------------------
# Packaging and help
# ---------------------------------------------------------------------------------------------
def test_console_script_entry_point_and_fast_help():
    eps = importlib.metadata.entry_points(group="console_scripts")
    assert any(ep.name == "napari-metaseg" and ep.value == "napari_metaseg.cli:main" for ep in eps)
    code = ("import sys, napari_metaseg.cli as c;"
            "heavy = [m for m in ('numba', 'pandas', 'sklearn', 'dask', 'napari') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    out = subprocess.run([sys.executable, "-m", "napari_metaseg.cli", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0
    for cmd in ("metrics", "train", "evaluate", "predict", "rank", "report", "demo"):
        assert cmd in out.stdout


# ---------------------------------------------------------------------------------------------
# metrics: pairing, outputs
# ---------------------------------------------------------------------------------------------
def test_metrics_pairs_files_and_folders_and_matches_the_engine(tmp_path, capsys):
    import tifffile

    data = tmp_path / "data"
    arrays = write_npy_cases(data, 2)
    # a folder per case: softmax.npz + gt.tif
    p, gt = blocky_case((40, 44), 3, seed=7)
    (data / "folder_case").mkdir()
    np.savez(data / "folder_case" / "softmax.npz", softmax=p)
    tifffile.imwrite(data / "folder_case" / "gt.tif", gt)
    arrays["folder_case"] = (p, gt)
    code, out = run(["metrics", data, "--out", tmp_path / "out"], capsys)
    assert code == 0, out.err
    tables = cases_dir_tables(tmp_path / "out")
    assert sorted(tables) == sorted(arrays)
    for name, (p, gt) in arrays.items():
        _, expected = segment_metrics(p, gt)
        got = tables[name]
        assert list(got["case"].unique()) == [name]
        # with GT the table also carries each segment's image scores (tests/test_rank_quality.py)
        got = got.drop(columns=["case", "image_mean_iou", "image_mean_dice"])
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    combined = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert combined.columns[0] == "case"
    assert list(combined["case"].unique()) == ["case00", "case01", "folder_case"]
    assert len(combined) == sum(len(t) for t in tables.values())
    assert not (tmp_path / "out" / "failed.csv").exists()
    assert "3 computed" in out.err


def test_metrics_pairs_csv_with_and_without_gt(tmp_path, capsys):
    data = tmp_path / "d"
    write_npy_cases(data, 2)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("case,softmax,gt\nwith,d/case00_softmax.npy,d/case00_gt.npy\nwithout,d/case01_softmax.npy,\n")
    code, out = run(["metrics", "--pairs", pairs, "--out", tmp_path / "out", "-q"], capsys)
    assert code == 0, out.err
    tables = cases_dir_tables(tmp_path / "out")
    assert "iou_adj" in tables["with"] and "iou_adj" not in tables["without"]


def test_metrics_nifti_slices_and_3d(tmp_path, capsys):
    p, gt, _ = write_nifti_case(tmp_path / "data" / "vol")
    for mode in ("slices", "3d"):
        argv = ["metrics", tmp_path / "data", "--mode", mode, "--out", tmp_path / mode, "-q"]
        code, out = run(argv, capsys)
        assert code == 0, out.err
        got = pd.read_parquet(tmp_path / mode / "cases" / "vol.parquet").drop(
            columns=["case", "image_mean_iou", "image_mean_dice"])
        _, expected = segment_metrics(p, gt, mode=mode)
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    assert "slice" in pd.read_parquet(tmp_path / "slices" / "metrics.parquet")


# ---------------------------------------------------------------------------------------------
# Resume, failures
# ---------------------------------------------------------------------------------------------
def test_rerun_skips_done_cases_force_recomputes_and_new_settings_recompute(tmp_path, capsys):
    write_npy_cases(tmp_path / "d", 3)
    out_dir = tmp_path / "out"
    assert run(["metrics", tmp_path / "d", "--out", out_dir], capsys)[0] == 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out_dir / "cases").iterdir()}
    code, out = run(["metrics", tmp_path / "d", "--out", out_dir], capsys)
    assert code == 0 and "0 computed, 3 already done" in out.err
    assert {p.name: p.stat().st_mtime_ns for p in (out_dir / "cases").iterdir()} == mtimes
    code, out = run(["metrics", tmp_path / "d", "--out", out_dir, "--force"], capsys)
    assert code == 0 and "3 computed, 0 already done" in out.err
    code, out = run(["metrics", tmp_path / "d", "--out", out_dir, "--ignore-index", "none"], capsys)
    assert code == 0 and "3 computed" in out.err  # other settings: not the same result


def test_resume_after_a_killed_run(tmp_path):
    data = tmp_path / "d"
    write_npy_cases(data, 14, shape=(512, 512), q=6)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_metaseg.cli", "metrics", str(data), "--out", str(out_dir), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    cases = out_dir / "cases"
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if cases.is_dir() and any(cases.glob("*.parquet")):
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    done_before = {p.name: p.stat().st_mtime_ns for p in cases.glob("*.parquet")}
    assert 1 <= len(done_before) < 14, "the run should have been killed after its first case"
    for p in cases.glob("*.parquet"):  # every finished file is whole
        pd.read_parquet(p)
    assert not (out_dir / "metrics.parquet").exists()
    rerun = subprocess.run(cmd[:-1], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{14 - len(done_before)} computed, {len(done_before)} already done" in rerun.stderr
    for name, mtime in done_before.items():  # not recomputed
        assert (cases / name).stat().st_mtime_ns == mtime
    assert not list(cases.glob(".*"))  # temporary files of the killed run are gone
    clean = tmp_path / "clean"
    assert main(["metrics", str(data), "--out", str(clean), "-q"]) == 0
    resumed = pd.read_parquet(out_dir / "metrics.parquet")
    pd.testing.assert_frame_equal(resumed, pd.read_parquet(clean / "metrics.parquet"), check_exact=False,
                                  rtol=1e-12)
    assert resumed.groupby("case").size().tolist() == pd.read_parquet(clean / "metrics.parquet").groupby(
        "case").size().tolist()


def test_a_corrupt_case_in_the_middle_fails_alone(tmp_path, capsys):
    data = tmp_path / "d"
    write_npy_cases(data, 3)
    (data / "case01_softmax.npy").write_bytes(b"not a numpy file at all")
    p, gt = blocky_case((30, 30), seed=9)
    p[3, 4, 0] = np.nan
    np.save(data / "case02_softmax.npy", p)
    np.save(data / "case02_gt.npy", gt)
    extra = data / "case03_softmax.npy"
    np.save(extra, blocky_case((30, 30), seed=10)[0])
    code, out = run(["metrics", data, "--out", tmp_path / "out"], capsys)
    assert code == 1
    with open(tmp_path / "out" / "failed.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["case01", "case02"]
    assert "case01_softmax.npy" in rows[0]["error"] and "ValueError" in rows[0]["error"]
    assert "NaN" in rows[1]["error"]
    assert "case01" in out.err and "case02" in out.err
    combined = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert list(combined["case"].unique()) == ["case00", "case03"]
    # fixed: the rerun computes only the failed cases and removes failed.csv
    write_npy_cases(data, 3)
    code, out = run(["metrics", data, "--out", tmp_path / "out"], capsys)
    assert code == 0 and "2 computed, 2 already done" in out.err
    assert not (tmp_path / "out" / "failed.csv").exists()


# ---------------------------------------------------------------------------------------------
# Dask
# ---------------------------------------------------------------------------------------------
@needs_distributed
def _assert_same_tables(a, b):
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    exact = [c for c in a.columns if a[c].dtype.kind not in "f"]
    pd.testing.assert_frame_equal(a[exact], b[exact], check_exact=True)
    floats = [c for c in a.columns if a[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(a[floats], b[floats], check_exact=False, rtol=1e-12, atol=1e-15)


def test_workers_give_the_serial_results(tmp_path, capsys):
    data = tmp_path / "d"
    write_npy_cases(data, 4, shape=(96, 80))
    write_nifti_case(data / "vol", seed=3)
    code, out = run(["metrics", data, "--out", tmp_path / "serial", "--threads", "1", "-q"], capsys)
    assert code == 0, out.err
    code, out = run(["metrics", data, "--out", tmp_path / "dask", "--workers", "2", "--threads", "1"], capsys)
    assert code == 0, out.err
    serial, dask = cases_dir_tables(tmp_path / "serial"), cases_dir_tables(tmp_path / "dask")
    assert sorted(serial) == sorted(dask) == ["case00", "case01", "case02", "case03", "vol"]
    # Same segments, same integer columns; float columns equal to 1e-12. (A full-suite run once
    # showed 2 of 28 means 2e-9 apart: float32 sums within runs, and kernels compiled twice for
    # writable and read-only inputs. The engine now sums in float64 and compiles once.)
    for name in serial:
        _assert_same_tables(serial[name], dask[name])
    _assert_same_tables(pd.read_parquet(tmp_path / "serial" / "metrics.parquet"),
                        pd.read_parquet(tmp_path / "dask" / "metrics.parquet"))
    # default threads (all cores serially, cores / 2 per worker): equal up to float rounding
    code, _ = run(["metrics", data, "--out", tmp_path / "serial_default", "-q"], capsys)
    assert code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "serial_default" / "metrics.parquet"),
                                  pd.read_parquet(tmp_path / "dask" / "metrics.parquet"),
                                  check_exact=False, rtol=1e-12, atol=1e-14)


def test_workers_without_distributed_is_a_usage_error(tmp_path, capsys, monkeypatch):
    write_npy_cases(tmp_path / "d", 1)
    monkeypatch.setitem(sys.modules, "distributed", None)
    code, out = run(["metrics", tmp_path / "d", "--out", tmp_path / "o", "--workers", "2"], capsys)
    assert code == 2
    assert "napari-metaseg[distributed]" in out.err
    assert run(["metrics", tmp_path / "d", "--out", tmp_path / "o", "-q"], capsys)[0] == 0


# ---------------------------------------------------------------------------------------------
# Usage errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["metrics", "--out", "{o}"], "no cases given"),
        (["metrics", "{t}/missing", "--out", "{o}"], "no such file or folder"),
        (["metrics", "{t}/empty", "--out", "{o}"], "no case found"),
        (["metrics", "--pairs", "{t}/bad.csv", "--out", "{o}"], "header must be case,softmax,gt"),
        (["predict", "{t}/nomodel.json", "{t}/d", "--out", "{o}"], "no such file"),
        (["predict", "{t}/bad.csv", "{t}/d", "--out", "{o}"], "model"),
        (["train", "{t}/d/case00_softmax.npy", "--out", "{t}/m.json"], "expected a .parquet or .csv"),
        (["label-errors", "{t}/m.json", "{t}/d", "--out", "{t}/e.csv"], "no such file"),
    ],
)
def test_usage_errors_exit_2_with_a_message(tmp_path, capsys, argv, message):
    write_npy_cases(tmp_path / "d", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("name,file\na,b\n")
    argv = [a.format(t=tmp_path, o=tmp_path / "o") for a in argv]
    code, out = run(argv, capsys)
    assert code == 2
    assert message in out.err and out.err.startswith("napari-metaseg: error:")


@pytest.mark.parametrize(
    "argv",
    [["metrics", "x", "--out", "o", "--workers", "0"], ["metrics", "x", "--out", "o", "--mode", "4d"],
     ["metrics", "x"], ["nonsense"], ["metrics", "x", "--out", "o", "--workers", "2", "--scheduler", "a"]],
)
def test_argument_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_demo_runs_the_module_demo(monkeypatch):
    import napari_metaseg.__main__ as demo

    seen = []
    monkeypatch.setattr(demo, "main", lambda argv=None: seen.append(argv))
    assert main(["demo", "--sample", "nuclei2d", "--no-run"]) == 0
    assert seen == [["--sample", "nuclei2d", "--no-run"]]


# ---------------------------------------------------------------------------------------------
# train, evaluate, predict, rank, report
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Metrics of 6 generated 2D cases and a linear meta model trained on them."""
    tmp = tmp_path_factory.mktemp("trained")
    write_npy_cases(tmp / "d", 6, shape=(96, 96))
    assert main(["metrics", str(tmp / "d"), "--out", str(tmp / "m"), "-q"]) == 0
    assert main(["train", str(tmp / "m"), "--min-interior", "0", "--out", str(tmp / "model.json.gz")]) == 0
    return tmp


def test_train_writes_a_model_that_predict_table_reproduces(trained):
    from napari_metaseg.core import load_models, predict_table

    table = pd.read_parquet(trained / "m" / "metrics.parquet")
    clf, reg, info = load_models(trained / "model.json.gz", table=table)
    assert sorted(info["training_cases"]) == [f"case{i:02d}" for i in range(6)]
    assert clf.kind == "lasso" and reg.kind == "linear"
    out = trained / "p"
    assert main(["predict", str(trained / "model.json.gz"), str(trained / "d"), "--out", str(out), "-q"]) == 0
    pred = pd.read_parquet(out / "predictions.parquet")
    expected = predict_table(table, clf, reg)
    pd.testing.assert_frame_equal(pred, expected, check_exact=False, rtol=1e-12)
    seg, _ = segment_metrics(np.load(trained / "d" / "case00_softmax.npy"))
    pred_map = np.load(out / "maps" / "case00_iou_adj_pred.npy")
    lut = expected.loc[expected["case"] == "case00", "iou_adj_pred"].to_numpy(np.float32)
    np.testing.assert_array_equal(pred_map, lut[seg - 1])


def test_evaluate_prints_table_2(trained, capsys):
    code = main(["evaluate", str(trained / "m"), "--splits", "2", "--models", "linear", "--min-interior", "0",
                 "--out", str(trained / "eval.md")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| classification | linear | AUROC % |" in out and "| regression | entropy | R2 % |" in out
    assert "| task | model | metric | train | validation |" in (trained / "eval.md").read_text()
    assert "6 cases, grouping case, 2 split(s); mean" in out


def test_evaluate_says_when_the_cases_allow_fewer_splits(trained, capsys):
    # 6 cases, 3 validate: C(6, 3) = 20 distinct splits; asking for 30 uses each once
    code = main(["evaluate", str(trained / "m"), "--splits", "30", "--models", "linear",
                 "--min-interior", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "6 cases, grouping case, 20 split(s) (every distinct split once: the groups allow no more)" in out


def test_rank_orders_cases_by_predicted_quality(trained):
    out = trained / "rank.csv"
    assert main(["rank", str(trained / "model.json.gz"), str(trained / "d"), "--out", str(out), "-q"]) == 0
    rank = pd.read_csv(out)
    assert rank["rank"].tolist() == list(range(1, 7))
    assert sorted(rank["case"]) == [f"case{i:02d}" for i in range(6)]
    assert rank["iou_adj_pred_mean"].is_monotonic_increasing
    assert {"share_p_iou0_gt_05", "iou_adj_mean", "n_segments"} <= set(rank.columns)


def test_report_is_a_self_contained_html_page(trained, capsys):
    out = trained / "report.html"
    code = main(["report", str(trained / "m"), "--model", str(trained / "model.json.gz"), "--splits", "2",
                 "--min-interior", "0",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('src="data:image/png;base64,') == 3  # ROC, IoU scatter, LASSO path
    assert "http://" not in page and "https://" not in page
    assert "AUROC" in page and "case05" in page


def test_predict_nifti_writes_a_map_with_the_input_affine(tmp_path, capsys):
    import nibabel as nib

    from napari_metaseg.core import load_models

    write_npy_cases(tmp_path / "train", 4, shape=(64, 64))
    assert run(["metrics", tmp_path / "train", "--out", tmp_path / "m", "-q"], capsys)[0] == 0
    argv = ["train", tmp_path / "m", "--min-interior", "0", "--out", tmp_path / "model.json"]
    assert run(argv, capsys)[0] == 0
    # a 3-class NIfTI volume, segmented slice by slice like the 2D training cases
    p, _, affine = write_nifti_case(tmp_path / "vols" / "vol", shape=(24, 20, 5), seed=5)
    code, out = run(["predict", tmp_path / "model.json", tmp_path / "vols", "--mode", "slices",
                     "--out", tmp_path / "pred", "-q"], capsys)
    assert code == 0, out.err
    img = nib.load(tmp_path / "pred" / "maps" / "vol_iou_adj_pred.nii.gz")
    np.testing.assert_allclose(img.affine, affine)
    assert img.shape == p.shape[:3] and int(img.header["sform_code"]) == 4
    seg, table = segment_metrics(p, mode="slices")
    _, reg, _ = load_models(tmp_path / "model.json", table=table)
    expected = reg.predict(table).astype(np.float32)[seg - 1]
    np.testing.assert_allclose(np.asarray(img.dataobj), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_cli_on_shared_data_nuclei_and_one_brain_subject(shared_data, tmp_path, capsys):
    from napari_metaseg.io import read_nifti, read_nifti_probabilities

    code, out = run(["metrics", shared_data / "nuclei2d", "--out", tmp_path / "nuclei", "-q"], capsys)
    assert code == 0, out.err
    probs = np.load(shared_data / "nuclei2d" / "softmax.npy")
    import tifffile

    _, expected = segment_metrics(probs, tifffile.imread(shared_data / "nuclei2d" / "gt.tif"))
    got = pd.read_parquet(tmp_path / "nuclei" / "cases" / "nuclei2d.parquet").drop(
        columns=["case", "image_mean_iou", "image_mean_dice"])
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-10)

    brain = shared_data / "brain" / "sub-01"
    code, out = run(["metrics", brain, "--mode", "slices", "--out", tmp_path / "brain", "-q"], capsys)
    assert code == 0, out.err
    table = pd.read_parquet(tmp_path / "brain" / "metrics.parquet")
    assert len(table) == 8911 and set(table["case"]) == {"sub-01"}  # docs/meta_models.md
    assert run(["train", tmp_path / "brain", "--out", tmp_path / "brain.json.gz"], capsys)[0] == 0
    code, out = run(["predict", tmp_path / "brain.json.gz", brain, "--mode", "slices",
                     "--out", tmp_path / "pred", "-q"], capsys)
    assert code == 0, out.err
    import nibabel as nib

    img = nib.load(tmp_path / "pred" / "maps" / "sub-01_iou_adj_pred.nii.gz")
    _, affine = read_nifti_probabilities(brain / "softmax_rf.nii.gz")
    gt, _ = read_nifti(brain / "gt.nii.gz")
    assert img.shape == gt.shape
    np.testing.assert_allclose(img.affine, affine)
    values = np.asarray(img.dataobj)
    assert np.all((values >= 0) & (values <= 1))


def test_model_records_its_segmentation_mode(tmp_path, capsys):
    """A slice-wise model predicts slice-wise by default and refuses 3D segments."""
    import pandas as pd

    from napari_metaseg.core import load_models

    for i in range(3):
        write_nifti_case(tmp_path / "train" / f"v{i}", shape=(24, 20, 6), seed=10 + i)
    assert run(["metrics", tmp_path / "train", "--mode", "slices", "--slice-axis", "2",
                "--out", tmp_path / "m", "-q"], capsys)[0] == 0
    assert run(["train", tmp_path / "m", "--min-interior", "0", "--out", tmp_path / "model.json"],
               capsys)[0] == 0
    info = load_models(tmp_path / "model.json")[2]
    assert info["segmentation"] == {"mode": "slices", "slice_axis": 2, "ignore_index": 255}
    write_nifti_case(tmp_path / "new" / "vol", shape=(24, 20, 6), seed=20)
    # no --mode: the model's (slices along axis 2)
    assert run(["predict", tmp_path / "model.json", tmp_path / "new", "--out", tmp_path / "p", "-q"],
               capsys)[0] == 0
    pred = pd.read_parquet(tmp_path / "p" / "predictions.parquet")
    assert "slice" in pred.columns and set(pred["slice"]) == set(range(6))
    # another kind of segments is a usage error naming the model's mode
    for extra in (["--mode", "3d"], ["--mode", "slices", "--slice-axis", "0"]):
        code, out = run(["predict", tmp_path / "model.json", tmp_path / "new", *extra,
                         "--out", tmp_path / "p3", "-q"], capsys)
        assert code == 2 and "slice by slice along axis 2" in out.err
        assert not (tmp_path / "p3" / "predictions.parquet").exists()
    code, out = run(["rank", tmp_path / "model.json", tmp_path / "new", "--mode", "3d",
                     "--out", tmp_path / "r.csv", "-q"], capsys)
    assert code == 2 and "slice by slice" in out.err
    # tables made in different ways are not mixed in one model
    assert run(["metrics", tmp_path / "new", "--mode", "slices", "--slice-axis", "0",
                "--out", tmp_path / "m3", "-q"], capsys)[0] == 0
    code, out = run(["train", tmp_path / "m", tmp_path / "m3", "--out", tmp_path / "mixed.json"], capsys)
    assert code == 2 and "different segmentation settings" in out.err
