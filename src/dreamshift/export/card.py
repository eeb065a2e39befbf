"""The dataset card (``README.md``) of an export, in every format: the Hub's YAML header, whose
``configs`` map each split to its files (so ``datasets.load_dataset(OUT)`` returns every split
under its own name, with the labels as ClassLabels), and a body that says how to load it, how
the images were made, how to make them again and what each split holds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dreamshift.data import dataset as ds
from dreamshift.portable import portable_config

CONFIG_FILE = "dreamshift-config.yaml"
SOURCE_CONFIG_FILE = "dreamshift-source-config.yaml"
COLUMNS = (
    "`image`, `mask` (the object's mask: a 1-bit PNG of the image's size, white = the "
    "object; null for a background alone, an image whose object was redrawn, or a dataset "
    "made before masks), `label` (class index, -1 for a background alone), `background` "
    "(background index) and every column of dreamshift's manifest: `sample_id`, `split`, "
    "`fg_class`, `bg_class`, `aligned` (the class's usual background), the paste box, and "
    "for dreamed images the model, prompt, per-image seed and guide. Verification columns "
    "(`verified`, oracle scores, votes) are there when the dataset was verified."
)


def size_category(n: int) -> str:
    """The Hub's size bucket of ``n`` examples.

    >>> size_category(200), size_category(12_000)
    ('n<1K', '10K<n<100K')
    """
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):  # fmt: skip
        if n < limit:
            return name
    return "n>10M"


def _run_config(meta: ds.DatasetMeta, base: Path) -> dict[str, Any]:
    """The run's config as ``--config`` reads it back (what it resolved at run time is no
    field), its paths relative to ``base``."""
    return portable_config({k: v for k, v in meta.config.items() if k != "resolved"}, base)


def _command(stage: str, config_file: str, source: str | None) -> str:
    if stage == "dream":
        return f"dreamshift dream {source or 'SOURCE'} --config {config_file} --out DIR"
    return f"dreamshift {stage} --config {config_file} --out DIR"


def _groups(root: Path, meta: ds.DatasetMeta) -> str:
    rows = [r for r in ds.read_manifest(root).to_pylist() if r["status"] == ds.OK]
    lines = []
    for split in sorted({r["split"] for r in rows}):
        counts = Counter((r["fg_class"], r["bg_class"]) for r in rows if r["split"] == split)
        backgrounds = [b for b in meta.backgrounds if any(k[1] == b for k in counts)]
        classes = [c for c in [*meta.classes, None] if any(k[0] == c for k in counts)]
        lines += [f"**{split}** ({sum(counts.values())} images)", "",
                  "| class | " + " | ".join(backgrounds) + " |",
                  "|---|" + "---|" * len(backgrounds)]  # fmt: skip
        for c in classes:
            cells = [str(counts.get((c, b), 0)) for b in backgrounds]
            lines.append(f"| {c or '(background alone)'} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def class_label(names: Sequence[str]) -> dict[str, Any]:
    """A ClassLabel in the card's YAML form of ``datasets`` features."""
    return {"class_label": {"names": {str(i): name for i, name in enumerate(names)}}}


def _data_files(fmt: str, splits: Sequence[str]) -> list[dict[str, str]]:
    pattern = {"hf": "data/{s}-*.parquet", "webdataset": "{s}-*.tar", "imagefolder": "{s}/**"}
    return [{"split": s, "path": pattern[fmt].format(s=s)} for s in sorted(splits)]


def _loading(fmt: str, name: str) -> list[str]:
    """How to read the export back, with the caveat of ``datasets``' cache."""
    first = {
        "hf": "One Parquet file per split under `data/`, images and masks inside.",
        "imagefolder": "One folder per split, `SPLIT/CLASS/FILE.png` with its mask "
        "`FILE.mask.png` beside it and the rows in `SPLIT/metadata.parquet`. Load it by the "
        'folder, as below: `load_dataset("imagefolder", data_dir=...)` ignores this card and '
        "keeps only splits named train, validation and test (val becomes validation), with "
        "`label` as a plain integer.",
        "webdataset": "Tar shards `SPLIT-00000.tar` of `KEY.png`, `KEY.mask.png` (where the "
        "image has a mask) and `KEY.json` (the row).",
    }[fmt]
    lines = [
        first,
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{name}")  # every split, by its name',
    ]
    if fmt == "webdataset":
        lines += ["", "import webdataset as wds  # or stream it with webdataset itself",
                  f'test = wds.WebDataset("{name}/test-00000.tar").decode("pil")']  # fmt: skip
    lines += [
        "```",
        "",
        "`datasets` caches what it loads from a local folder by the folder's path: after "
        "exporting again into the same folder, load it with "
        '`download_mode="force_redownload"` (or a fresh `cache_dir`) to read the new rows.',
    ]
    return lines


def _made(
    meta: ds.DatasetMeta,
    config: dict[str, Any],
    source: str | None,
    source_meta: ds.DatasetMeta | None,
) -> list[str]:
    """The card's sentences on how the images were made."""
    stage, resolved = meta.stage, meta.resolved
    made = [f"Made by `dreamshift {stage}` (dreamshift {meta.dreamshift_version}, "
            f"content hash `{meta.content_hash}`)."]  # fmt: skip
    if stage == "dream":
        made.append(
            f"Generator `{config.get('model')}` (sha256 `{resolved.get('model_sha256')}`), "
            f"{config.get('mode')}, {resolved.get('scheduler')} {config.get('steps')} steps, "
            f"strength {config.get('strength')}, guidance scale {config.get('guidance_scale')}, "
            f"prompt recipe `{config.get('prompts')}`, run seed {config.get('seed')}; each image "
            "has its own seed, prompt and guide in its row. The guides come from the source "
            f"dataset `{Path(source).name if source else '?'}` (content hash "
            f"`{source_meta.content_hash if source_meta else None}`)."
        )
    else:
        made.append(
            f"Foregrounds `{config.get('foregrounds')}` pasted on backgrounds "
            f"`{config.get('backgrounds')}` ({config.get('render')} render), seed "
            f"{config.get('seed')}."
        )
    return made


def _header(
    root: Path,
    stage: str,
    counts: dict[str, int],
    fmt: str,
    features: list[dict[str, Any]] | None,
    world: bool,
    origin_name: str | None,
) -> dict[str, Any]:
    """The card's YAML header: the Hub's metadata and the configs that map splits to files."""
    origin = [f"dreamshift:{origin_name}"] if origin_name else ["original"]
    kind = "synthetic" if stage == "dream" else "composed"
    header = {
        "license": "mit" if world else "other",
        "pretty_name": root.name,
        "task_categories": ["image-classification"],
        "size_categories": [size_category(sum(counts.values()))],
        "annotations_creators": ["machine-generated"],
        "source_datasets": origin,
        "tags": ["dreamshift", "distribution-shift", kind],
        "configs": [{
            "config_name": "default",
            "data_files": _data_files(fmt, list(counts)),
            **({"features": features} if features else {}),
        }],
    }  # fmt: skip
    return header


def write_card(
    root: Path,
    out: Path,
    counts: dict[str, int],
    fmt: str = "hf",
    features: list[dict[str, Any]] | None = None,
    final_name: str | None = None,
) -> Path:
    """``out/README.md`` and the run's config(s) beside it. ``features``: the ``datasets``
    features of every column, in the card's YAML form, where the files do not state them;
    ``final_name``: the folder's name once renamed (the card is written before)."""
    meta = ds.DatasetMeta.read(root)
    out_name = final_name or out.name
    base = root.resolve().parent  # paths in the configs: relative to the dataset's folder
    stage, config = meta.stage, _run_config(meta, base)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=True))
    source = meta.config.get("source")
    source_meta = None
    if source and (Path(source) / ds.DATASET_JSON).is_file():
        source_meta = ds.DatasetMeta.read(source)
        source_config = _run_config(source_meta, Path(source).resolve().parent)
        (out / SOURCE_CONFIG_FILE).write_text(yaml.safe_dump(source_config))
    source_foregrounds = source_meta.config.get("foregrounds") if source_meta else None
    world = "world" in (config.get("foregrounds"), source_foregrounds)
    origin_name = Path(source).name if source and source_meta else None
    header = _header(root, stage, counts, fmt, features, world, origin_name)
    made = _made(meta, config, source, source_meta)
    commands = []
    if source_meta:
        commands.append(_command(source_meta.stage, SOURCE_CONFIG_FILE, None)
                        .replace("--out DIR", "--out SOURCE"))  # fmt: skip
    commands.append(_command(stage, CONFIG_FILE, "SOURCE" if source_meta else config.get("source")))
    licence = (
        "The foreground silhouettes are animal-mnist's (MIT); the backgrounds and the renderer are "
        "dreamshift's embedded world."
        if world
        else "Set the licence of your own foregrounds, backgrounds and generator here."
    )
    body = [
        f"# {root.name}",
        "",
        *made,
        "",
        "## Load it",
        "",
        *_loading(fmt, out_name),
        "",
        "## Make it again",
        "",
        "```bash",
        *commands,
        "```",
        "",
        f"`{CONFIG_FILE}` holds every setting of the run"
        + (f"; `{SOURCE_CONFIG_FILE}` those of its source." if source_meta else "."),
        "",
        "## Splits and groups (class x background)",
        "",
        _groups(root, meta),
        "## Columns",
        "",
        COLUMNS,
        "",
        "## Licence",
        "",
        licence,
        "",
    ]
    text = "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n".join(body)
    path = out / "README.md"
    path.write_text(text)
    return path
