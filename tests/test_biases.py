"""ForAug's bias metrics (Nauen et al. 2025): size and center bias on hand-computed cases, and
compose -> audit -> report end to end on a tiny world dataset with splits size and position
and masks (background robustness and foreground focus by hand: test_recombine.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dreamshift import metrics as M
from dreamshift.audit.biases import center_bias, center_cells, position_cell, size_bias
from dreamshift.cli import main
from dreamshift.data import dataset as ds
from dreamshift.data.loading import split_table, usable_rows
from dreamshift.engine.results import read_records
from dreamshift.report.tables import format_table


def _sized(spec: list[tuple[float, int, int]]) -> tuple[list[dict], list[str]]:
    """Rows of class cat at each (scale, images, right), and the predictions (right first)."""
    rows, predicted = [], []
    for scale, n, right in spec:
        rows += [{"fg_class": "cat", "scale": scale}] * n
        predicted += ["cat"] * right + ["dog"] * (n - right)
    return rows, predicted


def test_size_bias_is_accuracy_per_scale_and_largest_minus_smallest():
    rows, predicted = _sized([(0.6, 4, 3), (0.2, 4, 1), (0.4, 2, 2)])
    out = size_bias(rows, predicted, n_boot=200, seed=3)
    assert [(b["scale"], b["n"], b["acc"]) for b in out["bins"]] == [
        (0.2, 4, 0.25), (0.4, 2, 1.0), (0.6, 4, 0.75)
    ]  # fmt: skip
    # each bin's interval is the metrics' bootstrap of its images (seeded per bin, in order)
    bin_02 = np.array([True, False, False, False])
    assert out["bins"][0]["ci"] == list(M.bootstrap_ci(bin_02, 200, 3 + 0))
    summary = out["summary"]
    assert (summary["smallest"], summary["largest"]) == (0.2, 0.6)
    assert summary["size_bias"] == pytest.approx(0.75 - 0.25)
    lo, hi = summary["ci"]
    assert -1 <= lo <= 0.5 <= hi <= 1 and lo < hi
    assert size_bias(rows, predicted, n_boot=200, seed=3) == out  # seeded: the same again
    # all wrong when small, all right when large: every resample gives exactly 1
    rows, predicted = _sized([(0.3, 3, 0), (0.6, 5, 5)])
    assert size_bias(rows, predicted, 50)["summary"]["ci"] == [1.0, 1.0]
    one = size_bias(*_sized([(0.3, 3, 2)]), 50)
    assert one["summary"]["size_bias"] is None and one["bins"][0]["acc"] == pytest.approx(2 / 3)


def _placed(bins: int, side: int, right: dict, n: int = 2, skip: tuple = ()) -> tuple:
    """``n`` rows centred in every cell of the grid but ``skip``; ``right[(row, col)]`` of
    them (default 1) predicted right."""
    cell, rows, predicted = side // bins, [], []
    for r in range(bins):
        for c in range(bins):
            if (r, c) in skip:
                continue
            box = {"fg_class": "cat", "box_x": c * cell + 1, "box_y": r * cell + 1,
                   "box_w": cell - 2, "box_h": cell - 2}  # fmt: skip
            rows += [box] * n
            k = right.get((r, c), 1)
            predicted += ["cat"] * k + ["dog"] * (n - k)
    return rows, predicted


def test_center_bias_is_centre_cell_minus_the_mean_of_the_others():
    rows, predicted = _placed(3, 30, {(1, 1): 2, (0, 0): 0})
    out = center_bias(rows, predicted, 3, 30, n_boot=100, seed=1)
    acc = {(c["row"], c["col"]): c["acc"] for c in out["cells"]}
    assert len(out["cells"]) == 9 and all(c["n"] == 2 for c in out["cells"])
    assert acc[1, 1] == 1.0 and acc[0, 0] == 0.0 and acc[2, 1] == 0.5
    s = out["summary"]
    other = (0.0 + 7 * 0.5) / 8
    assert (s["center_acc"], s["other_acc"]) == (1.0, pytest.approx(other))
    assert s["center_bias"] == pytest.approx(1.0 - other) and s["center_cells"] == [[1, 1]]
    assert s["ci"][0] <= s["center_bias"] <= s["ci"][1]


def test_center_bias_of_an_even_grid_uses_the_central_two_by_two_and_skips_empty_cells():
    assert center_cells(4) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    right = {(1, 1): 2, (1, 2): 2, (2, 1): 1, (2, 2): 1}
    right |= {(r, c): 0 for r in range(4) for c in range(4) if (r, c) not in right}
    right[0, 0] = 2  # the one right corner
    rows, predicted = _placed(4, 40, right, skip=((3, 3),))
    out = center_bias(rows, predicted, 4, 40, n_boot=50)
    empty = next(c for c in out["cells"] if (c["row"], c["col"]) == (3, 3))
    assert (empty["n"], empty["acc"], empty["ci"]) == (0, None, None)
    s = out["summary"]
    assert s["center_acc"] == pytest.approx(0.75)  # (1 + 1 + 0.5 + 0.5) / 4
    assert s["other_acc"] == pytest.approx(1 / 11)  # 11 filled others, one of them right
    assert s["center_bias"] == pytest.approx(0.75 - 1 / 11)
    # every centre image right, every other wrong: each resample gives exactly 1
    wrong = {(r, c): 0 for r in range(3) for c in range(3)}
    rows, predicted = _placed(3, 30, {**wrong, (1, 1): 2})
    assert center_bias(rows, predicted, 3, 30, 40)["summary"]["ci"] == [1.0, 1.0]
    alone = center_bias(*_placed(3, 30, {}, skip=((1, 1),)), 3, 30, 20)
    assert alone["summary"]["center_bias"] is None  # no centre images: no bias


def test_a_box_moved_inside_the_image_stays_in_its_border_cell():
    assert position_cell({"box_x": 0, "box_y": 0, "box_w": 19, "box_h": 5}, 3, 30) == (0, 0)
    assert position_cell({"box_x": 11, "box_y": 25, "box_w": 8, "box_h": 5}, 3, 30) == (2, 1)


BIN_ARGS = ["--classes", "cat,zebra", "--background-names", "grass,snow", "--size", "32",
            "--train-size", "0", "--val-per-group", "0", "--test-per-group", "1",
            "--anti-per-group", "0", "--scale", "0.3", "--scale-bins", "0.3,0.6",
            "--position-bins", "3", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def bins_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("biases") / "ds"
    assert main(["compose", "--out", str(root), *BIN_ARGS]) == 0
    return root


def test_audit_and_report_of_a_dataset_with_size_and_position_splits(bins_world, tmp_path):
    results = tmp_path / "results.jsonl"
    args = ["audit", str(bins_world), "--model", "world-cnn", "--bootstrap", "20"]
    assert main([*args, "--results", str(results)]) == 0
    (record,) = read_records(results)
    assert record["split"] == "test" and record["n"] == 4  # the copies stay out of the test
    size = record["size_bias"]
    assert [(b["scale"], b["n"]) for b in size["bins"]] == [(0.3, 4), (0.6, 4)]
    by_scale: dict[float, list[bool]] = {}
    for p in pq.read_table(record["predictions_size"]).to_pylist():
        scale = next(r["scale"] for r in _rows(bins_world) if r["sample_id"] == p["sample_id"])
        by_scale.setdefault(scale, []).append(p["predicted"] == p["fg_class"])
    assert [b["acc"] for b in size["bins"]] == [np.mean(by_scale[0.3]), np.mean(by_scale[0.6])]
    assert size["summary"]["size_bias"] == pytest.approx(
        np.mean(by_scale[0.6]) - np.mean(by_scale[0.3])
    )
    center = record["center_bias"]
    assert (center["grid"], center["side"]) == (3, 32)
    assert Counter(c["n"] for c in center["cells"]) == {4: 9}  # each test sample in every cell
    assert center["summary"]["center_cells"] == [[1, 1]]
    assert center["summary"]["center_bias"] is not None and len(center["summary"]["ci"]) == 2
    # the images have masks, and world backgrounds: the background robustness and the
    # foreground focus (tested by hand in test_recombine.py)
    robust, focus = record["background_robustness"], record["foreground_focus"]
    assert robust["n"] == focus["n"] == 4 and robust["backgrounds"] == "world"
    assert robust["summary"]["background_robustness"] == pytest.approx(
        robust["acc_foreign"] / robust["acc_own"]
    )
    assert focus["summary"]["foreground_focus"] > 0 and 0 < focus["object_area"] < 1
    table = format_table([record])
    assert "size bias [95% CI]" in table and "center bias [95% CI]" in table
    assert "bg robustness [95% CI]" in table and "fg focus [95% CI]" in table
    for flags, left_out in ((["--backgrounds", "none"], {"background_robustness"}),
                            (["--no-mask-metrics"], {"background_robustness",
                                                     "foreground_focus"})):  # fmt: skip
        again = tmp_path / f"again{len(left_out)}.jsonl"
        assert main([*args, *flags, "--results", str(again)]) == 0
        (other,) = read_records(again)
        assert not left_out & set(other) and other["acc_avg"] == record["acc_avg"]

    out = tmp_path / "report.html"
    assert main(["report", str(results), "--out", str(out)]) == 0
    page = out.read_text()
    assert "Size bias (ForAug)" in page and "Center bias (ForAug)" in page
    assert "Background robustness (ForAug)" in page and "Foreground focus (ForAug)" in page
    # bars, size, position, background robustness, foreground focus, heatmap
    assert page.count('<img class="figure"') == 6
    files = sorted(p.name for p in (tmp_path / "report_files").iterdir())
    assert {"size-ds-test.png", "size-ds-test.pdf", "position-ds-test.png"} <= set(files)
    assert "by object scale" in (tmp_path / "report_files" / "tables.md").read_text()


def _rows(root: Path) -> list[dict]:
    return ds.read_manifest(root).to_pylist()


def test_a_dream_of_the_splits_gets_its_grid_from_its_guides(bins_world, tmp_path):
    dreamed = tmp_path / "dreamed"
    assert main(["dream", str(bins_world), "--out", str(dreamed), "--mode", "paste",
                 "--no-progress"]) == 0  # fmt: skip
    assert not {"size", "position"} & {r["split"] for r in _rows(dreamed)}  # only on request
    dreamed = tmp_path / "dreamed-bins"
    assert main(["dream", str(bins_world), "--out", str(dreamed), "--mode", "paste",
                 "--splits", "test,size,position", "--no-progress"]) == 0  # fmt: skip
    results = tmp_path / "r.jsonl"
    assert main(["audit", str(dreamed), "--model", "world-cnn", "--bootstrap", "10",
                 "--results", str(results)]) == 0  # fmt: skip
    (record,) = read_records(results)
    assert (record["center_bias"]["grid"], record["center_bias"]["side"]) == (3, 32)
    assert Counter(c["n"] for c in record["center_bias"]["cells"]) == {4: 9}


def test_a_dataset_without_the_splits_has_no_size_or_center_bias(tmp_path):
    root = tmp_path / "plain"
    assert main(["compose", "--out", str(root), *BIN_ARGS[:-5], "--no-progress"]) == 0
    results = tmp_path / "r.jsonl"
    assert main(["audit", str(root), "--model", "world-cnn", "--bootstrap", "10",
                 "--results", str(results)]) == 0  # fmt: skip
    (record,) = read_records(results)
    assert not {"size_bias", "center_bias", "predictions_size"} & set(record)
    assert "size bias" not in format_table([record])


def test_size_and_position_stay_out_of_every_split(bins_world):
    """Like spurious and conflict they are probes: training and the audit's rows of "every
    split" leave them out."""
    manifest = _rows(bins_world)
    assert {r["split"] for r in usable_rows(manifest, None)} == {"test"}
    assert len(usable_rows(manifest, ds.SIZE)) == 8
    table = split_table(bins_world, "", ["cat", "zebra"], ["grass", "snow"])
    assert len(table.y) == 4
