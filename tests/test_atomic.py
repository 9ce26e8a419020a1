"""The one atomic writer: no planted file is followed, a full disk leaves the old file, leftovers.

Every write of the package goes through :mod:`napari_metaseg.core.atomic`; these tests check the
writer itself and the callers that used to write in place or through predictable names.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_metaseg.core import atomic
from napari_metaseg.core.atomic import (
    TMP_SUFFIX,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    leftover_temporaries,
    remove_leftovers,
)

posix = pytest.mark.skipif(os.name != "posix", reason="symlinks, pids and umask as on POSIX")
TEMP_NAME = re.compile(r"\..+\.[0-9]+\.[0-9a-f]{32}\.tmp(\.[A-Za-z0-9]+)*")


def _entries(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def full_disk(monkeypatch):
    """Call it to fill the disk: ``os.write`` to this writer's temporaries lands a first part of
    the data, then fails with ``ENOSPC``; every other descriptor writes as usual."""
    real_open, real_write, real_close = os.open, os.write, os.close
    temps = {}

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if flags & os.O_CREAT and TEMP_NAME.fullmatch(os.path.basename(os.fsdecode(path))):
            temps[fd] = 0
        return fd

    def fake_write(fd, data):
        if fd not in temps:
            return real_write(fd, data)
        if temps[fd]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        temps[fd] += 1
        return real_write(fd, bytes(memoryview(data).cast("B")[: max(1, len(data) // 2)]))

    def fake_close(fd):
        temps.pop(fd, None)
        return real_close(fd)

    def fill():
        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "write", fake_write)
        monkeypatch.setattr(os, "close", fake_close)

    return fill


def _half_then_enospc(monkeypatch, owner, name, render):
    """Replace a library writer by one that writes half of the real output, then runs out of disk."""

    def fake(*args, **kwargs):
        data, dest = render(*args, **kwargs)
        with open(dest, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))

    monkeypatch.setattr(owner, name, fake)


@pytest.fixture(scope="module")
def classifier():
    from napari_metaseg.core.meta_dataset import MetaDataset, synthetic_metrics_table
    from napari_metaseg.core.meta_model import MetaClassifier

    ds = MetaDataset().add("a", synthetic_metrics_table(200, random_state=0))
    return MetaClassifier(kind="logistic", random_state=0).fit(ds)


# ============================================================================================
# The writer
# ============================================================================================
def test_writes_create_folders_and_replace_the_whole_file(tmp_path):
    target = tmp_path / "a" / "b" / "x.bin"
    assert atomic_write_bytes(target, b"first version, long") == target
    assert atomic_write_bytes(target, bytearray(b"2nd")).read_bytes() == b"2nd"
    assert atomic_write_text(target, "d\u00e9j\u00e0\n").read_bytes() == "d\u00e9j\u00e0\n".encode()
    atomic_write_bytes(target, np.arange(3, dtype=np.uint16))
    assert np.frombuffer(target.read_bytes(), np.uint16).tolist() == [0, 1, 2]
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.exists() and tmp.stat().st_size == 0
        tmp.write_text("by name")
    assert target.read_text() == "by name"
    assert _entries(target.parent) == ["x.bin"]
    with pytest.raises(TypeError, match="atomic_write_text"):
        atomic_write_bytes(target, "text")
    with pytest.raises(TypeError, match="text must be a str"):
        atomic_write_text(target, b"bytes")
    with pytest.raises(ValueError, match="suffix"):
        with atomic_path(target, suffix="/../x"):
            pass


def test_an_error_in_the_block_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "x.csv"
    target.write_bytes(b"old")
    for exc in (ValueError("library failed"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"half of the n")
                raise exc
        assert target.read_bytes() == b"old"
        assert _entries(tmp_path) == ["x.csv"]


def test_temporary_names_are_unpredictable_and_recognisable(tmp_path):
    names = []
    for _ in range(2):
        with atomic_path(tmp_path / "x.parquet", suffix=".nii.gz") as tmp:
            names.append(tmp.name)
    assert names[0] != names[1]
    for name in names:
        assert TEMP_NAME.fullmatch(name) and name.startswith(".x.parquet.")
        assert f".{os.getpid()}." in name and name.endswith(TMP_SUFFIX + ".nii.gz")


@posix
def test_temporary_is_created_exclusively_never_through_a_planted_file(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_random_token", lambda: "0" * 32)
    target = tmp_path / "x.bin"
    planted = tmp_path / f".x.bin.{os.getpid()}.{'0' * 32}{TMP_SUFFIX}"
    planted.write_bytes(b"planted")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(target, b"new")
    with pytest.raises(FileExistsError):
        with atomic_path(target):
            pass
    assert planted.read_bytes() == b"planted" and not target.exists()
    # a symlink, even a dangling one, is not written through either
    planted.unlink()
    victim = tmp_path / "victim"
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(target, b"new")
    assert not victim.exists() and planted.is_symlink()


@posix
def test_new_files_get_0644_reduced_by_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "private", b"x")
    finally:
        os.umask(old)
    atomic_write_bytes(tmp_path / "shared", b"x")
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o644 & ~old


def test_full_disk_in_the_writer_keeps_the_old_file(tmp_path, full_disk):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old content")
    full_disk()
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, bytes(range(256)) * 40)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old content"
    assert _entries(tmp_path) == ["x.bin"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=12), st.booleans())
def test_many_sequential_writes_leave_exactly_the_last_content(blobs, by_path):
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "data.bin"
        for blob in blobs:
            if by_path:
                with atomic_path(target) as tmp:
                    tmp.write_bytes(blob)
            else:
                atomic_write_bytes(target, blob)
        assert target.read_bytes() == blobs[-1]
        assert _entries(folder) == ["data.bin"]


# ============================================================================================
# Leftovers of killed writers
# ============================================================================================
KILLED_WRITER = """
import os, signal, sys
from napari_metaseg.core.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


@posix
def test_leftovers_of_dead_writers_are_removed_live_ones_and_symlinks_kept(tmp_path):
    target = tmp_path / "x.parquet"
    target.write_bytes(b"good")
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)])
    assert proc.returncode == -signal.SIGKILL
    (dead,) = leftover_temporaries(target)
    assert dead.read_bytes() == b"half" and target.read_bytes() == b"good"
    # the brief's shape by hand: a dead pid of this host, a live one, a foreign host's
    host_token = atomic._random_token()
    dead_by_hand = tmp_path / f".x.parquet.{_dead_pid()}.{host_token}{TMP_SUFFIX}"
    live = tmp_path / f".x.parquet.{os.getpid()}.{atomic._random_token()}{TMP_SUFFIX}"
    foreign = tmp_path / f".x.parquet.{_dead_pid()}.{'f' * 32}{TMP_SUFFIX}"
    old_live = tmp_path / f".other.csv.{os.getpid()}.{atomic._random_token()}{TMP_SUFFIX}.gz"
    for p in (dead_by_hand, live, foreign, old_live):
        p.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(old_live, (hour_ago, hour_ago))
    # a symlink with the pattern's name, stale by every rule, pointing at a file
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    link = tmp_path / f".x.parquet.{_dead_pid()}.{atomic._random_token()}{TMP_SUFFIX}"
    link.symlink_to(victim)
    os.utime(link, (hour_ago, hour_ago), follow_symlinks=False)
    unrelated = [tmp_path / ".x.parquet.tmp", tmp_path / "notes.tmp", tmp_path / ".x.parquet.12.zz.tmp"]
    for p in unrelated:
        p.write_bytes(b"not ours")

    assert leftover_temporaries(target) == sorted([dead, dead_by_hand, live, foreign])
    assert leftover_temporaries(tmp_path) == sorted([dead, dead_by_hand, live, foreign, old_live])
    assert leftover_temporaries(tmp_path, older_than=600) == sorted([dead, dead_by_hand, old_live])
    assert remove_leftovers(tmp_path, "x.parquet") == sorted([dead, dead_by_hand])
    assert remove_leftovers(tmp_path) == [old_live]
    assert all(p.exists() for p in (live, foreign, target, *unrelated))
    assert link.is_symlink() and victim.read_bytes() == b"precious"
    # a writer of another host: only by age
    os.utime(foreign, (hour_ago, hour_ago))
    assert remove_leftovers(tmp_path) == [foreign]
    assert remove_leftovers(tmp_path, older_than=0) == [live]
    assert link.is_symlink() and victim.read_bytes() == b"precious"
    with pytest.raises(ValueError, match="older_than"):
        remove_leftovers(tmp_path, older_than=-1)
    assert remove_leftovers(tmp_path / "missing") == []


def test_a_running_writer_keeps_its_temporary(tmp_path):
    target = tmp_path / "x.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("being written")
        assert remove_leftovers(tmp_path) == [] and tmp.exists()
    assert target.read_text() == "being written"


def test_io_names_are_the_core_writer(tmp_path):
    from napari_metaseg.io import results, review

    assert results.atomic_path is atomic_path and results.TMP_SUFFIX == TMP_SUFFIX
    sidecar = tmp_path / "gt.metaseg-review.json"
    with atomic_path(sidecar) as tmp:
        assert review.leftover_temporaries(sidecar) == [tmp]
    assert review.leftover_temporaries(sidecar) == []


# ============================================================================================
# The callers
# ============================================================================================
@posix
def test_save_models_does_not_follow_a_planted_partial_symlink(tmp_path, classifier):
    from napari_metaseg.core.meta_io import load_models, save_models

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "models" / "model.json"
    out.parent.mkdir()
    (out.parent / "model.json.partial").symlink_to(victim)
    save_models(out, classifier)
    assert victim.read_bytes() == b"precious"
    assert load_models(out)[0] is not None


def test_save_models_on_a_full_disk_keeps_the_old_model(tmp_path, classifier, full_disk):
    from napari_metaseg.core.meta_io import load_models, save_models

    out = tmp_path / "model.json.gz"
    good = save_models(out, classifier).read_bytes()
    full_disk()
    with pytest.raises(OSError) as info:
        save_models(out, classifier)
    assert info.value.errno == errno.ENOSPC
    assert out.read_bytes() == good
    assert _entries(tmp_path) == ["model.json.gz"]
    assert load_models(out)[0] is not None


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_meta_dataset_save_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch, suffix):
    from napari_metaseg.core.meta_dataset import MetaDataset, synthetic_metrics_table

    pytest.importorskip("pyarrow")
    out = tmp_path / f"train{suffix}"
    MetaDataset().add("a", synthetic_metrics_table(30, random_state=1)).save(out)
    good = out.read_bytes()
    bigger = MetaDataset().add("b", synthetic_metrics_table(300, random_state=2))
    real_csv, real_parquet = pd.DataFrame.to_csv, pd.DataFrame.to_parquet
    _half_then_enospc(monkeypatch, pd.DataFrame, "to_csv",
                      lambda df, dest, **kw: (real_csv(df, None, **kw).encode(), dest))
    _half_then_enospc(monkeypatch, pd.DataFrame, "to_parquet",
                      lambda df, dest, **kw: (real_parquet(df, None, **kw), dest))
    with pytest.raises(OSError) as info:
        bigger.save(out)
    assert info.value.errno == errno.ENOSPC
    assert out.read_bytes() == good
    assert _entries(tmp_path) == [out.name]
    assert MetaDataset.load(out).cases == ["a"]


def test_write_table_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    import io

    from napari_metaseg.io.results import read_settings, write_table

    out = tmp_path / "cases" / "a.parquet"
    write_table(pd.DataFrame({"x": [1, 2]}), out, settings={"mode": "2d"})
    good = out.read_bytes()
    real = pq.write_table

    def render(table, dest, **kw):
        buf = io.BytesIO()
        real(table, buf, **kw)
        return buf.getvalue(), dest

    _half_then_enospc(monkeypatch, pq, "write_table", render)
    with pytest.raises(OSError):
        write_table(pd.DataFrame({"x": range(1000)}), out, settings={"mode": "3d"})
    assert out.read_bytes() == good and read_settings(out) == {"mode": "2d"}
    assert _entries(out.parent) == ["a.parquet"]


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    folder = tmp_path / "config"
    folder.mkdir()
    monkeypatch.setenv("NAPARI_METASEG_CONFIG_DIR", str(folder))
    return folder


@posix
def test_settings_do_not_follow_a_planted_tmp_symlink(tmp_path, config_dir):
    from napari_metaseg._widgets import _settings

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (config_dir / "settings.json.tmp").symlink_to(victim)
    _settings.update_settings("meta", {"last_model_path": "/data/m.json"})
    assert victim.read_bytes() == b"precious"
    assert _settings.section("meta") == {"last_model_path": "/data/m.json"}


def test_settings_on_a_full_disk_keep_the_old_file(config_dir, full_disk):
    from napari_metaseg._widgets import _settings

    _settings.update_settings("meta", {"last_model_path": "/data/m.json"})
    good = (config_dir / "settings.json").read_bytes()
    full_disk()
    with pytest.warns(RuntimeWarning, match="cannot write napari-metaseg settings"):
        _settings.update_settings("meta", {"last_model_path": "/data/other.json" * 50})
    assert (config_dir / "settings.json").read_bytes() == good
    assert _entries(config_dir) == ["settings.json"]
    assert json.loads(good)["meta"]["last_model_path"] == "/data/m.json"
