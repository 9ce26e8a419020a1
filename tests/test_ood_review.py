"""The OoD review sidecar (io.ood_review): decisions saved, restored for the same regions,
protected against regions made otherwise, files of another case or format refused; one writer
at a time (the lock shared with the label-error review: another process refused, stale locks
taken over only when asked, read-only views, a lost lock refusing writes)."""

import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core import atomic
from napari_metaseg.io.ood_review import (
    OodReviewError,
    OodReviewStore,
    ood_case_identity,
    ood_sidecar_path,
    region_records,
)
from napari_metaseg.io.review import ReviewLockedError, StaleLockError

SETTINGS = {"threshold": 0.5, "measure": "E", "mode": "3d", "slice_axis": -1, "exclude_classes": [0]}


def _on_disk(path, case):
    """The decisions in the sidecar, read without the lock."""
    return OodReviewStore(path, case, read_only=True).decisions()


def _lock(path):
    return path.with_name(path.name + ".lock")


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


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
    with OodReviewStore(path, case) as store:
        assert store.set_regions(table, ids, SETTINGS, model="m.json") == 0
        store.set_decision(2, "unknown", note="ring lesion")
    on_disk = json.loads(path.read_text())
    assert [r["decision"] for r in on_disk["regions"]] == [None, "unknown"]
    assert on_disk["regions"][1]["note"] == "ring lesion" and on_disk["model"] == "m.json"
    again = OodReviewStore(path, case)
    assert again.restored and again.decisions() == {2: "unknown"}
    # the same regions found again: the decision stays
    assert again.set_regions(table, ids, dict(SETTINGS)) == 1
    assert _on_disk(path, case) == {2: "unknown"}
    # regions made otherwise: refused unless replaced
    with pytest.raises(ValueError, match="replace=True"):
        again.set_regions(table, ids, {**SETTINGS, "threshold": 0.6})
    assert _on_disk(path, case) == {2: "unknown"}
    again.set_regions(table, ids, {**SETTINGS, "threshold": 0.6}, replace=True)
    assert _on_disk(path, case) == {}
    with pytest.raises(ValueError, match="decision"):
        again.set_decision(1, "maybe")
    with pytest.raises(ValueError, match="no region 7"):
        again.set_decision(7, "known")
    again.close()
    assert not _lock(path).exists()


def test_files_of_another_case_or_format_are_refused_and_left_alone(case, tmp_path):
    ids, table = _regions()
    path = ood_sidecar_path(case)
    with OodReviewStore(path, case) as store:
        store.set_regions(table, ids, SETTINGS)
    other = dict(case, probs_sha256="0" * 64)
    with pytest.raises(OodReviewError, match="another softmax"):
        OodReviewStore(path, other)
    assert not _lock(path).exists()  # a refused file releases the lock again
    bad = tmp_path / "bad.metaseg-ood.json"
    bad.write_text("{not json")
    with pytest.raises(OodReviewError, match="not valid JSON"):
        OodReviewStore(bad, case)
    assert bad.read_text() == "{not json"
    # hostile files: nesting and numbers beyond the limits of every sidecar reader, refused untouched
    for text in ('{"regions": ' + "[" * 5000 + "]" * 5000 + "}", '{"format_version": ' + "9" * 500 + "}"):
        bad.write_text(text)
        with pytest.raises(OodReviewError, match="OoD review file") as err:
            OodReviewStore(bad, case)
        assert len(str(err.value)) < 400 and bad.read_text() == text
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


# ============================================================================================
# One writer at a time
# ============================================================================================
N_MANY = 8


def _many_regions(n=N_MANY):
    """``n`` regions: region k fills row k - 1 of a (n, 4, 3) volume, its first k voxels."""
    ids = np.zeros((n, 4, 3), np.int32)
    for k in range(1, n + 1):
        ids[k - 1].reshape(-1)[:k] = k
    table = pd.DataFrame({"index": np.arange(1, n + 1), "S": np.arange(1, n + 1)})
    return ids, table


@pytest.fixture
def regions_case(case):
    ids, table = _many_regions()
    path = ood_sidecar_path(case)
    with OodReviewStore(path, case) as store:
        store.set_regions(table, ids, SETTINGS)
    return path, case


# the other process: takes the lock, decides regions 1..4, waits for a line on stdin, decides
# regions 5..8, closes; acknowledges each decision once set_decision returned
REVIEWER = textwrap.dedent("""
    import json, sys
    from napari_metaseg.io.ood_review import OodReviewStore
    path, case = sys.argv[1], json.loads(sys.argv[2])
    store = OodReviewStore(path, case)
    print("locked", flush=True)
    for rid in range(1, 9):
        if rid == 5:
            sys.stdin.readline()
        store.set_decision(rid, ("unknown", "known")[rid % 2], note=f"by child {rid}")
        print(f"ack {rid}", flush=True)
    store.close()
    print("closed", flush=True)
""")


def _acknowledged(proc, n):
    """The next ``n`` region ids that REVIEWER reports as saved."""
    lines = [proc.stdout.readline().split() for _ in range(n)]
    assert all(words[:1] == ["ack"] for words in lines), lines
    return [int(words[1]) for words in lines]


def test_a_store_of_another_process_keeps_others_out_and_leaves_all_its_decisions(regions_case):
    path, case = regions_case
    proc = subprocess.Popen([sys.executable, "-c", REVIEWER, str(path), json.dumps(case)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        acked = _acknowledged(proc, 4)
        before = path.read_bytes()
        # refused, naming the holder and what to do; a live holder is never taken over
        for take_over in (False, True):
            with pytest.raises(ReviewLockedError, match=f"OoD review {path.name} is open in process "
                                                        f"{proc.pid} .*open it read-only") as err:
                OodReviewStore(path, case, take_over_stale=take_over)
            assert not isinstance(err.value, StaleLockError)
            assert err.value.holder["pid"] == proc.pid
        assert json.loads(_lock(path).read_text())["pid"] == proc.pid
        # read-only: the holder's decisions so far, no writes
        ro = OodReviewStore(path, case, read_only=True)
        assert ro.decisions() == {1: "known", 2: "unknown", 3: "known", 4: "unknown"}  # rid % 2 -> choice
        with pytest.raises(ReviewLockedError, match="read-only"):
            ro.set_decision(6, "known")
        assert path.read_bytes() == before
        proc.stdin.write("go\n")
        proc.stdin.flush()
        acked += _acknowledged(proc, N_MANY - 4)
        assert proc.stdout.readline().strip() == "closed"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    # every acknowledged decision is on disk; the lock is gone, the next store writes
    expected = {rid: ("unknown", "known")[rid % 2] for rid in acked}
    assert acked == list(range(1, N_MANY + 1)) and not _lock(path).exists()
    with OodReviewStore(path, case) as store:
        assert store.decisions() == expected
        assert [r["note"] for r in store.regions] == [f"by child {k}" for k in range(1, N_MANY + 1)]
        store.set_decision(1, None)
    assert _on_disk(path, case) == {k: v for k, v in expected.items() if k != 1}


def test_a_second_store_of_this_process_is_refused_until_the_first_closes(regions_case):
    path, case = regions_case
    first = OodReviewStore(path, case)
    first.set_decision(3, "unknown")
    with pytest.raises(ReviewLockedError, match="open in another viewer of this process"):
        OodReviewStore(path, case)
    first.set_decision(7, "known")
    first.close()
    with pytest.raises(ReviewLockedError, match="closed"):
        first.set_decision(1, "known")
    with OodReviewStore(path, case) as second:  # starts from the first one's last decision
        assert second.decisions() == {3: "unknown", 7: "known"}


def test_a_stale_lock_of_a_dead_process_is_reported_and_taken_over_only_when_asked(regions_case):
    path, case = regions_case
    with OodReviewStore(path, case) as store:
        store.set_decision(2, "unknown")
    pid = _dead_pid()
    lock = _lock(path)
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "token": "old",
                                "created": "2026-01-01T00:00:00+00:00"}))
    lock_bytes, sidecar_bytes = lock.read_bytes(), path.read_bytes()
    with pytest.raises(StaleLockError, match=f"process {pid} on .*no longer running.*"
                                             "its decisions are saved. Take the lock over") as err:
        OodReviewStore(path, case)
    assert err.value.holder["token"] == "old"
    assert lock.read_bytes() == lock_bytes and path.read_bytes() == sidecar_bytes  # unchanged
    assert OodReviewStore(path, case, read_only=True).decisions() == {2: "unknown"}
    assert lock.read_bytes() == lock_bytes
    with OodReviewStore(path, case, take_over_stale=True) as store:
        holder = json.loads(lock.read_text())
        assert store.holds_lock and holder["pid"] == os.getpid() and holder["token"] != "old"
        assert store.decisions() == {2: "unknown"}
        store.set_decision(5, "known")
    assert not lock.exists() and _on_disk(path, case) == {2: "unknown", 5: "known"}


def test_opening_read_only_changes_nothing(regions_case):
    path, case = regions_case
    with OodReviewStore(path, case) as store:
        store.set_decision(4, "known", note="vessel")
    # a temporary left by a killed save: a writing store removes it, a read-only one must not
    dead = path.with_name(f".{path.name}.{_dead_pid()}.{atomic._HOST_TAG}{secrets.token_hex(12)}"
                          f"{atomic.TMP_SUFFIX}")
    dead.write_bytes(b"half a save")
    old = time.time() - 3600
    os.utime(path, (old, old))

    def snapshot():
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in path.parent.iterdir()}

    before = snapshot()
    store = OodReviewStore(path, case, read_only=True)
    assert store.read_only and not store.holds_lock and store.restored
    ids, table = _many_regions()
    for change in (lambda: store.set_decision(4, "unknown"), lambda: store.set_decision(1, "known"),
                   lambda: store.set_regions(table, ids, SETTINGS),
                   lambda: store.set_regions(table, ids, {**SETTINGS, "threshold": 0.9}, replace=True),
                   store.save):
        with pytest.raises(ReviewLockedError, match=f"OoD review {path.name} is open read-only"):
            change()
    assert store.decisions() == {4: "known"} and store.settings["threshold"] == 0.5  # memory too
    store.close()
    assert snapshot() == before  # no lock, no removed temporary, the sidecar untouched
    with OodReviewStore(path, case):  # a writing store does clear the dead writer's temporary
        assert not dead.exists()


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_lock_lost_mid_session_refuses_the_next_write_and_writes_nothing(regions_case, how):
    path, case = regions_case
    store = OodReviewStore(path, case)
    store.set_decision(6, "unknown")
    lock = _lock(path)
    other = json.dumps({"pid": os.getpid() + 1, "host": "elsewhere", "token": "theirs"})
    if how == "removed":
        lock.unlink()
    else:
        lock.write_text(other)
    before = path.read_bytes()
    gone = "removed" if how == "removed" else "taken over by another process"
    ids, table = _many_regions()
    for change in (lambda: store.set_decision(6, None), lambda: store.set_decision(2, "known"),
                   lambda: store.set_regions(table, ids, SETTINGS)):
        with pytest.raises(ReviewLockedError, match=f"the lock of {path.name} was {gone}; .*saved "
                                                    "nothing: reopen it"):
            change()
    assert path.read_bytes() == before
    assert store.decisions() == {6: "unknown"}  # memory equals the file
    assert not atomic.leftover_temporaries(path)
    store.close()
    # closing leaves another holder's lock alone
    assert (lock.read_text() == other) if how == "replaced" else not lock.exists()
