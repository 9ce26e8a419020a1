"""Hostile and wrong input files: header and archive bombs against the input budget, crafted
model files and review sidecars, inputs of the wrong kind, 256+ classes with the ignore label.

Every test here failed before the fix it holds (docs/reliability.md lists them). No Qt.
"""

import gzip
import hashlib
import json
import math
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.io.budget import ENV_MAX_BYTES, InputTooLargeError, input_budget

BUDGET = 64 * 2**20  # the budget the tests set: 67108864 bytes


@pytest.fixture(autouse=True)
def _budget(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_MAX_BYTES, "64M")
    monkeypatch.setenv("NAPARI_METASEG_REVIEW_DIR", str(tmp_path / "user"))


def _peak_mib(fn):
    """(exception raised by fn, peak of traced allocations in MiB while it ran)."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:
        raised = exc
    else:
        raised = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return raised, peak / 2**20


# ============================================================================================
# The budget itself
# ============================================================================================
def test_budget_sources_in_order(monkeypatch):
    assert input_budget(1234) == 1234 and input_budget("3K") == 3072
    assert input_budget() == BUDGET  # the environment
    monkeypatch.delenv(ENV_MAX_BYTES)
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    # half the available memory, measured independently (allow for the memory moving meanwhile)
    assert abs(input_budget() - avail // 2) < 256 * 2**20
    monkeypatch.setenv(ENV_MAX_BYTES, "lots")
    with pytest.raises(ValueError, match=f"{ENV_MAX_BYTES} must be a positive number of bytes"):
        input_budget()


# ============================================================================================
# Header bombs: tiny files that claim gigabytes
# ============================================================================================
def _nifti_header_bomb(path, shape, dtype=np.float32):
    """A gzip'd NIfTI-1 header claiming ``shape`` voxels of ``dtype``, and no voxel data."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    path.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4, mtime=0))
    return path


def test_nifti_header_bomb_is_refused_before_allocating(tmp_path):
    from napari_metaseg.io import read_layers

    bomb = _nifti_header_bomb(tmp_path / "bomb.nii.gz", (1000, 1000, 200, 4))
    assert bomb.stat().st_size < 120
    raised, peak = _peak_mib(lambda: read_layers(bomb))
    assert isinstance(raised, InputTooLargeError), raised
    claimed = 1000 * 1000 * 200 * 4 * 4  # float32 voxels: 3.2 GB
    msg = str(raised)
    assert "(1000, 1000, 200, 4) float32" in msg and f"{claimed} bytes" in msg and f"{BUDGET} bytes" in msg
    assert ENV_MAX_BYTES in msg
    assert peak < 16, f"{peak:.0f} MiB allocated for a file that claims {claimed / 1e9:.1f} GB"


def test_a_header_bomb_is_refused_whatever_the_budget(tmp_path):
    """A 57-byte .nii.gz cannot hold 3.2 GB: deflate expands at most 1032:1. Refused before any
    allocation even with a budget of a terabyte (the default budget on a big machine)."""
    from napari_metaseg.io import read_layers

    bomb = _nifti_header_bomb(tmp_path / "bomb.nii.gz", (1000, 1000, 200, 4))
    raised, peak = _peak_mib(lambda: read_layers(bomb, max_bytes="1T"))
    assert type(raised) is ValueError and peak < 16
    assert f"but its {bomb.stat().st_size} bytes cannot hold that much" in str(raised)
    raw = tmp_path / "bomb.nii"
    raw.write_bytes(gzip.decompress(bomb.read_bytes()) + bytes(1000))  # uncompressed, 1000 voxel bytes
    with pytest.raises(ValueError, match=r"\(3200000000 bytes\) of data but holds 1000 bytes"):
        read_layers(raw, max_bytes="1T")


def test_npy_and_npz_shorter_than_their_headers_are_refused_unallocated(tmp_path):
    from napari_metaseg.io import read_layers

    npy = tmp_path / "short.npy"
    npy.write_bytes(_npy_header((4000, 4000)) + bytes(800))  # claims 128 MB, holds 800 bytes
    raised, peak = _peak_mib(lambda: read_layers(npy, max_bytes="1T"))
    assert "claims 122.1 MiB (128000000 bytes) of data but holds 800 bytes" in str(raised) and peak < 4
    npz = tmp_path / "short.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("softmax.npy", _npy_header((4000, 4000)) + bytes(800))
    raised, peak = _peak_mib(lambda: read_layers(npz, max_bytes="1T"))
    assert "of data but holds 800 bytes" in str(raised) and peak < 4


@pytest.mark.parametrize("reader", ["read_nifti", "read_nifti_probabilities", "read_case"])
def test_every_nifti_reader_checks_the_header(tmp_path, reader):
    from napari_metaseg.io import nifti
    from napari_metaseg.io.cases import Case, read_case

    bomb = _nifti_header_bomb(tmp_path / "b.nii.gz", (500, 500, 500, 8), np.float64)
    fn = {"read_case": lambda p: read_case(Case("b", p, None)),
          "read_nifti": nifti.read_nifti, "read_nifti_probabilities": nifti.read_nifti_probabilities}[reader]
    with pytest.raises(InputTooLargeError, match=r"\(500, 500, 500, 8\) float64 = 7\.5 GiB"):
        fn(bomb)


def test_a_keyword_budget_overrides_the_environment(tmp_path):
    from napari_metaseg.io import read_layers

    small = tmp_path / "s.npy"
    np.save(small, np.zeros((64, 64), np.float32))  # 16384 bytes
    assert read_layers(small, max_bytes=16384)[0][0].shape == (64, 64)
    with pytest.raises(InputTooLargeError, match=r"16384 bytes.*input budget of .*\(16383 bytes\)"):
        read_layers(small, max_bytes=16383)


def test_a_corrupt_nifti_never_gives_an_empty_message(tmp_path):
    from napari_metaseg.io.budget import describe_error

    assert describe_error(MemoryError()) == "MemoryError"
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"\x5c\x01" + b"\xff" * 400))
    with pytest.raises(ValueError, match=r"cannot read .* as NIfTI: \S"):
        from napari_metaseg.io import read_nifti

        read_nifti(bad)


def _npy_header(shape, dtype="<f8"):
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def test_npy_header_bomb_is_refused(tmp_path):
    from napari_metaseg.io import read_layers

    bomb = tmp_path / "bomb.npy"
    bomb.write_bytes(_npy_header((100_000, 100_000)))  # claims 80 GB, holds 128 bytes
    raised, peak = _peak_mib(lambda: read_layers(bomb))
    assert isinstance(raised, InputTooLargeError), raised
    assert "(100000, 100000) float64" in str(raised) and f"{100_000 ** 2 * 8} bytes" in str(raised)
    assert peak < 16


def test_npy_with_python_objects_is_refused_without_unpickling(tmp_path):
    from napari_metaseg.io import read_layers

    p = tmp_path / "obj.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="holds Python objects"):
        read_layers(p)


def _zip_bomb(path, n_bytes, *, header_shape=None):
    """An .npz whose member ``softmax.npy`` holds ``n_bytes`` of zeros (deflated), written in
    chunks; ``header_shape`` makes its .npy header claim another shape (a lying member)."""
    shape = header_shape if header_shape is not None else (n_bytes,)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("softmax.npy", "w", force_zip64=True) as f:
            f.write(_npy_header(shape, "|u1"))
            chunk = b"\0" * (1 << 22)
            for i in range(0, n_bytes, len(chunk)):
                f.write(chunk[: min(len(chunk), n_bytes - i)])
    return path


def test_npz_zip_bomb_is_refused_before_decompressing(tmp_path):
    from napari_metaseg.io import read_layers

    n = 4 * BUDGET  # 256 MiB of zeros
    bomb = _zip_bomb(tmp_path / "bomb.npz", n)
    assert bomb.stat().st_size < 2 * 2**20
    raised, peak = _peak_mib(lambda: read_layers(bomb))
    assert isinstance(raised, InputTooLargeError), raised
    assert f"({n + 128} bytes) uncompressed" in str(raised) and f"{BUDGET} bytes" in str(raised)
    assert peak < 16, f"{peak:.0f} MiB decompressed"


def test_npz_member_longer_than_its_header_claims_is_refused_after_one_byte(tmp_path):
    from napari_metaseg.io import read_layers

    # the header claims 16 x 16 bytes; the member goes on for 8 MiB (under the budget, so only
    # the streamed read can notice)
    liar = _zip_bomb(tmp_path / "liar.npz", 8 * 2**20, header_shape=(16, 16))
    raised, peak = _peak_mib(lambda: read_layers(liar))
    assert isinstance(raised, InputTooLargeError) and "holds more data than its header claims" in str(raised)
    assert peak < 4


def test_npz_member_that_is_not_an_array_is_refused(tmp_path):
    from napari_metaseg.io import read_layers

    p = tmp_path / "x.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("softmax.npy", _npy_header((2, 2), "|u1") + bytes(4))
        zf.writestr("notes.txt", b"hello")
    with pytest.raises(ValueError, match=r"notes\.txt is not a \.npy array"):
        read_layers(p)


def test_npz_with_a_bad_crc_is_refused(tmp_path):
    from napari_metaseg.io import read_layers

    p = tmp_path / "crc.npz"
    np.savez(p, softmax=np.arange(64, dtype=np.uint8).reshape(8, 8))
    data = bytearray(p.read_bytes())
    i = data.index(bytes(range(10, 20)))  # stored uncompressed: flip a data byte
    data[i] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"(?i)crc|bad"):
        read_layers(p)


def test_npz_arrays_still_read_exactly(tmp_path):
    from napari_metaseg.io.budget import read_npz

    a = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
    b = np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4))
    p = tmp_path / "ok.npz"
    np.savez_compressed(p, softmax=a, gt=b)
    got = dict(read_npz(p))
    np.testing.assert_array_equal(got["softmax"], a)
    np.testing.assert_array_equal(got["gt"], b)
    assert got["gt"].flags.f_contiguous


def test_tiff_header_bomb_is_refused(tmp_path):
    import tifffile

    from napari_metaseg.io import read_layers

    p = tmp_path / "big.tif"
    tifffile.imwrite(p, shape=(20000, 20000), dtype="uint16")  # sparse: claims 800 MB
    raised, peak = _peak_mib(lambda: read_layers(p))
    assert isinstance(raised, InputTooLargeError) and "(20000, 20000) uint16" in str(raised)
    assert peak < 16


def _png_chunk(kind, data):
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def test_png_header_bomb_is_refused(tmp_path):
    from napari_metaseg.io import read_layers

    p = tmp_path / "gt.png"
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)  # 60000 x 60000 grey
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                  + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _png_chunk(b"IEND", b""))
    with pytest.raises(InputTooLargeError, match=r"\(60000, 60000, 1\) uint8 = 3\.4 GiB"):
        read_layers(p)


# ============================================================================================
# Crafted model files
# ============================================================================================
@pytest.fixture(scope="module")
def model_doc(tmp_path_factory):
    from napari_metaseg.core.meta_dataset import MetaDataset, synthetic_metrics_table
    from napari_metaseg.core.meta_io import save_models
    from napari_metaseg.core.meta_model import MetaClassifier, MetaRegressor

    ds = MetaDataset().add("a", synthetic_metrics_table(200, random_state=0))
    p = save_models(tmp_path_factory.mktemp("m") / "m.json", MetaClassifier(kind="logistic").fit(ds),
                    MetaRegressor().fit(ds))
    return json.loads(p.read_text())


def _write_model(path, payload):
    """A model file with a valid checksum over a crafted payload (the checksum is no defence)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    doc = (f'{{"format": "napari-metaseg/meta-model", "format_version": 1, "sha256": '
           f'"{hashlib.sha256(canonical.encode()).hexdigest()}", "payload": {canonical}}}')
    path.write_text(doc)
    return path


def _load(path):
    from napari_metaseg.core.meta_io import load_models

    return load_models(path)


def test_gzip_bomb_model_is_refused_with_a_bounded_decompression(tmp_path):
    from napari_metaseg.core.meta_io import MAX_MODEL_BYTES, MetaModelFileError

    p = tmp_path / "bomb.json.gz"
    with gzip.open(p, "wb") as f:  # 256 MiB of spaces inside a JSON string
        f.write(b'{"format": "')
        for _ in range(64):
            f.write(b" " * (1 << 22))
        f.write(b'"}')
    assert p.stat().st_size < 1 << 20
    raised, peak = _peak_mib(lambda: _load(p))
    assert isinstance(raised, MetaModelFileError), raised
    assert "decompresses to more than 32.0 MiB" in str(raised)
    assert peak < 2.5 * MAX_MODEL_BYTES / 2**20


@pytest.mark.parametrize("where, value, message", [
    ("intercept", 10**400, r"regressor\.model\.intercept: an integer of 401 digits"),
    ("intercept", 10**19, r"an integer of 20 digits"),
    ("intercept", 1e300, r"'intercept' is not a finite number within \+-1e\+15"),
    ("coef", [1e300], r"'coef' holds values beyond \+-1e\+15"),
    ("coef", [10**30], r"an integer of 31 digits"),
])
def test_huge_numbers_in_a_model_are_refused(tmp_path, model_doc, where, value, message):
    from napari_metaseg.core.meta_io import MetaModelFileError

    payload = json.loads(json.dumps(model_doc["payload"]))
    body = payload["regressor"]["model"]
    body[where] = value if where == "intercept" else value * len(body["coef"])
    with pytest.raises(MetaModelFileError, match=message):
        _load(_write_model(tmp_path / "m.json", payload))


def test_1e999_in_a_model_is_refused(tmp_path, model_doc):
    from napari_metaseg.core.meta_io import MetaModelFileError

    text = json.dumps(model_doc).replace('"intercept": ', '"intercept": 1e999, "x": ', 1)
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(MetaModelFileError, match="1e999 is too large for a 64-bit float"):
        _load(tmp_path / "m.json")


def test_deeply_nested_model_file_is_refused(tmp_path, model_doc):
    from napari_metaseg.core.meta_io import MetaModelFileError

    for depth in (100_000, 40):
        payload = json.loads(json.dumps(model_doc["payload"]))
        payload["evaluation"] = "NEST"
        text = json.dumps({**model_doc, "payload": payload}).replace('"NEST"', "[" * depth + "]" * depth)
        (tmp_path / "m.json").write_text(text)
        with pytest.raises(MetaModelFileError, match="nested more than 32 levels"):
            _load(tmp_path / "m.json")


def test_a_model_with_too_many_features_is_refused_briefly(tmp_path, model_doc):
    from napari_metaseg.core.meta_io import MAX_FEATURES, MetaModelFileError

    n = 200_000
    payload = json.loads(json.dumps(model_doc["payload"]))
    names = [f"f{i}" for i in range(n)]
    payload["feature_names"] = names
    for role in ("classifier", "regressor"):
        payload[role]["feature_names"] = names
        payload[role]["scaler"] = {"mean": [0.0] * n, "scale": [1.0] * n}
        payload[role]["model"]["coef"] = [0.5] * n
    with pytest.raises(MetaModelFileError, match=f"200000 entries, more than the {MAX_FEATURES}") as info:
        _load(_write_model(tmp_path / "m.json", payload))
    assert len(str(info.value)) < 300


def test_an_oversized_model_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    from napari_metaseg.core import meta_io

    monkeypatch.setattr(meta_io, "MAX_MODEL_BYTES", 1000)
    p = tmp_path / "big.json"
    p.write_text(" " * 1001)
    with pytest.raises(meta_io.MetaModelFileError, match="1001 bytes, more than the 1000 bytes"):
        _load(p)


def test_crafted_strings_are_quoted_briefly_in_errors(tmp_path, model_doc):
    from napari_metaseg.core.meta_io import MetaModelFileError

    payload = json.loads(json.dumps(model_doc["payload"]))
    payload["regressor"]["estimator"] = "X" * 5_000_000
    with pytest.raises(MetaModelFileError, match="estimator is 'XXX") as info:
        _load(_write_model(tmp_path / "m.json", payload))
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("crafted", ["int", "nest", "features"])
def test_cli_reports_a_crafted_model_in_one_line(tmp_path, model_doc, capsys, crafted):
    from napari_metaseg.cli import main

    payload = json.loads(json.dumps(model_doc["payload"]))
    if crafted == "int":
        payload["regressor"]["model"]["intercept"] = 10**400
    elif crafted == "nest":
        payload["evaluation"] = json.loads("[" * 40 + "1" + "]" * 40)
    else:
        payload["feature_names"] = [f"f{i}" for i in range(20_000)]
    model = _write_model(tmp_path / "m.json", payload)
    np.save(tmp_path / "a_softmax.npy", np.full((8, 8, 2), 0.5, np.float32))
    code = main(["predict", str(model), str(tmp_path / "a_softmax.npy"), "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1 and len(err) < 400
    assert err.startswith("napari-metaseg: error: model ")


# ============================================================================================
# Crafted review sidecars
# ============================================================================================
@pytest.fixture
def sidecar(tmp_path):
    from napari_metaseg.io.review import ReviewStore, case_identity, sidecar_path

    gt = np.zeros((4, 8, 6), np.uint8)
    gt[1:3, 2:6, 1:4] = 2
    path = tmp_path / "data" / "gt.npy"
    path.parent.mkdir()
    np.save(path, gt)
    ident = case_identity(gt, probs_shape=(4, 8, 6, 3), gt_path=path, case_id="a")
    table = pd.DataFrame({"case": ["a"], "kind": ["segment"], "class": [1], "index": [1], "score": [0.9],
                          "size": [3], "voxels": [np.array([30, 31, 32])]})
    with ReviewStore(sidecar_path(ident), ident) as store:
        store.set_proposals(table)
    return sidecar_path(ident), ident


def _rewrite(path, mutate):
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    return path.read_bytes()


@pytest.mark.parametrize("mutate, error, message", [
    # a GT shape that would allocate 8e15 voxels for the voxel codes
    (lambda d: d["case"].update(gt_shape=[200_000, 200_000, 200_000]), "CaseChangedError",
     r"made for a ground truth of shape \[200000, 200000, 200000\], this one has \[4, 8, 6\]"),
    (lambda d: d["case"].update(gt_shape=[4, 8, 7]), "CaseChangedError", "ground truth of shape"),
    (lambda d: d["proposals"][0]["voxels"].update(size=[10**6, 1, 1]), "ReviewFileError",
     "proposal 0 has unreadable voxels"),
    (lambda d: d["proposals"][0].update(runs=[[0, 10**12]]), "ReviewFileError",
     "proposal 0 has unreadable voxels"),
    (lambda d: d["proposals"][0]["voxels"].update(bits="!!not base64!!"), "ReviewFileError",
     "proposal 0 has unreadable voxels"),
    (lambda d: d.update(corrections="x"), "ReviewFileError", "corrections must be a list"),
])
def test_crafted_sidecar_fields_are_review_file_errors(sidecar, mutate, error, message):
    from napari_metaseg.io import review

    path, ident = sidecar
    before = _rewrite(path, mutate)
    raised, peak = _peak_mib(lambda: review.ReviewStore(path, ident))
    assert type(raised).__name__ == error and isinstance(raised, review.ReviewFileError), raised
    assert pytest.importorskip("re").search(message, str(raised)), str(raised)
    assert peak < 16 and path.read_bytes() == before
    assert not path.with_name(path.name + ".lock").exists()


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested more than 16 levels"),
    ('{"format": "napari-metaseg-review", "n": ' + "9" * 400 + "}", "an integer of 400 digits"),
    ('{"format": "napari-metaseg-review", "n": 1e400}', "too large for a 64-bit float"),
])
def test_crafted_sidecar_json_is_a_review_file_error(sidecar, text, message):
    from napari_metaseg.io.review import ReviewFileError, ReviewStore

    path, ident = sidecar
    path.write_text(text)
    with pytest.raises(ReviewFileError, match=message):
        ReviewStore(path, ident)
    assert path.read_text() == text


def test_an_oversized_sidecar_is_refused_unread(sidecar, monkeypatch):
    from napari_metaseg.io import review

    path, ident = sidecar
    monkeypatch.setattr(review, "MAX_SIDECAR_BYTES", 100)
    with pytest.raises(review.ReviewFileError, match=r"more than the 100 bytes"):
        review.ReviewStore(path, ident)


# ============================================================================================
# Inputs of the wrong kind
# ============================================================================================
def _probs(shape, q, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(q), size=shape).astype(np.float32)


def test_classes_first_softmax_without_gt_names_the_class_axis_option(tmp_path, capsys):
    from napari_metaseg.cli import main

    np.save(tmp_path / "a_softmax.npy", np.moveaxis(_probs((64, 64), 2), -1, 0))  # (2, 64, 64)
    code = main(["metrics", str(tmp_path / "a_softmax.npy"), "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "looks like a classes-first probability map" in err and "pass --class-axis 0" in err
    assert "ProbabilityWarning" not in err and ".py:" not in err
    assert not (tmp_path / "out" / "metrics.parquet").exists()
    # and with the option it is read right
    assert main(["metrics", str(tmp_path / "a_softmax.npy"), "--out", str(tmp_path / "out"), "-q",
                 "--class-axis", "0"]) == 0
    assert pd.read_parquet(tmp_path / "out" / "metrics.parquet").filter(like="cprob").shape[1] == 2


def test_classes_first_softmax_with_gt_names_the_class_axis_option(tmp_path, capsys):
    from napari_metaseg.cli import main

    p = _probs((48, 40), 3)
    np.save(tmp_path / "a_softmax.npy", np.moveaxis(p, -1, 0))
    np.save(tmp_path / "a_gt.npy", p.argmax(-1).astype(np.uint8))
    assert main(["metrics", str(tmp_path), "--out", str(tmp_path / "out"), "-q"]) == 1
    assert "pass --class-axis 0" in capsys.readouterr().err


@pytest.mark.parametrize("gt", [False, True])
def test_an_image_given_as_the_softmax_says_so(tmp_path, capsys, gt):
    import nibabel as nib

    from napari_metaseg.cli import main

    t1 = np.random.default_rng(0).integers(-50, 1200, size=(20, 24, 70)).astype(np.int16)
    nib.save(nib.Nifti1Image(t1, np.eye(4)), tmp_path / "a_softmax.nii.gz")
    if gt:
        nib.save(nib.Nifti1Image(np.zeros(t1.shape, np.uint8), np.eye(4)), tmp_path / "a_gt.nii.gz")
    np.save(tmp_path / "b_softmax.npy", t1[:, :, :3])  # an image with 3 "channels" as .npy
    assert main(["metrics", str(tmp_path), "--out", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "a_softmax.nii.gz looks like a 3D volume (an image or labels), not class probabilities" in err
    assert "b_softmax.npy looks like an image (e.g. an MRI volume), not class probabilities" in err
    assert "signed integer dtype" not in err


def test_a_photo_given_as_the_softmax_says_so(tmp_path, capsys):
    from napari_metaseg.io.cases import Case, read_case

    rgb = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    np.save(tmp_path / "photo.npy", rgb)
    with pytest.raises(ValueError, match="looks like an image, not class probabilities"):
        read_case(Case("p", tmp_path / "photo.npy", None))
    # quantised probabilities (uint8 rounding, sums 253..257) are still read
    q = np.round(_probs((32, 32), 3) * 255).astype(np.uint8)
    np.save(tmp_path / "q.npy", q)
    assert read_case(Case("q", tmp_path / "q.npy", None))[0].shape == (32, 32, 3)


def test_a_label_map_forced_as_probabilities_in_the_reader_says_so(tmp_path):
    from napari_metaseg.io import read_layers

    labels = np.random.default_rng(0).integers(0, 4, size=(16, 16, 12)).astype(np.int32)
    np.save(tmp_path / "gt.npy", labels)
    with pytest.raises(ValueError, match=r"looks like a label map \(ground truth\), not class probab"):
        read_layers(tmp_path / "gt.npy", kind="probabilities")


def test_the_panels_class_axis_check_says_what_a_layer_looks_like():
    from types import SimpleNamespace

    from napari_metaseg._widgets.analysis import probability_class_axis

    t1 = np.random.default_rng(0).integers(-50, 1200, size=(20, 24, 18)).astype(np.int16)
    layer = SimpleNamespace(name="t1", data=t1, metadata={})
    with pytest.raises(ValueError, match=r"layer 't1' looks like an image .*not class probabilities"):
        probability_class_axis(layer)


@pytest.mark.filterwarnings("default")  # the suite turns the package's warnings into errors
def test_cli_prints_probability_warnings_as_one_line(tmp_path, capsys):
    from napari_metaseg.cli import main

    logits = np.random.default_rng(0).normal(0, 3, size=(16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "a_softmax.npy", logits)
    assert main(["metrics", str(tmp_path), "--out", str(tmp_path / "out"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "napari-metaseg: warning: x looks like logits" in err
    assert "ProbabilityWarning" not in err and "warnings.warn" not in err


# ============================================================================================
# 256 classes or more: the ignore label must not be a class
# ============================================================================================
def test_ignore_label_that_is_a_class_is_refused_not_applied():
    from napari_metaseg.core import segment_metrics

    q = 300
    probs = np.zeros((8, 8, q), np.float32)
    probs[..., 255] = 1.0  # every pixel predicted as class 255, and labelled 255
    gt = np.full((8, 8), 255, np.int32)
    with pytest.raises(ValueError, match=r"ignore_index=255 is also a class id: .* 300 classes"):
        segment_metrics(probs, gt)
    _, table = segment_metrics(probs, gt, ignore_index=None)
    assert table["iou"].tolist() == [1.0]  # hand computed: one segment, all of it correct
    _, table = segment_metrics(probs, gt, ignore_index=300)
    assert table["iou"].tolist() == [1.0]
    # fewer classes: 255 stays the ignore label, as before
    gt4 = np.full((8, 8), 255, np.int32)
    gt4[0, 0] = 1
    p4 = np.zeros((8, 8, 4), np.float32)
    p4[..., 1] = 1.0
    _, t4 = segment_metrics(p4, gt4)
    assert t4["iou"].tolist() == [1.0]  # the 63 ignored pixels are left out


def test_find_label_errors_refuses_the_same_collision():
    from napari_metaseg.core.label_errors import _pred_and_doubt

    with pytest.raises(ValueError, match="ignore_index=255 is also a class id"):
        _pred_and_doubt(np.full((4, 4, 256), 1 / 256, np.float32), np.zeros((4, 4), np.int32), 255)
    assert math.isclose(float(_pred_and_doubt(np.full((2, 2, 2), 0.5, np.float32),
                                              np.zeros((2, 2), np.int32), 255)[1].max()), 0.5)


def test_cli_with_256_classes_names_the_option(tmp_path, capsys):
    from napari_metaseg.cli import main

    p = _probs((16, 16), 256)
    np.save(tmp_path / "a_softmax.npy", p)
    np.save(tmp_path / "a_gt.npy", p.argmax(-1).astype(np.int32))
    assert main(["metrics", str(tmp_path), "--out", str(tmp_path / "o"), "-q"]) == 1
    assert "--ignore-index none" in capsys.readouterr().err
    assert main(["metrics", str(tmp_path), "--out", str(tmp_path / "o"), "-q", "--ignore-index", "none"]) == 0


# ============================================================================================
# Crafted image-quality entries of a segment model file (the image-level regressor)
# ============================================================================================
@pytest.fixture(scope="module")
def image_model_doc(tmp_path_factory):
    from napari_metaseg.core.image_quality import fit_image_regressor
    from napari_metaseg.core.meta_dataset import MetaDataset, synthetic_metrics_table
    from napari_metaseg.core.meta_io import save_models
    from napari_metaseg.core.meta_model import MetaClassifier, MetaRegressor

    ds = MetaDataset().add("a", synthetic_metrics_table(200, random_state=0))
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"V_mean": rng.random(30), "log_size": rng.random(30)})
    image = {"regressor": fit_image_regressor(rows, 1 - rows["V_mean"], kind="lasso"), "by": "slice",
             "target": "mean_iou", "background": 0, "fail_below": 0.7}
    p = save_models(tmp_path_factory.mktemp("im") / "m.json", MetaClassifier(kind="logistic").fit(ds),
                    MetaRegressor().fit(ds), image_quality=image)
    return json.loads(p.read_text())


def test_an_intact_image_quality_entry_loads(tmp_path, image_model_doc):
    _, _, info = _load(_write_model(tmp_path / "m.json", image_model_doc["payload"]))
    iq = info["image_quality"]
    assert (iq["by"], iq["target"], iq["background"], iq["fail_below"]) == ("slice", "mean_iou", 0, 0.7)
    assert list(iq["regressor"].feature_names_in_) == ["V_mean", "log_size"]


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.__setitem__("by", "os.system"), "image_quality 'by' must be 'slice' or 'case'"),
    (lambda e: e.__setitem__("target", "__import__"), "image_quality 'target' must be one of"),
    (lambda e: e.__setitem__("fail_below", "nan"), "image_quality 'fail_below' must be a finite number"),
    (lambda e: e.__setitem__("fail_below", 1e300), "image_quality 'fail_below' must be a finite number"),
    (lambda e: e.__setitem__("background", True), "image_quality 'background' must be a class id"),
    (lambda e: e.__setitem__("background", -3), "image_quality 'background' must be a class id"),
    (lambda e: e.__delitem__("regressor"), r"image_quality: malformed meta-model file: missing 'regr"),
    (lambda e: e.__setitem__("regressor", [1, 2]), r"image_quality: .*'regressor' has the wrong type"),
    (lambda e: e["regressor"].__setitem__("estimator", "subprocess.Popen"),
     r"image_quality: regressor: .*estimator is 'subprocess.Popen'"),
    (lambda e: e["regressor"]["model"].__setitem__("coef", [1.0] * 7), r"'coef' has 7 entries, expected 2"),
    (lambda e: e["regressor"]["model"].__setitem__("intercept", 1e300), "'intercept' is not a finite number"),
    (lambda e: e["regressor"].__setitem__("feature_names", []), "'feature_names' is empty"),
    (lambda e: e["regressor"]["params"].__setitem__("kind", "eval"), "unknown kind 'eval'"),
])
def test_crafted_image_quality_entries_are_refused(tmp_path, image_model_doc, mutate, message):
    from napari_metaseg.core.meta_io import MetaModelFileError

    payload = json.loads(json.dumps(image_model_doc["payload"]))
    mutate(payload["image_quality"])
    with pytest.raises(MetaModelFileError, match=message) as info:
        _load(_write_model(tmp_path / "m.json", payload))
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("entry", ["slice", 42, ["by", "slice"]])
def test_an_image_quality_entry_that_is_not_an_object_is_refused(tmp_path, image_model_doc, entry):
    from napari_metaseg.core.meta_io import MetaModelFileError

    payload = json.loads(json.dumps(image_model_doc["payload"]))
    payload["image_quality"] = entry
    with pytest.raises(MetaModelFileError, match="image_quality must be a dict"):
        _load(_write_model(tmp_path / "m.json", payload))


def test_an_ood_region_model_with_an_image_regressor_is_refused(tmp_path, image_model_doc):
    from napari_metaseg.core.meta_io import MetaModelFileError

    payload = json.loads(json.dumps(image_model_doc["payload"]))
    payload["regressor"] = None
    payload["ood"] = {"threshold": 0.5, "measure": "E", "exclude_classes": []}
    with pytest.raises(MetaModelFileError, match="OoD region model cannot hold an image-quality regressor"):
        from napari_metaseg.core.meta_io import load_models

        load_models(_write_model(tmp_path / "m.json", payload), table_kind=None)


def test_cli_rank_reports_a_crafted_image_entry_in_one_line(tmp_path, image_model_doc, capsys):
    from napari_metaseg.cli import main

    payload = json.loads(json.dumps(image_model_doc["payload"]))
    payload["image_quality"]["regressor"]["model"]["coef"] = [10**400, 1]
    model = _write_model(tmp_path / "m.json", payload)
    np.save(tmp_path / "a_softmax.npy", np.full((8, 8, 2), 0.5, np.float32))
    code = main(["rank", str(model), str(tmp_path / "a_softmax.npy"), "--out", str(tmp_path / "r.csv"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1 and len(err) < 400
    assert err.startswith("napari-metaseg: error: model ") and "image_quality" in err
