"""The OoD review sidecar (io.ood_review): decisions saved, restored for the same regions,
protected against regions made otherwise, files of another case or format refused."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.io.ood_review import (
    OodReviewError,
    OodReviewStore,
    ood_case_identity,
    ood_sidecar_path,
    region_records,
)

SETTINGS = {"threshold": 0.5, "measure": "E", "mode": "3d", "slice_axis": -1, "exclude_classes": [0]}


def _regions():
    ids = np.zeros((6, 5, 4), np.int32)
    ids[0:2, 0:2, 0] = 1  # 4 voxels, centroid (0.5, 0.5, 0)
    ids[4, 3, 1:4] = 2  # 3 voxels, centroid (4, 3, 2)
    table = pd.DataFrame({"index": [1, 2], "S": [4, 3], "p_hit": [0.2, 0.9]})
    return ids, table


@pytest.fixture
def case(tmp_path):
    probs = np.full((6, 5, 4, 2), 0.5, np.float32)
    path = tmp_path / "c_softmax.npy"
    np.save(path, probs)
    return ood_case_identity(probs, probs_path=path, case_id="c")


def test_records_hold_size_box_centroid_and_probability():
    ids, table = _regions()
    recs = region_records(table, ids)
    assert [r["index"] for r in recs] == [1, 2]
    assert recs[0]["bbox"] == [0, 0, 0, 2, 2, 1] and recs[1]["bbox"] == [4, 3, 1, 5, 4, 4]
    assert recs[0]["centroid"] == [0.5, 0.5, 0.0] and recs[1]["centroid"] == [4.0, 3.0, 2.0]
    assert (recs[1]["size"], recs[1]["p_hit"], recs[1]["decision"]) == (3, 0.9, None)


def test_decisions_are_saved_at_once_and_restored_for_the_same_regions(case):
    ids, table = _regions()
    path = ood_sidecar_path(case)
    assert path == Path(case["probs_path"]).with_name("c_softmax.metaseg-ood.json")  # beside the file
    store = OodReviewStore(path, case)
    assert store.set_regions(table, ids, SETTINGS, model="m.json") == 0
    store.set_decision(2, "unknown", note="ring lesion")
    on_disk = json.loads(path.read_text())
    assert [r["decision"] for r in on_disk["regions"]] == [None, "unknown"]
    assert on_disk["regions"][1]["note"] == "ring lesion" and on_disk["model"] == "m.json"
    again = OodReviewStore(path, case)
    assert again.restored and again.decisions() == {2: "unknown"}
    # the same regions found again: the decision stays
    assert again.set_regions(table, ids, dict(SETTINGS)) == 1
    assert OodReviewStore(path, case).decisions() == {2: "unknown"}
    # regions made otherwise: refused unless replaced
    with pytest.raises(ValueError, match="replace=True"):
        again.set_regions(table, ids, {**SETTINGS, "threshold": 0.6})
    assert OodReviewStore(path, case).decisions() == {2: "unknown"}
    again.set_regions(table, ids, {**SETTINGS, "threshold": 0.6}, replace=True)
    assert OodReviewStore(path, case).decisions() == {}
    with pytest.raises(ValueError, match="decision"):
        again.set_decision(1, "maybe")
    with pytest.raises(ValueError, match="no region 7"):
        again.set_decision(7, "known")


def test_files_of_another_case_or_format_are_refused_and_left_alone(case, tmp_path):
    ids, table = _regions()
    path = ood_sidecar_path(case)
    OodReviewStore(path, case).set_regions(table, ids, SETTINGS)
    other = dict(case, probs_sha256="0" * 64)
    with pytest.raises(OodReviewError, match="another softmax"):
        OodReviewStore(path, other)
    bad = tmp_path / "bad.metaseg-ood.json"
    bad.write_text("{not json")
    with pytest.raises(OodReviewError, match="not valid JSON"):
        OodReviewStore(bad, case)
    assert bad.read_text() == "{not json"
    bad.write_text(json.dumps({"format": "napari-metaseg-ood-review", "format_version": 99}))
    with pytest.raises(OodReviewError, match="newer"):
        OodReviewStore(bad, case)


def test_a_read_only_data_folder_sends_the_review_to_the_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_REVIEW_DIR", str(tmp_path / "user"))
    data = tmp_path / "data"
    data.mkdir()
    probs = np.full((3, 3, 2), 0.5, np.float32)
    np.save(data / "x_softmax.npy", probs)
    data.chmod(0o555)
    try:
        case = ood_case_identity(probs, probs_path=data / "x_softmax.npy")
        path = ood_sidecar_path(case)
    finally:
        data.chmod(0o755)
    assert path.parent == tmp_path / "user" / "reviews"
    assert path.name.startswith("x_softmax-") and case["hash_of"] == "file"
    # an array without a file is hashed
    mem = ood_case_identity(probs, case_id="mem")
    assert mem["hash_of"] == "array" and ood_sidecar_path(mem).name.startswith("mem-")
