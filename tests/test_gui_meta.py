"""The meta-model panel in a real viewer: train, evaluate, plots, save/load, apply, refit, errors."""

import threading

import numpy as np
import pytest
from _gui_helpers import wait_for_worker

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_METASEG_CONFIG_DIR", str(tmp_path / "config"))


def _analysed_nuclei(make_napari_viewer, qtbot):
    """Nuclei sample analysed through the analysis dock; the meta panel docked via the manifest."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-metaseg", "nuclei2d")
    _, analysis = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg analysis")
    with qtbot.waitSignal(analysis.finished, timeout=120_000):
        analysis.run_button.click()
    wait_for_worker(qtbot, analysis)
    _, meta = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg meta model")
    # the nuclei case has 5 segments with IoU_adj = 0, 2 of them with an interior
    meta.form.min_interior.value = 0
    return viewer, analysis, meta


def _train(qtbot, meta):
    results = []
    meta.trained.connect(results.append)
    worker = meta.train()
    assert worker is not None, meta.status.text()
    wait_for_worker(qtbot, meta)
    meta.trained.disconnect(results.append)
    assert len(results) == 1, meta.status.text()  # the status shows an error, if any
    return worker


def _errors(monkeypatch):
    from napari_metaseg._widgets import meta as meta_mod

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    assert meta_mod  # show_error is imported inside the handlers, so the patch is seen
    return shown


def test_train_on_current_case_shows_evaluation_and_plots(make_napari_viewer, qtbot):
    from napari_metaseg._widgets._settings import section

    viewer, _, meta = _analysed_nuclei(make_napari_viewer, qtbot)
    assert meta.form.case_id.value == "nuclei"
    _train(qtbot, meta)
    assert meta.classifier is not None and meta.regressor is not None
    assert meta.dataset.cases == ["nuclei"]
    shown = meta.shown_evaluation()
    assert list(shown.columns) == ["task", "model", "metric", "train", "validation"]
    assert {"naive", "entropy", "lasso/linear"} <= set(shown["model"])
    assert {"ACC %", "AUROC %", "sigma", "R2 %"} == set(shown["metric"])
    assert "±" in shown["validation"].iloc[0]
    assert meta.eval_model.rowCount() == len(shown) > 0
    # one case, no slices: per-segment splits, and the panel says why that is optimistic
    assert meta.evaluation.grouping == "segment"
    assert "optimistic" in meta.split_label.text()
    # the three plots are drawn into the dock
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg

    assert [meta.plot_tabs.tabText(i) for i in range(meta.plot_tabs.count())] == [
        "ROC", "IoU_adj", "LASSO path"]
    for name in ("ROC", "IoU_adj", "LASSO path"):
        canvas = meta.canvases[name]
        assert isinstance(canvas, FigureCanvasQTAgg)
        assert canvas.isVisibleTo(meta) or meta.plot_tabs.widget(meta.plot_tabs.indexOf(canvas)) is canvas
        ax = meta.figures[name].axes[0]
        assert ax.axison and len(ax.get_lines()) + len(ax.collections) > 0, name
    roc_labels = [line.get_label() for line in meta.figures["ROC"].axes[0].get_lines()]
    assert any(lab.startswith("meta classifier") for lab in roc_labels)
    assert any(lab.startswith("entropy E") for lab in roc_labels)
    assert "validation half" in meta.plot_note.text()
    # the trained models are the viewer's at once: the segments are coloured by their prediction
    assert meta.session.classifier is meta.classifier
    assert viewer.layers["segments"].metadata["metaseg"]["color_by"] == "iou_adj_pred"
    assert section("meta")["min_interior"] == 0


def test_save_load_round_trip_and_last_model_offered(make_napari_viewer, qtbot, tmp_path):
    from napari_metaseg._widgets.meta import MetaWidget, dataset_path
    from napari_metaseg.core.meta_model import predict_table

    viewer, _, meta = _analysed_nuclei(make_napari_viewer, qtbot)
    _train(qtbot, meta)
    path = meta.save_model(tmp_path / "nuclei.json.gz")
    assert path.is_file() and dataset_path(path).is_file()
    # the panel saves what the CLI saves: segmentation settings, training-data reference, evaluation
    from napari_metaseg.core.meta_io import load_models

    _, _, info = load_models(path)
    assert info["segmentation"] == {"mode": "2d", "slice_axis": None, "ignore_index": 255}
    assert info["training_data"]["file"] == dataset_path(path).name
    assert info["training_data"]["cases"] == ["nuclei"] and info["evaluation"] is not None
    table = viewer.layers["segments"].features
    before = predict_table(table, meta.classifier, meta.regressor)
    # a new panel offers the last model but loads nothing until asked
    from napari_metaseg.workflows import MetaModels

    meta.session.set(MetaModels())  # as in a new viewer: no model yet
    other = MetaWidget(viewer)
    assert other.classifier is None
    assert other.load_last_button.isVisibleTo(other) and "nuclei.json.gz" in other.load_last_button.text()
    assert other.load_model(other.last_model_path) is not None
    after = predict_table(table, other.classifier, other.regressor)
    np.testing.assert_array_equal(after["p_iou0"], before["p_iou0"])
    np.testing.assert_array_equal(after["iou_adj_pred"], before["iou_adj_pred"])
    assert other.dataset.cases == ["nuclei"] and other.segmentation == info["segmentation"]
    assert other.shown_evaluation().equals(meta.shown_evaluation())
    # loading makes it the viewer's model (every panel uses it)
    assert other.session.classifier is other.classifier and meta.classifier is other.classifier
    assert viewer.layers["segments"].metadata["metaseg"]["color_by"] == "iou_adj_pred"
    other.close()


def test_training_recolours_segments_by_predicted_iou_adj(make_napari_viewer, qtbot):
    from napari_metaseg._widgets.legend import legend_for
    from napari_metaseg.core.colors import quality_rgba
    from napari_metaseg.core.meta_model import predict_table

    viewer, analysis, meta = _analysed_nuclei(make_napari_viewer, qtbot)
    layer = viewer.layers["segments"]
    before = layer.features.copy()
    _train(qtbot, meta)
    min_int = layer.metadata["metaseg"]["min_interior"]
    pred = predict_table(before, meta.classifier, meta.regressor)
    rated = pred[(pred["class"] == 1) & (pred["S_in"] >= min_int)]
    # the segment whose predicted quality differs most from its true quality
    seg = rated.loc[(rated["iou_adj_pred"] - rated["iou_adj"]).abs().idxmax()]
    seg_id = int(seg["index"])
    assert abs(seg["iou_adj_pred"] - seg["iou_adj"]) > 0.1
    new = layer.colormap.map(np.array([seg_id]))[0]
    np.testing.assert_allclose(new, quality_rgba([seg["iou_adj_pred"]])[0], atol=1e-6)
    assert np.abs(new - quality_rgba([seg["iou_adj"]])[0]).max() > 0.05
    np.testing.assert_allclose(layer.features.set_index("index").loc[pred["index"], "iou_adj_pred"],
                               pred["iou_adj_pred"])
    assert "predicted IoU_adj" in legend_for(viewer).text()
    assert "iou_adj_pred" in analysis.shown_table().columns
    # Apply predicts again and keeps that colouring
    assert meta.apply_to_current() == "iou_adj_pred"
    np.testing.assert_allclose(layer.colormap.map(np.array([seg_id]))[0], new, atol=1e-6)


def test_refit_adds_the_current_case_to_the_provenance(make_napari_viewer, qtbot, tmp_path):
    _, _, meta = _analysed_nuclei(make_napari_viewer, qtbot)
    _train(qtbot, meta)
    first = meta.classifier
    meta.form.case_id.value = "nuclei-corrected"
    assert meta.refit_current() is not None
    wait_for_worker(qtbot, meta)
    assert "refitted" in meta.status.text(), meta.status.text()
    assert meta.classifier is not first
    assert meta.dataset.cases == ["nuclei", "nuclei-corrected"]
    for model in (meta.classifier, meta.regressor):
        assert len(model.provenance_) == 2
        record = model.provenance_[-1]
        assert record["refit"] and record["added_cases"] == ["nuclei-corrected"]
        assert record["previous_cases"] == ["nuclei"]
    assert meta.evaluation.grouping == "case"
    assert "nuclei-corrected" in meta.model_label.text()


def test_bad_model_files_show_errors_and_change_nothing(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    from napari_metaseg.core.meta_io import save_models
    from napari_metaseg.core.meta_model import MetaClassifier

    viewer, _, meta = _analysed_nuclei(make_napari_viewer, qtbot)
    _train(qtbot, meta)
    state = (meta.classifier, meta.regressor, meta.dataset, meta.evaluation)
    shown_eval = meta.shown_evaluation().copy()
    colormap = viewer.layers["segments"].colormap
    errors = _errors(monkeypatch)

    corrupt = tmp_path / "corrupt.json.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage")
    assert meta.load_model(corrupt) is None
    not_model = tmp_path / "other.json"
    not_model.write_text('{"hello": 1}')
    assert meta.load_model(not_model) is None
    # a model for 4 classes against the 2-class nuclei case
    four = tmp_path / "four_classes.json"
    save_models(four, MetaClassifier(kind="logistic").fit(synthetic_metrics_table(300, random_state=0)))
    assert meta.load_model(four) is None

    assert len(errors) == 3
    assert "corrupt.json.gz is not a usable meta-model file" in errors[0]
    assert "other.json is not a usable meta-model file" in errors[1]
    assert "does not fit the current case" in errors[2] and "cprob" in errors[2]
    assert (meta.classifier, meta.regressor, meta.dataset, meta.evaluation) == state
    assert meta.shown_evaluation().equals(shown_eval)
    assert viewer.layers["segments"].colormap is colormap
    from napari_metaseg._widgets._settings import section

    assert section("meta").get("last_model_path", "") == ""


def test_training_errors_are_notifications(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    _, meta = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg meta model")
    errors = _errors(monkeypatch)
    assert meta.train() is None and "run the MetaSeg analysis" in errors[-1]
    assert meta.apply_to_current() is None and "no model" in errors[-1]
    # a case without ground truth
    viewer.open_sample("napari-metaseg", "nuclei2d")
    _, analysis = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg analysis")
    analysis.form.ground_truth.value = "(none)"
    with qtbot.waitSignal(analysis.finished, timeout=120_000):
        analysis.run()
    wait_for_worker(qtbot, analysis)
    assert meta.train() is None and "no ground truth" in errors[-1]
    # a single-class target: every segment IoU_adj > 0 (fails in the worker, shown, nothing set)
    layer = viewer.layers["segments"]
    layer.features = layer.features.assign(iou=0.9, iou_adj=0.9)
    assert meta.train() is not None
    wait_for_worker(qtbot, meta)
    assert "single" in errors[-1] or "IoU_adj" in errors[-1], errors[-1]
    assert meta.classifier is None and meta.dataset is None


def test_cancel_mid_training_leaves_state_unchanged(make_napari_viewer, qtbot, monkeypatch):
    from napari_metaseg import workflows

    _, _, meta = _analysed_nuclei(make_napari_viewer, qtbot)
    _train(qtbot, meta)
    state = (meta.classifier, meta.regressor, meta.dataset, meta.evaluation)
    shown_eval = meta.shown_evaluation().copy()

    gate = threading.Event()
    original = workflows.train

    def held(**kwargs):
        gen = original(**kwargs)
        yield next(gen)
        gate.wait(30)
        return (yield from gen)

    monkeypatch.setattr(workflows, "train", held)
    meta.form.classifier.value = "gbm"
    meta.train_button.click()
    assert meta.train_button.text() == "Cancel"
    worker = meta.worker
    qtbot.waitUntil(lambda: meta.status.text() not in ("", "training …"), timeout=30_000)
    with qtbot.waitSignal(worker.aborted, timeout=30_000):
        meta.train_button.click()  # Cancel
        gate.set()
    wait_for_worker(qtbot, meta)
    assert (meta.classifier, meta.regressor, meta.dataset, meta.evaluation) == state
    assert meta.shown_evaluation().equals(shown_eval)
    assert "cancelled" in meta.status.text()
    assert meta.train_button.text() == "Train and evaluate" and meta.train_button.isEnabled()


def test_train_on_a_folder_of_cases(make_napari_viewer, qtbot, tmp_path):
    from napari_metaseg._sample_data import load_nuclei_arrays

    _, probs, gt = load_nuclei_arrays()
    folder = tmp_path / "cases"
    folder.mkdir()
    for i, (r, c) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        sl = (slice(r, r + 256), slice(c, c + 256))
        if i < 2:  # flat layout
            np.save(folder / f"q{i}_softmax.npy", probs[sl])
            np.save(folder / f"q{i}_gt.npy", gt[sl])
        else:  # a folder per case
            (folder / f"q{i}").mkdir()
            np.save(folder / f"q{i}" / "softmax.npy", probs[sl])
            np.save(folder / f"q{i}" / "gt.npy", gt[sl])
    np.save(folder / "nogt_softmax.npy", probs[:128, :128])
    viewer = make_napari_viewer()
    _, meta = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg meta model")
    meta.form.source.value = "folder"
    meta.form.folder.value = str(folder)
    meta.form.min_interior.value = 0
    meta.form.n_splits.value = 4
    _train(qtbot, meta)
    assert meta.dataset.cases == ["q0", "q1", "q2", "q3"]
    assert "nogt" in meta.status.text()
    assert list(meta.classifier.training_cases_) == ["q0", "q1", "q2", "q3"]
    # grouped by case, or (when a half holds one class) the reason is shown and the models still fit
    assert (meta.evaluation is not None and meta.evaluation.grouping == "case") or (
        "evaluation not possible" in meta.split_label.text())


def test_auto_kinds_train_volumes_with_the_3d_defaults(make_napari_viewer, qtbot, tmp_path):
    """The Model tab's default kinds and min interior are "auto": a folder of volumes read in 3D
    gets the 3D defaults (logistic classifier, LASSO regressor, every segment)."""
    from napari_metaseg.io import read_nifti, read_nifti_probabilities
    from napari_metaseg.names import DEFAULT_TRAINING

    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "sample_data"
    probs, _ = read_nifti_probabilities(root / "brain3d_softmax.nii.gz")
    gt, _ = read_nifti(root / "brain3d_gt.nii.gz")
    folder = tmp_path / "cases"
    folder.mkdir()
    half = probs.shape[2] // 2
    for i, sl in enumerate((slice(0, half), slice(half, None))):
        np.save(folder / f"v{i}_softmax.npy", np.ascontiguousarray(probs[:, :, sl]))
        np.save(folder / f"v{i}_gt.npy", np.ascontiguousarray(gt[:, :, sl]))
    viewer = make_napari_viewer()
    _, meta = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg meta model")
    assert (meta.form.classifier.value, meta.form.regressor.value) == ("auto", "auto")
    assert meta.form.min_interior.native.currentText() == "auto"
    meta.form.source.value = "folder"
    meta.form.folder.value = str(folder)
    meta.form.read_mode.value = "3d"
    meta.form.n_splits.value = 0 if meta.form.n_splits.min == 0 else 1
    _train(qtbot, meta)
    clf, reg, mi = DEFAULT_TRAINING["3d"]
    assert (meta.classifier.kind, meta.regressor.kind) == (clf, reg)
    assert meta.dataset.min_interior == mi == 0
    assert meta.classifier.provenance_[-1]["defaults"]["mode"] == "3d"
