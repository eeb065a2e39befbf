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
    cfg = ds.DatasetMeta.read(cli_dataset).to_dict()["config"]
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
    cfg = ds.DatasetMeta.read(out).to_dict()["config"]
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
    assert ds.DatasetMeta.read(out).to_dict()["assignment"] == {"bear": "water", "cat": "water"}


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
    usual = ds.DatasetMeta.read(root).to_dict()["assignment"]
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


def _config_fields(cls, path=""):
    """(dest path, field, its config class) of every field of ``cls`` that has a flag."""
    import dataclasses
    import typing

    from dreamshift.config import Config

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Config):
            yield from _config_fields(hint, f"{path}{f.name}.")
        elif "help" in f.metadata:
            yield f"{path}{f.name}", f, cls


def _flag_configs():
    from dreamshift.audit.config import AuditConfig
    from dreamshift.compose.config import ComposeConfig
    from dreamshift.dream.config import DreamConfig
    from dreamshift.learn.config import LearnConfig
    from dreamshift.tune.config import TuneConfig

    return [(["compose", "--out", "o"], ComposeConfig, {}),
            (["dream", "src", "--out", "o"], DreamConfig, {"source": "src"}),
            (["tune", "src", "--out", "o"], TuneConfig, {}),
            (["learn", "ds", "--out", "o"], LearnConfig, {}),
            (["audit", "ds", "--model", "m"], AuditConfig, {"models": ("m",)})]  # fmt: skip


def _flag_help(help_text: str, flag: str) -> str:
    """The help of ``flag`` in an argparse ``--help`` page, on one line."""
    import re

    lines = help_text.splitlines()
    start = next(
        i for i, line in enumerate(lines) if re.match(rf"  {re.escape(flag)}(?=[\s,]|$)", line)
    )
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if re.match(r"  -", line) or not line.startswith(" "):
            break
        block.append(line)
    return " ".join(" ".join(block).split())


@pytest.mark.parametrize("command", range(5), ids=["compose", "dream", "tune", "learn", "audit"])
def test_every_config_field_has_a_flag_whose_help_shows_the_configs_default(command, capsys):
    """The flags are generated from the config dataclasses: each flag's help ends with the
    default the config really has, and each flag sets its field (nested ones included)."""
    import dataclasses

    from dreamshift.cli import build_parser
    from dreamshift.cli.args import config_from_args

    argv, cls, required = _flag_configs()[command]
    with pytest.raises(SystemExit):
        main([argv[0], "--help"])
    page = capsys.readouterr().out
    default_cfg = cls(**required)
    checked = 0
    for path, f, owner in _config_fields(cls):
        default = default_cfg
        for part in path.split("."):
            default = getattr(default, part)
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        text = _flag_help(page, flag)
        if isinstance(default, bool):
            assert f"--no-{flag[2:]}" in text and text.endswith(
                f"(default: {'yes' if default else 'no'})"
            ), text
            value, given = not default, [f"--no-{flag[2:]}" if default else flag]
        else:
            shown = f.metadata["shown"] or (
                ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
            )
            if shown and default not in (None, ""):
                assert text.endswith(f"(default: {shown})"), (flag, text)
            elif f.metadata["shown"]:
                assert text.endswith(f"(default: {f.metadata['shown']})"), (flag, text)
            value, given = _other_value(f, default, owner)
        args = build_parser().parse_args([*argv, *given])
        cfg = config_from_args(cls, args, **required)
        got = cfg
        for part in path.split("."):
            got = getattr(got, part)
        assert got == value, (flag, given, got)
        assert dataclasses.replace(cfg) != default_cfg
        checked += 1
    assert checked >= 10


def _other_value(f, default, owner):
    """A value of the field other than its default, and the flag arguments that give it."""
    import typing

    from dreamshift.config import choices_of

    flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
    valid = owner.CHOICES.get(f.name)
    if valid is not None:
        other = next(c for c in choices_of(valid) if c and c != default)
        return other, [flag, other]
    hint = typing.get_type_hints(owner)[f.name]
    if f.name == "assignment":
        return (("cat", "grass"),), [flag, "cat=grass"]
    if f.name in ("scale", "recombine_scale"):
        return (0.3, 0.5), [flag, "0.3,0.5"]
    if typing.get_origin(hint) is tuple:
        if f.metadata["repeat"]:
            return ("a", "b"), [flag, "a", flag, "b"]
        if typing.get_args(hint)[0] is int:
            return (7, 8), [flag, "7,8"]
        if typing.get_args(hint)[0] is float:
            return (0.25, 0.5), [flag, "0.25,0.5"]
        return ("a", "b"), [flag, "a,b"]
    if isinstance(default, float):
        return default + 0.25, [flag, str(default + 0.25)]
    if isinstance(default, int) or "int" in str(hint):
        return (default or 0) + 3, [flag, str((default or 0) + 3)]
    return "x", [flag, "x"]
