from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dreamshift.compose.config import ComposeConfig, Placement, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.models.tiny_sd import save_tiny_sd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_CLASSES = ("bear", "cat", "dog")
SMALL_BACKGROUNDS = ("grass", "water", "snow")


def small_config(**overrides) -> ComposeConfig:
    """A 3 x 3 world dataset of a few dozen images: fast, yet every split and group exists."""
    recipe = ShiftRecipe(
        rho=0.8, train_size=30, val_per_group=1, test_per_group=2, anti_per_group=1
    )
    base = ComposeConfig(
        classes=SMALL_CLASSES,
        background_names=SMALL_BACKGROUNDS,
        recipe=recipe,
        shard_size=8,
        placement=Placement(scale=(0.3, 0.5)),
    )
    fields = {**base.__dict__, **overrides}
    return ComposeConfig(**fields)


def tree_digest(root: Path, exclude_suffixes: tuple[str, ...] = (".done",)) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(exclude_suffixes)
    }


@pytest.fixture(scope="session")
def world_folders(tmp_path_factory) -> Path:
    """The world exported as ordinary folders (foregrounds/<class>, backgrounds/<label>)."""
    from dreamshift.world.export import export_world

    out = tmp_path_factory.mktemp("world_files")
    return export_world(out, per_class=4, per_background=2, fg_size=40, bg_size=64)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def guides(tmp_path_factory) -> Path:
    """12 composed guides: 2 classes x 2 backgrounds, train and test splits."""
    cfg = ComposeConfig(
        classes=("cat", "dog"),
        background_names=("grass", "snow"),
        recipe=ShiftRecipe(rho=1.0, train_size=8, val_per_group=0, test_per_group=1,
                           anti_per_group=0),
        placement=Placement(scale=(0.5, 0.5)),
    )  # fmt: skip
    out = tmp_path_factory.mktemp("guides") / "paste"
    compose(cfg, out, progress=False)
    return out


# -- what travels names no folder of this machine ---------------------------------------------

SHARED_TEXT = (
    "README.md", "dreamshift-config.yaml", "dreamshift-source-config.yaml", "tables.md",
    "results.jsonl", "probes.jsonl", "sweep.json", "audit.jsonl",
)  # fmt: skip


def shared_artefacts(root: Path) -> list[Path]:
    """The files of ``root`` that are meant to leave the machine: exports (their card, configs,
    metadata and rows), reports and their tables, run records (results, probes, sweeps, a
    learn run's config)."""
    exports = {p.parent for p in root.rglob("dreamshift-config.yaml")}
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        in_export = any(e in path.parents for e in exports)
        learn_run = (
            path.name == "config.json" and (path.parent / "dreamshift-folder.json").is_file()
        )
        if (path.name in SHARED_TEXT or path.suffix == ".html" or learn_run
                or (in_export and path.suffix in (".parquet", ".tar", ".jsonl"))):  # fmt: skip
            found.append(path)
    return found


def machine_paths_in(path: Path, needles: tuple[str, ...]) -> bool:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        text = [str(v) for col in table.columns if pa.types.is_string(col.type)
                for v in col.to_pylist() if v]  # fmt: skip
        return any(n in t for t in text for n in needles)
    if path.suffix == ".tar":
        import tarfile

        with tarfile.open(path) as tar:
            data = b"".join(tar.extractfile(m).read() for m in tar if m.name.endswith(".json"))
        return any(n.encode() in data for n in needles)
    data = path.read_bytes()
    return any(n.encode() in data for n in needles)


@pytest.fixture(scope="session", autouse=True)
def shared_artefacts_name_no_folder_of_this_machine(tmp_path_factory):
    """After the whole suite: every export, report and run record any test wrote names its
    inputs by relative paths and hashes, never by the test's temporary folder."""
    yield
    base = tmp_path_factory.getbasetemp()
    needles = tuple({str(base), str(base.resolve())})
    leaks = [p for p in shared_artefacts(base) if machine_paths_in(p, needles)]
    if leaks:
        listed = "\n  ".join(str(p.relative_to(base)) for p in leaks[:30])
        pytest.fail(f"{len(leaks)} shared artefacts name {base}:\n  {listed}", pytrace=False)
