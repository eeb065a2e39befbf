"""``dreamshift world ...``: the embedded world (info, export, preview) and the jobs that build
its models (tiny-sd, train-dream, train-oracles), and its studies (evaluate-dream,
evaluate-verify, spurious-features, recombine-study)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add(sub: Any) -> None:
    world = sub.add_parser(
        "world", help="the embedded world: info, export, tiny-dream training, oracles, evaluation"
    )
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="WORLD_COMMAND")
    wsub.add_parser("info", help="classes, backgrounds and silhouette splits")
    _add_views(wsub)
    _add_model_jobs(wsub)
    _add_measures(wsub)
    _add_studies(wsub)
    for name, parser in wsub.choices.items():
        parser.set_defaults(func=COMMANDS[name])


def _add_views(wsub: Any) -> None:
    """export and preview: the world as folders and as a sheet."""
    exp = wsub.add_parser("export", help="write world cut-outs and backgrounds as folders")
    exp.add_argument("--out", required=True, type=Path)
    exp.add_argument("--per-class", type=int, default=20, help="cut-outs per class (20)")
    exp.add_argument("--per-background", type=int, default=10, help="images per background (10)")
    exp.add_argument("--split", choices=["train", "val", "test"], default="train")
    exp.add_argument("--fg-size", type=int, default=128, help="cut-out longer side (128)")
    exp.add_argument("--bg-size", type=int, default=64, help="background side (64)")
    exp.add_argument(
        "--coat", choices=["typical", "random"], default="typical", help="cut-outs' coats"
    )
    pre = wsub.add_parser("preview", help="a PNG sheet of every background kind and some animals")
    pre.add_argument("--out", required=True, type=Path)
    pre.add_argument("--size", type=int, default=64)
    pre.add_argument("--seed", type=int, default=0)


def _add_model_jobs(wsub: Any) -> None:
    """tiny-sd, train-dream, train-oracles: the jobs that build the world's models."""
    tiny = wsub.add_parser(
        "tiny-sd",
        help="save a tiny random-weight Stable Diffusion (diffusers format), for fast tests",
    )
    tiny.add_argument("--out", required=True, type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    train = wsub.add_parser(
        "train-dream",
        help="train tiny-dream (tokenizer, text encoder, VAE, UNet) on world renders; "
        "resumes from OUT's checkpoints (about 90 min on 2 CPU cores)",
    )
    train.add_argument("--out", required=True, type=Path)
    train.add_argument("--seed", type=int, help="(default 0)")
    train.add_argument(
        "--config", type=Path, help="YAML of TrainDreamConfig fields (steps, batch sizes, ...)"
    )
    train.add_argument("--workers", type=int, default=2, help="processes that render (2)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    orc = wsub.add_parser(
        "train-oracles",
        help="train the fg, bg and shape oracles on world photos and pastes (30 to 40 min "
        "on 2 CPU cores)",
    )
    orc.add_argument("--out", required=True, type=Path)
    orc.add_argument("--seed", type=int, help="(0)")
    orc.add_argument(
        "--config", type=Path, help="YAML of OracleConfig fields (render counts, epochs, ...)"
    )
    orc.add_argument("--workers", type=int, default=2, help="processes that render (2)")


def _add_measures(wsub: Any) -> None:
    """distance, fidelity: the world's FID and label fidelity of a dataset."""
    dist = wsub.add_parser(
        "distance",
        help="the world's FID: Frechet distance between two datasets' images in the fg "
        "oracle's penultimate features",
    )
    dist.add_argument("a", type=Path, help="a dataset directory")
    dist.add_argument("b", type=Path, help="another dataset directory")
    dist.add_argument("--split-a", help="only this split of A (default: every split)")
    dist.add_argument("--split-b", help="only this split of B (default: every split)")
    dist.add_argument("--oracles", type=Path, help="oracle folder (default: the shipped ones)")
    fid = wsub.add_parser(
        "fidelity",
        help="label fidelity of a world dataset: the share of its images the fg, shape and bg "
        "oracles name as labelled",
    )
    fid.add_argument("dataset", type=Path)
    fid.add_argument("--split", help="only this split (default: every split)")
    fid.add_argument("--oracles", type=Path, help="oracle folder (default: the shipped ones)")


def _add_studies(wsub: Any) -> None:
    """evaluate-dream, evaluate-verify, spurious-features, recombine-study: the world's
    studies."""
    ev = wsub.add_parser(
        "evaluate-dream",
        help="label fidelity (oracles), change from the guide and diversity of a model's "
        "img2img at several strengths, txt2img, and the modes that keep the object by its "
        "mask (inpaint, harmonize, remove)",
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
    vf = wsub.add_parser(
        "evaluate-verify",
        help="recall and false accepts of automatic label verification on photos, pastes and "
        "img2img at several strengths; rules on simulated review votes",
    )
    vf.add_argument("--out", required=True, type=Path, help="folder for guides and dreams")
    vf.add_argument("--model", default="tiny-dream")
    vf.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    vf.add_argument("--per-group", type=int, default=1, help="guides per class x background")
    vf.add_argument("--steps", type=int, default=20)
    vf.add_argument("--workers", type=int, default=2)
    vf.add_argument("--quiet", action="store_true", help="no progress bars")
    sf = wsub.add_parser(
        "spurious-features",
        help="class-wise spurious feature generation (Maung Maung et al. 2024): DreamBooth on "
        "each class's spurious images, with and without the text encoder and SFSL; spurious "
        "accuracy of the tuned models' images",
    )
    sf.add_argument("--out", required=True, type=Path, help="folder for datasets, runs, dreams")
    sf.add_argument("--classes", nargs="+", default=[], help="(every class with enough images)")
    sf.add_argument("--references", type=int, default=6, help="spurious images per class (6)")
    sf.add_argument("--per-class", type=int, default=75, help="images dreamed per class (75)")
    sf.add_argument("--steps", type=int, default=200, help="DreamBooth steps per run (200)")
    sf.add_argument("--kappas", type=float, nargs="+", default=[0.1, 1.0], help="SFSL weights")
    sf.add_argument("--quiet", action="store_true", help="no progress bars")
    rc = wsub.add_parser(
        "recombine-study",
        help="ForAug's recombination against a background shortcut (rho 0.95 pastes): ERM, "
        "ERM + --recombine (p 0.5, 1), GroupDRO and D3S over seeds; accuracy, BG-gap, photos "
        "and ForAug's four biases",
    )
    rc.add_argument("--out", required=True, type=Path, help="folder for datasets, runs, audit")
    rc.add_argument("--archs", nargs="+", default=["world-cnn", "world-resnet18"])
    rc.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    rc.add_argument("--train-size", type=int, default=4000, help="training pastes (4000)")
    rc.add_argument("--epochs", type=int, default=10)
    rc.add_argument("--per-group", type=int, default=10, help="test images per group (10)")
    rc.add_argument("--methods", nargs="+", help="a subset of the methods (default: all)")
    rc.add_argument("--quiet", action="store_true", help="no progress bars")


def info(args: argparse.Namespace) -> int:
    from dreamshift.world.export import world_summary

    print(world_summary())
    return 0


def export(args: argparse.Namespace) -> int:
    from dreamshift.world.export import export_world

    out = export_world(
        args.out, args.per_class, args.per_background, args.split, args.fg_size, args.bg_size,
        coat=args.coat,
    )  # fmt: skip
    print(f"foregrounds in {out / 'foregrounds'}, backgrounds in {out / 'backgrounds'}")
    return 0


def preview(args: argparse.Namespace) -> int:
    from dreamshift.world.export import preview_sheet

    print(preview_sheet(args.out, size=args.size, seed=args.seed))
    return 0


def tiny_sd(args: argparse.Namespace) -> int:
    from dreamshift.models.tiny_sd import save_tiny_sd

    print(save_tiny_sd(args.out, seed=args.seed))
    return 0


def train_dream(args: argparse.Namespace) -> int:
    from dreamshift.studies.tiny_dream import TrainDreamConfig, train_tiny_dream

    cfg = TrainDreamConfig.from_yaml(args.config).replace(seed=args.seed)
    cfg.check()
    print(train_tiny_dream(args.out, cfg, workers=args.workers, progress=not args.quiet))
    return 0


def train_oracles(args: argparse.Namespace) -> int:
    from dreamshift.studies.oracles import OracleConfig, train_oracles

    cfg = OracleConfig.from_yaml(args.config).replace(seed=args.seed)
    cfg.check()
    acc = train_oracles(args.out, cfg, workers=args.workers)
    scores = ", ".join(f"{k} {v:.2%}" for k, v in acc.items())
    print(f"oracles in {args.out}: held-out accuracy on photos {scores}")
    return 0


def distance(args: argparse.Namespace) -> int:
    from dreamshift.studies.evaluate_dream import dataset_distance

    d = dataset_distance(args.a, args.b, args.split_a, args.split_b, args.oracles)
    print(f"Frechet distance in fg-oracle features: {d.value:.2f} ({d.n_a} vs {d.n_b} images)")
    return 0


def fidelity(args: argparse.Namespace) -> int:
    from dreamshift.studies.evaluate_dream import dataset_fidelity

    f = dataset_fidelity(args.dataset, args.split, args.oracles)
    print(
        f"{args.dataset}: fg oracle {f['fg']:.1%}, shape oracle {f['shape']:.1%}, bg oracle "
        f"{f['bg']:.1%} of {int(f['n'])} images"
    )
    return 0


def evaluate_dream(args: argparse.Namespace) -> int:
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


def evaluate_verify(args: argparse.Namespace) -> int:
    import json

    from dreamshift.studies.evaluate_verify import evaluate_verify, format_table

    result = evaluate_verify(
        args.out, args.model, tuple(args.strengths), args.per_group, steps=args.steps,
        workers=args.workers, progress=not args.quiet,
    )  # fmt: skip
    print(format_table(result["rows"]))
    print(json.dumps(result["simulated_review"], indent=2))
    print(f"datasets and verification.json in {args.out}")
    return 0


def spurious_features(args: argparse.Namespace) -> int:
    from dreamshift.studies.spurious_features import (
        StudyConfig,
        format_table,
        spurious_feature_study,
    )

    cfg = StudyConfig(
        classes=tuple(args.classes), references=args.references, per_class=args.per_class,
        steps=args.steps, kappas=tuple(args.kappas),
    )  # fmt: skip
    rows = spurious_feature_study(args.out, cfg, progress=not args.quiet)
    print(format_table(rows))
    print(f"datasets, runs, study.json and study_grid.png in {args.out}")
    return 0


def recombine_study(args: argparse.Namespace) -> int:
    from dreamshift.studies.recombine import METHODS, format_table, recombine_study

    rows = recombine_study(args.out, tuple(args.archs), tuple(args.seeds), args.train_size,
                           args.epochs, args.per_group, tuple(args.methods or METHODS),
                           progress=not args.quiet)  # fmt: skip
    print(format_table(rows))
    print(f"datasets, runs, audit.jsonl and recombine-study.json in {args.out}")
    return 0


COMMANDS = {
    "info": info,
    "export": export,
    "preview": preview,
    "tiny-sd": tiny_sd,
    "train-dream": train_dream,
    "train-oracles": train_oracles,
    "fidelity": fidelity,
    "evaluate-dream": evaluate_dream,
    "evaluate-verify": evaluate_verify,
    "distance": distance,
    "spurious-features": spurious_features,
    "recombine-study": recombine_study,
}
