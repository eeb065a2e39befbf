"""Composition: paste a foreground cut-out onto a background to make *guide* images.

Guides are what diffusion starts from in D3S (Kattakinda et al. 2022, Sec. 3: "we paste the
foreground object onto a background template"), and on their own they are the "paste" baseline
dataset, like ImageNet-9's Mixed-Rand (Xiao et al. 2021) or Waterbirds (Sagawa et al. 2020).

A run is planned in full from its config (which sample shows which class on which background,
with which per-sample seed), then executed shard by shard by the shard engine
(:mod:`dreamshift.engine.shards`). A shard is durable once its ``.done`` marker exists; a
killed run continues from the unfinished shards, and the result is byte-identical to an
uninterrupted run. A bad input file fails only the samples that use it; any other error stops
the run with its traceback, and the rerun after a fix continues it.

>>> import tempfile
>>> from dreamshift.compose.config import ComposeConfig, ShiftRecipe
>>> cfg = ComposeConfig(recipe=ShiftRecipe(train_size=20, val_per_group=0, test_per_group=1))
>>> result = compose(cfg, f"{tempfile.mkdtemp()}/paste", progress=False)
>>> result.num_samples, result.num_failed  # 20 train, 10 x 10 test, 10 x 9 x 2 anti
(300, 0)
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

import dreamshift
from dreamshift.compose.config import ComposeConfig, saved_config
from dreamshift.data import dataset as ds
from dreamshift.data.recombine import BackgroundSource
from dreamshift.data.schema import SplitCounts
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
from dreamshift.seeding import derive_seed, rng_for
from dreamshift.world.photo import render_photo
from dreamshift.world.sources import ForegroundSource, background_source, foreground_source

# which held-out silhouettes each split draws from: anti-correlated images are test images
FOREGROUND_SPLIT = {
    ds.TRAIN: ds.TRAIN, ds.VAL: ds.VAL, ds.TEST: ds.TEST, ds.ANTI: ds.TEST, ds.CONFLICT: ds.TEST,
}  # fmt: skip


@dataclass(frozen=True)
class SampleSpec:
    """One planned sample: everything that decides it, before any pixel is made."""

    index: int
    sample_id: str
    split: str
    fg_class: str | None  # None: a background alone (split "spurious")
    bg_class: str
    aligned: bool | None
    seed: int
    fg_source: str | None
    bg_source: str
    coat_class: str | None = None  # whose typical coat the animal wears; None: a random coat
    # splits size and position: a fixed scale, and the object's centre (x, y) as fractions of
    # the image side (moved inward where the object would leave the image); None: as drawn
    scale: float | None = None
    at: tuple[float, float] | None = None


@dataclass(frozen=True)
class ComposeResult:
    root: Path
    num_samples: int
    num_failed: int
    shards_run: int
    seconds: float


def _pick(available: tuple[str, ...], wanted: tuple[str, ...], what: str) -> tuple[str, ...]:
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise DreamshiftError(f"unknown {what} {unknown}: choose from {', '.join(available)}")
    return wanted or available


@dataclass(frozen=True)
class Resolved:
    """A config with every default filled in, and the sources it reads."""

    cfg: ComposeConfig
    fg: ForegroundSource
    bg: BackgroundSource


def resolve(cfg: ComposeConfig) -> Resolved:
    """Fill in every default that depends on the sources: absolute folders, the class and
    background lists, the full class -> background assignment. Checks names on the way."""
    cfg.check()
    fgs = cfg.foregrounds if cfg.foregrounds == "world" else str(Path(cfg.foregrounds).resolve())
    bgs = cfg.backgrounds if cfg.backgrounds == "world" else str(Path(cfg.backgrounds).resolve())
    cfg = replace(cfg, foregrounds=fgs, backgrounds=bgs)
    if cfg.foregrounds != "world":  # coats are the world's: the user's cut-outs keep theirs
        cfg = replace(cfg, coat="random")
    fg = foreground_source(cfg.foregrounds, cfg.share_foregrounds, cfg.paste, cfg.class_names,
                           cfg.per_class)  # fmt: skip
    bg = background_source(cfg.backgrounds)
    classes = _pick(fg.classes, cfg.classes, "class")
    names = _pick(bg.names, cfg.background_names, "background name")
    given = dict(cfg.recipe.assignment)
    if len(given) != len(cfg.recipe.assignment):
        raise DreamshiftError("the assignment gives some class more than one background")
    _pick(classes, tuple(given), "class in the assignment")
    _pick(names, tuple(given.values()), "background name in the assignment")
    assignment = tuple((c, given.get(c, names[i % len(names)])) for i, c in enumerate(classes))
    if cfg.recipe.conflict_per_group and (cfg.coat != "typical" or len(classes) < 2):
        raise DreamshiftError(
            "the conflict split paints one class's shape in another class's coat: it needs the "
            "world's foregrounds with --coat typical and at least two classes"
        )
    if cfg.recipe.rho < 1.0 and len(names) < 2 and cfg.recipe.train_size > 0:
        raise DreamshiftError("rho < 1 needs at least two backgrounds to put classes off theirs")
    cfg = replace(
        cfg,
        classes=classes,
        background_names=names,
        recipe=replace(cfg.recipe, assignment=assignment),
    )
    return Resolved(cfg, fg, bg)


def _spread(n: int, k: int, start: int = 0) -> list[int]:
    """``n`` split into ``k`` near-equal integers; the extra ones go to slots start, start+1, ..."""
    out = [n // k] * k
    for j in range(n % k):
        out[(start + j) % k] += 1
    return out


def plan_groups(cfg: ComposeConfig) -> dict[str, list[tuple[str, str]]]:
    """(class, background) of every sample per split, before shuffling. Counts are exact:
    a class's train images lie on its assigned background in round(rho * n) cases."""
    classes, names = cfg.classes, cfg.background_names
    assigned = dict(cfg.recipe.assignment)
    r = cfg.recipe
    groups: dict[str, list[tuple[str, str]]] = {s: [] for s in ds.SPLITS}
    for ci, (c, n_c) in enumerate(zip(classes, _spread(r.train_size, len(classes)), strict=True)):
        n_on = round(r.rho * n_c)
        groups[ds.TRAIN] += [(c, assigned[c])] * n_on
        others = [b for b in names if b != assigned[c]]
        if others:
            for b, n_b in zip(others, _spread(n_c - n_on, len(others), ci), strict=True):
                groups[ds.TRAIN] += [(c, b)] * n_b
    for c in classes:
        for b in names:
            groups[ds.VAL] += [(c, b)] * r.val_per_group
            groups[ds.TEST] += [(c, b)] * r.test_per_group
            groups[ds.CONFLICT] += [(c, b)] * r.conflict_per_group
            if b != assigned[c]:
                groups[ds.ANTI] += [(c, b)] * r.anti_per_group
        groups[ds.SPURIOUS] += [(c, assigned[c])] * r.spurious_per_class
    return groups


def plan_samples(run: Resolved) -> list[SampleSpec]:
    """Every sample of a resolved config, in index order (splits in order, shuffled within)."""
    cfg, fg, bg = run.cfg, run.fg, run.bg
    chash = cfg.content_hash()
    assigned = dict(cfg.recipe.assignment)
    typical = cfg.coat == "typical"  # resolve() set folder foregrounds' coat to random
    specs: list[SampleSpec] = []
    candidates = {
        (split, c): fg.candidates(FOREGROUND_SPLIT[split], c)
        for split in FOREGROUND_SPLIT
        for c in cfg.classes
    }
    for split, pairs in plan_groups(cfg).items():
        order = rng_for(cfg.seed, "order", split).permutation(len(pairs))
        for j in order:
            c, b = pairs[j]
            index = len(specs)
            sample_id = f"{chash}-{index:07d}"
            seed = derive_seed(cfg.seed, sample_id)
            rng = rng_for(seed, "plan")
            if split == ds.SPURIOUS:  # labelled by its background only
                bg_id = bg.choose(b, rng)
                specs.append(SampleSpec(index, sample_id, split, None, b, None, seed, None, bg_id))
                continue
            choices = candidates[split, c]
            if not choices:
                raise DreamshiftError(f"class {c!r} has no foregrounds in the {split} split")
            fg_id = choices[int(rng.integers(len(choices)))]
            bg_id = bg.choose(b, rng)
            coat = c if typical else None
            if split == ds.CONFLICT:  # another class's coat, drawn uniformly
                others = [o for o in cfg.classes if o != c]
                coat = others[int(rng.integers(len(others)))]
            specs.append(
                SampleSpec(
                    index, sample_id, split, c, b, assigned[c] == b, seed, fg_id, bg_id, coat
                )
            )
    return specs + copies_of_test(cfg, specs, chash)


def copies_of_test(cfg: ComposeConfig, specs: list[SampleSpec], chash: str) -> list[SampleSpec]:
    """Splits ``size`` and ``position``: every test sample again (same foreground, background
    and seed), at each scale of ``scale_bins`` at the centre, then centred in each cell of the
    ``position_bins`` grid (row by row) at the placement's minimum scale. Their indices follow
    every other split's, so a dataset without them keeps its sample ids."""
    tests = [s for s in specs if s.split == ds.TEST]
    k = cfg.recipe.position_bins
    cells = [((2 * col + 1) / (2 * k), (2 * row + 1) / (2 * k))
             for row in range(k) for col in range(k)]  # fmt: skip
    wanted = [(ds.SIZE, scale, (0.5, 0.5)) for scale in cfg.recipe.scale_bins]
    plan = [(t, *w) for t in tests for w in wanted]
    plan += [(t, ds.POSITION, cfg.placement.scale[0], at) for t in tests for at in cells]
    out = []
    for i, (t, split, scale, at) in enumerate(plan, start=len(specs)):
        out.append(replace(t, index=i, sample_id=f"{chash}-{i:07d}", split=split, scale=scale,
                           at=at))  # fmt: skip
    return out


def group_counts(specs: list[SampleSpec]) -> dict[str, dict[str, dict[str, int]]]:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for s in specs:
        if s.fg_class is None:  # spurious-only images: counted per background
            by_bg = counts.setdefault(s.split, {}).setdefault(ds.NO_CLASS, {})
            by_bg[s.bg_class] = by_bg.get(s.bg_class, 0) + 1
            continue
        by_bg = counts.setdefault(s.split, {}).setdefault(s.fg_class, {})
        by_bg[s.bg_class] = by_bg.get(s.bg_class, 0) + 1
    return counts


def _feathered(cut: Image.Image, radius: float) -> tuple[Image.Image, int]:
    pad = math.ceil(2 * radius)
    padded = Image.new("RGBA", (cut.width + 2 * pad, cut.height + 2 * pad), (0, 0, 0, 0))
    padded.paste(cut, (pad, pad))
    alpha = padded.getchannel("A").filter(ImageFilter.GaussianBlur(radius))
    padded.putalpha(alpha)
    return padded, pad


def _centred(at: float, w: int, size: int) -> int:
    """Where an object ``w`` wide starts to be centred at ``at`` x ``size`` (half pixels
    rounded; ``(size - w) // 2`` at 0.5), kept inside ``[0, size)``."""
    return min(max((round(2 * at * size) - w) // 2, 0), size - w)


def compose_image(
    spec: SampleSpec, cfg: ComposeConfig, fg: ForegroundSource, bg: BackgroundSource
) -> tuple[Image.Image, dict[str, Any], np.ndarray | None]:
    """The guide image of one sample, its composition fields and its object mask (the
    cut-out's opaque pixels where they were pasted, before any feather or occluder; None for a
    background alone). Pure function of its inputs."""
    p, size = cfg.placement, cfg.size
    rng = rng_for(spec.seed, "paste")
    canvas = bg.image(spec.bg_source, size)
    if spec.fg_source is None:
        return canvas, {}, None
    # drawn even for a fixed scale, so that a copy's coat colours are its test sample's
    scale = float(rng.uniform(p.scale[0], p.scale[1]))
    scale = scale if spec.scale is None else spec.scale
    cut, mask_id, appearance = fg.cutout(
        spec.fg_source, rng, max(4, round(scale * size)), p.flip, p.max_rotation, spec.coat_class
    )
    if cut.width > size or cut.height > size:  # rotation grew it past the frame
        k = size / max(cut.size)
        cut = cut.resize((max(1, int(cut.width * k)), max(1, int(cut.height * k))))
    w, h = cut.size
    if spec.at is not None:  # splits size and position
        x, y = _centred(spec.at[0], w, size), _centred(spec.at[1], h, size)
    elif p.position == "center":
        x, y = (size - w) // 2, (size - h) // 2
    else:
        x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    at = (x, y)
    mask = np.zeros((canvas.height, canvas.width), bool)
    opaque = np.asarray(cut.getchannel("A") if cut.mode == "RGBA" else cut.convert("L")) > 127
    if cut.mode != "RGBA":  # pasted whole (--paste rect): the rectangle
        opaque[:] = True
    mask[y : y + h, x : x + w] = opaque[: canvas.height - y, : canvas.width - x]
    if p.feather > 0:
        cut, pad = _feathered(cut, p.feather)
        at = (x - pad, y - pad)
    if cfg.render == "photo":
        canvas, appearance["photo"] = render_photo(canvas, cut, *at, spec.bg_class, rng)
    else:
        canvas.paste(cut, at, cut)
    fields = {
        "mask_source": mask_id,
        "box_x": x,
        "box_y": y,
        "box_w": w,
        "box_h": h,
        "scale": round(scale, 6),
        "appearance": json.dumps(appearance, sort_keys=True),
    }
    return canvas, fields, mask


def _row(spec: SampleSpec) -> ds.SampleRow:
    return ds.SampleRow(
        sample_id=spec.sample_id,
        index=spec.index,
        split=spec.split,
        fg_class=spec.fg_class,
        bg_class=spec.bg_class,
        aligned=spec.aligned,
        fg_source=spec.fg_source,
        bg_source=spec.bg_source,
        pipeline="paste",
        seed=spec.seed,
        coat_class=spec.coat_class,
    )


@dataclass(frozen=True)
class ShardJob:
    """What every shard of a run needs: the resolved config with its sources, the output."""

    run: Resolved
    root: Path


def run_shard(job: ShardJob, shard: int, work: ShardWork[SampleSpec], tick: Tick) -> dict:
    """Compose one shard's images and make the shard durable. A sample with a bad input file
    is recorded as failed with its reason and the others go on; any other error stops the run
    and leaves the shard unfinished."""
    run, writer = job.run, ShardWriter(job.root, shard)
    rows = []
    for spec in work.specs:
        row = _row(spec)
        try:
            img, fields, mask = compose_image(spec, run.cfg, run.fg, run.bg)
        except BadInputError as exc:
            row = row.replace(status=ds.FAILED, error=f"{type(exc).__name__}: {exc}")
        else:
            render = run.cfg.render if spec.fg_source is not None else None
            png = writer.write_png(spec.sample_id, img)
            if mask is not None:
                png |= writer.write_mask(spec.sample_id, mask)
            row = row.replace(**fields, **png, render=render, status=ds.OK)
        rows.append(row)
        tick(1)
    return writer.close(rows, work.keep)


def _metadata(cfg: ComposeConfig, specs: list[SampleSpec], num_shards: int) -> ds.DatasetMeta:
    counts = group_counts(specs)
    return ds.DatasetMeta(
        stage="compose",
        dreamshift_version=dreamshift.__version__,
        config=cfg.to_dict(),
        content_hash=cfg.content_hash(),
        classes=cfg.classes,
        backgrounds=cfg.background_names,
        assignment=dict(cfg.recipe.assignment),
        # splits added later are listed only when planned, as before they existed
        splits={
            s: SplitCounts.of(counts.get(s, {}))
            for s in ds.SPLITS
            if s in counts or s not in (ds.SIZE, ds.POSITION)
        },
        num_samples=len(specs),
        num_shards=num_shards,
        versions=library_versions(("numpy", "pillow", "pyarrow")),
    )


def compose(
    cfg: ComposeConfig,
    out: str | Path,
    workers: int = 1,
    progress: bool = True,
    executor: Executor | None = None,
    retry_failed: bool = False,
) -> ComposeResult:
    """Compose the dataset of ``cfg`` into ``out``; continue an unfinished run of the same
    config. ``retry_failed`` also redoes the samples that failed (after their input files were
    fixed). ``workers`` > 1 runs shards in that many processes; ``executor`` runs them
    elsewhere (same bytes either way)."""
    start = time.perf_counter()
    run = resolve(cfg)
    cfg = run.cfg
    root = Path(out)
    specs = plan_samples(run)
    shards = shard_list(specs, cfg.shard_size)
    with claim_output(root):
        outcome = run_stage(
            root,
            _metadata(cfg, specs, len(shards)),
            shards,
            run_shard,
            functools.partial(ShardJob, run, root),
            executor or LocalPool(workers),
            desc="compose",
            counts={"num_failed": ds.FAILED},
            retry_failed=retry_failed,
            progress=progress,
            normalise=saved_config,
            bytes_per_sample=3 * cfg.size * cfg.size,  # at most its pixels: PNG compresses
        )
    return ComposeResult(
        root, len(specs), outcome.status[ds.FAILED], outcome.shards_run,
        time.perf_counter() - start,
    )  # fmt: skip
