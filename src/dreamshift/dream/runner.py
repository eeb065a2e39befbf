"""``dreamshift dream``: turn a composed dataset of guides into a dreamed one.

D3S (Kattakinda et al. 2022, Sec. 3) feeds each guide, a foreground pasted on a background
template, to Stable Diffusion's img2img with a prompt naming the class and the background;
ImageNet-G (Bansal & Grover 2023) dreams from prompts alone (txt2img). ``paste`` copies the
guides unchanged: the no-diffusion baseline.

A run is planned in full before any image is made (prompt, seed and guide of every sample),
then executed shard by shard by the shard engine like ``compose``: a shard is durable once its
``.done`` marker exists and a killed run continues from the unfinished shards. A sample whose
guide is bad (unreadable, changed) is recorded as failed while the run goes on;
``retry_failed`` redoes only those. Any other error stops the run with its traceback and the
rerun after a fix continues it. Each row holds everything needed to remake its image
(:func:`regenerate`).

Pixels do not depend on batch size, worker count or resume point at a fixed thread count
(``--threads``). Left unset, the thread count follows the worker count (cores / workers), so
``--workers`` alone may move pixels by one level; the count is recorded, and a resumed run
keeps it.

>>> import tempfile
>>> from dreamshift.compose.config import ComposeConfig, ShiftRecipe
>>> from dreamshift.compose.runner import compose
>>> from dreamshift.dream.config import DreamConfig
>>> tmp = tempfile.mkdtemp()
>>> recipe = ShiftRecipe(train_size=0, val_per_group=0, test_per_group=1, anti_per_group=0)
>>> guides = compose(ComposeConfig(classes=("zebra",), background_names=("snow", "grass"),
...                                recipe=recipe), f"{tmp}/paste", progress=False)
>>> cfg = DreamConfig(source=f"{tmp}/paste", model="tiny-dream", steps=4, strength=0.5)
>>> result = dream(cfg, f"{tmp}/dream", progress=False)
>>> result.num_samples, result.num_failed
(2, 0)
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import dreamshift
from dreamshift.data import dataset as ds
from dreamshift.data.images import (
    check_size,
    encode_png,
    load_image,
    sha256_bytes,
    sha256_file,
)
from dreamshift.data.masks import MASK_CARRYING_MODES, dilate, erode, read_mask, restore
from dreamshift.data.schema import SplitCounts
from dreamshift.dream.config import GUIDED_MODES, MASKED_MODES, DreamConfig
from dreamshift.dream.prompts import Recipe, load_recipe
from dreamshift.dream.quality import quality_flag
from dreamshift.engine.executors import Executor, LocalPool
from dreamshift.engine.output import claim_output
from dreamshift.engine.shards import (
    ShardWork,
    ShardWriter,
    Tick,
    library_versions,
    run_stage,
    shard_list,
)
from dreamshift.errors import BadInputError, DreamshiftError
from dreamshift.models.diffusion import (
    Dreamer,
    Request,
    hash_model,
    locate_model,
    resolve_adapter,
    resolve_runtime,
    resolve_scheduler,
)
from dreamshift.seeding import derive_seed, rng_for

# columns a dreamed row takes over from its guide: labels, and where the layout stays the layout
_LABELS = ("split", "fg_class", "bg_class", "aligned")
_COMPOSITION = (
    "fg_source", "mask_source", "bg_source", "box_x", "box_y", "box_w", "box_h", "scale",
    "appearance", "coat_class",
)  # fmt: skip
_LIBRARIES = ("torch", "diffusers", "transformers", "numpy", "pillow", "safetensors")


@dataclass(frozen=True)
class DreamSpec:
    """One planned sample: its identity, seed, prompt and the source row it is made from."""

    index: int
    sample_id: str
    seed: int
    prompt: str | None
    negative_prompt: str | None
    template: str | None
    guide: ds.SampleRow


@dataclass(frozen=True)
class DreamPlan:
    """A resolved run: every setting spelled out, and every sample planned."""

    cfg: DreamConfig
    resolved: dict[str, Any]  # model path/hash, scheduler, runtime, size, recipe, hashes
    specs: list[DreamSpec]

    @property
    def source(self) -> Path:
        return Path(self.cfg.source)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.resolved["width"]), int(self.resolved["height"])


@dataclass(frozen=True)
class DreamResult:
    root: Path
    num_samples: int
    num_failed: int
    num_flagged: int
    shards_run: int
    seconds: float


def _source_rows(cfg: DreamConfig) -> tuple[ds.DatasetMeta, list[ds.SampleRow]]:
    meta = ds.DatasetMeta.read(cfg.source)
    if not meta.complete:
        raise DreamshiftError(
            f"source {cfg.source} is an unfinished dataset: run the command that made it again"
        )
    rows = [r for r in ds.read_rows(cfg.source) if r.status == ds.OK]
    if ds.SPURIOUS in cfg.splits:
        raise DreamshiftError(
            f"split 'spurious' of {cfg.source} shows backgrounds without an object: there is "
            "nothing to dream (the audit reads it from the source dataset)"
        )
    if meta.stage == "plan":  # labels without images (dreamshift backgrounds)
        if cfg.mode != "txt2img":
            raise DreamshiftError(f"{cfg.source} is a label plan: it has no images to {cfg.mode}")
    else:
        rows = [r for r in rows if r.fg_class is not None]  # backgrounds alone: not dreamed
    present = list(dict.fromkeys(r.split for r in rows))
    unknown = [s for s in cfg.splits if s not in present]
    if unknown:
        raise DreamshiftError(f"source {cfg.source} has no split {unknown}: it has {present}")
    if cfg.splits:
        rows = [r for r in rows if r.split in cfg.splits]
    else:  # a cue conflict is dreamed only on request: its prompt names the shape's class, and
        # the dream tends to repaint the coat to match, so the conflict (and shape bias) is lost;
        # the size and position bins (copies of the test split, 1 + bins times its cost) too
        rows = [r for r in rows if r.split not in (ds.CONFLICT, ds.SIZE, ds.POSITION)]
    if not rows:
        raise DreamshiftError(f"source {cfg.source} has no usable (status ok) samples")
    if cfg.mode in MASKED_MODES:
        _check_masks(cfg, rows)
    return meta, rows


def _check_masks(cfg: DreamConfig, rows: list[ds.SampleRow]) -> None:
    """Mode inpaint, harmonize and remove need every guide's object mask."""
    lacking = [r.sample_id for r in rows if r.mask_path is None]
    if lacking:
        raise DreamshiftError(
            f"mode {cfg.mode} keeps pixels by the guides' object masks, and {len(lacking)} "
            f"guide(s) of {cfg.source} have none (e.g. {lacking[0]}): it was composed before "
            f"dreamshift wrote masks. Compose it again, with the same settings, into a new "
            f"folder: dreamshift compose --config {cfg.source}/dataset.json --out NEW"
        )


def _output_size(cfg: DreamConfig, rows: list[ds.SampleRow]) -> tuple[int, int]:
    sizes = {(r.width, r.height) for r in rows}
    if cfg.width and cfg.height:
        return cfg.width, cfg.height
    if len(sizes) > 1:
        raise DreamshiftError(
            f"source {cfg.source} holds images of several sizes {sorted(sizes)}: give --width "
            "and --height"
        )
    w, h = sizes.pop()
    assert w is not None and h is not None  # status ok: the image exists
    w, h = cfg.width or w, cfg.height or h
    if cfg.mode != "paste" and (w % 8 or h % 8):
        raise DreamshiftError(
            f"the source images are {w}x{h}; Stable Diffusion needs multiples of 8: give "
            "--width and --height"
        )
    return w, h


def plan_dream(
    cfg: DreamConfig,
    workers: int = 1,
    batch_size: int = 1,
    prior_runtime: dict[str, Any] | None = None,
) -> DreamPlan:
    """Check and resolve ``cfg`` and plan every sample. Fails before any image is made on a
    bad source, recipe, model or setting. ``prior_runtime``: the runtime an unfinished run of
    this dataset recorded; its thread count is kept unless ``cfg.threads`` is given."""
    cfg.check()
    cfg = replace(cfg, source=str(Path(cfg.source).resolve()))
    src_meta, rows = _source_rows(cfg)
    width, height = _output_size(cfg, rows)
    guides = hashlib.sha256("".join(f"{r.sample_id}:{r.sha256}\n" for r in rows).encode())
    resolved: dict[str, Any] = {
        "source_content_hash": src_meta.content_hash,
        "guides_sha256": guides.hexdigest(),  # which guides, with which bytes
        "width": width,
        "height": height,
    }
    # what decides the images: it names the samples and seeds them. Not the device, threads or
    # batch size: they move pixels by float rounding only, and are checked on resume instead.
    content: dict[str, Any] = {
        "mode": cfg.mode, "seed": cfg.seed, "splits": list(cfg.splits),
        "guides": resolved["guides_sha256"], "width": width, "height": height,
    }  # fmt: skip
    recipe = None
    if cfg.mode != "paste":
        recipe = _resolve_generation(cfg, rows, resolved, content, workers, batch_size,
                                     prior_runtime)  # fmt: skip
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    resolved["content_hash"] = digest[:12]
    return DreamPlan(cfg, resolved, _plan_specs(cfg, rows, resolved, recipe))


def _resolve_generation(
    cfg: DreamConfig,
    rows: list[ds.SampleRow],
    resolved: dict[str, Any],
    content: dict[str, Any],
    workers: int,
    batch_size: int,
    prior_runtime: dict[str, Any] | None,
) -> Recipe:
    """Resolve what a generating run uses (recipe, model, scheduler, adapters, runtime) into
    ``resolved``, and what of it decides the images into ``content``; returns the recipe."""
    recipe = load_recipe(cfg.prompts)
    recipe.check_labels(
        sorted({r.fg_class for r in rows if r.fg_class is not None}),
        sorted({r.bg_class for r in rows if r.bg_class is not None}),
    )
    ref = locate_model(cfg.model)
    scheduler, scheduler_config = resolve_scheduler(ref.path, cfg.scheduler)
    threads = cfg.threads or (prior_runtime or {}).get("threads")
    adapters = [resolve_adapter(a) for a in cfg.adapters]
    _check_adapters_cover(cfg.adapters, adapters, rows)
    if adapters:
        resolved["adapters"] = adapters
        content["adapters"] = [(a["sha256"], a["scale"]) for a in adapters]
    resolved.update(
        model_path=str(ref.path),
        model_revision=ref.revision,
        model_sha256=hash_model(ref.path),
        scheduler=scheduler,
        scheduler_config=scheduler_config,
        runtime=resolve_runtime(cfg.device, cfg.dtype, threads, workers)
        | {"batch_invariant": cfg.batch_invariant},
        recipe={"name": recipe.name, "hash": recipe.content_hash()},  # config has its file
        negative_prompt=(
            cfg.negative_prompt if cfg.negative_prompt is not None else recipe.negative_prompt
        ),
    )
    if not cfg.batch_invariant:  # then the batch composition decides the last bits
        resolved["batch_size"] = batch_size
    content.update(
        model=resolved["model_sha256"], scheduler=scheduler,
        scheduler_config=scheduler_config, steps=cfg.steps,
        guidance_scale=cfg.guidance_scale, recipe=recipe.content_hash(),
        negative_prompt=resolved["negative_prompt"],
        strength=cfg.strength if cfg.mode in GUIDED_MODES else None,
    )  # fmt: skip
    if cfg.mode in MASKED_MODES:  # (absent for the other modes: their sample ids stay)
        content.update(feather=cfg.feather, grow=cfg.grow_px)
        if cfg.mode == "inpaint":
            content["class_context"] = cfg.class_context
    return recipe


def _check_adapters_cover(
    specs: tuple[str, ...], adapters: list[dict[str, Any]], rows: list[ds.SampleRow]
) -> None:
    """A per-class adapter must have an adapter for every class the run dreams."""
    for spec, adapter in zip(specs, adapters, strict=True):
        has = set(adapter["classes"] or [])
        lacking = sorted({r.fg_class or ds.NO_CLASS for r in rows} - has)
        if adapter["classes"] is not None and lacking:
            raise DreamshiftError(
                f"--adapter {spec} has no class adapter for {lacking}: tune those classes "
                "too, or dream only the classes it has"
            )


def _plan_specs(
    cfg: DreamConfig, rows: list[ds.SampleRow], resolved: dict[str, Any], recipe: Recipe | None
) -> list[DreamSpec]:
    """Every sample: its id (the run's content hash and index), seed, prompt and guide."""
    specs = []
    for index, row in enumerate(rows):
        sample_id = f"{resolved['content_hash']}-{index:07d}"
        seed = derive_seed(cfg.seed, sample_id)
        prompt = template = negative = None
        if recipe is not None:
            t = int(rng_for(seed, "template").integers(len(recipe.templates)))
            template = recipe.templates[t]
            prompt = recipe.render(t, row.fg_class, row.bg_class)
            if cfg.mode == "remove" or (cfg.mode == "inpaint" and not cfg.class_context):
                template = recipe.background_template(row.bg_class)
                prompt = recipe.render_background(row.bg_class)
            negative = resolved["negative_prompt"]
        specs.append(DreamSpec(index, sample_id, seed, prompt, negative, template, row))
    return specs


def _metadata(plan: DreamPlan, src_meta: ds.DatasetMeta, num_shards: int) -> ds.DatasetMeta:
    groups: dict[str, dict[str, dict[str, int]]] = {}
    for s in plan.specs:
        g = _labels(plan.cfg.mode, s.guide)
        fg, bg = g["fg_class"] or ds.NO_CLASS, g["bg_class"] or ds.NO_CLASS  # none: no object
        by_bg = groups.setdefault(g["split"], {}).setdefault(fg, {})
        by_bg[bg] = by_bg.get(bg, 0) + 1
    return ds.DatasetMeta(
        stage="dream",
        dreamshift_version=dreamshift.__version__,
        config=plan.cfg.to_dict() | {"resolved": plan.resolved},
        content_hash=plan.resolved["content_hash"],
        classes=src_meta.classes,
        backgrounds=src_meta.backgrounds,
        label_maps=src_meta.label_maps,
        assignment=src_meta.assignment,
        rho=src_meta.recipe.get("rho"),
        splits={s: SplitCounts.of(g) for s, g in groups.items()},
        num_samples=len(plan.specs),
        num_shards=num_shards,
        versions=library_versions(_LIBRARIES),
    )


def make_dreamer(plan: DreamPlan) -> Dreamer | None:
    """The loaded pipeline of a plan (None for paste)."""
    if plan.cfg.mode == "paste":
        return None
    r = plan.resolved
    return Dreamer(
        Path(r["model_path"]),
        plan.cfg.mode,
        r["scheduler"],
        r["scheduler_config"],
        r["runtime"],
        batch_invariant=plan.cfg.batch_invariant,
        compile=plan.cfg.compile,
        adapters=r.get("adapters"),
    )


def _labels(mode: str, guide: ds.SampleRow) -> dict[str, Any]:
    """The labels a dream of ``guide`` has: the guide's, but a removed object leaves its
    background alone (split spurious, like compose's backgrounds without an object)."""
    if mode == "remove":
        return {"split": ds.SPURIOUS, "fg_class": None, "bg_class": guide.bg_class,
                "aligned": None}  # fmt: skip
    return {k: getattr(guide, k) for k in _LABELS}


def base_row(plan: DreamPlan, spec: DreamSpec, versions: str) -> ds.SampleRow:
    """A sample's manifest row before its image exists: identity, labels, provenance."""
    cfg, r, g = plan.cfg, plan.resolved, spec.guide
    layout: tuple[str, ...] = _COMPOSITION if cfg.mode != "txt2img" else ()
    if cfg.mode == "remove":
        layout = ("bg_source",)
    row = ds.SampleRow(
        **_labels(cfg.mode, g),
        **{k: getattr(g, k) for k in layout},
        sample_id=spec.sample_id,
        index=spec.index,
        pipeline=cfg.mode,
        seed=spec.seed,
        guide_sample_id=g.sample_id,
        guide_sha256=g.sha256,
        versions=versions,
    )
    if cfg.mode == "paste":
        return row
    adapters = None
    if r.get("adapters"):  # what applies to this sample: path, sha256, scale
        adapters = json.dumps(
            [{"path": a["path"], "scale": a["scale"],
              "sha256": a["sha256"].get("") or a["sha256"].get(g.fg_class)}
             for a in r["adapters"] if a["classes"] is None or g.fg_class in a["classes"]],
            sort_keys=True,
        )  # fmt: skip
    return row.replace(
        model_id=cfg.model,
        model_sha256=r["model_sha256"],
        scheduler=r["scheduler"],
        scheduler_config=json.dumps(r["scheduler_config"], sort_keys=True),
        steps=cfg.steps,
        strength=cfg.strength if cfg.mode in GUIDED_MODES else None,
        feather=cfg.feather if cfg.mode in MASKED_MODES else None,
        grow=cfg.grow_px if cfg.mode in MASKED_MODES else None,
        guidance_scale=cfg.guidance_scale,
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        prompt_template=spec.template,
        runtime=json.dumps(r["runtime"], sort_keys=True),
        adapters=adapters,
    )


def read_guide(source: Path, guide: ds.SampleRow) -> bytes:
    """The guide's file bytes, checked against the sha256 its manifest recorded."""
    path = source / str(guide.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read guide {path}: {exc.strerror or exc}") from exc
    if sha256_bytes(data) != guide.sha256:
        raise BadInputError(
            f"guide {path} changed since it was composed (sha256 differs from its manifest "
            "row): restore it or compose the source again"
        )
    return data


def guide_image(source: Path, guide: ds.SampleRow, size: tuple[int, int]) -> Image.Image:
    """The guide as an RGB image at the output size."""
    data = read_guide(source, guide)
    path = source / str(guide.path)
    try:
        opened = Image.open(io.BytesIO(data))
        check_size(opened, path)
        img = opened.convert("RGB")
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(f"guide {path} cannot be decoded ({exc})") from exc
    return img if img.size == size else img.resize(size, Image.Resampling.BICUBIC)


def guide_mask(source: Path, guide: ds.SampleRow, size: tuple[int, int]) -> np.ndarray:
    """The guide's object mask at the output size, checked against its recorded sha256."""
    return read_mask(source / str(guide.mask_path), guide.mask_sha256, size,
                     "restore it or compose the source again")  # fmt: skip


def kept_region(mode: str, mask: np.ndarray, grow: int) -> np.ndarray:
    """Where a masked mode keeps the guide's pixels: the object less a rim of ``grow``
    pixels (inpaint, harmonize), or everything but the object grown by ``grow`` (remove)."""
    return ~dilate(mask, grow) if mode == "remove" else erode(mask, grow)


def _finished(row: ds.SampleRow, pixels: np.ndarray, writer: ShardWriter) -> ds.SampleRow:
    """``row`` with its image written, flagged if the image is unusable."""
    flag = quality_flag(pixels)
    return row.replace(
        status=ds.FLAGGED if flag else ds.OK,
        flag=flag,
        error=f"{flag} image" if flag else None,
        **writer.write_png(row.sample_id, Image.fromarray(pixels)),
    )


def _failed(row: ds.SampleRow, exc: BadInputError) -> ds.SampleRow:
    return row.replace(status=ds.FAILED, error=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class ShardJob:
    """What every shard needs, made once per process: the plan and its loaded pipeline."""

    plan: DreamPlan
    root: Path
    batch_size: int
    dreamer: Dreamer | None

    @classmethod
    def load(cls, plan: DreamPlan, root: Path, batch_size: int) -> ShardJob:
        return cls(plan, root, batch_size, make_dreamer(plan))


def run_shard(job: ShardJob, shard: int, work: ShardWork[DreamSpec], tick: Tick) -> dict[str, Any]:
    """Make ``work``'s images and make the shard durable. A sample with a bad input (guide)
    is recorded as failed; any other error stops the run and leaves the shard unfinished."""
    plan, writer = job.plan, ShardWriter(job.root, shard)
    versions = json.dumps(library_versions(_LIBRARIES), sort_keys=True)
    rows: list[ds.SampleRow] = []
    for b in range(0, len(work.specs), job.batch_size):
        batch = work.specs[b : b + job.batch_size]
        rows += _make_batch(job, [base_row(plan, spec, versions) for spec in batch], batch,
                            writer)  # fmt: skip
        tick(len(batch))
    all_rows = [*work.keep, *rows]
    seconds = time.perf_counter() - writer.start
    return writer.close(
        rows,
        work.keep,
        made=len(rows),
        ok=sum(r.status == ds.OK for r in all_rows),
        flagged=sum(r.status == ds.FLAGGED for r in all_rows),
        failed_now=sum(r.status == ds.FAILED for r in rows),
        images_per_second=round(len(rows) / seconds, 3) if seconds > 0 else None,
    )


def _make_batch(
    job: ShardJob, rows: list[ds.SampleRow], specs: list[DreamSpec], writer: ShardWriter
) -> list[ds.SampleRow]:
    """One batch's rows, made: guides and masks read (a bad one fails its sample), then the
    requests generated together, the kept pixels restored, and the images written."""
    plan = job.plan
    mode = plan.cfg.mode
    todo: list[tuple[int, Request, np.ndarray | None]] = []  # position in rows, request, keep
    for i, spec in enumerate(specs):
        try:
            guide = mask = None
            if mode != "txt2img":
                guide = guide_image(plan.source, spec.guide, plan.size)
            if mode in MASKED_MODES or (mode in MASK_CARRYING_MODES and spec.guide.mask_path):
                mask = guide_mask(plan.source, spec.guide, plan.size)
        except BadInputError as exc:
            rows[i] = _failed(rows[i], exc)
            continue
        if mask is not None and mode in MASK_CARRYING_MODES:
            rows[i] = rows[i].replace(**writer.write_mask(spec.sample_id, mask))
        if mode == "paste":
            assert guide is not None
            rows[i] = _finished(rows[i], np.asarray(guide), writer)
            continue
        assert spec.prompt is not None and spec.negative_prompt is not None
        keep = kept_region(mode, mask, plan.cfg.grow_px) if mask is not None else None
        todo.append((i, _request(spec.prompt, spec.negative_prompt, spec.seed, guide, keep,
                                 spec.guide.fg_class, mode), keep))  # fmt: skip
    if todo:
        assert job.dreamer is not None
        cfg, (w, h) = plan.cfg, plan.size  # inputs are read and checked: no bad input here
        images = job.dreamer.generate(
            [request for _, request, _ in todo], cfg.steps, cfg.strength, cfg.guidance_scale, w, h
        )
        for (i, request, keep), pixels in zip(todo, images, strict=True):
            if keep is not None:  # a masked mode
                pixels = restore(pixels, np.asarray(request.guide), keep, cfg.feather)
            rows[i] = _finished(rows[i], pixels, writer)
    return rows


def _request(
    prompt: str,
    negative: str,
    seed: int,
    guide: Image.Image | None,
    keep: np.ndarray | None,
    fg_class: str | None,
    mode: str,
) -> Request:
    """What the pipeline makes for one sample; inpaint and remove redraw all but ``keep``."""
    redraw = None
    if mode in ("inpaint", "remove"):
        assert keep is not None
        redraw = Image.fromarray(np.where(keep, 0, 255).astype(np.uint8))
    return Request(prompt, negative, seed, guide, fg_class or "", redraw)


def dream(
    cfg: DreamConfig,
    out: str | Path,
    workers: int = 1,
    batch_size: int = 1,
    retry_failed: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
) -> DreamResult:
    """Dream the dataset of ``cfg`` into ``out``; continue an unfinished run of the same
    config. ``retry_failed`` also redoes the samples that failed. ``workers`` > 1 runs shards
    in that many processes, each loading the model once; ``executor`` runs them elsewhere.

    Pixels are identical for any worker count, batch size and executor at a fixed
    ``cfg.threads``. Left unset, threads = cores / workers on a CPU, and a different thread
    count may move pixels by one level (float rounding): give ``threads`` to compare runs."""
    start = time.perf_counter()
    if batch_size < 1 or workers < 1:
        raise DreamshiftError("--batch-size and --workers must be >= 1")
    cfg.check()  # a wrong setting stops the run before anything is written
    root = Path(out)
    layout = ds.DatasetLayout(root)
    with claim_output(root):  # before the model is hashed or loaded
        prior = None
        if layout.json_path.is_file():  # keep an unfinished run's thread count
            prior = ds.DatasetMeta.read(root).runtime
        plan = plan_dream(cfg, workers, batch_size, prior)
        if root.resolve() == plan.source:
            raise DreamshiftError(f"--out {root} is the source dataset: choose another folder")
        shards = shard_list(plan.specs, plan.cfg.shard_size)
        on_cpu = plan.resolved.get("runtime", {}).get("device", "cpu") == "cpu"
        outcome = run_stage(
            root,
            _metadata(plan, ds.DatasetMeta.read(plan.source), len(shards)),
            shards,
            run_shard,
            functools.partial(ShardJob.load, plan, root, batch_size),
            executor or LocalPool(workers, spawn=not on_cpu),  # CUDA needs spawned workers
            desc=f"dream {plan.cfg.mode}",
            counts={"num_failed": ds.FAILED, "num_flagged": ds.FLAGGED},
            retry_failed=retry_failed,
            progress=progress,
            bytes_per_sample=3 * plan.size[0] * plan.size[1],  # at most its pixels
        )
    return DreamResult(
        root, len(plan.specs), outcome.status[ds.FAILED], outcome.status[ds.FLAGGED],
        outcome.shards_run, time.perf_counter() - start,
    )  # fmt: skip


@dataclass(frozen=True)
class Regenerated:
    sample_id: str
    match: bool | None  # None: the sample failed in the run, there is nothing to compare
    detail: str


def _plan_of(root: Path) -> DreamPlan:
    """The plan a dream dataset recorded (settings only; its samples are the manifest rows)."""
    meta = ds.DatasetMeta.read(root)
    if meta.stage != "dream":
        raise DreamshiftError(f"{root} was made by `dreamshift {meta.stage}`, not dream")
    config = dict(meta.config)
    resolved = config.pop("resolved")
    return DreamPlan(DreamConfig.from_dict(config), resolved, [])


def regenerate(
    root: str | Path,
    sample_ids: list[str] | None = None,
    model: str | None = None,
    out_dir: str | Path | None = None,
) -> list[Regenerated]:
    """Remake samples from their manifest rows alone and compare them with the stored files
    (sha256 of the PNG). ``sample_ids`` None: every sample. ``model``: where the model lives
    now, if not where the run found it; it must hash to the recorded ``model_sha256``."""
    root = Path(root)
    plan = _plan_of(root)
    rows = ds.read_rows(root)
    by_id = {r.sample_id: r for r in rows}
    if sample_ids:
        unknown = [s for s in sample_ids if s not in by_id]
        if unknown:
            raise DreamshiftError(f"{root} has no samples {unknown[:5]}")
        rows = [by_id[s] for s in sample_ids]
    if not (plan.source / ds.DATASET_JSON).is_file():
        raise DreamshiftError(
            f"{root} was dreamed from {plan.source}, which is gone: regenerate reads its guides"
        )
    guides = {r.sample_id: r for r in ds.read_rows(plan.source)}
    dreamer = None
    if plan.cfg.mode != "paste":
        plan = _with_recorded_model(plan, model)
        dreamer = make_dreamer(plan)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results = []
    for row in rows:
        sid = row.sample_id
        if row.status == ds.FAILED:
            results.append(Regenerated(sid, None, f"failed in the run: {row.error}"))
            continue
        guide = guides.get(str(row.guide_sample_id))
        if guide is None:
            results.append(Regenerated(sid, False, f"its guide is not in {plan.source}"))
            continue
        try:
            pixels = _remake(plan, dreamer, row, guide)
        except BadInputError as exc:
            results.append(Regenerated(sid, False, str(exc)))
            continue
        data = encode_png(Image.fromarray(pixels))
        if out_dir is not None:
            (Path(out_dir) / f"{sid}.png").write_bytes(data)
        results.append(_compared(root, row, data, pixels))
    return results


def _with_recorded_model(plan: DreamPlan, model: str | None) -> DreamPlan:
    """``plan`` with the model found at ``model`` (or where the run found it), checked to be
    the one the run recorded, as are its LoRA files."""
    ref = locate_model(model or plan.resolved["model_path"])
    digest = hash_model(ref.path)
    if digest != plan.resolved["model_sha256"]:
        raise DreamshiftError(
            f"the model in {ref.path} is not the one this dataset was made with (sha256 "
            f"{digest[:12]}..., recorded {plan.resolved['model_sha256'][:12]}...)"
        )
    for adapter in plan.resolved.get("adapters", []):
        for cls, file in adapter["files"].items():
            if not Path(file).is_file() or sha256_file(Path(file)) != adapter["sha256"][cls]:
                raise DreamshiftError(
                    f"the LoRA {file} this dataset was made with is gone or changed "
                    f"(recorded sha256 {adapter['sha256'][cls][:12]}...)"
                )
    return replace(plan, resolved=plan.resolved | {"model_path": str(ref.path)})


def _remake(
    plan: DreamPlan, dreamer: Dreamer | None, row: ds.SampleRow, guide: ds.SampleRow
) -> np.ndarray:
    """The pixels of ``row`` made again from its guide and recorded settings."""
    assert row.width is not None and row.height is not None  # not failed: it has an image
    size, mode = (row.width, row.height), str(row.pipeline)
    if dreamer is None:
        return np.asarray(guide_image(plan.source, guide, size))
    img = guide_image(plan.source, guide, size) if mode in GUIDED_MODES else None
    keep = None
    if mode in MASKED_MODES:
        keep = kept_region(mode, guide_mask(plan.source, guide, size), int(row.grow or 0))
    req = _request(str(row.prompt), str(row.negative_prompt), int(row.seed or 0), img, keep,
                   guide.fg_class, mode)  # fmt: skip
    pixels = dreamer.generate(
        [req], int(row.steps or 0), row.strength or 0.0, float(row.guidance_scale or 0), *size
    )[0]
    if keep is not None:
        assert img is not None
        pixels = restore(pixels, np.asarray(img), keep, int(row.feather or 0))
    return pixels


def _compared(root: Path, row: ds.SampleRow, data: bytes, pixels: np.ndarray) -> Regenerated:
    """How the remade PNG ``data`` compares with the row's sha256 and its stored file."""
    sid, stored_file = row.sample_id, root / str(row.path)
    stored_ok = stored_file.is_file() and sha256_bytes(stored_file.read_bytes()) == row.sha256
    if sha256_bytes(data) == row.sha256 and stored_ok:
        return Regenerated(sid, True, "identical")
    if not stored_file.is_file():
        return Regenerated(sid, False, f"{stored_file} is missing")
    stored = np.asarray(load_image(stored_file, "RGB"), dtype=np.int16)
    diff = int(np.abs(stored - pixels.astype(np.int16)).max())
    what = "the remade image" if stored_ok else f"the file {stored_file} (changed since the run)"
    return Regenerated(sid, False, f"{what} differs: max pixel difference {diff}")
