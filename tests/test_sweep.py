"""learn --train-sizes --mixes: ImageNet-G's family of classifiers in one call, and audit's
effective robustness measured from the real-only family's line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import small_config
from dreamshift import metrics as M
from dreamshift.cli import main
from dreamshift.compose.config import ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import dream


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    recipe = ShiftRecipe(rho=0.9, train_size=36, val_per_group=2, test_per_group=2,
                         anti_per_group=1)  # fmt: skip
    tmp = tmp_path_factory.mktemp("sweep")
    compose(small_config(recipe=recipe), tmp / "real", progress=False)
    # made by `dreamshift dream` (paste mode: no model), so a generated source
    dream(DreamConfig(source=str(tmp / "real"), mode="paste", splits=("train",)), tmp / "gen",
          progress=False)  # fmt: skip
    return tmp / "real", tmp / "gen"


def test_a_sweep_trains_every_mix_and_size_and_audit_measures_er_from_the_real_line(
    sources, tmp_path, capsys
):
    real, gen = sources
    out = tmp_path / "sweep"
    argv = ["learn", str(real), "--out", str(out), "--epochs", "2", "--batch-size", "4",
            "--lr-schedule", "onecycle", "--loader-workers", "0", "--train", f"{real}:train",
            "--train", f"{gen}:train", "--train-sizes", "6,12,24",
            "--mixes", "real,generated,real+generated"]  # fmt: skip
    assert main(argv) == 0
    members = json.loads((out / "sweep.json").read_text())["members"]
    assert [(m["mix"], m["train_size"]) for m in members] == [
        (mix, n) for mix in ("real", "generated", "real+generated") for n in (6, 12, 24)
    ]

    def sources_of(member: dict) -> list[tuple[bool, int]]:
        record = json.loads((out / member["folder"] / "config.json").read_text())
        return [(s["generated"], s["n"]) for s in record["sources"]]

    assert sources_of(members[0]) == [(False, 6)]
    assert sources_of(members[4]) == [(True, 12)]
    assert sources_of(members[8]) == [(False, 24), (True, 24)]  # 1:1
    capsys.readouterr()
    assert main([*argv[:-4], "--train-sizes", "100"]) == 1  # more than a source holds
    assert "100 images asked for, but split 'train' has 36" in capsys.readouterr().err

    results = tmp_path / "results.jsonl"
    assert main(["audit", str(real), "--split", "anti", "--model", str(out),
                 "--in-distribution", f"{real}:test", "--results", str(results),
                 "--bootstrap", "10"]) == 0  # fmt: skip
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["family"], r["train_size"]) for r in records] == [
        (m["mix"], m["train_size"]) for m in members
    ]
    er = records[-1]["effective_robustness"]
    real_ones = [r for r in records if r["family"] == "real"]
    x = [r["acc_id"] for r in real_ones]
    assert len(set(x)) >= 2  # the family spans accuracies: a line to fit
    assert er["fit_on"] == "real"
    slope, intercept = np.polyfit(M.logit(np.array(x)), M.logit(np.array(
        [r["acc_avg"] for r in real_ones])), 1)  # fmt: skip
    for r in records:  # every model, the generated ones too, measured from the real line
        line = 1 / (1 + np.exp(-(slope * M.logit(np.array(r["acc_id"])) + intercept)))
        assert r["effective_robustness"]["logit"]["this_model"] == pytest.approx(
            r["acc_avg"] - line, abs=1e-9
        )


def test_learn_sweeps_any_algorithm_and_audit_reads_the_family(sources, tmp_path, capsys):
    """learn --train-sizes --mixes: the same family, for GroupDRO here, in learn's run folders;
    audit expands the sweep and fits the real line."""
    real, gen = sources
    out = tmp_path / "sweep"
    argv = ["learn", str(real), "--out", str(out), "--algorithm", "groupdro", "--epochs", "3",
            "--batch-size", "4", "--lr", "5e-3", "--loader-workers", "0",
            "--train", f"{real}:train", "--train", f"{gen}:train",
            "--train-sizes", "6,12,24", "--mixes", "real,generated,real+generated"]  # fmt: skip
    assert main(argv) == 0
    members = json.loads((out / "sweep.json").read_text())["members"]
    assert [(m["mix"], m["train_size"]) for m in members] == [
        (mix, n) for mix in ("real", "generated", "real+generated") for n in (6, 12, 24)
    ]
    assert all(m["folder"].startswith("groupdro-") for m in members)

    def sources_of(member: dict) -> list[tuple[bool, int]]:
        record = json.loads((out / member["folder"] / "config.json").read_text())
        return [(s["generated"], s["n"]) for s in record["sources"]]

    assert sources_of(members[0]) == [(False, 6)]
    assert sources_of(members[4]) == [(True, 12)]
    assert sources_of(members[8]) == [(False, 24), (True, 24)]  # 1:1
    assert main(argv) == 0  # relaunched: every run is done, the list stays as it was
    assert json.loads((out / "sweep.json").read_text())["members"] == members
    capsys.readouterr()
    assert main([*argv[:2], "--out", str(out), "--mixes", "real"]) == 1
    assert "--mixes goes with --train-sizes" in capsys.readouterr().err

    results = tmp_path / "results.jsonl"
    assert main(["audit", str(real), "--split", "anti", "--model", str(out),
                 "--in-distribution", f"{real}:test", "--results", str(results),
                 "--bootstrap", "10"]) == 0  # fmt: skip
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["family"], r["train_size"]) for r in records] == [
        (m["mix"], m["train_size"]) for m in members
    ]
    real_ones = [r["acc_id"] for r in records if r["family"] == "real"]
    assert len(set(real_ones)) >= 2  # the family spans accuracies: a line to fit
    assert records[-1]["effective_robustness"]["fit_on"] == "real"
