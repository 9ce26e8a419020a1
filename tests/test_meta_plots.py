"""Figures of the meta-model results (headless matplotlib Figure objects)."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from napari_metaseg.core.meta_dataset import MetaDataset, synthetic_metrics_table
from napari_metaseg.core.meta_model import (
    MetaClassifier,
    MetaRegressor,
    evaluate,
    predict_table,
)
from napari_metaseg.core.plots import (
    _roc_curve,
    plot_iou_scatter,
    plot_lasso_path,
    plot_roc,
)


@pytest.fixture(scope="module")
def predicted():
    t = synthetic_metrics_table(600, random_state=0)
    return predict_table(t, MetaClassifier(kind="logistic").fit(t), MetaRegressor().fit(t))


def test_roc_curve_hand_values():
    fpr, tpr = _roc_curve(np.array([True, False, True, False]), np.array([0.9, 0.1, 0.4, 0.5]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])


def test_scatter(predicted):
    fig = plot_iou_scatter(predicted)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "true IoU_adj" and ax.get_ylabel() == "predicted IoU_adj"
    dots = ax.collections[0]
    assert len(dots.get_offsets()) == len(predicted)
    sizes = dots.get_sizes()
    big, small = predicted["S"].idxmax(), predicted["S"].idxmin()
    assert sizes[big] > sizes[small]  # dot size grows with the segment size
    y, p = predicted["iou_adj"], predicted["iou_adj_pred"]
    r2 = 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert f"R² = {r2:.3f}" in ax.get_title()
    with pytest.raises(ValueError, match="no 'iou_adj_pred' column"):
        plot_iou_scatter(predicted.drop(columns="iou_adj_pred"))


def test_roc_against_entropy(predicted):
    fig = plot_roc(predicted)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    positive = (predicted["iou_adj"] == 0).to_numpy()
    from sklearn.metrics import roc_auc_score

    auc_model = roc_auc_score(positive, predicted["p_iou0"])
    auc_e = roc_auc_score(positive, predicted["E"])
    assert labels[0] == f"meta classifier (AUROC {auc_model:.3f})"
    assert labels[1] == f"entropy E (AUROC {auc_e:.3f})"
    one = predicted.assign(iou_adj=0.5)
    with pytest.raises(ValueError, match="single class"):
        plot_roc(one)


def test_lasso_path_from_evaluation_and_into_given_axes():
    ds = MetaDataset()
    for i in range(4):
        ds.add(f"c{i}", synthetic_metrics_table(150, random_state=i))
    ev = evaluate(ds, n_splits=2, models=("logistic",))
    fig = plot_lasso_path(ev, top=3)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.get_lines()) == ev.lasso_path.shape[1] + 1  # + the zero line
    assert len(ax.get_legend().get_texts()) == 3
    other = Figure()
    target = other.add_subplot()
    assert plot_lasso_path(ev.lasso_path, ax=target) is other
    with pytest.raises(TypeError, match="path must be a DataFrame or an Evaluation"):
        plot_lasso_path([1, 2])
    with pytest.raises(ValueError, match="empty"):
        plot_lasso_path(pd.DataFrame())


def test_importing_the_meta_modules_does_not_import_matplotlib_or_qt():
    code = (
        "import sys\n"
        "import napari_metaseg.core.meta_model, napari_metaseg.core.meta_io, "
        "napari_metaseg.core.plots\n"
        "bad = [m for m in ('matplotlib', 'qtpy', 'PyQt5', 'napari') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
