"""``dreamshift train-classifier``: empirical risk minimisation (ERM; Vapnik 1998) of a world
classifier on a dataset's training split, as the classifiers D3S audits were trained on real,
background-correlated data.

The run is reproducible and resumable: the data order and augmentation of epoch ``e`` come from
``derive_seed(seed, "epoch", e)``, a checkpoint (model, optimiser, schedule, history) is written
after every epoch, and a relaunched run continues from it to the same weights as an
uninterrupted one. The output folder holds ``classifier.json`` (architecture, classes,
preprocessing, config, per-epoch history) and ``model.safetensors``: load it with
``dreamshift audit DATASET --model FOLDER``.

>>> import tempfile
>>> from dreamshift.compose.config import ComposeConfig, ShiftRecipe
>>> from dreamshift.compose.runner import compose
>>> tmp = tempfile.mkdtemp()
>>> recipe = ShiftRecipe(train_size=16, val_per_group=1, test_per_group=2, anti_per_group=1)
>>> world = ComposeConfig(classes=("cat", "zebra"), background_names=("grass", "snow"),
...                       size=32, recipe=recipe)
>>> _ = compose(world, f"{tmp}/world", progress=False)
>>> cfg = TrainConfig(epochs=1, batch_size=8, input_size=32)
>>> record = train_classifier(f"{tmp}/world", f"{tmp}/cnn", cfg, log=lambda line: None)
>>> record["architecture"], record["preprocessing"]["input_size"], len(record["history"])
('world-cnn', 32, 1)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from dreamshift.config import Config
from dreamshift.data import dataset as ds
from dreamshift.data.loading import KINDS, MIXES, load_split, source_key, training_data
from dreamshift.data.transforms import Preprocessing, augment
from dreamshift.errors import DreamshiftError
from dreamshift.models.architectures import ARCHITECTURES
from dreamshift.models.classifier import save_checkpoint
from dreamshift.models.finetune import (
    METHODS,
    Finetune,
    FineTunedNet,
    TrainedTensors,
    assemble,
    finetune_record,
    saved_state,
)
from dreamshift.models.loading import classifier_fingerprint, load_classifier
from dreamshift.seeding import derive_seed
from dreamshift.train.loop import TrainState, descend, fit
from dreamshift.train.run_folder import CHECKPOINT, SWEEP_MIXES, add_sweep_members, check_sweep


@dataclass(frozen=True)
class TrainConfig(Config):
    arch: str = "world-cnn"
    split: str = ds.TRAIN
    val_split: str = ds.VAL
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    input_size: int = 64
    seed: int = 0
    bf16: bool = False  # bfloat16 autocast: only where the CPU has native bf16 (AMX)
    half_weights: bool = False  # store float16 weights (half the file size)
    train: tuple[str, ...] = ()  # training sources DIR[:SPLIT][@WEIGHT] (data.loading)
    mix: str = "concat"
    real_weight: float = 0.8
    use: str = "all"  # which training sources: all, real (not made by dream) or generated
    train_size: int = 0  # images kept of each source (0: all), nested across sizes
    finetune: str = ""  # linear | lora | full: tune `model` instead of training `arch` anew
    model: str = ""  # the model to fine-tune: any spec the audit loads
    rank: int = 16  # LoRA
    alpha: int = 32
    targets: tuple[str, ...] = ()
    label_map: str = ""  # YAML {class: [labels]} for the initial head of an ImageNet model

    CHOICES: ClassVar[dict[str, Callable[[], Sequence[str]]]] = {
        "arch": lambda: ARCHITECTURES.names(),
        "mix": lambda: MIXES,
        "use": lambda: KINDS,
        "finetune": lambda: ("", *METHODS),
    }

    def validate(self) -> None:
        if self.train_size < 0:
            raise DreamshiftError(f"train_size = {self.train_size} must be >= 0 (0: all)")
        for name in ("epochs", "batch_size", "input_size"):
            if getattr(self, name) < 1:
                raise DreamshiftError(f"{name} = {getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise DreamshiftError(f"lr = {self.lr} must be > 0")
        if not 0.0 < self.real_weight < 1.0:
            raise DreamshiftError(f"--real-weight {self.real_weight} must lie in (0, 1)")
        if self.finetune:
            self.tuning().check()
        elif self.model:
            raise DreamshiftError(
                f"--model {self.model}: say how to tune it with --finetune {'|'.join(METHODS)}"
            )

    def tuning(self) -> Finetune:
        return Finetune(self.finetune, self.model, self.rank, self.alpha, self.targets,
                        self.label_map)  # fmt: skip


@torch.inference_mode()
def accuracy_of(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, prep: Preprocessing
) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(images), 256):
        correct += int((net(prep(images[i : i + 256])).argmax(1) == labels[i : i + 256]).sum())
    return correct / max(1, len(images))


def train_classifier(
    dataset: str | Path, out: str | Path, cfg: TrainConfig, log: Any = print
) -> dict[str, Any]:
    """Train ``cfg.arch`` on ``dataset``'s ``cfg.split``; returns the ``classifier.json``
    record. Relaunching continues from the last finished epoch."""
    cfg.check()
    root, out = Path(dataset), Path(out)
    meta = ds.read_dataset_json(root)
    classes, backgrounds = list(meta["classes"]), list(meta["backgrounds"])
    data = training_data(root, cfg.train, cfg.split, cfg.mix, cfg.real_weight, classes,
                         backgrounds, cfg.use, cfg.train_size)  # fmt: skip
    run: dict[str, Any] = {"config": asdict(cfg), "dataset": str(root),
                           "dataset_hash": meta.get("content_hash")}  # fmt: skip
    if cfg.train:  # every source by its content, split and weight
        run["sources"] = [source_key(t, cfg.split) for t in cfg.train]
    if cfg.finetune:  # the base model by its weights
        run["base_model"] = classifier_fingerprint(cfg.model)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    run = json.loads(json.dumps(run))  # as it reads back: tuples become lists
    if run_file.exists() and json.loads(run_file.read_text()) != run:
        raise DreamshiftError(
            f"{out} holds a run with another config or dataset ({run_file}): choose a new --out"
        )
    run_file.write_text(json.dumps(run, indent=2) + "\n")

    x, y = data.x, data.y
    x_val, y_val, _ = load_split(root, cfg.val_split, classes, backgrounds)

    net: nn.Module
    extra: dict[str, Any] = {}
    if cfg.finetune:
        base = load_classifier(cfg.model, classes)
        torch.manual_seed(derive_seed(cfg.seed, "init", cfg.finetune, cfg.model))
        net, targets = assemble(base, classes, cfg.tuning())
        prep, name = base.preprocessing, f"{cfg.model} ({cfg.finetune})"
        extra = finetune_record(base, cfg.tuning(), targets)
        n_trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
        log(f"fine-tuning {cfg.model} ({cfg.finetune}): {n_trained} trained parameters")
    else:
        torch.manual_seed(derive_seed(cfg.seed, "init", cfg.arch))
        net = ARCHITECTURES.get(cfg.arch)(len(classes))
        prep, name = Preprocessing.world(cfg.input_size), cfg.arch
    steps_per_epoch = max(1, len(x) // cfg.batch_size)
    trained = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch
    )

    held = TrainedTensors(net) if isinstance(net, FineTunedNet) else net  # what checkpoints hold

    def update(step: int, idx: torch.Tensor, g: torch.Generator) -> dict[str, float]:
        net.train()
        inputs = augment(prep(x[idx]), g)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = net(inputs)
        loss = nn.functional.cross_entropy(logits.float(), y[idx])
        return descend(loss, opt, sched)

    def evaluate() -> dict[str, Any]:
        acc = accuracy_of(net, x_val, y_val, prep) if len(x_val) else None
        return {"val_acc": round(acc, 5) if acc is not None else None}

    history = fit(
        name, len(x), cfg.batch_size, cfg.epochs, update,
        lambda epoch: torch.Generator().manual_seed(derive_seed(cfg.seed, "epoch", epoch)),
        TrainState(model=held, optimizer=opt, schedule=sched), out / CHECKPOINT, evaluate, log,
        sampling_weights=data.sampling_weights,
    )  # fmt: skip

    record = {
        "name": cfg.arch if out.name == cfg.arch else out.name,
        "architecture": f"{cfg.finetune}-tuned" if cfg.finetune else cfg.arch,
        **extra,
        "classes": classes,
        "preprocessing": prep.to_dict(),
        "parameters": sum(p.numel() for p in net.parameters()),
        "trained_parameters": sum(p.numel() for p in trained),
        "trained_on": {**run, "sources": data.sources},
        "dataset_config": meta.get("config"),  # what made the training data: enough to remake it
        "history": history,
    }
    state = saved_state(net) if isinstance(net, FineTunedNet) else None
    save_checkpoint(out, net, record, half=cfg.half_weights, state=state)
    return record


def train_sweep(
    dataset: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    sizes: Sequence[int],
    mixes: Sequence[str],
    log: Any = print,
) -> list[dict[str, Any]]:
    """One classifier per mix and training size, as ImageNet-G's study (Bansal & Grover 2023):
    ``real`` (the real ``--train`` sources, each cut to the size), ``generated`` (the ones made
    by ``dreamshift dream``) and ``real+generated`` (both, each cut to the size: their 1:1
    concatenation, or ``cfg.mix``). Smaller subsets are part of larger ones. Each classifier is
    ``OUT/<mix>-n<size>`` and ``OUT/sweep.json`` lists those trained so far: ``dreamshift
    audit --model OUT`` audits them all, fitting effective robustness on the ``real`` family.
    Resumable."""
    check_sweep(sizes, mixes)
    out = Path(out)
    members: list[dict[str, Any]] = [{"folder": f"{mix}-n{n}", "mix": mix, "train_size": n}
                                     for mix in mixes for n in sorted(set(sizes))]  # fmt: skip
    for i, m in enumerate(members):
        log(f"sweep {i + 1}/{len(members)}: {m['folder']}")
        member_cfg = cfg.replace(use=SWEEP_MIXES[m["mix"]], train_size=m["train_size"])
        record = train_classifier(dataset, out / m["folder"], member_cfg, log)
        add_sweep_members(out, [dict(m)])  # listed once trained
        m["val_acc"] = record["history"][-1].get("val_acc")
    return members
