"""The active-learning panel in a real viewer: ranking, opening cases, export, cancel, failures, refit."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from _gui_helpers import metaseg_dock, wait_for_worker
from scipy import ndimage

pytestmark = pytest.mark.gui

#: cases of the unlabelled folder and their number of wrong segments: d is worst, a best
N_WRONG = {"a": 0, "b": 2, "c": 5, "d": 8}


def synthetic_case(n_wrong, seed, shape=(64, 64)):
    """Two classes: 5 discs of class 1 predicted confidently (right), and ``n_wrong`` discs
    predicted as class 1 with little confidence where the ground truth is background (segments
    with IoU_adj = 0). Returns ``(probs (H, W, 2) float32, gt uint8)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    gt = np.zeros(shape, np.uint8)
    p1 = np.full(shape, 0.04)
    taken = np.zeros(shape, bool)
    placed = 0
    while placed < 5 + n_wrong:
        cy, cx = rng.uniform(6, shape[0] - 6), rng.uniform(6, shape[1] - 6)
        r = rng.uniform(3, 5)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        if (ndimage.binary_dilation(disc, iterations=2) & taken).any():
            continue
        taken |= disc
        if placed < 5:
            gt[disc] = 1
            p1[disc] = 0.95
        else:
            p1[disc] = rng.uniform(0.55, 0.65)
        placed += 1
    p1 = np.clip(p1 + rng.normal(scale=0.02, size=shape), 0.01, 0.99)
    return np.stack([1 - p1, p1], -1).astype(np.float32), gt


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A linear meta model trained on 8 labelled cases, saved with its training data."""
    from napari_metaseg._widgets.meta import dataset_path
    from napari_metaseg.core import MetaClassifier, MetaDataset, MetaRegressor, save_models, segment_metrics

    ds = MetaDataset(min_interior=0)
    for i, n in enumerate((0, 1, 2, 3, 4, 5, 6, 8)):
        ds.add(f"train{i}", segment_metrics(*synthetic_case(n, 100 + i))[1])
    clf = MetaClassifier(kind="lasso", random_state=0).fit(ds)
    reg = MetaRegressor(random_state=0).fit(ds)
    path = save_models(tmp_path_factory.mktemp("model") / "model.json.gz", clf, reg)
    ds.save(dataset_path(path))
    return path


def write_unlabelled(folder, *, gt=()):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, n in N_WRONG.items():
        p, g = synthetic_case(n, 1000 + 17 * n)
        np.save(folder / f"{name}_softmax.npy", p)
        if name in gt:
            np.save(folder / f"{name}_gt.npy", g)
        arrays[name] = (p, g)
    return arrays


def _panel(make_napari_viewer, model_file, folder):
    from napari_metaseg._widgets._session import session_for
    from napari_metaseg.core import load_models

    viewer = make_napari_viewer()
    clf, reg, _ = load_models(model_file)
    session_for(viewer).set_models(clf, reg, str(model_file))
    _, panel = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg active learning")
    panel.form.inputs.value = str(folder)
    return viewer, panel


def _rank(qtbot, panel):
    results = []
    panel.ranked.connect(results.append)
    assert panel.rank() is not None, panel.status.text()
    wait_for_worker(qtbot, panel)
    panel.ranked.disconnect(results.append)
    assert len(results) == 1, panel.status.text()
    return results[0]


def _click_row(qtbot, panel, row):
    from qtpy.QtCore import Qt

    view = panel.table_view
    rect = view.visualRect(panel.model.index(row, 1))
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=rect.center())


def test_ranks_cases_worst_first_opens_them_and_exports(make_napari_viewer, qtbot, model_file, tmp_path):
    from napari_metaseg.core import load_models, rank_cases, segment_metrics

    arrays = write_unlabelled(tmp_path / "cases")
    viewer, panel = _panel(make_napari_viewer, model_file, tmp_path / "cases")
    _rank(qtbot, panel)
    shown = panel.shown_table()
    # more wrong segments -> worse predicted quality -> earlier
    assert shown["case"].tolist() == ["d", "c", "b", "a"]
    assert shown["rank"].tolist() == [1, 2, 3, 4]
    assert (shown["status"] == "ranked").all()
    assert shown["iou_adj_pred_mean"].is_monotonic_increasing
    assert shown["share_likely_wrong"].iloc[0] > shown["share_likely_wrong"].iloc[-1]
    assert "slice" not in shown.columns and "iou_adj_mean" not in shown.columns  # no GT, 2D
    # the same numbers and order as core.rank_cases
    clf, reg, _ = load_models(model_file)
    expected = rank_cases({k: segment_metrics(p)[1] for k, (p, _) in arrays.items()}, (clf, reg))
    assert shown["case"].tolist() == expected["case"].tolist()
    np.testing.assert_allclose(shown["iou_adj_pred_mean"].astype(float), expected["iou_adj_pred_mean"])

    # clicking a row opens that case: its image beside the softmax (bottom), the softmax (hidden:
    # its class axis would be a slider) and the predicted labels; the next click replaces them
    image = np.random.default_rng(0).random(arrays["c"][0].shape[:2]).astype(np.float32)
    np.save(tmp_path / "cases" / "c_image.npy", image)
    _click_row(qtbot, panel, 1)
    assert [la.name for la in viewer.layers] == ["c image", "c softmax", "c prediction"]
    np.testing.assert_allclose(viewer.layers["c softmax"].data, np.moveaxis(arrays["c"][0], -1, 0), atol=1e-6)
    np.testing.assert_array_equal(viewer.layers["c image"].data, image)
    assert not viewer.layers["c softmax"].visible and viewer.layers["c prediction"].visible
    np.testing.assert_array_equal(viewer.layers["c prediction"].data, arrays["c"][0].argmax(-1))
    _click_row(qtbot, panel, 3)
    assert [la.name for la in viewer.layers] == ["a softmax", "a prediction"]
    assert panel.table_view.selectionModel().selectedRows()[0].row() == 3

    # export writes the table as shown
    out = panel.export_csv(tmp_path / "ranking.csv")
    back = pd.read_csv(out, keep_default_na=False)
    assert list(back.columns) == list(shown.columns)
    assert back["case"].tolist() == shown["case"].tolist()
    assert back["rank"].tolist() == shown["rank"].tolist()
    np.testing.assert_allclose(back["iou_adj_pred_mean"].astype(float),
                               shown["iou_adj_pred_mean"].astype(float), rtol=1e-15)
    assert not list(tmp_path.glob(".*ranking*"))  # no temporary file left


def test_corrupt_case_is_listed_as_failed_and_others_ranked(make_napari_viewer, qtbot, model_file, tmp_path):
    folder = tmp_path / "cases"
    write_unlabelled(folder)
    (folder / "broken_softmax.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(folder / "flat_softmax.npy", np.full((32, 32, 2), np.nan, np.float32))  # NaN: rejected
    _, panel = _panel(make_napari_viewer, model_file, folder)
    result = _rank(qtbot, panel)
    shown = panel.shown_table()
    assert shown["case"].tolist()[:4] == ["d", "c", "b", "a"]
    failed = shown.iloc[4:]
    assert sorted(failed["case"]) == ["broken", "flat"]
    assert (failed["status"] == "failed").all() and (failed["rank"] == "").all()
    assert "cannot read" in failed.set_index("case").loc["broken", "error"]
    assert {c for c, _ in result.failed} == {"broken", "flat"}
    assert "2 case(s) failed" in panel.status.text()


def test_cancel_stops_the_run_and_keeps_the_table(make_napari_viewer, qtbot, model_file, tmp_path,
                                                  monkeypatch):
    from napari_metaseg import workflows

    write_unlabelled(tmp_path / "cases")
    _, panel = _panel(make_napari_viewer, model_file, tmp_path / "cases")
    gate = threading.Event()
    seen = []
    original = workflows.rank

    def held(*args, **kwargs):
        gen = original(*args, **kwargs)
        value = next(gen)
        seen.append(value)
        yield value
        gate.wait(30)
        while True:  # the rest, counting the cases reached
            try:
                value = next(gen)
            except StopIteration as stop:
                return stop.value
            seen.append(value)
            yield value

    monkeypatch.setattr(workflows, "rank", held)
    panel.rank_button.click()
    assert panel.rank_button.text() == "Cancel"
    worker = panel.worker
    with qtbot.waitSignal(worker.aborted, timeout=30_000):
        panel.rank_button.click()  # Cancel
        gate.set()
    wait_for_worker(qtbot, panel)
    assert panel.result is None and panel.shown_table().empty
    assert len(seen) <= 2  # stopped at the next yield: the first case at most
    assert "cancelled" in panel.status.text()
    assert panel.rank_button.text() == "Rank cases" and panel.rank_button.isEnabled()


def test_refit_after_labels_arrive_replaces_the_session_model(make_napari_viewer, qtbot, model_file,
                                                              tmp_path):
    from napari_metaseg._widgets.meta import dataset_path

    folder = tmp_path / "cases"
    arrays = write_unlabelled(folder)
    _, panel = _panel(make_napari_viewer, model_file, folder)
    _rank(qtbot, panel)
    first = panel.shown_table().copy()
    session = panel.session
    old_clf, old_reg = session.classifier, session.regressor
    model_bytes = model_file.read_bytes()
    # new labels arrive for the two worst cases
    for name in ("c", "d"):
        np.save(folder / f"{name}_gt.npy", arrays[name][1])
    got = []
    panel.refitted.connect(got.append)
    assert panel.refit() is not None, panel.status.text()
    wait_for_worker(qtbot, panel)
    assert len(got) == 1, panel.status.text()
    assert session.classifier is not old_clf and session.regressor is not old_reg
    assert session.model_path is None  # not saved
    training = [f"train{i}" for i in range(8)]
    for model in (session.classifier, session.regressor):
        assert len(model.provenance_) == 2
        record = model.provenance_[-1]
        assert record["refit"] and record["previous_cases"] == training
        assert record["added_cases"] == ["c", "d"]
        assert list(model.training_cases_) == [*training, "c", "d"]
    assert model_file.read_bytes() == model_bytes  # never saved over silently
    assert "not saved" in panel.status.text() and "8 cases" in panel.status.text()
    assert "2 fit(s)" in panel.model_label.text()
    # rank again with the refitted model; c and d now show their true quality
    _rank(qtbot, panel)
    again = panel.shown_table()
    assert sorted(again["case"]) == sorted(first["case"])
    assert not np.allclose(again.set_index("case")["iou_adj_pred_mean"].astype(float),
                           first.set_index("case").loc[again["case"], "iou_adj_pred_mean"].astype(float))
    truth = again.set_index("case")["iou_adj_mean"]
    assert truth[["c", "d"]].astype(float).between(0, 1).all() and np.isnan(float(truth["a"]))
    # Save asks for a path (given here) and writes the model with its training data
    saved = panel.save_model(tmp_path / "refitted.json.gz")
    assert saved.is_file() and dataset_path(saved).is_file()
    assert session.model_path == str(saved)
    assert model_file.read_bytes() == model_bytes


def test_ranking_slices_of_a_volume_and_opening_one(make_napari_viewer, qtbot, model_file, tmp_path):
    folder = tmp_path / "vols"
    folder.mkdir()
    # volume v: slice 2 has 8 wrong segments, slice 0 has 4, slices 1 and 3 none; classes last
    slices = [synthetic_case(n, 500 + i) for i, n in enumerate((4, 0, 8, 0))]
    np.save(folder / "v_softmax.npy", np.stack([p for p, _ in slices], axis=2))
    np.save(folder / "v_gt.npy", np.stack([g for _, g in slices], axis=2))
    viewer, panel = _panel(make_napari_viewer, model_file, folder)
    panel.form.mode.value = "slices"
    assert panel.options()["by"] == "slice"
    _rank(qtbot, panel)
    shown = panel.shown_table()
    assert shown["slice"].tolist()[:2] == [2, 0]
    assert list(shown.columns[:3]) == ["rank", "case", "slice"]
    assert "iou_adj_mean" in shown.columns  # the volume has ground truth
    layers = panel.open_row(0)
    assert [la.name for la in layers] == ["v softmax", "v prediction", "v gt"]
    # the probabilities are (class, y, x, z): the slice axis z is a slider at slice 2
    assert viewer.layers["v softmax"].ndim == 4  # not taken for RGBA (4 slices)
    assert viewer.dims.point[3] == 2
    assert 3 not in viewer.dims.displayed
    np.testing.assert_array_equal(viewer.layers["v gt"].data, np.stack([g for _, g in slices], axis=2))


def test_background_is_left_out_unless_counted(make_napari_viewer, qtbot, model_file, tmp_path):
    from napari_metaseg.core import load_models, rank_cases, segment_metrics

    arrays = write_unlabelled(tmp_path / "cases")
    _, panel = _panel(make_napari_viewer, model_file, tmp_path / "cases")
    assert not panel.form.keep_background.value  # left out by default
    clf, reg, _ = load_models(model_file)
    tables = {k: segment_metrics(p)[1] for k, (p, _) in arrays.items()}
    for keep, background in ((False, 0), (True, None)):
        panel.form.keep_background.value = keep
        _rank(qtbot, panel)
        shown = panel.shown_table()
        expected = rank_cases(tables, (clf, reg), background=background)
        assert shown["case"].tolist() == expected["case"].tolist()
        np.testing.assert_allclose(shown["iou_adj_pred_mean"].astype(float), expected["iou_adj_pred_mean"])
        assert shown["n_segments"].astype(int).tolist() == expected["n_segments"].tolist()
    # every synthetic case has one background segment: counted only when asked
    n_bg = {k: int((t["class"] == 0).sum()) for k, t in tables.items()}
    assert all(n > 0 for n in n_bg.values())


def _volume(folder, name, wrong, seed, *, gt=True):
    """A volume of len(wrong) slices (classes last), slice k with wrong[k] wrong segments."""
    slices = [synthetic_case(n, seed + i) for i, n in enumerate(wrong)]
    np.save(folder / f"{name}_softmax.npy", np.stack([p for p, _ in slices], axis=2))
    if gt:
        np.save(folder / f"{name}_gt.npy", np.stack([g for _, g in slices], axis=2))
    return slices


def test_slices_ranked_by_the_image_regressor_with_a_minimum_foreground(make_napari_viewer, qtbot, tmp_path):
    """A model with an image-level regressor orders slices by it (the status says so, the table shows
    quality_pred); a slice with almost no foreground ranks last at the default 1 % and first at 0 %."""
    from napari_metaseg import workflows
    from napari_metaseg._widgets._session import session_for
    from napari_metaseg.core.progress import drain
    from napari_metaseg.io.cases import find_cases

    train_dir = tmp_path / "train"
    train_dir.mkdir()
    for i in range(4):
        _volume(train_dir, f"t{i}", [(i + k) % 9 for k in range(4)], 700 + 10 * i)
    model = drain(workflows.train(cases=find_cases([train_dir]),
                                  settings=workflows.case_settings(mode="slices"),
                                  n_splits=0))
    assert model.image_quality is not None, model.image_note
    folder = tmp_path / "vols"
    folder.mkdir()
    _volume(folder, "v", (0, 6, 2, 0), 900, gt=False)
    # slice 3: background but for one small, unsure speck (a poorly rated edge slice)
    probs = np.load(folder / "v_softmax.npy")
    probs[:, :, 3, 1] = 0.02
    probs[30:32, 30:32, 3, 1] = 0.55
    probs[..., 0] = 1 - probs[..., 1]
    np.save(folder / "v_softmax.npy", probs)

    viewer = make_napari_viewer()
    session_for(viewer).set(model)
    _, panel = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg active learning")
    panel.form.inputs.value = str(folder)
    panel.form.mode.value = "slices"
    assert panel.form.min_foreground.value == 1
    result = _rank(qtbot, panel)
    assert result.order == "image regressor" and "image regressor" in panel.status.text()
    shown = panel.shown_table()
    assert list(shown.columns[:4]) == ["rank", "case", "slice", "quality_pred"]
    # the panel shows the job's ranking: quality_pred is the image regressor's prediction
    expected = workflows.slice_quality(
        drain(workflows.analyse(probs, mode="slices", heatmaps=(), models=model)).table.assign(case="v"),
        model, min_foreground=0.01)
    np.testing.assert_allclose(shown["quality_pred"].to_numpy(float),
                               expected["quality_pred"].to_numpy(float))
    assert shown["slice"].tolist()[-1] == 3  # below the minimum foreground: last
    panel.form.min_foreground.value = 0
    _rank(qtbot, panel)
    ranked = panel.shown_table()
    assert ranked["slice"].tolist()[-1] != 3
    assert ranked["quality_pred"].iloc[0] <= ranked["quality_pred"].min() + 1e-12


def test_a_model_without_image_regressor_falls_back_and_says_so(make_napari_viewer, qtbot, model_file,
                                                                tmp_path):
    folder = tmp_path / "vols"
    folder.mkdir()
    _volume(folder, "v", (4, 0, 8, 0), 500)
    _, panel = _panel(make_napari_viewer, model_file, folder)
    panel.form.mode.value = "slices"
    result = _rank(qtbot, panel)
    assert result.order == "segment mean"
    assert "segment mean: the model has no image-level regressor" in panel.status.text()
    shown = panel.shown_table()
    np.testing.assert_allclose(shown["quality_pred"].to_numpy(float),
                               shown["iou_adj_pred_mean"].to_numpy(float))


def test_an_opened_slice_arrives_rated_at_that_slice(make_napari_viewer, qtbot, model_file, tmp_path):
    """In the dock, opening a slice row shows the case at that slice with its quality overlay."""
    from napari_metaseg._widgets._session import session_for
    from napari_metaseg.core import load_models

    folder = tmp_path / "vols"
    folder.mkdir()
    _volume(folder, "v", (4, 0, 8, 0), 500)
    viewer = make_napari_viewer()
    clf, reg, _ = load_models(model_file)
    session_for(viewer).set_models(clf, reg, str(model_file))
    dock = metaseg_dock(viewer)
    triage = dock.show_tab("active_learning")
    triage.form.inputs.value = str(folder)
    triage.form.mode.value = "slices"
    _rank(qtbot, triage)
    first = int(triage.shown_table()["slice"].iloc[0])
    assert first == 2
    with qtbot.waitSignal(dock.analysis.finished, timeout=120_000):
        triage.open_row(0)
    wait_for_worker(qtbot, dock.analysis)
    layer = viewer.layers["segments"]
    assert layer.metadata["metaseg"]["color_by"] == "iou_adj_pred"
    assert dock.analysis.form.mode.value == "slices"
    z = viewer.dims.ndim - 1  # (y, x, z) segments; the softmax adds the class axis first
    assert viewer.dims.point[z] == first and z not in viewer.dims.displayed
