"""``dreamshift <command>``: parses arguments, builds a config, calls the library.

Every command has ``--help``. ``main(argv)`` returns the exit status (0 ok, 1 some samples
failed, 2 bad input), so tests call it directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from dreamshift import __version__
from dreamshift.errors import DreamshiftError


def _floats(text: str) -> tuple[float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"expected MIN or MIN,MAX, got {text!r}")


def _names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in _names(text):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected CLASS=BACKGROUND, got {item!r}")
        c, b = item.split("=", 1)
        out.append((c.strip(), b.strip()))
    return tuple(out)


def _add_compose(sub: Any) -> None:
    p = sub.add_parser(
        "compose",
        help="paste foregrounds on backgrounds: guide images and the paste baseline dataset",
        description="Compose a dataset directory of guide images with a controlled "
        "foreground/background correlation: a correlated train split (confounder strength "
        "rho), balanced val/test splits and an anti-correlated split. Run the same command "
        "again to continue an interrupted run.",
    )  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    p.add_argument("--config", type=Path, help="YAML file of ComposeConfig fields (flags win)")
    p.add_argument("--foregrounds", help="'world' (default) or a folder: one sub-folder per class")
    p.add_argument("--backgrounds", help="'world' (default) or a folder: one sub-folder per label")
    p.add_argument("--classes", type=_names, help="comma-separated subset of classes")
    p.add_argument("--background-names", type=_names, help="comma-separated subset of backgrounds")
    p.add_argument("--size", type=int, help="output side in pixels (default 64)")
    p.add_argument("--seed", type=int, help="run seed (default 0)")
    p.add_argument("--scale", type=_floats, help="cut-out side / image side: S or MIN,MAX (0.4)")
    p.add_argument("--position", choices=["random", "center"], help="paste position (random)")
    p.add_argument("--feather", type=float, help="mask edge blur radius in pixels (0)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--max-rotation", type=float, help="random rotation range in degrees (10)")
    p.add_argument("--rho", type=float, help="confounder strength of the train split (0.95)")
    p.add_argument("--train-size", type=int, help="train images in all (2000)")
    p.add_argument("--val-per-group", type=int, help="val images per class x background (2)")
    p.add_argument("--test-per-group", type=int, help="test images per class x background (5)")
    p.add_argument("--anti-per-group", type=int, help="anti-correlated images per group (2)")
    p.add_argument(
        "--spurious-per-class",
        type=int,
        help="images of each class's assigned background without the animal (0): split "
        "'spurious', for the audit's spurious accuracy",
    )
    p.add_argument("--assign", type=_pairs, help="CLASS=BACKGROUND,... spurious pairs to use")
    p.add_argument(
        "--share-foregrounds",
        action="store_true",
        help="use every foreground file in every split (folders with < 3 files per class)",
    )
    p.add_argument("--shard-size", type=int, help="images per shard folder (256)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _read_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        base = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DreamshiftError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(base, dict):
        raise DreamshiftError(f"config {path} must hold a mapping of fields")
    return base


def _compose_config(args: argparse.Namespace) -> Any:
    from dreamshift.compose.config import ComposeConfig

    base = _read_yaml(args.config)
    try:
        cfg = ComposeConfig.from_dict(base)
    except TypeError as exc:
        raise DreamshiftError(f"config {args.config}: {exc}") from exc
    top = {k: getattr(args, k) for k in ("foregrounds", "backgrounds", "classes", "size", "seed")}
    top["background_names"] = args.background_names
    top["shard_size"] = args.shard_size
    if args.share_foregrounds:
        top["share_foregrounds"] = True
    place = {"scale": args.scale, "position": args.position, "feather": args.feather}
    place["max_rotation"] = args.max_rotation
    if args.no_flip:
        place["flip"] = False
    recipe = {
        "rho": args.rho,
        "train_size": args.train_size,
        "val_per_group": args.val_per_group,
        "test_per_group": args.test_per_group,
        "anti_per_group": args.anti_per_group,
        "spurious_per_class": args.spurious_per_class,
        "assignment": args.assign,
    }

    def given(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None}

    return replace(
        cfg,
        **given(top),
        placement=replace(cfg.placement, **given(place)),
        recipe=replace(cfg.recipe, **given(recipe)),
    )  # compose() checks it: ComposeConfig.check names any wrong type or value


def _cmd_compose(args: argparse.Namespace) -> int:
    from dreamshift.compose.runner import compose

    result = compose(
        _compose_config(args), args.out, workers=args.workers, progress=not args.no_progress
    )
    print(
        f"composed {result.num_samples} samples ({result.num_failed} failed, "
        f"{result.shards_run} shards run) in {result.seconds:.1f} s: {result.root}"
    )
    if result.num_failed:
        print(
            f"{result.num_failed} samples failed; their reasons are in the manifest's 'error' "
            f"column (dreamshift info {result.root} --failed)",
            file=sys.stderr,
        )  # fmt: skip
        return 1
    return 0


def _add_dream(sub: Any) -> None:
    p = sub.add_parser(
        "dream",
        help="diffusion img2img/txt2img from a composed dataset (or paste: copy the guides)",
        description="Turn a composed dataset of guides into a dreamed one with a diffusers "
        "Stable Diffusion model (D3S img2img, or txt2img as ImageNet-G). Every image has its "
        "own seed and full provenance in the manifest. Run the same command again to "
        "continue an interrupted run; add --retry-failed to redo failed samples.",
    )
    p.add_argument("source", help="composed dataset directory")
    p.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    p.add_argument("--config", type=Path, help="YAML file of DreamConfig fields (flags win)")
    p.add_argument("--mode", choices=["img2img", "txt2img", "paste"], help="(img2img)")
    p.add_argument(
        "--model",
        help="tiny-dream (default: shipped, trained on the world), a diffusers "
        "Stable Diffusion folder, or a hub id",
    )
    p.add_argument("--prompts", help="recipe: d3s (default), imagenet-g, or a YAML file")
    p.add_argument("--negative-prompt", help="overrides the recipe's negative prompt")
    p.add_argument("--scheduler", help="model (default), ddim, euler, euler-a, dpm++, lcm")
    p.add_argument("--steps", type=int, help="denoising steps (30)")
    p.add_argument("--strength", type=float, help="img2img noise strength in (0, 1] (0.8)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance (7.5)")
    p.add_argument("--width", type=int, help="output width (default: the guides')")
    p.add_argument("--height", type=int, help="output height (default: the guides')")
    p.add_argument("--splits", type=_names, help="comma-separated splits to dream (all)")
    p.add_argument("--seed", type=int, help="run seed (0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="(auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"],
                   help="(auto: float16 on CUDA, else float32)")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch threads per worker on a CPU "
                   "(cores / workers); recorded, as results depend on it")  # fmt: skip
    p.add_argument("--no-batch-invariant", action="store_true",
                   help="let the networks see whole batches: faster on a GPU, but pixels "
                   "then depend on the batch (to within float rounding)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    p.add_argument("--batch-size", type=int, default=1, help="images per pipeline call (1)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    p.add_argument("--shard-size", type=int, help="images per shard folder (64)")
    p.add_argument("--retry-failed", action="store_true", help="redo the failed samples")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _dream_config(args: argparse.Namespace) -> Any:
    from dreamshift.dream.config import DreamConfig

    base = _read_yaml(args.config)
    base["source"] = args.source
    try:
        cfg = DreamConfig.from_dict(base)
    except TypeError as exc:
        raise DreamshiftError(f"config {args.config}: {exc}") from exc
    names = [
        "mode", "model", "prompts", "negative_prompt", "scheduler", "steps", "strength",
        "guidance_scale", "width", "height", "splits", "seed", "device", "dtype", "threads",
        "shard_size",
    ]  # fmt: skip
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.no_batch_invariant:
        given["batch_invariant"] = False
    if args.compile:
        given["compile"] = True
    return replace(cfg, **given)


def _cmd_dream(args: argparse.Namespace) -> int:
    from dreamshift.dream.runner import dream

    result = dream(
        _dream_config(args),
        args.out,
        workers=args.workers,
        batch_size=args.batch_size,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
    )
    print(
        f"dreamed {result.num_samples} samples ({result.num_failed} failed, "
        f"{result.num_flagged} flagged, {result.shards_run} shards run) in "
        f"{result.seconds:.1f} s: {result.root}"
    )
    if result.num_flagged:
        print(f"{result.num_flagged} images are flagged (black or blank); they have status "
              "'flagged' and the reason in 'flag'", file=sys.stderr)  # fmt: skip
    if result.num_failed:
        print(
            f"{result.num_failed} samples failed: see `dreamshift info {result.root} --failed`; "
            "fix the cause and run the same command with --retry-failed",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_regenerate(args: argparse.Namespace) -> int:
    from dreamshift.dream.runner import regenerate

    if not args.sample_ids and not args.all:
        raise DreamshiftError("name SAMPLE_IDs to regenerate, or pass --all")
    results = regenerate(args.dataset, args.sample_ids or None, args.model, args.out)
    for r in results:
        state = {True: "match", False: "MISMATCH", None: "skipped"}[r.match]
        print(f"{state} {r.sample_id}: {r.detail}")
    bad = sum(r.match is False for r in results)
    same = sum(r.match is True for r in results)
    print(f"{same} of {len(results)} regenerated identically, {bad} differ")
    return 1 if bad else 0


def _cmd_info(args: argparse.Namespace) -> int:
    from dreamshift.report.summary import dataset_info, failed_samples, format_info

    info = dataset_info(args.dataset)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    if args.failed:
        for sample_id, error in failed_samples(args.dataset):
            print(f"failed {sample_id}: {error}")
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    from dreamshift.report.grid import make_grid

    out = args.out or Path(args.dataset) / "grid.png"
    print(make_grid(args.dataset, out, split=args.split, cell=args.cell))
    return 0


def _cmd_train_classifier(args: argparse.Namespace) -> int:
    from dreamshift.audit.train import TrainConfig, train_classifier

    fields = {
        k: getattr(args, k)
        for k in (
            "arch",
            "split",
            "val_split",
            "epochs",
            "batch_size",
            "lr",
            "seed",
            "bf16",
            "half_weights",
        )
    }
    cfg = TrainConfig(**{k: v for k, v in fields.items() if v is not None})
    record = train_classifier(args.dataset, args.out, cfg)
    last = record["history"][-1]
    print(
        f"wrote {args.out}: {record['architecture']}, {record['parameters']} parameters, "
        f"val acc {last['val_acc']}"
    )
    return 0


def _add_train_classifier(sub: Any) -> None:
    p = sub.add_parser(
        "train-classifier",
        help="train a world classifier (ERM) on a dataset's training split",
        description="Empirical risk minimisation of a world classifier on a dataset's train "
        "split (the background-correlated one); val accuracy per epoch; resumable (run the "
        "same command again). The folder it writes is a --model for `dreamshift audit`.",
    )
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", required=True, type=Path, help="classifier folder to write")
    p.add_argument("--arch", help="architecture: world-cnn (default) or world-resnet18")
    p.add_argument("--split", help="training split (train)")
    p.add_argument("--val-split", help="split for the per-epoch accuracy (val)")
    p.add_argument("--epochs", type=int, help="epochs (10)")
    p.add_argument("--batch-size", type=int, help="batch size (128)")
    p.add_argument("--lr", type=float, help="peak learning rate of the one-cycle schedule (2e-3)")
    p.add_argument("--seed", type=int, help="seed (0)")
    p.add_argument(
        "--bf16",
        action="store_true",
        default=None,
        help="bfloat16 autocast: only for CPUs/GPUs with native bf16 (10-30x slower without)",
    )
    p.add_argument(
        "--half-weights",
        action="store_true",
        default=None,
        help="store float16 weights (half the file size)",
    )
    p.set_defaults(func=_cmd_train_classifier)


def _cmd_audit(args: argparse.Namespace) -> int:
    import dreamshift.learn  # noqa: F401  (registers learn run folders as --model)
    from dreamshift.audit.evaluate import AuditConfig, audit
    from dreamshift.report.tables import format_table

    cfg = AuditConfig(
        models=tuple(args.model),
        split=args.split or "",
        group_by=args.group_by,
        in_distribution=args.in_distribution or "",
        label_map=args.label_map or "",
        batch_size=args.batch_size,
        bootstrap=args.bootstrap,
        device=args.device,
        allow_empty_groups=args.allow_empty_groups,
    )
    records = audit(cfg, args.dataset, args.results)
    print(format_table(records))
    return 0


def _add_audit(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="accuracy of classifiers per foreground class and background, and shift metrics",
        description="Evaluate classifiers on a dataset: accuracy overall, per background, per "
        "class and per group, worst group, BG-gap, spurious accuracy and AUC (split "
        "'spurious'), drop against an in-distribution dataset and effective robustness, "
        "with bootstrap intervals. One record per model is appended to the results file.",
    )
    p.add_argument("dataset", type=Path)
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="repeatable: world-cnn, world-resnet18 (shipped), a train-classifier folder, "
        "a learn run folder, timm:NAME, torchvision:NAME or open_clip:ARCH/PRETRAINED",
    )
    p.add_argument("--split", help="split to audit (default: test if present, else all)")
    p.add_argument(
        "--group-by",
        type=_names,
        default=("fg_class", "bg_class"),
        help="comma-separated manifest columns forming groups (fg_class,bg_class)",
    )
    p.add_argument(
        "--in-distribution",
        metavar="DATASET[:SPLIT]",
        help="reference dataset for the drop and effective robustness",
    )
    p.add_argument("--label-map", help="YAML {class: [model labels or output indices]}")
    p.add_argument(
        "--results",
        type=Path,
        help="results file to append to (default DATASET/audit/results.jsonl)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--allow-empty-groups",
        action="store_true",
        help="audit even when a planned group has no usable images",
    )
    p.set_defaults(func=_cmd_audit)


def _cmd_report(args: argparse.Namespace) -> int:
    from dreamshift.report.html import write_report

    print(write_report(args.results, args.out))
    return 0


def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="self-contained HTML page of audit and learn results, with plots"
    )
    p.add_argument("results", type=Path, nargs="+", help="results.jsonl file(s) of audit or learn")
    p.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file (report.html)")
    p.set_defaults(func=_cmd_report)


def _cmd_learn(args: argparse.Namespace) -> int:
    from dreamshift.learn.algorithms import Hparams
    from dreamshift.learn.run import LearnConfig, learn

    given = {
        "mi_estimator": args.mi_estimator,
        "mi_weight": args.mi_weight,
        "mi_steps": args.mi_steps,
        "mi_anneal_steps": args.mi_anneal_steps,
        "mi_lr": args.mi_lr,
        "lr": args.lr,
    }
    hp = Hparams(**{k: v for k, v in given.items() if v is not None})
    for algorithm in args.algorithm:
        for seed in args.seeds:
            cfg = LearnConfig(
                algorithm=algorithm,
                arch=args.arch,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=seed,
                input_size=args.input_size,
                lr_schedule=args.lr_schedule,
                features_from=str(args.features_from.resolve()) if args.features_from else "",
                erase=args.erase or "",
                hparams=hp,
            )
            folder = learn(args.dataset, args.out, cfg)
            scores = json.loads((folder / "done").read_text())
            print(
                f"{folder}: "
                + "; ".join(
                    f"{split} acc_avg {100 * m['acc_avg']:.1f} % acc_wg {100 * m['acc_wg']:.1f} %"
                    for split, m in scores.items()
                    if m["acc_avg"] is not None
                )
            )
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from dreamshift.learn.run import probe

    matrix = probe(args.dataset, args.run, args.train_split, args.test_split, args.erase)
    labels = list(matrix["chance"])
    width = max(len(block) for block in matrix)
    print(f"{'features':{width}s} " + "  ".join(f"-> {lab:10s}" for lab in labels))
    for block, row in matrix.items():
        print(f"{block:{width}s} " + "  ".join(f"   {100 * row[lab]:6.1f} %  " for lab in labels))
    return 0


def _add_learn(sub: Any) -> None:
    p = sub.add_parser(
        "learn",
        help="train ERM, GroupDRO, IRM, DANN or the D3S disentangled model on a dataset",
        description="Train on the dataset's train split and evaluate on val/test/anti. Each "
        "run gets a folder named by a hash of its config under --out (resumable; finished runs "
        "are skipped); results are appended to OUT/results.jsonl.",
    )
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", required=True, type=Path, help="folder of runs")
    p.add_argument(
        "--algorithm",
        type=_names,
        default=("erm",),
        help="comma-separated: erm, groupdro, irm, dann, d3s (erm)",
    )
    p.add_argument(
        "--seeds",
        type=lambda t: tuple(int(v) for v in _names(t)),
        default=(0,),
        help="comma-separated seeds (0)",
    )
    p.add_argument("--arch", default="world-cnn", help="world-cnn or world-resnet18")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--input-size",
        type=int,
        default=64,
        help="side the images are resized to (64); a head on --features-from must use its source's",
    )
    p.add_argument("--lr", type=float, help="learning rate (2e-3)")
    p.add_argument(
        "--lr-schedule",
        default="constant",
        help="constant (DomainBed's) or cosine (5 %% warm-up, cosine decay to 0)",
    )
    p.add_argument(
        "--features-from",
        type=Path,
        help="a finished run folder: train only a head on its frozen features (the fg block of "
        "a d3s run: D3S's classifier on invariant foreground features)",
    )
    p.add_argument(
        "--erase",
        help="with --features-from: background or class, removed from the frozen features by "
        "LEACE (Belrose et al. 2023) fitted on the source run's training split",
    )
    p.add_argument("--mi-estimator", help="d3s: mine (default), critic or classifier")
    p.add_argument("--mi-weight", type=float, help="d3s: weight of the MI penalty (1.0)")
    p.add_argument("--mi-steps", type=int, help="d3s: estimator steps per update (1)")
    p.add_argument("--mi-lr", type=float, help="d3s: estimator learning rate (1e-3)")
    p.add_argument(
        "--mi-anneal-steps", type=int, help="d3s: updates before the MI penalty starts (0)"
    )
    p.set_defaults(func=_cmd_learn)
    q = sub.add_parser("probe", help="linear probes on a learn run's frozen feature blocks")
    q.add_argument("run", type=Path, help="a finished run folder of `dreamshift learn`")
    q.add_argument("dataset", type=Path)
    q.add_argument("--train-split", default="train")
    q.add_argument("--test-split", default="test")
    q.add_argument(
        "--erase",
        action="store_true",
        help="d3s runs: first remove the background from the fg block and the class from the "
        "bg block with LEACE (Belrose et al. 2023), fitted on the train split",
    )
    q.set_defaults(func=_cmd_probe)


def _cmd_world(args: argparse.Namespace) -> int:
    from dreamshift.world import export

    if args.world_command == "info":
        print(export.world_summary())
    elif args.world_command == "export":
        out = export.export_world(
            args.out, args.per_class, args.per_background, args.split, args.fg_size, args.bg_size
        )
        print(f"foregrounds in {out / 'foregrounds'}, backgrounds in {out / 'backgrounds'}")
    elif args.world_command == "preview":
        print(export.preview_sheet(args.out, size=args.size, seed=args.seed))
    elif args.world_command == "tiny-sd":
        from dreamshift.models.tiny_sd import save_tiny_sd

        print(save_tiny_sd(args.out, seed=args.seed))
    elif args.world_command == "train-dream":
        from dreamshift.studies.tiny_dream import TrainDreamConfig, train_tiny_dream

        cfg = TrainDreamConfig.from_yaml(args.config).replace(seed=args.seed)
        cfg.check()
        print(train_tiny_dream(args.out, cfg, workers=args.workers, progress=not args.quiet))
    elif args.world_command == "train-oracles":
        from dreamshift.studies.oracles import OracleConfig, train_oracles

        names = ("seed", "train_renders", "test_per_group", "fg_epochs", "bg_epochs")
        given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
        ocfg = OracleConfig(**given)
        acc = train_oracles(args.out, ocfg, workers=args.workers)
        print(f"oracles in {args.out}: held-out accuracy fg {acc['fg']:.2%}, bg {acc['bg']:.2%}")
    elif args.world_command == "evaluate-dream":
        from dreamshift.studies.evaluate_dream import evaluate_dream, format_table

        rows = evaluate_dream(
            args.out,
            model=args.model,
            strengths=tuple(args.strengths),
            per_group=args.per_group,
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            oracles=args.oracles,
            workers=args.workers,
            progress=not args.quiet,
        )
        print(format_table(rows))
        print(f"datasets, evaluation.json and evaluation_grid.png in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamshift",
        description="Image datasets with controlled foreground/background shifts.",
    )
    parser.add_argument("--version", action="version", version=f"dreamshift {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = sub.add_parser(
        "world", help="the embedded world: info, export, tiny-dream training, oracles, evaluation"
    )
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="WORLD_COMMAND")
    wsub.add_parser("info", help="classes, backgrounds and silhouette splits")
    exp = wsub.add_parser("export", help="write world cut-outs and backgrounds as folders")
    exp.add_argument("--out", required=True, type=Path)
    exp.add_argument("--per-class", type=int, default=20, help="cut-outs per class (20)")
    exp.add_argument("--per-background", type=int, default=10, help="images per background (10)")
    exp.add_argument("--split", choices=["train", "val", "test"], default="train")
    exp.add_argument("--fg-size", type=int, default=128, help="cut-out longer side (128)")
    exp.add_argument("--bg-size", type=int, default=64, help="background side (64)")
    pre = wsub.add_parser("preview", help="a PNG sheet of every background kind and some animals")
    pre.add_argument("--out", required=True, type=Path)
    pre.add_argument("--size", type=int, default=64)
    pre.add_argument("--seed", type=int, default=0)
    tiny = wsub.add_parser(
        "tiny-sd",
        help="save a tiny random-weight Stable Diffusion (diffusers format), for fast tests",
    )
    tiny.add_argument("--out", required=True, type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    train = wsub.add_parser(
        "train-dream",
        help="train tiny-dream (tokenizer, text encoder, VAE, UNet) on world renders; "
        "resumes from OUT's checkpoints (about an hour on 2 CPU cores)",
    )
    train.add_argument("--out", required=True, type=Path)
    train.add_argument("--seed", type=int, help="(default 0)")
    train.add_argument(
        "--config", type=Path, help="YAML of TrainDreamConfig fields (steps, batch sizes, ...)"
    )
    train.add_argument("--workers", type=int, default=2, help="processes that render (2)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    orc = wsub.add_parser(
        "train-oracles", help="train the fg and bg oracles on clean world renders"
    )
    orc.add_argument("--out", required=True, type=Path)
    orc.add_argument("--seed", type=int, help="(0)")
    orc.add_argument("--train-renders", type=int, help="(30000)")
    orc.add_argument("--test-per-group", type=int, help="held-out renders per group (10)")
    orc.add_argument("--fg-epochs", type=int, help="(15)")
    orc.add_argument("--bg-epochs", type=int, help="(1)")
    orc.add_argument("--workers", type=int, default=2, help="processes that render (2)")
    ev = wsub.add_parser(
        "evaluate-dream",
        help="label fidelity (oracles), change from the guide and diversity of a model's "
        "img2img at several strengths and txt2img",
    )
    ev.add_argument("--out", required=True, type=Path, help="folder for guides and dreams")
    ev.add_argument("--model", default="tiny-dream")
    ev.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.8, 1.0])
    ev.add_argument("--per-group", type=int, default=2, help="guides per class x background")
    ev.add_argument("--steps", type=int, default=30)
    ev.add_argument("--guidance-scale", type=float, default=7.5)
    ev.add_argument("--oracles", type=Path, help="oracle folder (default: the shipped ones)")
    ev.add_argument("--workers", type=int, default=2)
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    world.set_defaults(func=_cmd_world)

    _add_compose(sub)
    sub.choices["compose"].set_defaults(func=_cmd_compose)

    _add_dream(sub)
    sub.choices["dream"].set_defaults(func=_cmd_dream)

    _add_train_classifier(sub)
    _add_audit(sub)
    _add_report(sub)
    _add_learn(sub)

    regen = sub.add_parser(
        "regenerate", help="remake dreamed samples from their manifest rows and compare"
    )
    regen.add_argument("dataset", type=Path)
    regen.add_argument("sample_ids", nargs="*", metavar="SAMPLE_ID")
    regen.add_argument("--all", action="store_true", help="every sample of the dataset")
    regen.add_argument("--model", help="where the model is now (default: where the run found it)")
    regen.add_argument("--out", type=Path, help="also write the remade images to this folder")
    regen.set_defaults(func=_cmd_regenerate)

    info = sub.add_parser("info", help="counts per split and per foreground x background group")
    info.add_argument("dataset", type=Path)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--failed", action="store_true", help="list failed samples and reasons")
    info.set_defaults(func=_cmd_info)

    grid = sub.add_parser("grid", help="PNG: rows = classes, columns = backgrounds")
    grid.add_argument("dataset", type=Path)
    grid.add_argument("--out", type=Path, help="PNG path (default DATASET/grid.png)")
    grid.add_argument("--split", help="only this split (default: any)")
    grid.add_argument("--cell", type=int, default=64, help="cell side in pixels (64)")
    grid.set_defaults(func=_cmd_grid)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DreamshiftError as exc:
        print(f"dreamshift: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dreamshift: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader closed stdout (`dreamshift info DIR | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
