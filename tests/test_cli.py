"""The command line, through main(argv)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import SMALL_BACKGROUNDS, SMALL_CLASSES
from dreamshift.cli import main
from dreamshift.data import dataset as ds

COMMANDS = [
    [],
    ["world"],
    ["world", "info"],
    ["world", "export"],
    ["world", "preview"],
    ["compose"],
    ["info"],
    ["grid"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: dreamshift" in capsys.readouterr().out


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "ds"
    status = main([
        "compose", "--out", str(root), "--classes", ",".join(SMALL_CLASSES),
        "--background-names", ",".join(SMALL_BACKGROUNDS), "--rho", "0.9",
        "--train-size", "60", "--val-per-group", "0", "--test-per-group", "2",
        "--anti-per-group", "1", "--scale", "0.3,0.5", "--feather", "1", "--no-progress",
    ])  # fmt: skip
    assert status == 0
    return root


def test_compose_flags_reach_the_config(cli_dataset):
    cfg = ds.read_dataset_json(cli_dataset)["config"]
    assert cfg["recipe"]["rho"] == 0.9 and cfg["recipe"]["train_size"] == 60
    assert cfg["placement"]["scale"] == [0.3, 0.5] and cfg["placement"]["feather"] == 1.0
    assert cfg["classes"] == list(SMALL_CLASSES)


def test_config_file_with_flag_override(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "classes: [bear, cat]\nbackground_names: [grass, water]\n"
        "recipe: {rho: 1.0, train_size: 8, val_per_group: 0, test_per_group: 1,"
        " anti_per_group: 0}\nplacement: {position: center, scale: 0.25}\n"
    )
    out = tmp_path / "ds"
    argv = ["compose", "--config", str(tmp_path / "run.yaml"), "--out", str(out)]
    assert main([*argv, "--train-size", "4", "--no-progress"]) == 0
    cfg = ds.read_dataset_json(out)["config"]
    assert cfg["recipe"]["train_size"] == 4 and cfg["recipe"]["rho"] == 1.0
    assert cfg["placement"]["position"] == "center" and cfg["placement"]["scale"] == [0.25, 0.25]
    bad_configs = (
        "colours: [red]\n",
        "recipe: {rho: high}\n",
        "recipe: {train_size: 5.5}\n",
        "shard_size: 2.0\n",
        "placement: {angle: 3}\n",
        "- 1\n",
    )
    for bad in bad_configs:
        (tmp_path / "bad.yaml").write_text(bad)
        assert main(["compose", "--config", str(tmp_path / "bad.yaml"), "--out", str(out)]) == 1


def test_config_file_assignment_as_a_mapping(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "classes: [bear, cat]\nbackground_names: [grass, water]\n"
        "recipe: {assignment: {bear: water}, train_size: 4, val_per_group: 0,"
        " test_per_group: 0, anti_per_group: 0}\n"
    )
    out = tmp_path / "ds"
    assert main(["compose", "--config", str(tmp_path / "run.yaml"), "--out", str(out)]) == 0
    assert ds.read_dataset_json(out)["assignment"] == {"bear": "water", "cat": "water"}


def test_info_counts_per_split_and_group(cli_dataset, capsys):
    assert main(["info", str(cli_dataset), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["num_rows"] == 60 + 18 + 6
    assert info["splits"]["train"]["ok"] == 60 and info["splits"]["anti"]["failed"] == 0
    train = info["splits"]["train"]["groups"]
    assert train["bear"]["grass"] == 18 and train["bear"]["water"] == 1  # round(0.9 * 20) = 18
    assert info["splits"]["test"]["groups"]["dog"] == {"grass": 2, "water": 2, "snow": 2}
    assert main(["info", str(cli_dataset)]) == 0
    text = capsys.readouterr().out
    assert "[train] rows = foreground class" in text and "bear->grass" in text
    assert "(no animal)" not in text  # no split without an animal


def test_info_counts_the_spurious_split_under_no_animal(tmp_path, capsys):
    root = tmp_path / "ds"
    assert main([
        "compose", "--out", str(root), "--classes", "cat,dog", "--background-names",
        "grass,snow", "--train-size", "4", "--val-per-group", "0", "--test-per-group", "0",
        "--anti-per-group", "0", "--spurious-per-class", "3", "--no-progress",
    ]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["info", str(root), "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["splits"]["spurious"]["groups"]
    usual = ds.read_dataset_json(root)["assignment"]
    per_background = {b: 3 * list(usual.values()).count(b) for b in ("grass", "snow")}
    assert groups["(no animal)"] == per_background
    assert all(n == 0 for c in ("cat", "dog") for n in groups[c].values())


def test_grid_shows_a_sample_of_every_group(cli_dataset, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["grid", str(cli_dataset), "--split", "test", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    rows = ds.read_manifest(cli_dataset).to_pylist()
    label_w = 8 * max(len(c) for c in SMALL_CLASSES) + 8
    for i, c in enumerate(SMALL_CLASSES):
        for j, b in enumerate(SMALL_BACKGROUNDS):
            first = min(
                (
                    r
                    for r in rows
                    if r["split"] == "test" and (r["fg_class"], r["bg_class"]) == (c, b)
                ),
                key=lambda r: r["index"],
            )
            cell = sheet[14 + i * 66 : 14 + i * 66 + 64, label_w + j * 66 : label_w + j * 66 + 64]
            assert np.array_equal(cell, np.asarray(Image.open(cli_dataset / first["path"])))
    assert main(["grid", str(cli_dataset), "--split", "nope", "--out", str(out)]) == 1


def test_info_on_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 1
    assert "not a dreamshift dataset" in capsys.readouterr().err


def test_world_commands(tmp_path, capsys):
    assert main(["world", "info"]) == 0
    text = capsys.readouterr().out
    assert "bear, bird, cat" in text and "grass, road, forest" in text
    assert main(["world", "preview", "--out", str(tmp_path / "p.png")]) == 0
    # ten background rows, then animals in typical and in random coats
    assert Image.open(tmp_path / "p.png").size == (8 * 64, 12 * 64)
    assert main(["world", "export", "--out", str(tmp_path / "w"), "--per-class", "2",
                 "--per-background", "1"]) == 0  # fmt: skip
    assert len(list((tmp_path / "w" / "foregrounds").glob("*/*.png"))) == 20
    assert Image.open(next((tmp_path / "w" / "foregrounds" / "cat").glob("*.png"))).mode == "RGBA"
    assert len(list((tmp_path / "w" / "backgrounds").glob("*/*.png"))) == 10


def test_a_closed_stdout_ends_quietly(cli_dataset):
    """`dreamshift info DIR | head` must not end in a BrokenPipeError traceback."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "dreamshift.cli", "info", str(cli_dataset)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err, err
