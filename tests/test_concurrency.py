"""Faults between writers: the review store's handover, two runs into one output folder, killed
writers' leftovers and locks, resuming after an input was rewritten.

The races are reproduced deterministically with hooks and events (no sleeps to get lucky), then
repeated as fault-injection loops: 100 handovers and 100 concurrent runs, 0 confirmed decisions or
results lost. No Qt.
"""

import json
import os
import random
import secrets
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core import atomic
from napari_metaseg.io.review import (
    ReviewLockedError,
    ReviewStore,
    StaleLockError,
    case_identity,
    sidecar_path,
)

DECISIONS = ("label_error", "not_error", "unsure")


@pytest.fixture(autouse=True)
def _private_reviews(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_REVIEW_DIR", str(tmp_path / "user"))


@pytest.fixture
def no_fsync(monkeypatch):
    """The loops test who writes when, not durability (held by tests/test_atomic.py): without the
    fsyncs a trial takes a few milliseconds instead of ~100."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover_name(target, pid):
    """A temporary name of the atomic writer for ``target``, as process ``pid`` of this host."""
    return f".{target}.{pid}.{atomic._HOST_TAG}{secrets.token_hex(12)}{atomic.TMP_SUFFIX}"


def _proposals(n):
    return pd.DataFrame({"case": ["a"] * n, "kind": ["segment"] * n, "class": [1] * n,
                         "index": list(range(1, n + 1)), "score": np.linspace(1, 0, n), "size": [5] * n})


@pytest.fixture
def review_case(tmp_path):
    gt = np.zeros((4, 8, 6), np.uint8)
    path = tmp_path / "data" / "gt.npy"
    path.parent.mkdir()
    np.save(path, gt)
    ident = case_identity(gt, probs_shape=(4, 8, 6, 3), gt_path=path, case_id="a")
    return sidecar_path(ident), ident


def _decisions(path, ident):
    with ReviewStore(path, ident, read_only=True) as store:
        return {p["id"]: p["decision"] for p in store.proposals if p["decision"]}


# ============================================================================================
# The review store's handover
# ============================================================================================
def _hook_before_lock(monkeypatch, hook):
    """Run ``hook(store)`` when a store is about to take its lock (once per store)."""
    real = ReviewStore._acquire

    def acquire(self, take_over_stale):
        hook(self)
        return real(self, take_over_stale)

    monkeypatch.setattr(ReviewStore, "_acquire", acquire)


def test_store_taking_the_lock_as_another_closes_keeps_its_last_decision(review_case, monkeypatch):
    path, ident = review_case
    first = ReviewStore(path, ident)
    first.set_proposals(_proposals(6))
    first.set_decision(0, "not_error")

    def last_decision_then_close(store):
        if store is not first:
            first.set_decision(5, "label_error")  # confirmed: set_decision returned
            first.close()

    _hook_before_lock(monkeypatch, last_decision_then_close)
    with ReviewStore(path, ident) as second:
        second.set_decision(1, "unsure")
    assert _decisions(path, ident) == {0: "not_error", 1: "unsure", 5: "label_error"}


def _handover_trial(path, ident, rng, state):
    """One handover: reviewer A (this thread) decides, then B (a thread) waits for the lock while A
    makes its last decisions and closes; B then decides. ``state["hooked"]``: B's lock hook holds
    B right before it takes the lock until A has closed (the window of the old race); else the
    threads run free with a random delay. Returns (confirmed decisions, decisions on disk)."""
    confirmed = {}
    a = ReviewStore(path, ident)
    a.set_proposals(_proposals(12))
    for i in rng.sample(range(0, 6), rng.randint(1, 4)):
        confirmed[i] = a.set_decision(i, rng.choice(DECISIONS))["decision"]
    b_ids = rng.sample(range(6, 12), rng.randint(1, 3))
    b_choices = [rng.choice(DECISIONS) for _ in b_ids]
    b_confirmed, errors = {}, []

    def reviewer_b():
        state["b_thread"] = threading.get_ident()
        try:
            while True:
                try:
                    b = ReviewStore(path, ident)
                    break
                except ReviewLockedError:
                    time.sleep(0.0002)
            with b:
                for i, d in zip(b_ids, b_choices, strict=True):
                    b_confirmed[i] = b.set_decision(i, d)["decision"]
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reviewer_b)
    thread.start()
    if state["hooked"]:
        assert state["at_lock"].wait(10), "B never reached its lock"
    else:
        time.sleep(rng.random() * 0.002)
    for i in rng.sample(range(0, 6), rng.randint(1, 3)):  # A's last decisions, then A closes
        confirmed[i] = a.set_decision(i, rng.choice(DECISIONS))["decision"]
    a.close()
    state["a_closed"].set()
    thread.join(30)
    assert not thread.is_alive() and not errors, errors
    confirmed.update(b_confirmed)
    return confirmed, _decisions(path, ident)


def test_handover_fault_injection_100_times_loses_no_confirmed_decision(review_case, monkeypatch, no_fsync):
    path, ident = review_case
    rng = random.Random(14)
    state = {}

    def hold_b_until_a_closed(store):
        is_b = threading.get_ident() == state.get("b_thread")
        if state["hooked"] and is_b and not state["at_lock"].is_set():
            state["at_lock"].set()
            assert state["a_closed"].wait(10)

    _hook_before_lock(monkeypatch, hold_b_until_a_closed)
    lost = confirmed_total = 0
    t0 = time.perf_counter()
    for trial in range(100):
        path.unlink(missing_ok=True)
        state.clear()
        state.update(hooked=trial % 2 == 0, at_lock=threading.Event(), a_closed=threading.Event())
        confirmed, on_disk = _handover_trial(path, ident, rng, state)
        confirmed_total += len(confirmed)
        lost += sum(on_disk.get(i) != d for i, d in confirmed.items())
    assert lost == 0, f"{lost} of {confirmed_total} confirmed decisions lost"
    assert time.perf_counter() - t0 < 60


def test_killed_saves_leave_no_temporaries_beside_the_gt(review_case):
    path, ident = review_case
    with ReviewStore(path, ident) as store:
        store.set_proposals(_proposals(3))
    dead = path.with_name(_leftover_name(path.name, _dead_pid()))
    old = path.with_name(_leftover_name(path.name, os.getpid()))
    live = path.with_name(_leftover_name(path.name, os.getpid()))  # a save running right now
    for p in (dead, old, live):
        p.write_bytes(b'{"half')
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    with ReviewStore(path, ident) as store:
        store.set_decision(0, "unsure")
    assert not dead.exists() and not old.exists() and live.exists()
    with ReviewStore(path, ident, read_only=True):
        assert live.exists()  # a read-only viewer removes nothing


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe"])
def test_an_empty_or_unreadable_lock_can_be_taken_over(review_case, content):
    path, ident = review_case
    with ReviewStore(path, ident) as store:
        store.set_proposals(_proposals(3))
        store.set_decision(2, "not_error")
    lock = path.with_name(path.name + ".lock")
    lock.write_bytes(content)
    with pytest.raises(ReviewLockedError, match="being written just now") as info:
        ReviewStore(path, ident, take_over_stale=True)  # young: perhaps being written
    assert not isinstance(info.value, StaleLockError)
    os.utime(lock, (time.time() - 60, time.time() - 60))
    with pytest.raises(StaleLockError, match=r"(empty|unreadable) and 60 s old.*Take the lock over"):
        ReviewStore(path, ident)
    assert lock.read_bytes() == content
    with ReviewStore(path, ident, take_over_stale=True) as store:
        assert store.holds_lock and store.proposals[2]["decision"] == "not_error"
        store.set_decision(0, "unsure")
    assert not lock.exists()


def test_two_take_overs_of_one_stale_lock_leave_the_first_one_its_lock(review_case, monkeypatch):
    """A judges the lock stale; before A removes it, B takes it over completely. A must not then
    remove B's fresh lock (B would lose it silently and its next decision be refused)."""
    path, ident = review_case
    with ReviewStore(path, ident) as store:
        store.set_proposals(_proposals(3))
    lock = path.with_name(path.name + ".lock")
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename, "token": "dead"}))
    real_kill, stores = os.kill, {}

    def kill(pid, sig):  # A's liveness check of the dead holder: B takes over meanwhile
        if "b" not in stores:
            stores["b"] = None
            stores["b"] = ReviewStore(path, ident, take_over_stale=True)
        return real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    try:
        with pytest.raises(ReviewLockedError):
            stores["a"] = ReviewStore(path, ident, take_over_stale=True)
    finally:
        monkeypatch.setattr(os, "kill", real_kill)
    b = stores["b"]
    assert b.set_decision(1, "unsure")["decision"] == "unsure"
    b.close()
    assert _decisions(path, ident) == {1: "unsure"} and not lock.exists()


# ============================================================================================
# Runs into one output folder
# ============================================================================================
@pytest.fixture
def cases(tmp_path):
    from napari_metaseg.io.cases import find_cases

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        p = rng.dirichlet([0.3, 0.3, 0.3], size=(24, 20)).astype(np.float32)
        gt = p.argmax(-1).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.2] = 255
        np.save(data / f"c{i}_softmax.npy", p)
        np.save(data / f"c{i}_gt.npy", gt)
    return find_cases([data])


def _settings(run):
    """The settings of run ``run`` (0 or 1): they differ (in the recorded slice axis, which 2D
    cases do not use), so each run recomputes the other's cases."""
    from napari_metaseg.workflows import case_settings

    return case_settings(mode="2d", slice_axis=-1 - run)


def _consistent(out, cases):
    """Whether ``out`` holds every case's table, each computed with the settings recorded in the
    combined table, and the combined table is exactly their concatenation."""
    from napari_metaseg.io.results import read_settings

    combined = out / "metrics.parquet"
    if not combined.is_file() or (out / "failed.csv").exists():
        return False
    want = read_settings(combined)["slice_axis"]
    tables = []
    for c in cases:
        p = out / "cases" / f"{c.name}.parquet"
        if not p.is_file() or read_settings(p)["slice_axis"] != want:
            return False
        tables.append(pd.read_parquet(p))
    same = pd.read_parquet(combined).equals(pd.concat(tables, ignore_index=True))
    leftovers = atomic.leftover_temporaries(out) + atomic.leftover_temporaries(out / "cases")
    return same and not leftovers


def _paused_run(monkeypatch, pause_at, reached, resume):
    """Make the metrics task of run 0 wait at its ``pause_at``-th case."""
    from napari_metaseg.workflows import cases as wc

    real, calls = wc.metrics_task, []

    def task(case, out_dir, settings):
        if settings["slice_axis"] == -1:
            calls.append(case.name)
            if len(calls) == pause_at:
                reached.set()
                assert resume.wait(20)
        return real(case, out_dir, settings)

    monkeypatch.setattr(wc, "metrics_task", task)


def _run_in_thread(cases, out, settings):
    from napari_metaseg.workflows import drain, measure_cases

    result = {}

    def go():
        try:
            result["summary"] = drain(measure_cases(cases, out, settings))
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    return t, result


def test_a_second_run_into_a_busy_folder_is_refused_and_changes_nothing(tmp_path, cases, monkeypatch):
    from napari_metaseg.workflows import drain, measure_cases
    from napari_metaseg.workflows.cases import RUN_LOCK, OutputBusyError

    out = tmp_path / "out"
    reached, resume = threading.Event(), threading.Event()
    _paused_run(monkeypatch, 3, reached, resume)
    thread, first = _run_in_thread(cases, out, _settings(0))
    assert reached.wait(20)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(OutputBusyError, match=r"is being written by another metrics run .*choose another"):
        drain(measure_cases(cases, out, _settings(1)))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    resume.set()
    thread.join(30)
    assert "error" not in first, first
    assert first["summary"].computed == 4 and not first["summary"].failed
    assert _consistent(out, cases) and not (out / RUN_LOCK).exists()
    # the folder is free again
    summary = drain(measure_cases(cases, out, _settings(1)))
    assert summary.computed == 4 and _consistent(out, cases)


def test_concurrent_runs_fault_injection_100_times_lose_no_result(tmp_path, cases, monkeypatch, no_fsync):
    from napari_metaseg.workflows import drain, measure_cases
    from napari_metaseg.workflows.cases import OutputBusyError

    rng = random.Random(2)
    drain(measure_cases(cases, tmp_path / "warm", _settings(0)))  # compile the kernels once
    lost = refused = 0
    t0 = time.perf_counter()
    for trial in range(100):
        out = tmp_path / f"out{trial}"
        reached, resume = threading.Event(), threading.Event()
        _paused_run(monkeypatch, rng.randint(1, 4), reached, resume)
        thread, first = _run_in_thread(cases, out, _settings(0))
        assert reached.wait(20)
        try:  # the second run, with other settings, while the first is inside a case
            drain(measure_cases(cases, out, _settings(1), force=rng.random() < 0.5))
        except OutputBusyError:
            refused += 1
        resume.set()
        thread.join(30)
        assert "error" not in first, first
        lost += not _consistent(out, cases)
    assert (lost, refused) == (0, 100)
    assert time.perf_counter() - t0 < 90


def test_a_cancelled_run_releases_the_folder(tmp_path, cases):
    from napari_metaseg.workflows import drain, measure_cases
    from napari_metaseg.workflows.cases import RUN_LOCK

    out = tmp_path / "out"
    job = measure_cases(cases, out, _settings(0))
    next(job)  # after the first case
    assert (out / RUN_LOCK).exists()
    job.close()  # a panel's Cancel: GeneratorExit at the yield
    assert not (out / RUN_LOCK).exists()
    assert drain(measure_cases(cases, out, _settings(0))).n_cases == 4


@pytest.mark.parametrize("kind", ["dead", "empty"])
def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, cases, kind):
    from napari_metaseg.workflows import drain, measure_cases
    from napari_metaseg.workflows.cases import RUN_LOCK, OutputBusyError

    out = tmp_path / "out"
    (out / "cases").mkdir(parents=True)
    lock = out / RUN_LOCK
    if kind == "dead":
        lock.write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename, "token": "x"}))
    else:
        lock.write_bytes(b"")
        with pytest.raises(OutputBusyError, match="being written just now"):
            drain(measure_cases(cases, out, _settings(0)))
        os.utime(lock, (time.time() - 60, time.time() - 60))
    assert drain(measure_cases(cases, out, _settings(0))).computed == 4
    assert _consistent(out, cases) and not lock.exists()


def test_a_live_run_of_another_process_is_refused(tmp_path, cases):
    from napari_metaseg.workflows import drain, measure_cases
    from napari_metaseg.workflows.cases import RUN_LOCK, OutputBusyError

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "out"
        out.mkdir()
        (out / RUN_LOCK).write_text(json.dumps({"pid": proc.pid, "host": os.uname().nodename, "token": "t",
                                                "what": "predict run", "created": "now"}))
        with pytest.raises(OutputBusyError, match=f"another predict run \\(process {proc.pid} on"):
            drain(measure_cases(cases, out, _settings(0)))
    finally:
        proc.kill()
        proc.wait()


def test_orphan_temporaries_of_a_killed_final_write_are_cleaned_by_the_rerun(tmp_path, cases):
    from napari_metaseg.workflows import drain, measure_cases

    out = tmp_path / "out"
    drain(measure_cases(cases, out, _settings(0)))
    dead = out / _leftover_name("metrics.parquet", _dead_pid())
    old = out / "cases" / _leftover_name("c1.parquet", os.getpid())
    for p in (dead, old):
        p.write_bytes(b"PAR1 half a file")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    summary = drain(measure_cases(cases, out, _settings(0)))
    assert summary.skipped == 4
    assert not dead.exists() and not old.exists()
    assert _consistent(out, cases)


# ============================================================================================
# Resume after an input was rewritten at the same path
# ============================================================================================
def test_resume_recomputes_a_case_whose_input_was_rewritten(tmp_path, cases):
    from napari_metaseg.core import segment_metrics
    from napari_metaseg.io.results import read_settings
    from napari_metaseg.workflows import drain, measure_cases

    out = tmp_path / "out"
    drain(measure_cases(cases, out, _settings(0)))
    case = cases[1]
    st = case.softmax.stat()
    p = np.load(case.softmax)
    new = np.ascontiguousarray(p[::-1, :, ::-1])  # same size, other content and other segments
    np.save(case.softmax, new)
    os.utime(case.softmax, ns=(st.st_atime_ns, st.st_mtime_ns))  # even the time is kept
    assert case.softmax.stat().st_size == st.st_size and case.softmax.stat().st_mtime_ns == st.st_mtime_ns
    summary = drain(measure_cases(cases, out, _settings(0)))
    assert (summary.computed, summary.skipped) == (1, 3)
    _, expected = segment_metrics(new, np.load(case.gt), mode="2d")
    got = pd.read_parquet(out / "cases" / f"{case.name}.parquet").drop(
        columns=["case", "image_mean_iou", "image_mean_dice"])  # GT: each segment's image scores too
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    rec = read_settings(out / "cases" / f"{case.name}.parquet")["inputs"]["softmax"]
    import hashlib

    assert rec["sha256"] == hashlib.sha256(case.softmax.read_bytes()).hexdigest()
    assert rec["size"] == st.st_size
    # an unchanged rerun skips everything; a rewritten ground truth is noticed too
    assert drain(measure_cases(cases, out, _settings(0))).skipped == 4
    gt = np.load(cases[3].gt)
    gt[1, 1] = (gt[1, 1] + 1) % 3
    np.save(cases[3].gt, gt)
    assert drain(measure_cases(cases, out, _settings(0))).computed == 1


def test_tables_without_recorded_inputs_are_recomputed(tmp_path, cases):
    """Tables written before inputs were recorded cannot vouch for their inputs."""
    from napari_metaseg.io.results import read_settings, write_table
    from napari_metaseg.workflows import drain, measure_cases

    out = tmp_path / "out"
    drain(measure_cases(cases, out, _settings(0)))
    p = out / "cases" / f"{cases[0].name}.parquet"
    settings = read_settings(p)
    del settings["inputs"]
    write_table(pd.read_parquet(p), p, settings=settings)
    assert drain(measure_cases(cases, out, _settings(0))).computed == 1
