"""The dataset card (``README.md``) of an ``hf`` export: the Hub's YAML header and a body that
says how the images were made, how to make them again, and what each split holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from dreamshift.data import dataset as ds

CONFIG_FILE = "dreamshift-config.yaml"
SOURCE_CONFIG_FILE = "dreamshift-source-config.yaml"


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


def _run_config(meta: ds.DatasetMeta) -> dict[str, Any]:
    """The run's config as ``--config`` reads it back (what it resolved at run time is no
    field)."""
    return {k: v for k, v in meta.config.items() if k != "resolved"}


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


def write_card(root: Path, out: Path, counts: dict[str, int]) -> Path:
    """``out/README.md`` and the run's config(s) beside it."""
    meta = ds.DatasetMeta.read(root)
    stage, config, resolved = meta.stage, _run_config(meta), meta.resolved
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=True))
    source = config.get("source")
    source_meta = None
    if source and (Path(source) / ds.DATASET_JSON).is_file():
        source_meta = ds.DatasetMeta.read(source)
        (out / SOURCE_CONFIG_FILE).write_text(yaml.safe_dump(_run_config(source_meta)))
    source_foregrounds = source_meta.config.get("foregrounds") if source_meta else None
    world = "world" in (config.get("foregrounds"), source_foregrounds)
    origin = [f"dreamshift:{Path(source).name}"] if source and source_meta else ["original"]
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
            "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in sorted(counts)],
        }],
    }  # fmt: skip
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
    commands = []
    if source_meta:
        commands.append(_command(source_meta.stage, SOURCE_CONFIG_FILE, None)
                        .replace("--out DIR", "--out SOURCE"))  # fmt: skip
    commands.append(_command(stage, CONFIG_FILE, "SOURCE" if source_meta else source))
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
        "`image`, `mask` (the object's mask: a 1-bit PNG of the image's size, white = the "
        "object; null for a background alone, an image whose object was redrawn, or a dataset "
        "made before masks), `label` (class index, -1 for a background alone), `background` "
        "(background index) and every column of dreamshift's manifest: `sample_id`, `split`, "
        "`fg_class`, `bg_class`, `aligned` (the class's usual background), the paste box, and "
        "for dreamed images the model, prompt, per-image seed and guide. Verification columns "
        "(`verified`, oracle scores, votes) are there when the dataset was verified.",
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
