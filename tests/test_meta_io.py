"""Model files: exact round trips, provenance, and refusal of foreign, damaged or newer files."""

import gzip
import hashlib
import json
import pickle

import numpy as np
import pytest

from napari_metaseg.core.meta_dataset import MetaDataset, synthetic_metrics_table
from napari_metaseg.core.meta_io import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MetaModelFileError,
    _canonical,
    load_models,
    save_models,
)
from napari_metaseg.core.meta_model import (
    Evaluation,
    MetaClassifier,
    MetaRegressor,
    evaluate,
    refit,
)


@pytest.fixture(scope="module")
def dataset():
    ds = MetaDataset()
    for i in range(4):
        ds.add(f"case{i}", synthetic_metrics_table(250, random_state=10 + i))
    return ds


@pytest.fixture(scope="module")
def new_table():
    return synthetic_metrics_table(400, random_state=99)


def _rewrite(path, payload, *, version=FORMAT_VERSION, fmt=FORMAT_NAME):
    """Write a file with a *valid* checksum, to test validation beyond the checksum."""
    canonical = _canonical(payload)
    doc = {"format": fmt, "format_version": version,
           "sha256": hashlib.sha256(canonical.encode()).hexdigest(), "payload": payload}
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("ckind, rkind", [("lasso", "linear"), ("logistic", "lasso"),
                                           ("gbm", "gbm")])
def test_round_trip_predictions_are_identical(tmp_path, dataset, new_table, ckind, rkind):
    clf = MetaClassifier(kind=ckind, random_state=0).fit(dataset)
    reg = MetaRegressor(kind=rkind, random_state=0).fit(dataset)
    path = save_models(tmp_path / "model.json", clf, reg)
    clf2, reg2, info = load_models(path)
    assert type(clf2) is MetaClassifier and type(reg2) is MetaRegressor
    np.testing.assert_array_equal(clf2.predict_proba(new_table), clf.predict_proba(new_table))
    np.testing.assert_array_equal(reg2.predict(new_table), reg.predict(new_table))
    assert clf2.get_params() == clf.get_params() and reg2.get_params() == reg.get_params()
    assert list(clf2.feature_names_in_) == list(clf.feature_names_in_)
    assert clf2.log_features_ == clf.log_features_
    assert clf2.training_cases_ == ["case0", "case1", "case2", "case3"]
    assert clf2.n_segments_ == clf.n_segments_
    assert clf2.provenance_[0]["cases"] == clf.provenance_[0]["cases"]
    assert info["training_cases"] == clf.training_cases_
    assert info["n_classes"] == 4
    assert info["counts"]["classifier"]["n_segments"] == clf.n_segments_
    assert info["counts"]["classifier"]["n_iou0"] == clf.provenance_[-1]["n_iou0"]
    assert info["versions"]["scikit_learn"]
    assert info["format_version"] == FORMAT_VERSION
    assert info["feature_names"] == list(clf.feature_names_in_)
    if ckind == "lasso":
        assert clf2.lambda_ == clf.lambda_
    # the file is plain JSON text
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT_NAME
    assert doc["payload"]["classifier"]["params"]["kind"] == ckind


def test_loading_never_unpickles(tmp_path, dataset, monkeypatch):
    path = save_models(tmp_path / "m.json.gz", MetaClassifier(kind="gbm", random_state=0)
                       .fit(dataset))
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip

    def forbidden(*a, **k):
        raise AssertionError("pickle used while loading a model file")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    clf, reg, _ = load_models(path)
    assert reg is None and clf.kind == "gbm"


def test_evaluation_and_refit_provenance_are_stored(tmp_path, dataset):
    ev = evaluate(dataset, n_splits=2, models=("logistic",))
    clf = MetaClassifier(kind="logistic").fit(dataset)
    bigger = MetaDataset.from_table(dataset.table).add("case9", synthetic_metrics_table(200))
    clf = refit(clf, bigger)
    path = save_models(tmp_path / "m.json", clf, evaluation=ev)
    back, _, info = load_models(path)
    assert isinstance(info["evaluation"], Evaluation)
    assert info["evaluation"].grouping == "case"
    np.testing.assert_array_equal(info["evaluation"].table.to_numpy(), ev.table.to_numpy())
    assert [r["cases"][-1] for r in back.provenance_] == ["case3", "case9"]
    assert back.provenance_[-1]["added_cases"] == ["case9"]
    # a second refit of the loaded model keeps the whole history
    assert len(refit(back, bigger).provenance_) == 3


def test_save_errors(tmp_path, dataset):
    clf = MetaClassifier(kind="logistic").fit(dataset)
    with pytest.raises(ValueError, match="needs a classifier, a regressor or both"):
        save_models(tmp_path / "m.json")
    with pytest.raises(ValueError, match=r"must end in \.json or \.json\.gz"):
        save_models(tmp_path / "m.pkl", clf)
    with pytest.raises(TypeError, match="classifier must be a MetaClassifier"):
        save_models(tmp_path / "m.json", MetaRegressor().fit(dataset))
    arr = MetaClassifier(kind="logistic").fit(np.random.default_rng(0).normal(size=(40, 3)),
                                              np.arange(40) % 2)
    with pytest.raises(ValueError, match="fitted on an array without column names"):
        save_models(tmp_path / "m.json", arr)
    other = MetaRegressor().fit(dataset.table.drop(columns=["MI"], errors="ignore")
                                .drop(columns=["D_bd"]))
    with pytest.raises(ValueError, match="different feature columns"):
        save_models(tmp_path / "m.json", clf, other)
    with pytest.raises(TypeError, match="evaluation must be an Evaluation or a dict"):
        save_models(tmp_path / "m.json", clf, evaluation="good")


@pytest.fixture()
def saved(tmp_path, dataset):
    clf = MetaClassifier(kind="gbm", random_state=0).fit(dataset)
    reg = MetaRegressor(kind="linear").fit(dataset)
    return save_models(tmp_path / "m.json", clf, reg)


def test_tampered_file_fails_the_checksum(saved):
    doc = json.loads(saved.read_text())
    doc["payload"]["regressor"]["model"]["intercept"] += 0.5  # a "better" model
    saved.write_text(json.dumps(doc))
    with pytest.raises(MetaModelFileError, match="failed its integrity check"):
        load_models(saved)


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(MetaModelFileError, match="truncated or corrupted"):
        load_models(saved)


def test_truncated_gzip(tmp_path, saved):
    gz = tmp_path / "m.json.gz"
    gz.write_bytes(gzip.compress(saved.read_bytes())[:-40])
    with pytest.raises(MetaModelFileError, match="damaged or truncated gzip"):
        load_models(gz)


@pytest.mark.parametrize("content", [b"\x80\x04\x95 pickle bytes", b'{"format": "other"}',
                                     b"[1, 2, 3]", b""])
def test_not_a_meta_model_file(tmp_path, content):
    p = tmp_path / "x.json"
    p.write_bytes(content)
    with pytest.raises(MetaModelFileError, match="not a napari-metaseg meta-model file"):
        load_models(p)


def test_newer_format_version_is_refused(tmp_path, saved):
    doc = json.loads(saved.read_text())
    _rewrite(saved, doc["payload"], version=FORMAT_VERSION + 1)
    with pytest.raises(MetaModelFileError, match=r"newer than the version this napari-metaseg "
                                                 r"reads.*upgrade"):
        load_models(saved)


def test_non_standard_json_constants_are_refused(tmp_path, saved):
    text = saved.read_text().replace('"created":', '"bad": NaN, "created":', 1)
    saved.write_text(text)
    with pytest.raises(MetaModelFileError, match="not valid JSON"):
        load_models(saved)


def test_model_from_a_different_number_of_classes(tmp_path, saved):
    three = synthetic_metrics_table(30, n_classes=3)
    with pytest.raises(ValueError, match=r"4 class probability columns .* but 3 found"):
        load_models(saved, table=three)
    _, reg, info = load_models(saved, table=synthetic_metrics_table(30))
    assert info["n_classes"] == 4
    with pytest.raises(ValueError, match="different numbers of classes"):
        reg.predict(three)


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p["regressor"]["model"].__setitem__("coef", [1.0]), "'coef' has 1 entries"),
    (lambda p: p["regressor"]["scaler"].__setitem__("scale", [0.0] * len(p["feature_names"])),
     "scale must be positive"),
    (lambda p: p["regressor"]["params"].__setitem__("kind", "os.system"), "unknown kind"),
    (lambda p: p["classifier"].__setitem__("estimator", "subprocess.Popen"),
     "estimator is 'subprocess.Popen'"),
    (lambda p: p["classifier"]["model"]["left"].__setitem__(0, 0), "child indices"),
    (lambda p: p["classifier"]["model"]["feature"].__setitem__(0, 999), "outside"),
    (lambda p: p["classifier"]["model"].__setitem__("value", ["x"]), "non-number"),
    (lambda p: p["classifier"].__setitem__("classes", [1, 1]), "two distinct labels"),
    (lambda p: p.__setitem__("classifier", None) or p.__setitem__("regressor", None),
     "holds no model"),
    (lambda p: p["regressor"].__setitem__("feature_names", ["a"]), "differ from the file"),
    (lambda p: p["regressor"]["params"].__setitem__("log_sizes", "yes"), "wrong type"),
])
def test_malformed_payload_with_valid_checksum(saved, mutate, message):
    doc = json.loads(saved.read_text())
    mutate(doc["payload"])
    _rewrite(saved, doc["payload"])
    with pytest.raises(MetaModelFileError, match=message):
        load_models(saved)


def test_tree_thresholds_may_be_infinite(tmp_path, dataset, new_table):
    """+inf thresholds (split "all finite values go left") survive the strict-JSON encoding."""
    clf = MetaClassifier(kind="gbm", random_state=0).fit(dataset)
    leafless = ~clf.model_.is_leaf
    k = np.flatnonzero(leafless)[0]
    clf.model_.threshold[k] = np.inf
    expected = clf.predict_proba(new_table)
    path = save_models(tmp_path / "inf.json", clf)
    assert '"inf"' in path.read_text()
    back, _, _ = load_models(path)
    assert back.model_.threshold[k] == np.inf
    np.testing.assert_array_equal(back.predict_proba(new_table), expected)


def test_segmentation_record_round_trip_and_checks(tmp_path):
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    from napari_metaseg.core.meta_io import load_models, save_models
    from napari_metaseg.core.meta_model import MetaClassifier

    t = synthetic_metrics_table(300, random_state=0)
    clf = MetaClassifier(kind="logistic").fit(t)
    p = save_models(tmp_path / "a.json", clf, segmentation={"mode": "slices", "slice_axis": np.int64(0)})
    assert load_models(p)[2]["segmentation"] == {"mode": "slices", "slice_axis": 0, "ignore_index": None}
    assert load_models(save_models(tmp_path / "b.json", clf))[2]["segmentation"] is None
    for bad in ({"mode": 3.5}, {"slice_axis": True}, "slices"):
        with pytest.raises(ValueError, match="segmentation"):
            save_models(tmp_path / "c.json", clf, segmentation=bad)
    assert not (tmp_path / "c.json").exists()
