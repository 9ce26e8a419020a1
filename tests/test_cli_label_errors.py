"""`napari-metaseg label-errors MODEL CASES --out CSV`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_label_errors import blob_case

from napari_metaseg.cli import main


def write_cases(folder, seeds, drop=False):
    from napari_metaseg.core.label_errors import inject_label_errors

    folder.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        p, gt = blob_case(s)
        if drop:
            gt, _ = inject_label_errors(gt, kinds=("drop",), rate=0.3, seed=s)
        np.save(folder / f"c{s}_softmax.npy", p)
        np.save(folder / f"c{s}_gt.npy", gt)


def test_label_errors_command(tmp_path, capsys):
    write_cases(tmp_path / "train", range(4))
    write_cases(tmp_path / "review", (100, 101), drop=True)
    assert main(["metrics", str(tmp_path / "train"), "--out", str(tmp_path / "m"), "-q"]) == 0
    assert main(["train", str(tmp_path / "m"), "--out", str(tmp_path / "model.json"),
                 "--kind", "logistic"]) == 0
    out = tmp_path / "errors.csv"
    code = main(["label-errors", str(tmp_path / "model.json"), str(tmp_path / "review"),
                 "--out", str(out), "-q"])
    assert code == 0
    table = pd.read_csv(out)
    assert list(table.columns[:12]) == ["rank", "case", "kind", "class", "predicted_class", "label_class",
                                        "index", "gt_object", "score", "size", "bbox", "centroid"]
    assert set(table["case"]) == {"c100", "c101"}
    assert table["score"].is_monotonic_decreasing and table["rank"].tolist() == list(range(1, len(table) + 1))
    assert (table["kind"] == "segment").sum() >= 5
    # threshold filters; training cases are refused (usage error) unless allowed
    assert main(["label-errors", str(tmp_path / "model.json"), str(tmp_path / "review"),
                 "--out", str(out), "--threshold", "0.5", "-q"]) == 0
    assert (pd.read_csv(out)["score"] >= 0.5).all()
    assert main(["label-errors", str(tmp_path / "model.json"), str(tmp_path / "review"),
                 "--out", str(out), "--min-size", "8", "-q"]) == 0
    small = pd.read_csv(out)
    assert len(small) and (small["size"] >= 8).all() and (table["size"] < 8).any()
    capsys.readouterr()
    code = main(["label-errors", str(tmp_path / "model.json"), str(tmp_path / "train"),
                 "--out", str(out), "-q"])
    assert code == 2 and "trained on case(s)" in capsys.readouterr().err
    assert main(["label-errors", str(tmp_path / "model.json"), str(tmp_path / "train"),
                 "--out", str(out), "-q", "--allow-training-cases"]) == 0
    # a case without ground truth fails (exit 1), the others are still written
    np.save(tmp_path / "review" / "nogt_softmax.npy", blob_case(5)[0])
    code = main(["label-errors", str(tmp_path / "model.json"), str(tmp_path / "review"),
                 str(tmp_path / "review" / "nogt_softmax.npy"), "--out", str(out), "-q"])
    assert code == 1
    assert set(pd.read_csv(out)["case"]) == {"c100", "c101"}
    assert (tmp_path / "errors_failed.csv").is_file()
