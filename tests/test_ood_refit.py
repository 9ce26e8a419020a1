"""Refitting an OoD region model: the reviewer's decisions (or new annotated region tables) reach
the model. Workflow on hand-made regions, the decided direction of P(OoD), the CLI round trip and
refusals, and the Unknown tab's "Refit with my decisions" in a real viewer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_metaseg.core.progress import drain
from napari_metaseg.workflows import MetaModels, load_model, refit_regions, save_model, train_regions
from napari_metaseg.workflows.ood import find_ood, ood_settings

try:
    from test_ood_cli import CUBES, SHEETS, ood_case, run, write_cases
except ImportError:  # tests/ made a package
    from tests.test_ood_cli import CUBES, SHEETS, ood_case, run, write_cases

OOD = {"threshold": 0.5, "measure": "E", "exclude_classes": []}
SETTINGS = {**OOD, "mode": "auto", "slice_axis": -1}


# ============================================================================================
# Hand-made regions
# ============================================================================================
def hand_regions(case, n, seed):
    """A region table of ``n`` regions: OoD regions (hit 1) have high entropy, in-distribution
    ones low, with overlap so no feature separates them perfectly."""
    rng = np.random.default_rng(seed)
    hit = (np.arange(n) % 3 == 0).astype(np.int64)
    e = np.clip(0.55 + 0.25 * hit + rng.normal(0, 0.08, n), 0.5, 1.0)
    s = rng.integers(5, 60, n).astype(float)
    share1 = np.clip(0.3 + 0.4 * hit + rng.normal(0, 0.2, n), 0, 1)
    return pd.DataFrame({"case": case, "index": np.arange(1, n + 1), "S": s, "E": e, "E_in": e * 0.9,
                         "share0": 1 - share1, "share1": share1, "hit": hit})


@pytest.fixture
def hand_model():
    """A region model on cases a and b (30 regions each), with its training regions."""
    table = pd.concat([hand_regions("a", 30, 0), hand_regions("b", 30, 1)], ignore_index=True)
    models = drain(train_regions(table, kind="logistic", ood=OOD))
    return models, table


def rows_of(models, case):
    t = models.dataset.table
    return t[t["case"] == case].set_index("index")


def test_train_regions_keeps_its_training_regions_and_save_load_restores_them(hand_model, tmp_path):
    models, table = hand_model
    kept = models.dataset.table
    assert models.dataset.cases == ["a", "b"] and len(kept) == 60
    pd.testing.assert_frame_equal(kept[table.columns].reset_index(drop=True), table, check_dtype=False)
    path = save_model(tmp_path / "regions.json", models)
    assert (tmp_path / "regions.dataset.csv").is_file()
    loaded = load_model(path, table_kind="ood_regions")
    assert loaded.ood == OOD and loaded.dataset is not None
    pd.testing.assert_frame_equal(loaded.dataset.table[table.columns], table, check_dtype=False)


def test_decisions_become_hit_labels_and_undecided_regions_are_left_out(hand_model):
    models, _ = hand_model
    old = models.classifier
    c = hand_regions("c", 12, 2).drop(columns="case")
    c["hit"] = 1 - c["hit"]  # the annotation says the opposite: the decision wins
    decisions = {1: "unknown", 2: "known", 3: None, 5: "known"}
    r = drain(refit_regions(models, current=("c", c, decisions, SETTINGS)))
    got = rows_of(r.models, "c")
    assert got["hit"].to_dict() == {1: 1, 2: 0, 5: 0}  # undecided 3 and the rest: not there
    assert (r.n_unknown, r.n_known, r.n_decided, r.n_from_tables, r.n_replaced) == (1, 2, 3, 0, 0)
    assert (r.n_before, r.n_after, r.n_previous) == (60, 63, 60) and r.added_cases == ["c"]
    assert r.models.classifier.n_segments_ == 63 and r.had_training_regions
    # the features of the decided rows are the table's own
    np.testing.assert_allclose(got.loc[[1, 2, 5], "E"], c.set_index("index").loc[[1, 2, 5], "E"])
    # the old model keeps its ood record, its kind; the provenance lists both fits
    assert r.models.ood == OOD and r.models.classifier.kind == "logistic"
    prov = r.models.classifier.provenance_
    assert len(prov) == 2 and prov[0] == old.provenance_[0] and prov[1]["refit"] is True
    assert (prov[1]["decided_unknown"], prov[1]["decided_known"], prov[1]["regions_before"]) == (1, 2, 60)
    assert prov[1]["added_cases"] == ["c"] and prov[1]["previous_cases"] == ["a", "b"]
    # the old model is not changed
    assert len(old.provenance_) == 1 and old.n_segments_ == 60 and models.classifier is old


def test_a_region_labelled_again_replaces_the_earlier_one(hand_model):
    models, table = hand_model
    a = table[table["case"] == "a"].drop(columns="case")
    before = a.set_index("index")["hit"]
    # regions 1 (hit 1) and 2 (hit 0) of training case a decided the other way
    decisions = {1: "known", 2: "unknown"}
    r = drain(refit_regions(models, current=("a", a, decisions, SETTINGS)))
    got = rows_of(r.models, "a")
    assert len(r.models.dataset.table) == 60 and len(got) == 30 and got.index.is_unique
    assert (got.loc[1, "hit"], got.loc[2, "hit"]) == (0, 1) and (before[1], before[2]) == (1, 0)
    assert (got.drop(index=[1, 2])["hit"] == before.drop(index=[1, 2])).all()
    assert (r.n_replaced, r.n_previous, r.n_after) == (2, 58, 60)
    # refitting the refitted model with the same decisions: still one row per region
    again = drain(refit_regions(r.models, current=("a", a, decisions, SETTINGS)))
    assert len(again.models.dataset.table) == 60 and again.n_replaced == 2
    assert len(again.models.classifier.provenance_) == 3
    # a new table and a decision on the same region: one row, the decision's label
    c = hand_regions("c", 12, 3)
    both = drain(refit_regions(models, table=c, settings=OOD,
                               current=("c", c.drop(columns="case"), {4: "known"}, SETTINGS)))
    got = rows_of(both.models, "c")
    assert len(got) == 12 and got.loc[4, "hit"] == 0 and c.set_index("index").loc[4, "hit"] == 1
    assert (both.n_from_tables, both.n_known) == (11, 1)


def _refusal(models, **kwargs):
    with pytest.raises(ValueError) as err:
        drain(refit_regions(models, **kwargs))
    return str(err.value)


def test_refusals_name_the_problem_and_the_fix(hand_model):
    models, _ = hand_model
    c = hand_regions("c", 12, 4)
    cur = ("c", c.drop(columns="case"), {1: "unknown", 2: "known"}, SETTINGS)
    # no region model: none, an empty one, a segment model
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    from napari_metaseg.core.meta_model import MetaClassifier

    seg = MetaModels(MetaClassifier(kind="logistic").fit(synthetic_metrics_table(60, random_state=0)))
    for m in (None, MetaModels(), seg):
        assert "no region model to refit: load one" in _refusal(m, current=cur)
    # regions made otherwise than the model's
    msg = _refusal(models, current=("c", cur[1], cur[2], {**SETTINGS, "threshold": 0.6}))
    assert "threshold = 0.6" in msg and "threshold = 0.5" in msg and "model's settings" in msg
    msg = _refusal(models, table=c, settings={**OOD, "measure": "D"})
    assert "measure = D" in msg and "measure = E" in msg
    assert "exclude_classes = [0]" in _refusal(models, table=c, settings={**OOD, "exclude_classes": [0]})
    assert "say how its regions were made" in _refusal(models, table=c, settings=None)
    msg = _refusal(models, current=("c", cur[1], cur[2], {**SETTINGS, "mode": "slices"}))
    assert "different segmentation settings" in msg  # the model's regions are 3D (auto)... or 2D
    # nothing labelled
    assert "no labelled regions" in _refusal(models)
    assert "no labelled regions" in _refusal(models, current=("c", cur[1], {1: None}, SETTINGS))
    assert "no hit column" in _refusal(models, table=c.drop(columns="hit"), settings=OOD)
    assert "no case column" in _refusal(models, table=c.drop(columns="case"), settings=OOD)
    assert "does not hold" in _refusal(models, current=("c", cur[1], {99: "unknown"}, SETTINGS))
    # one class of hit over old and new regions: a model whose training regions are unknown
    blind = MetaModels(models.classifier, segmentation=models.segmentation, ood=models.ood)
    all_unknown = {i: "unknown" for i in range(1, 13)}
    msg = _refusal(blind, current=("c", cur[1], all_unknown, SETTINGS))
    assert "every labelled region is OoD (hit 1)" in msg and "other kind" in msg
    assert "at least 10 are needed" in _refusal(blind, current=cur)
    # with both kinds it works, on the new regions only, and says so
    mixed = {i: ("unknown" if i % 2 else "known") for i in range(1, 13)}
    r = drain(refit_regions(blind, current=("c", cur[1], mixed, SETTINGS)))
    assert not r.had_training_regions and r.n_after == 12 and "new regions only" in r.note


# ============================================================================================
# The decided direction
# ============================================================================================
def _case_tables(seeds):
    out = {}
    for s in seeds:
        p, _, ood = ood_case(s)
        out[f"c{s}"] = drain(find_ood(p, settings=ood_settings(**SETTINGS), ood=ood)).table
    return out


@pytest.mark.parametrize("kind", ["lasso", "logistic"])
def test_decisions_against_the_old_labels_move_p_ood_the_decided_way(kind):
    """Cubes (annotated OoD) and sheets (false alarms) of three cases train the model; the reviewer
    says the opposite on a new case. Refitted, P(OoD) of that case's cubes falls and of its sheets
    rises; decisions that agree with the model do not move them the other way."""
    train = _case_tables((0, 1, 2))
    table = pd.concat([t.assign(case=c) for c, t in train.items()], ignore_index=True)
    models = drain(train_regions(table, kind=kind, ood=OOD))
    new = _case_tables((5,))["c5"]
    p_old = models.classifier.predict_proba(new)[:, 1]
    cube = new["hit"].to_numpy() == 1
    assert cube.sum() == len(CUBES) and (~cube).sum() == len(SHEETS)
    assert (p_old[cube] > 0.5).all() and (p_old[~cube] < 0.5).all()
    flipped = {int(i): ("known" if h else "unknown") for i, h in zip(new["index"], new["hit"], strict=True)}
    r = drain(refit_regions(models, current=("c5", new, flipped, SETTINGS)))
    p_new = r.models.classifier.predict_proba(new)[:, 1]
    assert (p_new[cube] < p_old[cube] - 0.05).all(), (p_old, p_new)
    assert (p_new[~cube] > p_old[~cube] + 0.05).all(), (p_old, p_new)
    agreed = {int(i): ("unknown" if h else "known") for i, h in zip(new["index"], new["hit"], strict=True)}
    r2 = drain(refit_regions(models, current=("c5", new, agreed, SETTINGS)))
    p_agree = r2.models.classifier.predict_proba(new)[:, 1]
    assert (p_agree[cube] > p_new[cube]).all() and (p_agree[~cube] < p_new[~cube]).all()


# ============================================================================================
# The command line
# ============================================================================================
@pytest.fixture
def trained(tmp_path, capsys):
    write_cases(tmp_path / "train", (0, 1, 2))
    assert run(["ood", tmp_path / "train", "--out", tmp_path / "tr", "-q"], capsys)[0] == 0
    model = tmp_path / "region_model.json"
    code, out = run(["train", tmp_path / "tr", "--out", model, "-q"], capsys)
    assert code == 0, out.err
    return tmp_path, model


def test_cli_refit_of_a_region_model_round_trip(trained, capsys):
    tmp, model = trained
    write_cases(tmp / "new", (7, 8))
    assert run(["ood", tmp / "new", "--out", tmp / "ne", "-q"], capsys)[0] == 0
    new_model = tmp / "refitted.json"
    code, out = run(["refit", model, tmp / "ne" / "ood_regions.parquet", "--out", new_model, "-q"], capsys)
    assert code == 0, out.err
    assert "12 -> 20 regions" in out.out and "refitted.dataset.csv" in out.out
    m = load_model(new_model, table_kind="ood_regions")
    old = load_model(model, table_kind="ood_regions")
    assert m.ood == old.ood == OOD and m.segmentation == old.segmentation
    assert m.classifier.n_segments_ == 20 and m.dataset.cases == ["c0", "c1", "c2", "c7", "c8"]
    prov = m.classifier.provenance_
    assert len(prov) == 2 and prov[-1]["refit"] and prov[-1]["added_cases"] == ["c7", "c8"]
    assert prov[-1]["regions_from_tables"] == 8
    doc = json.loads(new_model.read_text())
    assert doc["payload"]["training_data"]["n_segments"] == 20
    # the training tables again: replaced, not duplicated
    again = tmp / "again.json"
    code, out = run(["refit", new_model, tmp / "tr", "--out", again, "-q"], capsys)
    assert code == 0, out.err
    assert "20 -> 20 regions" in out.out and "12 replaced an earlier label" in out.out
    # the refitted model rates new cases with `ood --model`
    write_cases(tmp / "test", (9,))
    assert run(["ood", tmp / "test", "--out", tmp / "te", "--model", again, "-q"], capsys)[0] == 0
    t = pd.read_parquet(tmp / "te" / "cases" / "c9_ood.parquet")
    assert ((t["p_hit"] >= 0.5) == (t["hit"] == 1)).all()


def test_cli_refit_refuses_mixed_kinds_and_other_settings(trained, capsys):
    from napari_metaseg.core.meta_dataset import synthetic_metrics_table
    from napari_metaseg.core.meta_model import MetaClassifier

    tmp, model = trained
    out_model = tmp / "out.json"
    seg_table = synthetic_metrics_table(60, random_state=0).assign(case="s1")
    seg_table.to_parquet(tmp / "metrics.parquet")
    seg_model = save_model(tmp / "seg.json", MetaModels(MetaClassifier(kind="logistic").fit(seg_table)))
    # a region model with segment tables, a segment model with region tables
    code, out = run(["refit", model, tmp / "metrics.parquet", "--out", out_model, "-q"], capsys)
    assert code == 2 and "is an OoD region model and the tables are segment metrics tables" in out.err
    code, out = run(["refit", seg_model, tmp / "tr", "--out", out_model, "-q"], capsys)
    assert code == 2 and "is a segment model and the tables are OoD region tables" in out.err
    # region tables made at another threshold
    write_cases(tmp / "new", (7,))
    assert run(["ood", tmp / "new", "--out", tmp / "t6", "--threshold", "0.6", "-q"], capsys)[0] == 0
    code, out = run(["refit", model, tmp / "t6", "--out", out_model, "-q"], capsys)
    assert code == 2 and "threshold = 0.6" in out.err and "threshold = 0.5" in out.err
    # region tables without annotations, and a CSV without the settings
    write_cases(tmp / "unlabelled", (8,), label=False)
    assert run(["ood", tmp / "unlabelled", "--out", tmp / "un", "-q"], capsys)[0] == 0
    code, out = run(["refit", model, tmp / "un", "--out", out_model, "-q"], capsys)
    assert code == 2 and "no hit column" in out.err
    pd.read_parquet(tmp / "tr" / "ood_regions.parquet").to_csv(tmp / "regions.csv", index=False)
    code, out = run(["refit", model, tmp / "regions.csv", "--out", out_model, "-q"], capsys)
    assert code == 2 and "without the settings" in out.err
    assert not out_model.exists()
    # a missing model file is still a usage error
    code, out = run(["refit", tmp / "nope.json", tmp / "tr", "--out", out_model, "-q"], capsys)
    assert code == 2 and "nope.json" in out.err


# ============================================================================================
# The Unknown tab
# ============================================================================================
@pytest.mark.gui
def test_unknown_tab_refits_with_the_decisions(make_napari_viewer, qtbot, tmp_path, monkeypatch, trained,
                                                private_dirs):
    import nibabel as nib
    from _gui_helpers import metaseg_dock, wait_for_worker

    from napari_metaseg._layers import axial_view
    from napari_metaseg._widgets.ood import p_rgba

    _, region_model = trained
    p, gt, _ = ood_case(9)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(p, affine), tmp_path / "case_softmax.nii.gz")
    nib.save(nib.Nifti1Image(gt, affine), tmp_path / "case_gt.nii.gz")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "case_softmax.nii.gz"), plugin="napari-metaseg")
    viewer.open(str(tmp_path / "case_gt.nii.gz"), plugin="napari-metaseg")
    axial_view(viewer)
    dock = metaseg_dock(viewer)
    widget = dock.show_tab("ood")
    widget.form.ood_layer.value = "case_gt"
    widget.form.exclude_background.value = False  # the synthetic sheets are predicted as class 0
    assert not widget.refit_button.isEnabled() and not widget.save_model_button.isEnabled()
    old = widget.load_model(region_model)
    assert not widget.refit_button.isEnabled()  # no decision yet
    with qtbot.waitSignal(widget.ready, timeout=120_000):
        widget.find_button.click()
    wait_for_worker(qtbot, widget)
    assert not widget.refit_button.isEnabled()
    layer = viewer.layers["ood regions"]
    before = layer.features.set_index("index")["p_hit"].copy()
    hits = layer.features.set_index("index")["hit"]
    assert ((before > 0.5) == (hits == 1)).all()

    # the reviewer says the opposite of the annotation on every region
    for rid, h in hits.items():
        widget.decide("known" if h else "unknown", region=int(rid))
    assert widget.refit_button.isEnabled()

    # a refit runs in the worker: Cancel stops it at its next step and nothing changes; an error
    # is shown. (The panel looks the job up in workflows when it starts.)
    import time

    import napari_metaseg.workflows as wf

    def endless(*args, **kwargs):
        while True:
            time.sleep(0.02)
            yield 0.5, "fitting"

    def failing(*args, **kwargs):
        yield 0.1, "gathered"
        raise ValueError("every labelled region is OoD (hit 1)")

    real = wf.refit_regions
    monkeypatch.setattr(wf, "refit_regions", endless)
    widget.refit_button.click()
    assert widget.worker is not None and widget.refit_button.text() == "Cancel"
    assert widget.refit_button.isEnabled() and not widget.find_button.isEnabled()
    assert not widget.flag_button.isEnabled() and not widget.save_model_button.isEnabled()
    widget.refit_button.click()
    wait_for_worker(qtbot, widget)
    assert "cancelled; nothing was changed" in widget.status.text() and widget.models is old
    assert widget.refit_button.text() == "Refit with my decisions" and widget.find_button.isEnabled()
    monkeypatch.setattr(wf, "refit_regions", failing)
    widget.refit()
    wait_for_worker(qtbot, widget)
    assert "refitting the region model failed: every labelled region is OoD" in widget.status.text()
    assert widget.models is old
    monkeypatch.setattr(wf, "refit_regions", real)

    with qtbot.waitSignal(widget.refitted, timeout=120_000) as sig:
        widget.refit_button.click()
    wait_for_worker(qtbot, widget)
    res = sig.args[0]
    assert widget.models is res.models and widget.models is not old
    assert res.added_cases == ["case"]  # case_softmax.nii.gz: named as `napari-metaseg ood` names it
    assert old.classifier.n_segments_ == 12 and widget.models.classifier.n_segments_ == 16
    text = widget.status.text()
    assert "refitted: 4 decisions (2 unknown, 2 not OoD)" in text and "12 -> 16" in text
    assert "Against your decisions" not in text  # every decided region moved the decided way
    # when a refit moves decided regions against the decisions, the status says so
    feats = layer.features
    p0 = feats["p_hit"].to_numpy(float)
    decided = widget.store.decisions()
    unknown = [i for i, d in decided.items() if d == "unknown"]
    known = [i for i, d in decided.items() if d == "known"]
    p1 = p0.copy()
    p1[feats["index"].to_numpy() == unknown[0]] -= 0.1
    p1[feats["index"].to_numpy() == known[0]] += 0.1
    note = widget._against_decisions(feats, p0, p1)
    assert f"1 of the {len(unknown)} flagged unknown rated lower" in note
    assert f"1 of the {len(known)} marked not OoD rated higher" in note
    assert widget._against_decisions(feats, p0, p0) == ""
    after = layer.features.set_index("index")["p_hit"]
    assert (after[hits == 1] < before[hits == 1]).all() and (after[hits == 0] > before[hits == 0]).all()
    shown = widget.shown_table().set_index("index")
    np.testing.assert_allclose(shown.loc[after.index, "p_hit"], after)
    assert (shown["decision"] != "").all()
    # the regions are recoloured by the new P(OoD)
    for rid, pv in after.items():
        np.testing.assert_allclose(layer.colormap.map(np.array([rid]))[0, :3], p_rgba([pv])[0, :3], atol=1e-6)
    assert "not saved" in widget.model_label.text()

    # refitting again with the same decisions replaces them
    with qtbot.waitSignal(widget.refitted, timeout=120_000):
        widget.refit()
    wait_for_worker(qtbot, widget)
    assert widget.models.classifier.n_segments_ == 16 and "4 replacing earlier labels" in widget.status.text()

    # saved through save_model, with the training regions beside it
    path = widget.save_region_model(tmp_path / "refitted.json")
    assert path is not None and (tmp_path / "refitted.dataset.csv").is_file()
    loaded = load_model(path, table_kind="ood_regions")
    assert loaded.classifier.n_segments_ == 16 and loaded.ood == old.ood
    assert len(loaded.classifier.provenance_) == 3 and "saved to refitted.json" in widget.model_label.text()
    np.testing.assert_allclose(loaded.classifier.predict_proba(layer.features)[:, 1], layer.features["p_hit"])
