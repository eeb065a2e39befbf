"""``dreamshift backgrounds``: background templates dreamed by txt2img, as D3S made its ten.

Each background label gets ``per_label`` images of the prompt ``"a photo of ${background_name}"``
(or your ``template``), one seed each. The labels go first into a *label plan*: a dataset
directory of rows with a background label and no image (``stage: plan``, beside the output as
``.<name>.labels``); ``dream`` then runs txt2img over it like over any source, so the output is
a dataset directory like any other (per-image seeds, provenance, resume, ``--executor ray``).
``compose --backgrounds DIR`` takes it as background templates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

import dreamshift
from dreamshift.data import dataset as ds
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import DreamResult, dream
from dreamshift.errors import DreamshiftError

PLAN_STAGE = "plan"
PLAN_SPLIT = "backgrounds"
TEMPLATE = "a photo of ${background_name}"


def plan_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.labels")


def write_label_plan(root: Path, labels: Sequence[str], per_label: int, size: int,
                     template: str) -> Path:  # fmt: skip
    """A dataset directory of ``per_label`` rows per label, with no images, and the recipe of
    ``template``. Written again only when it differs (same labels: the same sample ids)."""
    if per_label < 1 or not labels:
        raise DreamshiftError("give at least one --labels label and --per-label >= 1")
    if len(set(labels)) != len(labels):
        raise DreamshiftError(f"--labels lists a label twice: {list(labels)}")
    config = {"labels": list(labels), "per_label": per_label, "size": size}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    rows = []
    for i, (label, k) in enumerate((lb, k) for lb in labels for k in range(per_label)):
        # no image: the sha256 of "label:k" stands for one, naming the label's k-th template in
        # the dream's guides hash (and so its sample ids and seeds)
        rows.append(ds.SampleRow(
            sample_id=f"{digest}-{i:07d}", index=i, split=PLAN_SPLIT, status=ds.OK,
            sha256=hashlib.sha256(f"{label}:{k}".encode()).hexdigest(), width=size, height=size,
            bg_class=label,
        ))  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    ds.write_table_atomic(ds.manifest_table(rows), root / ds.MANIFEST)
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "backgrounds", "templates": [template]}))
    meta = ds.DatasetMeta(
        stage=PLAN_STAGE, dreamshift_version=dreamshift.__version__, config=config,
        content_hash=digest, backgrounds=tuple(labels),
        label_maps={"bg_class": {lb: i for i, lb in enumerate(labels)}},
        num_samples=len(rows), complete=True,
    )  # fmt: skip
    ds.write_meta(ds.DatasetLayout(root), meta)
    return recipe


def make_backgrounds(
    out: str | Path,
    labels: Sequence[str],
    per_label: int,
    model: str = "tiny-dream",
    template: str = TEMPLATE,
    size: int = 64,
    steps: int = 30,
    guidance_scale: float = 7.5,
    seed: int = 0,
    workers: int = 1,
    batch_size: int = 1,
    executor: Any = None,
    progress: bool = True,
    **dream_fields: Any,
) -> DreamResult:
    """Dream ``per_label`` background templates per label into ``out``."""
    out = Path(out)
    plan = plan_path(out)
    recipe = write_label_plan(plan, labels, per_label, size, template)
    cfg = DreamConfig(source=str(plan), mode="txt2img", model=model, prompts=str(recipe),
                      steps=steps, guidance_scale=guidance_scale, width=size, height=size,
                      splits=(PLAN_SPLIT,), seed=seed, **dream_fields)  # fmt: skip
    return dream(cfg, out, workers=workers, batch_size=batch_size, executor=executor,
                 progress=progress)  # fmt: skip
