"""The reviewer's whole loop in one viewer, through the docked panels: analyse, load a model,
find label errors, correct the ground truth in place, analyse again, refit on the corrected case,
apply the refitted model."""

import numpy as np
import pytest
from _gui_helpers import wait_for_worker

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("private_dirs")]



def _analyse(qtbot, analysis):
    with qtbot.waitSignal(analysis.finished, timeout=120_000):
        analysis.run_button.click()
    wait_for_worker(qtbot, analysis)
    return analysis.viewer.layers["segments"]


def test_review_correct_refit_loop_on_the_brain_sample(make_napari_viewer, qtbot):
    from napari_metaseg._widgets.review import sample_model_path
    from napari_metaseg.core import segment_metrics

    viewer = make_napari_viewer()
    viewer.open_sample("napari-metaseg", "brain3d")
    gt_layer = viewer.layers["brain ground truth"]
    gt_before = np.array(gt_layer.data, copy=True)
    _, analysis = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg analysis")
    _, meta = viewer.window.add_plugin_dock_widget("napari-metaseg", "MetaSeg meta model")
    _, review = viewer.window.add_plugin_dock_widget("napari-metaseg", "Label-error review")
    analysis.form.mode.value = "slices"
    analysis.form.slice_axis.value = -1
    review.form.mode.value = "slices"
    review.form.slice_axis.value = -1

    # 1. analyse, load the demo model (trained on sub-01) in the meta panel and apply it
    seg_layer = _analyse(qtbot, analysis)
    before = seg_layer.features.copy()
    assert meta.load_model(sample_model_path()) is not None, meta.status.text()
    # the session now holds the model (classifier, regressor: colours by predicted IoU_adj)
    assert meta.apply_to_current() == "iou_adj_pred"
    first_fit = meta.classifier.provenance_[-1]
    assert meta.classifier.training_cases_ == ["sub-01"]

    # 2. find label errors with the session's model; take the first missed-label proposal
    with qtbot.waitSignal(review.ready, timeout=120_000):
        review.find_button.click()
    qtbot.waitUntil(lambda: review.worker is None, timeout=30_000)
    assert review.current_classifier() is meta.classifier
    queue = review.queue()
    i = int(queue.index[queue["kind"] == "segment"][0])
    rec = review.store.proposals[i]
    review.go_to(i)
    mask = review._voxels(rec)
    segment = int(rec["index"])
    assert before.loc[before["index"] == segment, "iou_adj"].item() == 0

    # 3. the reviewer paints the predicted class into the GT layer and records the decision
    data = np.asarray(gt_layer.data)
    data[mask] = rec["predicted_class"]
    gt_layer.data = data
    saved = review.decide("label_error")
    assert saved["decision"] == "label_error" and review.store.proposals[i]["decision"] == "label_error"

    # 4. analyse again: the corrected segment now overlaps its class; nothing else moved
    seg_layer = _analyse(qtbot, analysis)
    after = seg_layer.features
    assert after.loc[after["index"] == segment, "iou_adj"].item() > 0
    probs = np.moveaxis(np.asarray(viewer.layers["brain softmax"].data), 0, -1)
    _, expected = segment_metrics(probs, data, mode="slices", slice_axis=-1)
    np.testing.assert_allclose(after["iou_adj"].to_numpy(), expected["iou_adj"].to_numpy())
    unchanged = (gt_before[mask] == rec["predicted_class"]).sum()
    assert (gt_layer.data != gt_before).sum() == mask.sum() - unchanged

    # 5. refit on the corrected case. With the paper's min interior 1 the downsampled sample has
    # no segment with IoU_adj = 0 left: the panel says why and keeps its model
    refits = []
    meta.trained.connect(refits.append)
    meta.form.min_interior.value = 1
    loaded = meta.classifier
    assert meta.refit_current() is not None
    wait_for_worker(qtbot, meta)
    assert not refits and meta.classifier is loaded
    assert "min_interior = 0 keeps them" in meta.status.text()
    meta.form.min_interior.value = 0
    assert meta.refit_current() is not None, meta.status.text()
    wait_for_worker(qtbot, meta)
    assert len(refits) == 1, meta.status.text()
    case = meta.form.case_id.value
    clf = meta.classifier
    assert clf.provenance_[0] == first_fit
    assert clf.provenance_[-1]["added_cases"] == [case] and clf.training_cases_ == [case]
    trained_on = meta.dataset.table
    np.testing.assert_array_equal(trained_on["iou_adj"].to_numpy(), after["iou_adj"].to_numpy())
    assert meta.apply_to_current() == "iou_adj_pred"
    assert review.current_classifier() is clf  # the next review uses the refitted model
    # the recoloured segments carry the refitted model's predictions
    p = clf.predict_proba(after)[:, 0]
    np.testing.assert_allclose(seg_layer.features["p_iou0"].to_numpy(), p)
    np.testing.assert_allclose(seg_layer.features["iou_adj_pred"].to_numpy(), meta.regressor.predict(after))
