"""The review store (io/review.py): atomic saves, locks, validation, export, write-back. No Qt."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_metaseg.io.review import (
    SIDECAR_SUFFIX,
    CaseChangedError,
    ReviewFileError,
    ReviewLockedError,
    ReviewStore,
    StaleLockError,
    case_identity,
    leftover_temporaries,
    reviews_dir,
    sidecar_path,
    write_labels_like,
)


@pytest.fixture(autouse=True)
def _private_reviews(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_REVIEW_DIR", str(tmp_path / "user"))


def _proposals(n=6, slices=True):
    rows = []
    for i in range(n):
        rows.append({"case": "a", "kind": "segment" if i % 2 else "gt_object", "class": i % 3,
                     "index": pd.NA if i % 2 == 0 else i + 1, "gt_object": i + 1 if i % 2 == 0 else pd.NA,
                     "score": 1.0 - i / n, "size": 10 + i, "bbox": (0, i, 2, 3, i + 2, 5),
                     "centroid": (1.0, i + 0.5, 3.5), "slice": 2 + i})
    t = pd.DataFrame(rows)
    t["index"] = t["index"].astype("Int64")
    t["gt_object"] = t["gt_object"].astype("Int64")
    return t if slices else t.drop(columns="slice")


@pytest.fixture
def case(tmp_path):
    gt = np.zeros((4, 8, 6), np.uint8)
    gt[1:3, 2:6, 1:4] = 2
    path = tmp_path / "data" / "gt.npy"
    path.parent.mkdir()
    np.save(path, gt)
    return case_identity(gt, probs_shape=(4, 8, 6, 3), gt_path=path, case_id="a"), gt, path


def test_sidecar_next_to_the_data_or_in_the_user_folder(case, tmp_path):
    ident, gt, path = case
    assert sidecar_path(ident) == path.with_name("gt" + SIDECAR_SUFFIX)
    # an array without a file: per-user folder, keyed by content, stable for the same content
    arr = case_identity(gt, probs_shape=(4, 8, 6, 3), case_id="brain")
    p1 = sidecar_path(arr)
    assert p1.parent == reviews_dir() and p1.parent.parent == tmp_path / "user"
    assert p1 == sidecar_path(case_identity(gt.copy(), probs_shape=(4, 8, 6, 3), case_id="brain"))
    other = gt.copy()
    other[0, 0, 0] = 1
    assert sidecar_path(case_identity(other, probs_shape=(4, 8, 6, 3), case_id="brain")) != p1
    # the package's sample folder is not written into
    from napari_metaseg._sample_data import SAMPLE_DIR

    sample = case_identity(gt, probs_shape=(4, 8, 6, 3), gt_path=SAMPLE_DIR / "brain3d_gt.nii.gz")
    assert sidecar_path(sample).parent == reviews_dir()
    # a read-only data folder falls back too
    ro = tmp_path / "ro"
    ro.mkdir()
    np.save(ro / "gt.npy", gt)
    ro.chmod(0o555)
    try:
        if not os.access(ro, os.W_OK):  # root ignores the mode bits
            p = sidecar_path(case_identity(gt, probs_shape=(1,), gt_path=ro / "gt.npy"))
            assert p.parent == reviews_dir() and p.name.startswith("gt-")
    finally:
        ro.chmod(0o755)


def test_decisions_round_trip_and_are_on_disk_at_once(case):
    ident, _, _ = case
    path = sidecar_path(ident)
    with ReviewStore(path, ident) as store:
        assert not store.restored and path.with_name(path.name + ".lock").exists()
        store.set_proposals(_proposals(), settings={"mode": "slices"})
        store.set_decision(0, "label_error", note="missing lesion")
        on_disk = json.loads(path.read_text())
        assert on_disk["proposals"][0]["decision"] == "label_error"  # saved without close()
        store.set_decision(3, "not_error")
        store.set_decision(4, "unsure")
        store.set_decision(4, None)  # cleared again
        with pytest.raises(ValueError, match="decision must be one of"):
            store.set_decision(1, "maybe")
        with pytest.raises(ValueError, match="proposal_id"):
            store.set_decision(6, "unsure")
    assert not path.with_name(path.name + ".lock").exists()
    with ReviewStore(path, ident) as again:
        assert again.restored
        t = again.table()
        assert t["decision"].tolist() == ["label_error", None, None, "not_error", None, None]
        assert t.loc[0, "note"] == "missing lesion" and t.loc[0, "decided_at"]
        assert t.loc[4, "decided_at"] is None
        assert t["slice"].tolist() == [2, 3, 4, 5, 6, 7]
        assert t.loc[1, "bbox"] == [0, 1, 2, 3, 3, 5] and t.loc[1, "index"] == 2
        assert t.loc[0, "index"] is None and t.loc[0, "gt_object"] == 1
        assert again.settings == {"mode": "slices"}
        # starting over would drop decisions: only on request
        with pytest.raises(ValueError, match="already holds decisions"):
            again.set_proposals(_proposals(3))
    assert leftover_temporaries(path) == []


def test_second_store_is_refused_until_the_first_closes(case):
    ident, _, _ = case
    path = sidecar_path(ident)
    first = ReviewStore(path, ident)
    first.set_proposals(_proposals())
    with pytest.raises(ReviewLockedError, match="open in another viewer of this process"):
        ReviewStore(path, ident)
    # read-only view works and cannot write
    ro = ReviewStore(path, ident, read_only=True)
    assert len(ro.proposals) == 6
    with pytest.raises(ReviewLockedError, match="read-only"):
        ro.set_decision(0, "unsure")
    first.set_decision(1, "unsure")
    first.close()
    with pytest.raises(ReviewLockedError, match="closed"):
        first.set_decision(0, "unsure")
    second = ReviewStore(path, ident)
    assert second.proposals[1]["decision"] == "unsure"
    second.close()


def test_lock_of_a_live_other_process_is_refused_and_a_taken_lock_stops_writes(case):
    ident, _, _ = case
    path = sidecar_path(ident)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = path.with_name(path.name + ".lock")
        lock.write_text(json.dumps({"pid": proc.pid, "host": os.uname().nodename, "token": "x"}))
        with pytest.raises(ReviewLockedError, match=f"process {proc.pid}") as err:
            ReviewStore(path, ident, take_over_stale=True)  # alive: never taken over
        assert not isinstance(err.value, StaleLockError)
        lock.unlink()
    finally:
        proc.kill()
        proc.wait()
    # a store whose lock was taken over by someone else refuses to write
    store = ReviewStore(path, ident)
    store.set_proposals(_proposals())
    path.with_name(path.name + ".lock").write_text(json.dumps({"pid": 1, "host": "x", "token": "y"}))
    with pytest.raises(ReviewLockedError, match="taken over"):
        store.set_decision(0, "unsure")
    assert json.loads(path.read_text())["proposals"][0]["decision"] is None


def test_stale_lock_of_a_dead_process_is_reported_then_taken_over(case):
    ident, _, _ = case
    path = sidecar_path(ident)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    lock = path.with_name(path.name + ".lock")
    lock.write_text(json.dumps({"pid": proc.pid, "host": os.uname().nodename, "token": "old"}))
    with pytest.raises(StaleLockError, match="no longer running"):
        ReviewStore(path, ident)
    assert json.loads(lock.read_text())["token"] == "old"  # unchanged until asked
    with ReviewStore(path, ident, take_over_stale=True) as store:
        assert store.holds_lock and json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


WRITER = textwrap.dedent("""
    import json, sys
    from napari_metaseg.io.review import ReviewStore
    path, ident = sys.argv[1], json.loads(sys.argv[2])
    store = ReviewStore(path, ident)
    print("ready", flush=True)
    for i in range(len(store.proposals)):
        store.set_decision(i, ("label_error", "not_error", "unsure")[i % 3], note=f"n{i}")
        print(f"ack {i}", flush=True)
""")


def test_killed_writer_loses_at_most_the_decision_being_written(case, monkeypatch):
    ident, _, _ = case
    path = sidecar_path(ident)
    with ReviewStore(path, ident) as store:
        store.set_proposals(_proposals(40))
    before = path.read_bytes()
    env = {**os.environ, "NAPARI_METASEG_REVIEW_SLOW_WRITE": "0.2"}  # half-way pause per save
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), json.dumps(ident)],
                            stdout=subprocess.PIPE, text=True, env=env)
    acked = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        while len(acked) < 7:
            acked.append(int(proc.stdout.readline().split()[1]))
        # kill the writer inside the 8th save, once half its temporary file is written
        t0 = time.monotonic()
        while not leftover_temporaries(path) and time.monotonic() - t0 < 30:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() != before
    assert leftover_temporaries(path), "the kill was meant to hit a save half-way"
    # the dead writer's lock is stale: reported, then taken over
    with pytest.raises(StaleLockError):
        ReviewStore(path, ident)
    with ReviewStore(path, ident, take_over_stale=True) as store:
        decided = {p["id"]: p["decision"] for p in store.proposals if p["decision"]}
    expected = {i: ("label_error", "not_error", "unsure")[i % 3] for i in acked}
    assert {i: decided[i] for i in acked} == expected
    assert set(decided) - set(acked) <= {max(acked) + 1}  # at most the one in flight


def test_corrupt_newer_or_foreign_sidecar_is_an_error_and_left_untouched(case):
    ident, _, _ = case
    path = sidecar_path(ident)
    with ReviewStore(path, ident) as store:
        store.set_proposals(_proposals())
        store.set_decision(0, "unsure")
    good = path.read_bytes()
    for content, message in (
        (good[: len(good) // 2], "is not valid JSON"),
        (b"\xff\xfe\x00garbage", "is not text|not valid JSON"),
        (json.dumps({"hello": 1}).encode(), "not a napari-metaseg review file"),
        (good.replace(b'"format_version": 1', b'"format_version": 99'), "format version 99, newer"),
        (good.replace(b'"decision": "unsure"', b'"decision": "perhaps"'), "proposal 0 is malformed"),
    ):
        path.write_bytes(content)
        with pytest.raises(ReviewFileError, match=message):
            ReviewStore(path, ident)
        assert path.read_bytes() == content
        assert not path.with_name(path.name + ".lock").exists()  # nothing was taken either


def test_changed_ground_truth_is_detected(case):
    ident, gt, gt_path = case
    path = sidecar_path(ident)
    with ReviewStore(path, ident) as store:
        store.set_proposals(_proposals())
    edited = gt.copy()
    edited[0, 0, 0] = 3
    np.save(gt_path, edited)
    new_ident = case_identity(edited, probs_shape=(4, 8, 6, 3), gt_path=gt_path, case_id="a")
    assert sidecar_path(new_ident) == path
    before = path.read_bytes()
    with pytest.raises(CaseChangedError, match="the GT changed since the review"):
        ReviewStore(path, new_ident)
    assert path.read_bytes() == before
    wrong_shape = dict(ident, probs_shape=[4, 8, 6, 2])
    with pytest.raises(CaseChangedError, match="probabilities of shape"):
        ReviewStore(path, wrong_shape)


def test_export_csv_and_json_equal_the_decisions(case, tmp_path):
    ident, _, _ = case
    with ReviewStore(sidecar_path(ident), ident) as store:
        store.set_proposals(_proposals())
        store.set_decision(0, "label_error", note='has "quotes", and commas')
        store.set_decision(2, "not_error")
        store.set_decision(5, "unsure")
        csv_path = store.export_csv(tmp_path / "out" / "review.csv")
        json_path = store.export_json(tmp_path / "out" / "review.json")
        table = store.table()
    got = pd.read_csv(csv_path, keep_default_na=False)
    assert got["decision"].tolist() == ["label_error", "", "not_error", "", "", "unsure"]
    assert got["note"][0] == 'has "quotes", and commas'
    assert got["id"].tolist() == list(range(6))
    assert got["score"].tolist() == pytest.approx(table["score"].astype(float).tolist())
    assert got["bbox"][1] == "0 1 2 3 3 5"
    doc = json.loads(json_path.read_text())
    assert [p["decision"] for p in doc["proposals"]] == table["decision"].tolist()
    assert doc["case"]["gt_sha256"] == ident["gt_sha256"]


def test_write_back_never_overwrites_without_overwrite_and_keeps_the_nifti_affine(tmp_path):
    import nibabel as nib

    from napari_metaseg.io.layers import read_layers
    from napari_metaseg.io.nifti import read_nifti

    # a NIfTI stored in LPS-like orientation: the reader flips it to RAS+
    stored = np.zeros((6, 5, 4), np.uint8)
    stored[1:3, 1:4, 0:2] = 2
    stored[4, 0, 3] = 1
    affine = np.array([[-2.0, 0, 0, 10], [0, -1.5, 0, 20], [0, 0, 3, -5], [0, 0, 0, 1]])
    img = nib.Nifti1Image(stored, affine)
    img.header.set_qform(affine, code=4)
    img.header.set_sform(affine, code=4)
    src = tmp_path / "gt.nii.gz"
    nib.save(img, src)
    (data, meta, _), = read_layers(src, kind="labels")
    md = meta["metadata"]
    assert not np.array_equal(md["affine"], md["original_affine"])  # really reoriented
    ident = case_identity(data, probs_shape=(*data.shape, 3), gt_path=src)
    src_bytes = src.read_bytes()
    fixed = data.copy()
    fixed[0, 0, 0] = 3  # the reviewer's correction, in the layer's (RAS+) orientation
    with ReviewStore(sidecar_path(ident), ident) as store:
        store.set_proposals(_proposals())
        with pytest.raises(FileExistsError, match="the original ground truth"):
            store.write_corrected_gt(fixed, src, source=src, affine=md["affine"],
                                     original_affine=md["original_affine"])
        assert src.read_bytes() == src_bytes
        out = store.write_corrected_gt(fixed, tmp_path / "gt_corrected.nii.gz", source=src,
                                       affine=md["affine"], original_affine=md["original_affine"])
        with pytest.raises(FileExistsError, match="an existing file"):
            store.write_corrected_gt(fixed, out, source=src, affine=md["affine"])
        assert store.corrections[-1]["path"] == str(out.resolve())
        assert not store.corrections[-1]["overwrote_original"]
    assert src.read_bytes() == src_bytes
    back, back_affine = read_nifti(out)
    np.testing.assert_array_equal(back_affine, affine)
    assert back.dtype == np.uint8
    (again, _, _), = read_layers(out, kind="labels")
    np.testing.assert_array_equal(again, fixed)  # the layer reads back exactly as edited
    assert int(nib.load(out).header["sform_code"]) == 4
    assert (back != stored).sum() == 1
    recorded = json.loads(sidecar_path(ident).read_text())["corrections"]
    assert [c["path"] for c in recorded] == [str(out.resolve())]
    # the explicit choice does overwrite (and is recorded as such)
    with ReviewStore(sidecar_path(ident), ident) as store:
        store.write_corrected_gt(fixed, src, source=src, affine=md["affine"],
                                 original_affine=md["original_affine"], overwrite=True)
        assert store.corrections[-1]["overwrote_original"]
    np.testing.assert_array_equal(read_nifti(src)[0], back)


def test_write_back_npy_and_tif(tmp_path):
    import tifffile

    fixed = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    write_labels_like(fixed, tmp_path / "a.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), fixed)
    write_labels_like(fixed, tmp_path / "a.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), fixed)
    with pytest.raises(FileExistsError):
        write_labels_like(fixed + 1, tmp_path / "a.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), fixed)
    with pytest.raises(ValueError, match="needs the labels' affine"):
        write_labels_like(fixed, tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match="cannot write labels"):
        write_labels_like(fixed, tmp_path / "a.png")


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10_000))
def test_voxel_codes_round_trip(seed):
    from napari_metaseg.io.review import box_bits_to_mask, voxel_box_bits

    rng = np.random.default_rng(seed)
    shape = tuple(int(x) for x in rng.integers(1, 9, size=int(rng.integers(2, 4))))
    mask = rng.random(shape) < rng.uniform(0.0, 0.6)
    code = json.loads(json.dumps(voxel_box_bits(np.flatnonzero(mask), shape)))  # as stored
    np.testing.assert_array_equal(box_bits_to_mask(code, shape), mask)


def test_voxels_stored_compactly_and_checked_on_load(case):
    from napari_metaseg.io.review import box_bits_to_mask

    ident, gt, _ = case
    table = _proposals(2)
    vox = np.zeros(gt.shape, bool)
    vox[1, 2:5, 3] = True  # along the last axis nothing is adjacent in C order
    table["voxels"] = [np.flatnonzero(vox), None]
    with ReviewStore(sidecar_path(ident), ident) as store:
        store.set_proposals(table)
        path = store.path
    doc = json.loads(path.read_text())
    p0 = doc["proposals"][0]
    assert p0["voxels"]["lo"] == [1, 2, 3] and p0["voxels"]["size"] == [1, 3, 1]
    np.testing.assert_array_equal(box_bits_to_mask(p0["voxels"], gt.shape), vox)
    assert "voxels" not in doc["proposals"][1]
    # a damaged code is refused on load, naming the proposal; the file is left as it is
    p0["voxels"]["size"] = [1, 3, 9]
    bad = json.dumps(doc)
    path.write_text(bad)
    with pytest.raises(ReviewFileError, match="proposal 0 has unreadable voxels"):
        ReviewStore(path, ident)
    assert path.read_text() == bad


def test_a_folder_without_write_bits_gets_no_sidecar_even_for_root(tmp_path):
    """Shared read-only data (mode r-x) sends the sidecar to the user's folder, also as root
    (for whom os.access says writable)."""
    import stat

    from napari_metaseg.io.review import _writable_folder

    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "gt.nii.gz").write_bytes(b"")
    assert _writable_folder(folder / "gt.nii.gz")
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        assert not _writable_folder(folder / "gt.nii.gz")
    finally:
        folder.chmod(0o755)
