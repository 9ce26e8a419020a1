"""`napari-metaseg ood` resumes: per-case evaluation parts on disk (value counts per heatmap and
object counts) give the figures of the pooled voxels exactly, and a resumed run writes what a
fresh one writes."""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from napari_metaseg.cli import main
from napari_metaseg.core.ood import PixelCounts, evaluation_from_parts, pixel_scores
from napari_metaseg.core.progress import drain
from napari_metaseg.io.cases import Case

SHAPE = (20, 20, 10)
#: annotated OoD cubes (uniform probabilities) ...
CUBES = ((slice(3, 6), slice(3, 6), slice(2, 5)), (slice(12, 15), slice(12, 15), slice(5, 8)))
#: ... and sheets of high entropy nobody annotated (false alarms of the threshold)
SHEETS = ((slice(9, 10), slice(2, 8), slice(2, 8)), (slice(17, 18), slice(10, 16), slice(1, 7)))


# ============================================================================================
# Weighted parts == pooled voxels (the existing path stays the reference)
# ============================================================================================
def _sklearn(y, s, w=None):
    fpr, tpr, _ = roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    return (roc_auc_score(y, s, sample_weight=w), average_precision_score(y, s, sample_weight=w),
            fpr[np.argmax(tpr >= 0.95)])


def _random_cases(seed, n_cases, dtype):
    """Scores with many ties (few levels), some cases sharing values, some not."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_cases):
        n = int(rng.integers(1, 3000))
        y = rng.random(n) < rng.uniform(0.02, 0.5)
        levels = int(rng.choice([2, 7, 50, 10_000]))
        if np.dtype(dtype).kind == "f":
            s = (rng.integers(0, levels, n) / levels + 0.2 * y * rng.random()).astype(dtype)
        else:
            s = (rng.integers(0, min(levels, 200), n) + 20 * y).astype(dtype)
        out.append((y, {"E": s, "V": (s.max() - s) if s.size else s}))
    y_all = np.concatenate([y for y, _ in out])
    y_all[:2] = (True, False) if y_all.size >= 2 else y_all[:2]  # both sides present overall
    start = 0
    for i, (y, maps) in enumerate(out):  # write the forced labels back
        out[i] = (y_all[start:start + y.size], maps)
        start += y.size
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8])
@pytest.mark.parametrize("seed", range(8))
def test_weighted_parts_give_the_pooled_figures_and_scikit_learns(seed, dtype):
    cases = _random_cases(seed, int(np.random.default_rng(seed).integers(1, 6)), dtype)
    parts = [PixelCounts.from_voxels(maps, y) for y, maps in cases]
    y = np.concatenate([y for y, _ in cases])
    pooled = {m: np.concatenate([maps[m] for _, maps in cases]) for m in ("E", "V")}
    weighted = pixel_scores(parts).set_index("measure")
    reference = pixel_scores(pooled, y).set_index("measure")
    merged = PixelCounts.merge(parts)
    for m in ("E", "V"):
        got = weighted.loc[m, ["auroc", "auprc", "fpr95"]].to_numpy(float)
        np.testing.assert_allclose(got, reference.loc[m, ["auroc", "auprc", "fpr95"]].to_numpy(float),
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(got, _sklearn(y, pooled[m]), rtol=0, atol=1e-12)
        # scikit-learn on the distinct values, weighted by the counts of each side
        values, n_ood, n_in = merged.measures[m]
        s2 = np.concatenate([values, values])
        y2 = np.r_[np.ones(values.size, bool), np.zeros(values.size, bool)]
        w2 = np.concatenate([n_ood, n_in]).astype(float)
        np.testing.assert_allclose(got, _sklearn(y2[w2 > 0], s2[w2 > 0], w2[w2 > 0]), rtol=0, atol=1e-12)
        assert (weighted.loc[m, "n_ood"], weighted.loc[m, "n_in"]) == (int(y.sum()), int((~y).sum()))
        # the merged counts are those of the pooled voxels, value by value
        v_all, inv = np.unique(pooled[m], return_inverse=True)
        np.testing.assert_array_equal(values, v_all)
        np.testing.assert_array_equal(n_ood, np.bincount(inv[y], minlength=v_all.size))
        np.testing.assert_array_equal(n_in, np.bincount(inv[~y], minlength=v_all.size))


def test_merging_is_order_free_and_splitting_a_case_changes_nothing():
    rng = np.random.default_rng(5)
    y = rng.random(5000) < 0.1
    s = (rng.integers(0, 40, 5000) / 40).astype(np.float32)
    whole = PixelCounts.from_voxels({"E": s}, y)
    cut = [0, 7, 1000, 1001, 4000, 5000]
    pieces = [PixelCounts.from_voxels({"E": s[a:b]}, y[a:b]) for a, b in itertools.pairwise(cut)]
    for order in (pieces, pieces[::-1], [pieces[2], pieces[0], pieces[4], pieces[1], pieces[3]]):
        merged = PixelCounts.merge(order)
        for a, b in zip(merged.measures["E"], whole.measures["E"], strict=True):
            np.testing.assert_array_equal(a, b)
    # evaluation_from_parts: the same object as from the pooled voxels
    counts = {(0.5, "all"): {"n_regions": 3, "kept": 3, "tp": 1, "fn": 1, "fp": 2, "n_objects": 2,
                             "id_voxels": 10, "id_flagged": 4}}
    a = evaluation_from_parts(pieces, counts, n_cases=5)
    b = evaluation_from_parts((y, {"E": s}), counts, n_cases=5)
    pd.testing.assert_frame_equal(a.pixel, b.pixel)
    pd.testing.assert_frame_equal(a.objects, b.objects)
    # one side empty or nothing at all: NaN, as for the voxels
    assert np.isnan(pixel_scores(PixelCounts.from_voxels({"E": s}, np.zeros(5000, bool)))["auroc"].item())
    empty = PixelCounts.from_voxels({"E": s}, y, mask=np.zeros(5000, bool))
    row = pixel_scores([empty, empty]).iloc[0]
    assert np.isnan(row["auroc"]) and (row["n_ood"], row["n_in"]) == (0, 0)
    with pytest.raises(ValueError, match="not with PixelCounts"):
        pixel_scores(whole, y)


@pytest.mark.parametrize("measures, error, match", [
    ({"E": ([0.1, 0.2], [1, 0], [0, -1])}, ValueError, "negative"),
    ({"E": ([0.2, 0.1], [1, 0], [0, 1])}, ValueError, "strictly increasing"),
    ({"E": ([0.1, 0.1], [1, 0], [0, 1])}, ValueError, "strictly increasing"),
    ({"E": ([0.1, 0.2], [1, 0], [0])}, ValueError, "one length"),
    ({"E": ([0.1, 0.2], [1.0, 0.0], [0, 1])}, TypeError, "integers"),
    ({"E": ([0.1, np.nan], [1, 0], [0, 1])}, ValueError, "NaN"),
    ({"E": ([0.1, 0.2], [1, 0], [0, 0])}, ValueError, "without voxels"),
    ({"E": ([0.1], [1], [1]), "V": ([0.1], [1], [2])}, ValueError, "same voxels"),
    ({"E": (np.array(["a"]), [1], [1])}, TypeError, "expected numbers"),
    ({"E": ([[0.1]], [[1]], [[1]])}, ValueError, "1-D"),
])
def test_pixel_counts_refuse_what_a_damaged_file_would_give(measures, error, match):
    with pytest.raises(error, match=match):
        PixelCounts({k: tuple(np.asarray(a) for a in v) for k, v in measures.items()})


@pytest.mark.realdata
def test_weighted_equals_pooled_on_the_lesion_brains(shared_data):
    from napari_metaseg.core import dispersion_maps
    from napari_metaseg.io.cases import read_case

    parts, ys, pooled = [], [], {"E": [], "D": [], "V": []}
    for sub in ("sub-01L", "sub-02L"):
        d = shared_data / "brain_ood" / sub
        if not d.is_dir():
            pytest.skip(f"{d} not found")
        probs, gt, _ = read_case(Case(sub, d / "softmax_rf.nii.gz", d / "gt.nii.gz"))
        maps = {m: v for m, v in dispersion_maps(probs).items() if m in pooled}
        mask = probs.argmax(-1) != 0  # --exclude-class 0
        parts.append(PixelCounts.from_voxels(maps, gt == 255, mask=mask))
        ys.append((gt == 255)[mask])
        for m in pooled:
            pooled[m].append(maps[m][mask])
    y = np.concatenate(ys)
    pooled = {m: np.concatenate(v) for m, v in pooled.items()}
    weighted = pixel_scores(parts).set_index("measure")
    reference = pixel_scores(pooled, y).set_index("measure")
    for m in pooled:
        got = weighted.loc[m, ["auroc", "auprc", "fpr95"]].to_numpy(float)
        np.testing.assert_allclose(got, reference.loc[m, ["auroc", "auprc", "fpr95"]].to_numpy(float),
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(got, _sklearn(y, pooled[m]), rtol=0, atol=1e-12)
    assert weighted["n_ood"].tolist() == [int(y.sum())] * 3


# ============================================================================================
# The parts file
# ============================================================================================
def _parts_of(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.2
    s = (rng.integers(0, 9, 300) / 9).astype(np.float32)
    pixels = PixelCounts.from_voxels({"E": s, "D": 1 - s, "V": s / 2}, y)
    counts = {"all": {"n_regions": 4, "kept": 4, "tp": 2, "fn": 0, "fp": 2, "n_objects": 2,
                      "id_voxels": 240, "id_flagged": 30},
              "meta": {"n_regions": 4, "kept": 2, "tp": 2, "fn": 0, "fp": 0, "n_objects": 2,
                       "id_voxels": 240, "id_flagged": 0}}
    return pixels, counts


def _npz(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_parts_file_round_trip_and_refusals(tmp_path):
    from napari_metaseg.workflows.ood import parts_bytes, read_parts

    pixels, counts = _parts_of()
    path = tmp_path / "c_ood_parts.npz"
    path.write_bytes(parts_bytes(pixels, counts))
    back, back_counts = read_parts(path)
    assert back_counts == counts and list(back.measures) == ["E", "D", "V"]
    for m in pixels.measures:
        for a, b in zip(back.measures[m], pixels.measures[m], strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype

    with np.load(path, allow_pickle=False) as z:
        good = {k: z[k] for k in z.files}
    bad = {
        "garbage": b"not a zip file at all",
        "truncated": path.read_bytes()[: path.stat().st_size // 2],
        "pickled object array": _npz(**{**good, "measures": np.array(["E", "D", "V"], dtype=object)}),
        "other layout": _npz(**{**good, "format": np.array([99])}),
        "array missing": _npz(**{k: v for k, v in good.items() if k != "n_in_1"}),
        "extra array": _npz(**good, extra=np.zeros(1)),
        "negative count": _npz(**{**good, "n_ood_0": -good["n_ood_0"]}),
        "float counts": _npz(**{**good, "n_in_0": good["n_in_0"].astype(float)}),
        "inconsistent objects": _npz(**{**good, "counts": good["counts"] + np.eye(8, dtype=np.int64)[2]}),
        "unknown selection": _npz(**{**good, "count_keys": np.array(["all", "some"])}),
        "counts shape": _npz(**{**good, "counts": good["counts"][:1]}),
        "heatmaps disagree": _npz(**{**good, "n_in_2": good["n_in_2"] + 1}),
    }
    for what, data in bad.items():
        path.write_bytes(data)
        with pytest.raises(ValueError, match="parts file") as err:
            read_parts(path)
        assert path.name in str(err.value), what
    path.unlink()
    with pytest.raises(ValueError, match="not a readable parts file"):
        read_parts(path)


# ============================================================================================
# Resuming `ood`
# ============================================================================================
def _case_arrays(seed):
    rng = np.random.default_rng(seed)
    p = np.zeros((*SHAPE, 3), np.float32)
    p[:] = (0.97, 0.02, 0.01)
    p[:, SHAPE[1] // 2 :] = (0.02, 0.97, 0.01)
    for sl in SHEETS:
        p[sl] = (0.5, 0.45, 0.05)
    for sl in CUBES:
        p[sl] = 1 / 3
    # quantised noise: ties in the heatmaps, and cases differ
    p += (rng.integers(0, 4, p.shape) * 2e-3).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    gt = p.argmax(-1).astype(np.uint8)
    for sl in CUBES:
        gt[sl] = 255
    return p, gt


def _write_cases(folder, seeds, *, gt=True):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        p, g = _case_arrays(s)
        np.save(folder / f"c{s}_softmax.npy", p)
        if gt:
            np.save(folder / f"c{s}_gt.npy", g)
    return folder


def _cli(*argv, capsys=None):
    code = main([str(a) for a in argv])
    out = capsys.readouterr() if capsys is not None else None
    return code, out


@pytest.fixture
def count_finds(monkeypatch):
    """The names of the cases computed (``ood_task`` calls; runs are serial here)."""
    import napari_metaseg.workflows.ood as ood_mod

    calls = []
    real = ood_mod.ood_task

    def counting(case, *args):
        calls.append(case.name)
        return real(case, *args)

    monkeypatch.setattr(ood_mod, "ood_task", counting)
    return calls


def _outputs(out, names):
    """Everything a run leaves that a reader uses (tables, maps, both CSVs as bytes)."""
    got = {"combined": pd.read_parquet(out / "ood_regions.parquet")}
    for n in names:
        got[f"table {n}"] = pd.read_parquet(out / "cases" / f"{n}_ood.parquet")
        got[f"map {n}"] = np.load(out / "maps" / f"{n}_ood_regions.npy")
    for f in ("ood_pixels.csv", "ood_objects.csv"):
        got[f] = (out / f).read_bytes() if (out / f).exists() else None
    return got


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], pd.DataFrame):
            pd.testing.assert_frame_equal(a[k], b[k], obj=k)
        elif isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def _mtimes(out, name):
    files = [out / "cases" / f"{name}_ood.parquet", out / "maps" / f"{name}_ood_regions.npy",
             out / "cases" / f"{name}_ood_parts.npz"]
    return {f.name: f.stat().st_mtime_ns for f in files if f.exists()}


NAMES = ["c0", "c1", "c2"]


@pytest.fixture
def three(tmp_path, capsys):
    """Three annotated cases and a fresh run over them (the reference)."""
    data = _write_cases(tmp_path / "data", (0, 1, 2))
    code, res = _cli("ood", data, "--out", tmp_path / "fresh", capsys=capsys)
    assert code == 0, res.err
    assert "3 computed, 0 already done, 0 failed" in res.err
    return tmp_path, data, _outputs(tmp_path / "fresh", NAMES)


def _interrupted_run(data, out, *, after=1, settings=None, model=None):
    """`ood` over the cases of ``data`` stopped by Ctrl-C in the progress callback after
    ``after`` cases."""
    from napari_metaseg.io.cases import find_cases
    from napari_metaseg.workflows import ood_cases

    done = []

    def step(fraction, stage):
        if " done (" in stage:
            done.append(stage)
            if len(done) == after:
                raise KeyboardInterrupt

    # the settings the CLI passes by default (a resumed CLI run must find them the same)
    job = ood_cases(find_cases([data]), out, {"command": "ood", **(settings or {})}, model)
    try:
        with pytest.raises(KeyboardInterrupt):
            drain(job, step)
    finally:
        job.close()  # what the CLI's exit does: the run lock is released
    return done


def test_an_interrupted_run_resumes_where_it_stopped_and_writes_what_a_fresh_run_writes(three, capsys,
                                                                                        count_finds):
    from napari_metaseg.workflows.cases import RUN_LOCK

    tmp, data, fresh = three
    out = tmp / "resumed"
    assert len(_interrupted_run(data, out)) == 1
    assert not (out / RUN_LOCK).exists()
    first = [n for n in NAMES if (out / "cases" / f"{n}_ood.parquet").exists()]
    assert len(first) == 1 and (out / "cases" / f"{first[0]}_ood_parts.npz").is_file()
    assert not (out / "ood_pixels.csv").exists()  # the interrupted run got no evaluation
    before = _mtimes(out, first[0])
    assert len(before) == 3
    count_finds.clear()
    code, res = _cli("ood", data, "--out", out, capsys=capsys)
    assert code == 0, res.err
    assert "2 computed, 1 already done (use --force to recompute), 0 failed" in res.err
    assert sorted(count_finds) == sorted(set(NAMES) - set(first))  # the done case was not computed
    assert _mtimes(out, first[0]) == before
    _assert_same(_outputs(out, NAMES), fresh)
    # all done: nothing is computed, the outputs are rebuilt the same
    count_finds.clear()
    code, res = _cli("ood", data, "--out", out, capsys=capsys)
    assert code == 0 and len(count_finds) == 0 and "0 computed, 3 already done" in res.err
    _assert_same(_outputs(out, NAMES), fresh)
    # --force recomputes every case, with the same result
    code, res = _cli("ood", data, "--out", out, "--force", capsys=capsys)
    assert code == 0 and len(count_finds) == 3 and "3 computed, 0 already done" in res.err
    _assert_same(_outputs(out, NAMES), fresh)


def test_a_failed_case_is_computed_by_the_rerun_and_only_it(three, capsys, count_finds):
    tmp, data, fresh = three
    out = tmp / "out"
    good = (data / "c1_softmax.npy").read_bytes()
    (data / "c1_softmax.npy").write_bytes(b"broken")
    code, res = _cli("ood", data, "--out", out, capsys=capsys)
    assert code == 1 and "c1" in res.err and (out / "failed.csv").exists()
    assert sorted(pd.read_parquet(out / "ood_regions.parquet")["case"].unique()) == ["c0", "c2"]
    (data / "c1_softmax.npy").write_bytes(good)
    count_finds.clear()
    code, res = _cli("ood", data, "--out", out, capsys=capsys)
    assert code == 0, res.err
    assert len(count_finds) == 1 and "1 computed, 2 already done" in res.err
    assert not (out / "failed.csv").exists()
    _assert_same(_outputs(out, NAMES), fresh)


def _recomputed(data, out, count_finds, capsys, *extra):
    count_finds.clear()
    code, res = _cli("ood", data, "--out", out, *extra, capsys=capsys)
    assert code == 0, res.err
    return len(count_finds)


def test_changed_settings_input_annotation_or_outputs_recompute_that_case(three, capsys, count_finds):
    tmp, data, fresh = three
    out = tmp / "fresh"
    assert _recomputed(data, out, count_finds, capsys) == 0
    # settings: every case
    assert _recomputed(data, out, count_finds, capsys, "--threshold", "0.6") == 3
    assert _recomputed(data, out, count_finds, capsys, "--threshold", "0.6") == 0
    assert _recomputed(data, out, count_finds, capsys) == 3
    for option in (("--measure", "V"), ("--exclude-class", "1"), ("--mode", "slices"),
                   ("--mode", "slices", "--slice-axis", "0"), ("--p-keep", "0.7"), ("--ood-label", "7")):
        assert _recomputed(data, out, count_finds, capsys, *option) == 3, option
    assert _recomputed(data, out, count_finds, capsys) == 3
    _assert_same(_outputs(out, NAMES), fresh)

    # an input rewritten with other content at the same path: that case only
    p, _ = _case_arrays(7)
    np.save(data / "c1_softmax.npy", p)
    assert _recomputed(data, out, count_finds, capsys) == 1
    p, _ = _case_arrays(1)
    np.save(data / "c1_softmax.npy", p)
    assert _recomputed(data, out, count_finds, capsys) == 1
    _assert_same(_outputs(out, NAMES), fresh)
    # the same content written again (a copy, a touch): nothing
    os.utime(data / "c2_gt.npy", ns=(1, 1))
    assert _recomputed(data, out, count_finds, capsys) == 0
    g = np.load(data / "c2_gt.npy")
    g[0, 0, 0] = 255
    np.save(data / "c2_gt.npy", g)
    assert _recomputed(data, out, count_finds, capsys) == 1
    # an annotation file appears beside the softmax (it comes before the ground truth)
    ood = np.zeros(SHAPE, np.uint8)
    ood[CUBES[0]] = 1
    np.save(data / "c0_ood.npy", ood)
    assert _recomputed(data, out, count_finds, capsys) == 1
    ood[SHEETS[0]] = 2
    np.save(data / "c0_ood.npy", ood)
    assert _recomputed(data, out, count_finds, capsys) == 1
    (data / "c0_ood.npy").unlink()
    _, g = _case_arrays(2)
    np.save(data / "c2_gt.npy", g)
    assert _recomputed(data, out, count_finds, capsys) == 2
    _assert_same(_outputs(out, NAMES), fresh)

    # damaged or missing outputs: that case
    parts = out / "cases" / "c0_ood_parts.npz"
    for damage in (lambda: parts.write_bytes(b"junk"), lambda: parts.write_bytes(parts.read_bytes()[:-7]),
                   parts.unlink, (out / "maps" / "c1_ood_regions.npy").unlink,
                   lambda: np.save(out / "maps" / "c2_ood_regions.npy", np.zeros(SHAPE, np.int32)),
                   (out / "cases" / "c2_ood.parquet").unlink):
        damage()
        assert _recomputed(data, out, count_finds, capsys) == 1
    _assert_same(_outputs(out, NAMES), fresh)


def test_a_parts_file_that_matches_its_record_but_is_damaged_is_recomputed(three, capsys, count_finds):
    """The record's fingerprint is not all: the parts are read back and checked before use."""
    from napari_metaseg.io.results import read_settings, write_table
    from napari_metaseg.workflows.cases import input_fingerprint

    tmp, data, fresh = three
    out = tmp / "fresh"
    parts = out / "cases" / "c1_ood_parts.npz"
    with np.load(parts, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["n_ood_0"] = -arrays["n_ood_0"]
    parts.write_bytes(_npz(**arrays))
    table = out / "cases" / "c1_ood.parquet"
    record = read_settings(table)
    record["outputs"]["parts"] = input_fingerprint(parts)
    write_table(pd.read_parquet(table), table, settings=record)
    assert _recomputed(data, out, count_finds, capsys) == 1
    _assert_same(_outputs(out, NAMES), fresh)


def test_a_changed_model_recomputes_every_case(three, capsys, count_finds):
    tmp, data, _ = three
    model = tmp / "region_model.json"
    code, res = _cli("train", tmp / "fresh", "--out", model, "-q", capsys=capsys)
    assert code == 0, res.err
    out = tmp / "with_model"
    assert _recomputed(data, out, count_finds, capsys, "--model", model) == 3
    reference = _outputs(out, NAMES)
    assert "p_hit" in reference["combined"] and (out / "ood_objects.csv").read_text().count("meta") == 1
    assert _recomputed(data, out, count_finds, capsys, "--model", model) == 0
    # the same file content at another path: another model file path, recomputed
    copy = tmp / "copy.json"
    copy.write_bytes(model.read_bytes())
    assert _recomputed(data, out, count_finds, capsys, "--model", copy) == 3
    assert _recomputed(data, out, count_finds, capsys, "--model", model) == 3
    # the same path rewritten with a model trained otherwise
    code, res = _cli("train", tmp / "fresh", "--out", model, "--kind", "logistic", "-q", capsys=capsys)
    assert code == 0, res.err
    assert _recomputed(data, out, count_finds, capsys, "--model", model) == 3
    assert _recomputed(data, out, count_finds, capsys, "--model", model) == 0
    # the same bytes written again (mtime changed only): nothing
    model.write_bytes(model.read_bytes())
    assert _recomputed(data, out, count_finds, capsys, "--model", model) == 0
    # no model any more
    assert _recomputed(data, out, count_finds, capsys) == 3
    assert "p_hit" not in pd.read_parquet(out / "ood_regions.parquet")


def test_an_interrupted_run_with_a_model_resumes_to_a_fresh_runs_outputs(three, capsys, count_finds):
    tmp, data, _ = three
    model = tmp / "region_model.json"
    assert _cli("train", tmp / "fresh", "--out", model, "-q", capsys=capsys)[0] == 0
    assert _cli("ood", data, "--out", tmp / "m_fresh", "--model", model, capsys=capsys)[0] == 0
    _interrupted_run(data, tmp / "m_resumed", after=2, model=model)
    assert _recomputed(data, tmp / "m_resumed", count_finds, capsys, "--model", model) == 1
    _assert_same(_outputs(tmp / "m_resumed", NAMES), _outputs(tmp / "m_fresh", NAMES))


def test_cases_without_annotations_and_a_run_that_drops_them(tmp_path, capsys, count_finds):
    data = _write_cases(tmp_path / "data", (0, 1))
    out = tmp_path / "out"
    assert _recomputed(data, out, count_finds, capsys) == 2
    assert (out / "ood_pixels.csv").exists() and (out / "cases" / "c0_ood_parts.npz").exists()
    # --ood-label none: no annotation any more; the evaluation of the earlier run must not remain
    assert _recomputed(data, out, count_finds, capsys, "--ood-label", "none") == 2
    assert not (out / "ood_pixels.csv").exists() and not (out / "ood_objects.csv").exists()
    assert not list((out / "cases").glob("*_ood_parts.npz"))
    assert "hit" not in pd.read_parquet(out / "ood_regions.parquet")
    assert _recomputed(data, out, count_finds, capsys, "--ood-label", "none") == 0
    # cases without ground truth are done without parts too
    bare = _write_cases(tmp_path / "bare", (3,), gt=False)
    assert _recomputed(bare, tmp_path / "o2", count_finds, capsys) == 1
    assert _recomputed(bare, tmp_path / "o2", count_finds, capsys) == 0
    assert not (tmp_path / "o2" / "ood_pixels.csv").exists()


def test_a_second_run_into_a_busy_folder_is_refused_and_changes_nothing(three, capsys):
    from napari_metaseg.io.locks import release_lock, take_lock
    from napari_metaseg.workflows import ood_cases
    from napari_metaseg.workflows.cases import RUN_LOCK, OutputBusyError

    tmp, data, fresh = three
    out = tmp / "fresh"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    token = take_lock(out / RUN_LOCK, what="ood run")
    try:
        with pytest.raises(OutputBusyError, match="being written by another ood run"):
            drain(ood_cases([Case("c0", data / "c0_softmax.npy", data / "c0_gt.npy")], out, {}))
        code, res = _cli("ood", data, "--out", out, capsys=capsys)
        assert code == 1 and "another ood run" in res.err
    finally:
        release_lock(out / RUN_LOCK, token)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    _assert_same(_outputs(out, NAMES), fresh)


@pytest.mark.realdata
def test_lesion_brains_fresh_and_resumed_after_one_case_write_the_same_evaluation(shared_data, tmp_path,
                                                                                   capsys, count_finds):
    cases = [shared_data / "brain_ood" / s for s in ("sub-01L", "sub-02L")]
    for d in cases:
        if not d.is_dir():
            pytest.skip(f"{d} not found")
    args = (*cases, "--exclude-class", "0")
    code, res = _cli("ood", *args, "--out", tmp_path / "fresh", capsys=capsys)
    assert code == 0, res.err
    from napari_metaseg.io.cases import find_cases, read_case
    from napari_metaseg.workflows import ood_cases

    job = ood_cases(find_cases(cases), tmp_path / "resumed", {"exclude_classes": [0], "command": "ood"})
    for _, stage in job:
        if " done (" in stage:
            job.close()  # stopped after the first case
            break
    assert len(list((tmp_path / "resumed" / "cases").glob("*_ood.parquet"))) == 1
    count_finds.clear()
    code, res = _cli("ood", *args, "--out", tmp_path / "resumed", capsys=capsys)
    assert code == 0, res.err
    assert len(count_finds) == 1 and "1 computed, 1 already done" in res.err
    for f in ("ood_pixels.csv", "ood_objects.csv"):
        assert (tmp_path / "resumed" / f).read_bytes() == (tmp_path / "fresh" / f).read_bytes(), f
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "resumed" / "ood_regions.parquet"),
                                  pd.read_parquet(tmp_path / "fresh" / "ood_regions.parquet"))
    # the voxels counted: lesion voxels (gt 255) where the background is not predicted, both brains
    n_ood = n_in = 0
    for c in find_cases(cases):
        probs, gt, _ = read_case(c)
        mask = probs.argmax(-1) != 0
        n_ood += int(((gt == 255) & mask).sum())
        n_in += int(((gt != 255) & mask).sum())
    px = pd.read_csv(tmp_path / "fresh" / "ood_pixels.csv")
    assert px["n_ood"].tolist() == [n_ood] * 3 and px["n_in"].tolist() == [n_in] * 3
    sizes = [p.stat().st_size for p in (tmp_path / "fresh" / "cases").glob("*_ood_parts.npz")]
    assert len(sizes) == 2 and max(sizes) < 200_000  # a few thousand values per heatmap, not 2M voxels
