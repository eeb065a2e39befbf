"""``dreamshift learn`` and ``dreamshift probe``: training runs of the learning algorithms on a
dataset directory, in the DomainBed manner (Gulrajani & Lopez-Paz 2021).

A run's folder is named by the algorithm and a hash of its resolved config (dataset content
hash included), so a relaunched sweep finds finished runs and skips them: the folder holds
``config.json``, ``checkpoint.safetensors`` (written after every epoch; a relaunch resumes to the
same weights) and, once finished, ``done``. Each finished run appends one record to
``OUT/results.jsonl``: accuracy overall and worst-group accuracy on every evaluated split.

>>> import tempfile
>>> from dreamshift.compose.config import ComposeConfig, ShiftRecipe
>>> from dreamshift.compose.runner import compose
>>> tmp = tempfile.mkdtemp()
>>> recipe = ShiftRecipe(train_size=16, val_per_group=1, test_per_group=2, anti_per_group=1)
>>> world = ComposeConfig(classes=("cat", "zebra"), background_names=("grass", "snow"),
...                       size=32, recipe=recipe)
>>> _ = compose(world, f"{tmp}/world", progress=False)
>>> cfg = LearnConfig(algorithm="d3s", epochs=1, batch_size=8, input_size=32)
>>> folder = learn(f"{tmp}/world", f"{tmp}/runs", cfg, log=lambda line: None)
>>> folder.name.startswith("d3s-"), sorted(probe(f"{tmp}/world", folder))
(True, ['bg', 'chance', 'fg'])
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamshift import metrics as M
from dreamshift.data import dataset as ds
from dreamshift.data.images import sha256_file, write_atomic
from dreamshift.data.loading import (
    ImageTable,
    TrainingSources,
    load_split,
    source_key,
    split_table,
    training_sources,
)
from dreamshift.data.recombine import Recombination
from dreamshift.data.torch_dataset import BadImage, EpochBatches, Images, StreamedImages, loader
from dreamshift.data.transforms import Preprocessing
from dreamshift.engine.results import RESULTS, append_record
from dreamshift.errors import BadInputError, DreamshiftError
from dreamshift.folders import mark_folder
from dreamshift.learn.algorithms import ALGORITHMS, Algorithm, Batch, FrozenFeatures
from dreamshift.learn.config import LearnConfig
from dreamshift.learn.erase import Eraser
from dreamshift.learn.probe import probe_matrix
from dreamshift.models.classifier import Classifier, preprocessing_of
from dreamshift.models.finetune import FineTunedNet, assemble
from dreamshift.models.loading import (
    FOLDER_KINDS,
    FolderKind,
    classifier_fingerprint,
    load_classifier,
)
from dreamshift.portable import located_record, portable_record
from dreamshift.seeding import derive_seed
from dreamshift.train.checkpoint import damaged, load_state
from dreamshift.train.distributed import Processes, processes
from dreamshift.train.loop import TrainState, fit_stream
from dreamshift.train.run_folder import (
    CHECKPOINT,
    CONFIG,
    DONE,
    PROBES,
    SWEEP_MIXES,
    add_sweep_members,
    check_sweep,
)
from dreamshift.train.schedules import lr_factor
from dreamshift.world.sources import background_source

LEGACY_CHECKPOINT = "checkpoint.pt"  # earlier versions: read with weights_only=True only


def _non_default(value: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """The entries of a config dict that differ from the defaults (nested dicts likewise)."""
    out = {}
    for k, v in value.items():
        if isinstance(v, dict) and isinstance(default.get(k), dict):
            v = _non_default(v, default[k])
            if v:
                out[k] = v
        elif k not in default or v != default[k]:
            out[k] = v
    return out


def run_folder(out: Path, cfg: LearnConfig, dataset_hash: str, processes: int = 1) -> Path:
    """``OUT/<algorithm>-<hash of config and dataset>``. Only fields that differ from their
    defaults are hashed, so a field added later leaves the names of earlier runs alone; the
    training sources count by their content hash, split and weight (read from their
    ``dataset.json``, no image loaded), and a ``features_from`` run by its weights, not by
    their paths. More than one process counts too:
    the global batch is ``batch_size`` x ``processes``."""
    config = _non_default(asdict(cfg), asdict(LearnConfig()))
    config.pop("train", None)
    payload: dict[str, Any] = {"config": config, "dataset": dataset_hash}
    if cfg.train:
        payload["sources"] = [source_key(t, cfg.split) for t in cfg.train]
    if cfg.finetune:  # the base model by its weights, not by its name
        payload["base_model"] = classifier_fingerprint(cfg.model)
    if cfg.features_from:  # the source run by its weights, not by where it lies
        config.pop("features_from")
        payload["features_from"] = classifier_fingerprint(cfg.features_from)
    if cfg.recombine not in ("", "world"):  # a dataset of backgrounds by its content
        meta_path = Path(cfg.recombine) / ds.DATASET_JSON
        if meta_path.is_file() and ds.DatasetMeta.read(cfg.recombine).content_hash:
            config.pop("recombine")
            payload["recombine"] = ds.DatasetMeta.read(cfg.recombine).content_hash
    if processes > 1:
        payload["processes"] = processes
    text = json.dumps(payload, sort_keys=True)
    return out / f"{cfg.algorithm}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramer's V of two label arrays: 0 when independent, 1 when one determines the other."""
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    if min(table.shape) < 2:
        return 0.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    return float(np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1))))


def build(
    cfg: LearnConfig, classes: Sequence[str], num_backgrounds: int, fit_eraser: bool = True
) -> tuple[Algorithm, Preprocessing]:
    """The algorithm of ``cfg``, seeded, and the preprocessing of its inputs. With
    ``finetune``, its backbone is the features of the pretrained ``model`` (frozen for
    ``linear``, with LoRA adapters for ``lora``, all trained for ``full``;
    :mod:`dreamshift.models.finetune`), fed as that model was trained, and a class head over
    the features starts as the model's own head mapped onto ``classes``. With
    ``features_from``, on that run's frozen features
    (its "fg" block if it has one, else all of them). With ``erase``, a LEACE eraser of that
    label is fitted on the source run's own training split (balanced data for D3S, where class
    and background are independent, so erasing one keeps the other); ``fit_eraser=False``
    leaves it to a checkpoint to fill in."""
    backbone: torch.nn.Module | None = None
    prep = Preprocessing.world(cfg.input_size)
    head: torch.nn.Linear | None = None
    base_sha256 = ""
    if cfg.finetune:
        base = load_classifier(cfg.model, classes)
        torch.manual_seed(derive_seed(cfg.seed, "init", cfg.finetune, cfg.model))
        tuned, _ = assemble(base, classes, cfg.tuning(), cfg.targets)
        backbone, head, prep = tuned, tuned.head, base.preprocessing
        base_sha256 = base.weights_sha256
    if cfg.features_from:
        source, record = load_run(cfg.features_from)
        with torch.no_grad():
            dims = {
                k: v.shape[1]
                for k, v in source.features(
                    torch.zeros(2, 3, cfg.input_size, cfg.input_size)
                ).items()
            }
        block = "fg" if "fg" in dims else "all"
        eraser = Eraser(dims[block]) if cfg.erase else None
        if eraser is not None and fit_eraser:
            root = Path(record["dataset"])
            if not (root / ds.DATASET_JSON).exists():
                raise DreamshiftError(
                    f"--erase fits on the training data of {cfg.features_from}, {root}, which "
                    "is not there any more: restore it or drop --erase"
                )
            x, y, bg = load_split(
                root, record["config"]["split"], record["classes"], record["backgrounds"]
            )
            dependence = cramers_v(y.numpy(), bg.numpy())
            if dependence > 0.2:
                warnings.warn(
                    f"class and background are dependent in the training split of {root} "
                    f"(Cramer's V {dependence:.2f}): erasing one also erases part of the other; "
                    "fit the source run on balanced data",
                    stacklevel=2,
                )
            feats = _blocks(source, x, Preprocessing.world(cfg.input_size))[block]
            if cfg.erase == "background":
                eraser.fit(feats, bg.numpy(), len(record["backgrounds"]))
            else:
                eraser.fit(feats, y.numpy(), len(record["classes"]))
        backbone = FrozenFeatures(source, block, dims[block], eraser)
    torch.manual_seed(derive_seed(cfg.seed, "init", cfg.algorithm))
    algo = ALGORITHMS.get(cfg.algorithm)(
        cfg.arch, len(classes), num_backgrounds, hp=cfg.hparams, backbone=backbone
    )
    if head is not None and algo.classifier.weight.shape == head.weight.shape:
        with torch.no_grad():  # the base model's own head (not d3s's, on the fg block alone)
            algo.classifier.weight.copy_(head.weight)
            algo.classifier.bias.copy_(head.bias)
    algo.base_weights_sha256 = base_sha256  # what a fine-tune started from ("": none)
    algo.micro_batches = cfg.grad_accumulation
    return algo, prep


class _Trained:
    """The tensors of an algorithm that training changes: all of them, but for the frozen base
    model of a ``linear`` or ``lora`` fine-tune, whose weights come back from the base model
    itself (checked by their hash), so that a LoRA run's checkpoint holds its adapters and
    heads, not a copy of the model."""

    def __init__(self, algo: Algorithm):
        self.algo = algo

    def frozen(self) -> set[str]:
        tuned = self.algo.backbone
        if not isinstance(tuned, FineTunedNet) or tuned.train_backbone:
            return set()
        base = tuned.backbone
        names = {n for n, p in base.named_parameters() if not p.requires_grad}
        names |= {n for n, _ in base.named_buffers()}  # batch norm stays in eval mode
        return {f"backbone.backbone.{n}" for n in names}

    def state_dict(self) -> dict[str, torch.Tensor]:
        frozen = self.frozen()
        return {k: v for k, v in self.algo.state_dict().items() if k not in frozen}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.algo.load_state_dict(state, strict=False)
        if unexpected or set(missing) - self.frozen():
            raise DreamshiftError(
                f"a checkpoint that does not fit this run's model (missing "
                f"{sorted(set(missing) - self.frozen())[:3]}, unexpected {unexpected[:3]}): "
                "was it written by another dreamshift version?"
            )


def _train_state(algo: Algorithm) -> TrainState:
    """What a learn checkpoint holds: the algorithm's trained weights and buffers
    (:class:`_Trained`), its optimizer and, for d3s, the MI estimator's optimizer."""
    return TrainState(  # looked up when saved: an anneal restarts the optimizer (IRM, d3s)
        model=_Trained(algo),
        optimizer=lambda: algo.optimizer,
        estimator_optimizer=lambda: getattr(algo, "estimator_optimizer", None),
    )


def _checkpoint_path(folder: Path) -> Path | None:
    for name in (CHECKPOINT, LEGACY_CHECKPOINT):
        if (folder / name).is_file():
            return folder / name
    return None


@torch.no_grad()
def predict_table(
    algo: Algorithm,
    table: ImageTable,
    prep: Preprocessing,
    device: torch.device,
    workers: int,
    procs: Processes | None = None,
) -> torch.Tensor:
    """The class predicted for every image of ``table`` (N,), streamed through the loader;
    with several ``procs``, each predicts every size-th image and all get every prediction."""
    rank, size = (procs.rank, procs.size) if procs is not None else (0, 1)
    mine = torch.arange(rank, len(table), size)
    algo.eval()
    preds, error = [], ""
    for batch in loader(StreamedImages(table.take(mine), prep), batch_size=256, workers=workers,
                        device=device):  # fmt: skip
        if isinstance(batch, BadImage):
            error = batch.message
            break
        preds.append(algo.predict(batch.x.to(device, non_blocking=True)).argmax(1).cpu())
    algo.train()
    if procs is not None:  # once per call: the processes' shares have unequal batch counts
        error = procs.first_error(error)
    if error:
        raise BadInputError(error)
    ours = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    if procs is None or size == 1:
        return ours
    out = torch.empty(len(table), dtype=torch.long)
    for r, part in enumerate(procs.gather(ours)):
        out[r::size] = part
    return out


def evaluate(
    algo: Algorithm,
    table: ImageTable,
    prep: Preprocessing,
    device: torch.device | str = "cpu",
    workers: int = 0,
    n_boot: int = 200,
    procs: Processes | None = None,
) -> dict[str, Any]:
    """Accuracy overall and per class x background group; worst group (WILDS naming)."""
    predicted = predict_table(algo, table, prep, torch.device(device), workers, procs)
    correct = (predicted == table.y).numpy()
    keys = list(zip(table.y.tolist(), table.bg.tolist(), strict=True))
    worst = M.worst_group(M.group_stats(correct, keys, n_boot=1))
    return {
        "n": len(correct),
        "acc_avg": M.accuracy(correct),
        "acc_avg_ci": M.bootstrap_ci(correct, n_boot),
        "acc_wg": worst[1] if worst else None,
    }


def learn(
    dataset: str | Path,
    out: str | Path,
    cfg: LearnConfig,
    log: Any = print,
    loader_workers: int = 2,
    checkpoint_every: int = 0,
    cpu: bool = False,
) -> Path:
    """Train one run (or skip it when its folder is done); returns the run folder.

    Images stream from the dataset directories: ``loader_workers`` processes decode, resize and
    augment them (the weights do not depend on how many). Started by ``accelerate launch``
    (or ``torchrun``), every process runs this with its share of each batch (``batch_size`` per
    process) and only the main one writes. ``checkpoint_every``: also checkpoint every that
    many steps within an epoch (long epochs); ``cpu``: train on the CPU even with a GPU."""
    cfg.check()
    procs = processes(cpu=cpu)
    log = log if procs.is_main else (lambda *_: None)
    root, out = Path(dataset), Path(out)
    meta = ds.DatasetMeta.read(root)
    classes, backgrounds = list(meta.classes), list(meta.backgrounds)
    folder = run_folder(out, cfg, meta.content_hash or str(root), procs.size)
    procs.agree(folder.name, "run (a hash of the config and the datasets' content)")
    if (folder / DONE).exists():  # a finished run is skipped before any image is loaded
        log(f"{folder} is done: skipped")
        return folder
    data = _training_data(root, cfg, classes, backgrounds, procs.size)
    recombine = recombination(cfg, data.table, backgrounds)
    resuming = (folder / CHECKPOINT).exists()  # the checkpoint holds a fitted eraser
    algo, prep = build(cfg, classes, len(backgrounds), fit_eraser=not resuming)
    if cfg.finetune:
        trained = sum(p.numel() for p in algo.parameters() if p.requires_grad)
        log(f"fine-tuning {cfg.model} ({cfg.finetune}): {trained} trained parameters")
    record = _run_record(cfg, root, meta, data, prep, procs.size, algo)
    if procs.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        portable = portable_record(record, folder)  # its datasets named from the run folder
        write_atomic(folder / CONFIG, (json.dumps(portable, indent=2) + "\n").encode())
        mark_folder(folder, "learn-run")
    end_epoch = _per_epoch_validation(algo, root, cfg, prep, procs, loader_workers, log)
    history = _fit(algo, cfg, data, recombine, prep, procs, folder, loader_workers,
                   checkpoint_every, log, end_epoch)  # fmt: skip
    split_metrics = _evaluate_run(algo, root, cfg, data, prep, procs, loader_workers)
    results = {"run": folder.name, **record, "history": history, "splits": split_metrics}
    if procs.is_main:
        append_record(out / RESULTS, results)
        (folder / DONE).write_text(json.dumps(split_metrics, indent=2) + "\n")
    procs.barrier()  # the others return once the run is done
    return folder


def _training_data(
    root: Path, cfg: LearnConfig, classes: list[str], backgrounds: list[str], processes: int
) -> TrainingSources:
    """The training images of the run, checked: a split that exists, at least one batch."""
    # one source: checked with the message it always had
    if not cfg.train and not len(split_table(root, cfg.split, classes, backgrounds)):
        splits = sorted(ds.read_manifest(root, ["split"]).column("split").unique().to_pylist())
        raise DreamshiftError(
            f"{root} has no usable images in split {cfg.split!r} (it has {splits}): train on "
            "a dataset with that split, e.g. one made by `dreamshift compose --train-size N`"
        )
    data = training_sources(root, cfg.train, cfg.split, cfg.mix, cfg.real_weight, classes,
                            backgrounds, cfg.use, cfg.train_size, cfg.verified_only)  # fmt: skip
    if len(data.table) < cfg.batch_size * processes:
        raise DreamshiftError(
            f"the training images of {root} ({len(data.table)} usable) are fewer than one batch "
            f"({cfg.batch_size} x {processes} processes): lower --batch-size or compose a "
            "larger split"
        )
    return data


def recombination(
    cfg: LearnConfig, table: ImageTable, backgrounds: list[str]
) -> Recombination | None:
    """ForAug's recombination of the training images that ``--recombine`` asks for (Nauen et
    al. 2025), checked: every training image has its object's mask, and the source has every
    background of the dataset."""
    if not cfg.recombine:
        return None
    lacking = np.flatnonzero(table.mask_paths == b"")
    if len(lacking):
        i = int(lacking[0])
        root, stage = table.roots[int(table.source[i])], table.made_by[int(table.source[i])]
        remedy = (
            "it was dreamed with a mode that draws the object anew (train on its guides, or "
            "dream them with --mode inpaint, harmonize or paste, which keep their masks)"
            if stage == "dream"
            else f"compose it again with masks, same settings: dreamshift compose --config "
            f"{root}/dataset.json --out NEW"
        )
        raise DreamshiftError(
            f"--recombine cuts each training image's object out by its mask, and {len(lacking)} "
            f"of the {len(table)} training images have none (e.g. {table.path(i)} of {root}): "
            + remedy
        )
    return Recombination(
        background_source(cfg.recombine), tuple(backgrounds), cfg.recombine_p,
        cfg.recombine_rho, cfg.recombine_scale, cfg.recombine_position, cfg.recombine_feather,
    )  # fmt: skip


def _run_record(
    cfg: LearnConfig,
    root: Path,
    meta: ds.DatasetMeta,
    data: TrainingSources,
    prep: Preprocessing,
    processes: int,
    algo: Algorithm,
) -> dict[str, Any]:
    """The run's ``config.json``: its config, data, preprocessing and base weights."""
    return {
        "config": asdict(cfg),
        "dataset": str(root.resolve()),
        "dataset_hash": meta.content_hash,
        "dataset_stage": meta.stage,  # compose (paste) or dream
        "rho": meta.confounder_strength,  # a dream's: its guides', recorded when dreamed
        "classes": list(meta.classes),
        "backgrounds": list(meta.backgrounds),
        "preprocessing": prep.to_dict(),
        "sources": data.sources,
        "processes": processes,  # the global batch is batch_size x processes
        "base_weights_sha256": algo.base_weights_sha256 or None,  # --finetune: the base model's
    }


def _fit(
    algo: Algorithm,
    cfg: LearnConfig,
    data: TrainingSources,
    recombine: Recombination | None,
    prep: Preprocessing,
    procs: Processes,
    folder: Path,
    loader_workers: int,
    checkpoint_every: int,
    log: Any,
    end_epoch: Callable[[int], dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Train ``algo`` for ``cfg.epochs`` on the streamed images (recombined by
    ``recombine``), checkpointing into
    ``folder`` (and resuming from its checkpoint); returns the per-epoch history."""
    algo.to(procs.device)
    algo.average_gradients = procs.average_gradients
    batches = EpochBatches(len(data.table), cfg.batch_size, cfg.seed, data.sampling_weights,
                           procs.rank, procs.size)  # fmt: skip
    images = StreamedImages(data.table, prep, seed=cfg.seed, recombine=recombine)
    total_steps = cfg.epochs * batches.steps
    bf16 = cfg.mixed_precision == "bf16"

    def update(step: int, batch: Images) -> dict[str, float]:
        lr = cfg.hparams.lr * lr_factor(cfg.lr_schedule, step, total_steps)
        for group in algo.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(procs.device.type, dtype=torch.bfloat16, enabled=bf16):
            losses = algo.update(Batch(batch.x, batch.y, batch.bg))
        procs.broadcast_buffers(algo)  # one state on every process, as DDP keeps it
        return losses

    def start_epoch(epoch: int) -> None:  # what the updates draw from the global RNG
        torch.manual_seed(derive_seed(cfg.seed, "epoch-ops", epoch))

    algo.train()
    return fit_stream(
        cfg.algorithm, cfg.epochs, batches,
        loader(images, batches, workers=loader_workers, device=procs.device),
        update, start_epoch, _train_state(algo), procs, folder / CHECKPOINT, checkpoint_every,
        log=log, end_epoch=end_epoch,
    )  # fmt: skip


def _per_epoch_validation(
    algo: Algorithm,
    root: Path,
    cfg: LearnConfig,
    prep: Preprocessing,
    procs: Processes,
    workers: int,
    log: Any,
) -> Callable[[int], dict[str, Any]] | None:
    """What scores ``cfg.val_split`` after every epoch (accuracy and worst-group accuracy, for
    model selection and learning curves), or None where the dataset has no such split."""
    if not cfg.val_split:
        return None
    meta = ds.DatasetMeta.read(root)
    table = split_table(root, cfg.val_split, list(meta.classes), list(meta.backgrounds))
    if not len(table):
        log(f"{root} has no split {cfg.val_split!r}: no validation after each epoch")
        return None

    def validate(epoch: int) -> dict[str, Any]:
        scores = evaluate(algo, table, prep, procs.device, workers, n_boot=1, procs=procs)
        return {"val_acc": round(scores["acc_avg"], 5), "val_acc_wg": round(scores["acc_wg"], 5)}

    return validate


def _evaluate_run(
    algo: Algorithm,
    root: Path,
    cfg: LearnConfig,
    data: TrainingSources,
    prep: Preprocessing,
    procs: Processes,
    workers: int,
) -> dict[str, dict[str, Any]]:
    """The metrics of every evaluated split of ``root`` present in it; with several training
    sources, each one's own training accuracy goes into its entry of ``data.sources``. Every
    process evaluates its share."""
    meta = ds.DatasetMeta.read(root)
    classes, backgrounds = list(meta.classes), list(meta.backgrounds)
    present = set(ds.read_manifest(root, ["split"]).column("split").unique().to_pylist())
    metrics = {}
    for split in cfg.eval_splits:
        if split in present:
            held_out = split_table(root, split, classes, backgrounds)
            metrics[split] = evaluate(algo, held_out, prep, procs.device, workers, procs=procs)
    if len(data.sources) > 1:
        start = 0
        for source in data.sources:
            part = data.table.take(torch.arange(start, start + source["n"]))
            source["train_acc"] = evaluate(
                algo, part, prep, procs.device, workers, n_boot=1, procs=procs
            )["acc_avg"]
            start += source["n"]
    return metrics


def learn_sweep(
    dataset: str | Path,
    out: str | Path,
    cfg: LearnConfig,
    sizes: Sequence[int],
    mixes: Sequence[str],
    log: Any = print,
    **runtime: Any,
) -> list[Path]:
    """One run per mix and training size, as ImageNet-G's study (Bansal & Grover 2023):
    ``real`` (the real ``train`` sources, each cut to the size), ``generated`` (those made by
    ``dreamshift dream``) and ``real+generated`` (both, each cut to the size: their 1:1
    concatenation, or ``cfg.mix``). Smaller subsets lie inside larger ones. Each run is listed
    in ``OUT/sweep.json`` once trained: ``dreamshift audit --model OUT`` audits them all and
    fits effective robustness on the ``real`` family. ``runtime``: :func:`learn`'s options."""
    check_sweep(sizes, mixes)
    folders = []
    for mix in mixes:
        for n in sorted(set(sizes)):
            member = cfg.replace(use=SWEEP_MIXES[mix], train_size=n)
            folder = learn(dataset, out, member, log, **runtime)
            if processes(cpu=runtime.get("cpu", False)).is_main:
                add_sweep_members(Path(out), [{"folder": folder.name, "mix": mix, "train_size": n}])
            folders.append(folder)
    return folders


def _read_record(path: Path) -> tuple[dict[str, Any], LearnConfig]:
    """A run's ``config.json`` and its config, checked: one clear error if it is damaged."""
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise TypeError(f"it holds a {type(record).__name__}, not a mapping")
        record = located_record(record, path.parent)
        cfg = LearnConfig.from_dict(record["config"], str(path))
        classes, backgrounds = record["classes"], record["backgrounds"]
        if not all(isinstance(x, list) and x and all(isinstance(n, str) for n in x)
                   for x in (classes, backgrounds)):  # fmt: skip
            raise TypeError("classes and backgrounds must be lists of names")
        if not isinstance(record.get("base_weights_sha256") or "", str):
            raise TypeError("base_weights_sha256 must be a hash")
        if not isinstance(record.get("preprocessing", {}), dict):
            raise TypeError("preprocessing must be a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        raise DreamshiftError(
            f"{path} is damaged ({type(exc).__name__}: {exc}): it is no learn run's record"
        ) from exc
    cfg.check()
    return record, cfg


def load_run(folder: str | Path) -> tuple[Algorithm, dict[str, Any]]:
    """The trained algorithm of a finished run folder and its config record."""
    folder = Path(folder)
    if not (folder / DONE).exists():
        raise DreamshiftError(f"{folder} is not a finished learn run (no {DONE} marker)")
    record, cfg = _read_record(folder / CONFIG)
    algo, _ = build(cfg, record["classes"], len(record["backgrounds"]), fit_eraser=False)
    expected = record.get("base_weights_sha256")
    if expected and cfg.finetune != "full" and algo.base_weights_sha256 != expected:
        raise DreamshiftError(
            f"{folder} was tuned from {cfg.model} with weights sha256 {expected[:12]}…, but "
            f"{cfg.model} now loads weights {algo.base_weights_sha256[:12]}…: give the same base "
            "weights (SPEC@FILE)"
        )
    path = _checkpoint_path(folder)
    if path is None:
        raise DreamshiftError(f"{folder} has a done marker but no {CHECKPOINT}: train it again")
    saved = load_state(path)
    with damaged(path):
        _train_state(algo).load_state_dict(saved.get("state", saved))
    algo.eval()
    return algo, record


class _RunNet(torch.nn.Module):
    """A learn run's algorithm seen as an audit classifier: the features its class head reads,
    then that head."""

    def __init__(self, algo: Algorithm):
        super().__init__()
        self.algo = algo

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.algo.class_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.algo.classifier(features)


def is_run(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG).is_file() and _checkpoint_path(Path(folder)) is not None


def run_classifier(folder: str | Path, device: str = "cpu") -> Classifier:
    """A finished learn run as a classifier for ``dreamshift audit`` (``--model RUN_FOLDER``):
    test it on other datasets, e.g. a run trained on dreamed images on the paste or the real
    ones. Inputs are preprocessed as in training (the world's, resized to its input size)."""
    folder = Path(folder)
    algo, record = load_run(folder)
    name = f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name
    return Classifier(
        name=name,
        net=_RunNet(algo).to(device),
        classes=tuple(record["classes"]),
        preprocessing=_run_preprocessing(folder, record),
        weights_sha256=sha256_file(_checkpoint_path(folder) or folder / CHECKPOINT),
        device=device,
    )


FOLDER_KINDS.register("learn-run")(FolderKind(is_run, run_classifier))


def _run_preprocessing(folder: str | Path, record: dict[str, Any]) -> Preprocessing:
    """How a run's inputs were fed: its record's, or the world's at its input size (runs of
    earlier versions)."""
    if "preprocessing" in record:
        return preprocessing_of(record, str(Path(folder) / CONFIG))
    return Preprocessing.world(int(record["config"]["input_size"]))


@torch.no_grad()
def _blocks(algo: Algorithm, images: torch.Tensor, prep: Preprocessing) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(images), 256):
        for k, v in algo.features(prep(images[i : i + 256])).items():
            parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def probe(
    dataset: str | Path,
    folder: str | Path,
    train_split: str = ds.TRAIN,
    test_split: str = ds.TEST,
    erase: bool = False,
) -> dict[str, dict[str, float]]:
    """The disentanglement matrix of a finished run: linear probes on its frozen feature blocks
    (``fg`` and ``bg`` for d3s, ``all`` otherwise), trained on ``train_split`` of ``dataset`` and
    tested on ``test_split``, for the labels ``class`` and ``background``. With ``erase`` (d3s
    runs), LEACE fitted on ``train_split`` first removes the background from the fg block and
    the class from the bg block (rows ``fg, background erased`` and ``bg, class erased``)."""
    algo, record = load_run(folder)
    root = Path(dataset)
    meta = ds.DatasetMeta.read(root)
    classes, backgrounds = list(meta.classes), list(meta.backgrounds)
    if classes != record["classes"] or backgrounds != record["backgrounds"]:
        raise DreamshiftError(f"{root} has other classes or backgrounds than the run {folder}")
    prep = _run_preprocessing(folder, record)
    size = prep.input_size
    if erase:  # checked before the splits are read and encoded
        with torch.no_grad():
            names = sorted(algo.features(torch.zeros(2, 3, size, size)))
        if names != ["bg", "fg"]:
            raise DreamshiftError(
                f"--erase needs a run with fg and bg feature blocks (d3s); {folder} has {names}"
            )
    data = {}
    for split in (train_split, test_split):
        x, y, bg = load_split(root, split, classes, backgrounds)
        if not len(x):
            raise DreamshiftError(f"{root} has no usable images in split {split!r}")
        data[split] = (_blocks(algo, x, prep), {"class": y.numpy(), "background": bg.numpy()})
    num_labels = {"class": len(classes), "background": len(backgrounds)}
    if erase:
        for block, label in (("fg", "background"), ("bg", "class")):
            train_x = data[train_split][0][block]
            eraser = Eraser(train_x.shape[1])
            eraser.fit(train_x, data[train_split][1][label], num_labels[label])
            for split in data:  # one entry when train_split == test_split
                blocks = data[split][0]
                with torch.no_grad():
                    erased = eraser(torch.from_numpy(blocks.pop(block))).numpy()
                blocks[f"{block}, {label} erased"] = erased
    matrix = probe_matrix(*data[train_split], *data[test_split], num_labels=num_labels)
    entry = {
        "dataset": str(root),
        "dataset_hash": meta.content_hash,
        "train_split": train_split,
        "test_split": test_split,
        "erase": erase,
        "matrix": matrix,
    }
    append_record(Path(folder) / PROBES, entry)
    return matrix
