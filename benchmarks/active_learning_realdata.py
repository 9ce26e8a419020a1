"""Active learning on the developer brain data: the figures of docs/active_learning.md.

Usage: ``python benchmarks/active_learning_realdata.py [--data ../shared/data] [--json out.json]``

RandomForest softmax, axial slices (``mode="slices"``, slice axis z). Both directions: train the
meta models (``workflows.train``, default kinds, which also fits the image-level regressor) on
one subject, rank the other subject's slices, and compare

* the OLD order: size-weighted mean of the predicted segment IoU_adj (``segment mean``, the
  fallback of a model without an image-level regressor), with
* the NEW order: the image-level regressor's predicted slice mean IoU (``image regressor``).

Figures over the test subject's slices that hold brain (finite true mean IoU) and have at least
the minimum foreground (1 % of the largest slice's predicted foreground; the others rank last
in both orders): Spearman between predicted quality and true slice mean IoU; the true mean IoU of
the 20 slices ranked first, of the 20 truly worst and of all; how many of the first 20 are among
the 40 truly worst. Then a simulated annotation loop per order: label the first 20 unlabelled
slices (the segments and image scores of all slices labelled so far join the training data as
one case, ``<subject> (labelled slices)``, replacing the previous round's), refit
(``workflows.refit``), rank the remaining slices again; the true quality of each batch.

Also: the share of brain slices the minimum foreground excludes at several settings, and that
``workflows.rank`` on the case file orders exactly like ``workflows.slice_quality`` on the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

# the developer subjects as cases and the Markdown tables: the same as the quality benchmark's
# (run as a script, this folder is on the import path)
from quality_realdata import SUBJECTS, cases, markdown
from scipy.stats import spearmanr

from napari_metaseg.core.active_learning import below_min_foreground
from napari_metaseg.core.meta_model import predict_table
from napari_metaseg.core.progress import drain
from napari_metaseg.names import RANK_MIN_FOREGROUND
from napari_metaseg.workflows import (
    MetaModels,
    case_settings,
    measure_file,
    rank,
    refit,
    slice_quality,
    train,
)

K = 20
ROUNDS = 4


def old_models(models):
    """The same segment models without the image-level regressor: the OLD order."""
    return MetaModels(models.classifier, models.regressor, dataset=models.dataset,
                      segmentation=models.segmentation)


def ranked(table, models, min_foreground=RANK_MIN_FOREGROUND):
    """``slice_quality`` of the test table with the models' segment predictions."""
    return slice_quality(predict_table(table, *models.pair), models, min_foreground=min_foreground)


def figures(r: pd.DataFrame, k=K) -> dict:
    """Spearman and top-k figures of a ranking (rows in review order) over its eligible brain slices."""
    ok = r[np.isfinite(r["mean_iou"]) & np.isfinite(r["priority"])]
    true = ok["mean_iou"].to_numpy()
    worst = np.sort(true)
    worst_2k = set(ok.nsmallest(2 * k, "mean_iou")["slice"])
    top = ok.head(k)
    return {"slices": len(ok), "spearman": float(spearmanr(ok["quality_pred"], true).statistic),
            f"top{k}_true": float(top["mean_iou"].mean()), f"worst{k}_true": float(worst[:k].mean()),
            "all_true": float(true.mean()), f"top{k}_in_worst{2 * k}": len(set(top["slice"]) & worst_2k)}


def loop(models, table, name, case_id, *, k=K, rounds=ROUNDS, old=False, refits=True):
    """Label the first k unlabelled slices, refit (unless not ``refits``), rank the rest again;
    one row per batch."""
    labelled, out = set(), []
    seg = models.segmentation
    for r in range(1, rounds + 1):
        use = old_models(models) if old else models
        ranking = ranked(table, use)
        rest = ranking[~ranking["slice"].isin(labelled)]
        batch = rest.head(k)["slice"].tolist()
        ok = rest[np.isfinite(rest["mean_iou"]) & np.isfinite(rest["priority"])]
        true_rest = ok["mean_iou"].to_numpy()
        worst_rest = set(ok.nsmallest(2 * k, "mean_iou")["slice"])
        out.append({"order": name, "round": r, "labelled before": len(labelled),
                    "batch true mean IoU": float(rest.head(k)["mean_iou"].mean()),
                    "worst 20 remaining": float(np.sort(true_rest)[:k].mean()),
                    "remaining true mean IoU": float(np.mean(true_rest)),
                    "spearman (remaining)": float(spearmanr(ok["quality_pred"], true_rest).statistic),
                    "batch in worst 40 remaining": len(set(batch) & worst_rest),
                    "order used": ranking["order"].iloc[0], "_batch": batch})
        labelled |= set(batch)
        if refits and r < rounds:  # the labelled slices so far, as one case (replaces the previous round's)
            new = table[table["slice"].isin(labelled)].assign(case=f"{case_id} (labelled slices)")
            models = drain(refit(models, table=(new, seg)))
    return pd.DataFrame(out)


def _segment_models(table):
    from napari_metaseg.core.meta_dataset import MetaDataset
    from napari_metaseg.core.meta_model import MetaClassifier, MetaRegressor

    ds = MetaDataset.from_table(table, min_interior=1)  # train's defaults for slice-wise tables
    return (MetaClassifier(kind="lasso", random_state=0).fit(ds),
            MetaRegressor(kind="linear", random_state=0).fit(ds))


def feature_variants(tables, folds=5):
    """Which features the image regressor should see, measured: the segment table's aggregates
    without the segment models' predictions (what ``train`` fits), with in-sample predictions
    (the segment models fitted on the same slices), or with out-of-fold predictions (the slices
    in ``folds`` groups by slice number, each predicted by models fitted on the other groups)."""
    from napari_metaseg.core.image_quality import fit_image_regressor, image_features, predict_image_quality
    from napari_metaseg.workflows.quality import image_training_rows

    rows = []
    for tr, te in (SUBJECTS, SUBJECTS[::-1]):
        train_t = tables[tr].assign(case=tr)
        clf, reg = _segment_models(train_t)
        test = predict_table(tables[te].assign(case=te), clf, reg)
        oof = train_t.copy()
        fold = oof["slice"].to_numpy() % folds
        for f in range(folds):
            c_f, r_f = _segment_models(train_t[fold != f])
            p = predict_table(train_t[fold == f], c_f, r_f)
            oof.loc[fold == f, "p_iou0"] = p["p_iou0"].to_numpy()
            oof.loc[fold == f, "iou_adj_pred"] = p["iou_adj_pred"].to_numpy()
        variants = {"no predictions (chosen)": train_t,
                    "in-sample predictions": predict_table(train_t, clf, reg),
                    f"out-of-fold predictions ({folds} folds by slice)": oof}
        target = image_training_rows(train_t, by="slice")["mean_iou"].to_numpy()
        truth = slice_quality(test, None)  # the eligible slices and their true mean IoU
        feats = image_features(test, by="slice")
        for name, t in variants.items():
            f = image_features(t, by="slice")
            model = fit_image_regressor(f, target, kind="lasso")
            pred = pd.DataFrame({"slice": feats["slice"],
                                 "quality_pred": predict_image_quality(model, feats)})
            r = truth.drop(columns="quality_pred").merge(pred, on="slice")
            r = r.assign(priority=np.where(r["priority"].notna(), 1 - r["quality_pred"], np.nan))
            r = r.sort_values(["priority", "slice"], ascending=[False, True], na_position="last")
            rows.append({"train": tr, "test": te, "image regressor features": name, **figures(r)})
    return pd.DataFrame(rows)


def min_foreground_table(tables):
    """Share of brain slices below each minimum foreground, and their true mean IoU."""
    rows = []
    for s, t in tables.items():
        summary = slice_quality(t.assign(iou_adj_pred=1.0), None, min_foreground=0.0)
        brain = summary[np.isfinite(summary["mean_iou"])].rename(columns={"foreground": "size"})
        for f in (0.005, 0.01, 0.02, 0.05):
            small = below_min_foreground(brain.assign(case=s), f)
            rows.append({"subject": s, "min_foreground": f, "brain slices": len(brain),
                         "below": int(small.sum()), "share below": float(small.mean()),
                         "their true mean IoU": float(brain.loc[small, "mean_iou"].mean()),
                         "largest foreground px": int(brain["size"].max()),
                         "threshold px": float(f * brain["size"].max())})
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    c = cases(args.data)
    settings = case_settings(mode="slices", slice_axis=-1)
    tables = {s: measure_file(case, settings)[1] for s, case in c.items()}
    print("## Minimum foreground: brain slices below it (RANK_MIN_FOREGROUND =", RANK_MIN_FOREGROUND, ")\n")
    mf = min_foreground_table(tables)
    print(markdown(mf))
    print("\n## Image regressor features: with or without the segment models' predictions\n")
    fv = feature_variants(tables)
    print(markdown(fv))
    results, loops, notes = [], [], {}
    for train_s, test_s in (SUBJECTS, SUBJECTS[::-1]):
        models = drain(train(cases=[c[train_s]], settings=settings, n_splits=0))
        notes[train_s] = models.image_note
        print(f"\n## Train {train_s}, rank {test_s}\n\nimage-level regressor: {models.image_note}\n")
        # the dataset job orders the case file exactly like slice_quality orders its table
        job = drain(rank([c[test_s]], models, settings, by="slice")).ranking
        mine = ranked(tables[test_s], models)
        assert job["slice"].tolist() == mine["slice"].tolist(), "rank and slice_quality disagree"
        for name, use in (("old (segment mean)", old_models(models)), ("new (image regressor)", models)):
            for mf_value in (RANK_MIN_FOREGROUND, 0.0):
                row = figures(ranked(tables[test_s], use, mf_value))
                results.append({"train": train_s, "test": test_s, "order": name, "min_foreground": mf_value,
                                **row})
        for name, old, refits in (("old", True, True), ("new", False, True), ("new, no refit", False, False)):
            loops.append(loop(models, tables[test_s], name, test_s, old=old, refits=refits)
                         .assign(train=train_s, test=test_s))
    res = pd.DataFrame(results)
    print("\n## Old vs new order (first k = 20)\n")
    print(markdown(res))
    lp = pd.concat(loops, ignore_index=True)
    lp = lp[["train", "test", *[c for c in lp.columns if c not in ("train", "test")]]]
    print("\n## Simulated annotation loop (label the first 20, refit, rank the rest again)\n")
    print(markdown(lp.drop(columns="_batch")))
    summary = []
    for (tr, te, order), g in lp.groupby(["train", "test", "order"], sort=False):
        eligible = slice_quality(tables[te].assign(iou_adj_pred=1.0))  # priority NaN: below the minimum
        eligible = eligible[np.isfinite(eligible["mean_iou"]) & np.isfinite(eligible["priority"])]
        worst = set(eligible.nsmallest(2 * K, "mean_iou")["slice"])
        labelled = {s for b in g["_batch"] for s in b}
        summary.append({"train": tr, "test": te, "order": order, "labelled": len(labelled),
                        "their true mean IoU": float(g["batch true mean IoU"].mean()),
                        "of the 40 truly worst": len(labelled & worst)})
    lp = lp.drop(columns="_batch")
    print("\nafter the rounds: the slices labelled, their true mean IoU, and how many of the subject's 40 "
          "truly worst slices they hold:\n")
    print(markdown(pd.DataFrame(summary)))
    main_rows = res[res["min_foreground"] == RANK_MIN_FOREGROUND]
    print("\n## Done when: the new order beats the old in Spearman and top-20 true quality\n")
    for (tr, te), g in main_rows.groupby(["train", "test"], sort=False):
        old, new = g.iloc[0], g.iloc[1]
        print(f"train {tr} -> {te}: Spearman {old['spearman']:.3f} -> {new['spearman']:.3f} "
              f"({'better' if new['spearman'] > old['spearman'] else 'NOT better'}); top-20 true mean IoU "
              f"{old['top20_true']:.3f} -> {new['top20_true']:.3f} "
              f"({'better (lower)' if new['top20_true'] < old['top20_true'] else 'NOT better'})")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"min_foreground": mf.to_dict(orient="records"),
                                         "feature_variants": fv.to_dict(orient="records"),
                                         "orders": res.to_dict(orient="records"),
                                         "loop": lp.to_dict(orient="records"), "image_notes": notes,
                                         "loop_summary": summary},
                                        indent=1, default=float))


if __name__ == "__main__":
    main()
