"""``dreamshift verify`` (automatic label scores) and ``dreamshift review`` (people's votes).

``review`` has three forms: ``review DATASET`` serves the task pages, ``review add-reviewer
DATASET NAME`` prints a reviewer's link, ``review export DATASET --rule d3s`` writes the votes
and the ``verified`` column.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dreamshift.cli.args import names

REVIEW_ACTIONS = ("serve", "add-reviewer", "export")


def add(sub: Any) -> None:
    v = sub.add_parser(
        "verify",
        help="score each image's label with oracles into the dataset's verification table",
        description="Automatic label checks (D3S's candidate mining and the world's oracles): "
        "per image, each oracle's probability of the labelled class, whether it names it, how "
        "many agree, and 'mined' when none does. Written to DATASET/verification.parquet; the "
        "dataset's images and manifest are never rewritten; a rerun replaces its own columns.",
    )
    v.add_argument("dataset", type=Path)
    v.add_argument("--oracle", action="append", default=[], metavar="SPEC", required=True,
                   help="repeatable: world (the world's fg/shape/bg oracles), "
                   "clip:ARCH/PRETRAINED (open_clip zero-shot), or any audit --model")  # fmt: skip
    v.add_argument("--split", default="", help="only this split (default: every split)")
    v.add_argument("--label-map", default="", help="YAML {class: [model labels]} for models")
    v.add_argument("--batch-size", type=int, default=128)
    v.add_argument("--device", default="cpu")
    v.set_defaults(func=run_verify)

    r = sub.add_parser(
        "review",
        help="people vote on labels in a local web app (serve, add-reviewer, export)",
        description="`review DATASET` serves task pages of 25 images on 127.0.0.1; "
        "`review add-reviewer DATASET NAME` prints a reviewer's link; `review export DATASET "
        "--rule d3s|majority|dawid-skene` writes votes and a verified column beside the "
        "manifest (audit/learn --verified-only read it).",
    )
    actions = r.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="serve the task pages (the default action)")
    serve.add_argument("dataset", type=Path)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1); "
                       "another needs --allow-remote")  # fmt: skip
    serve.add_argument("--allow-remote", metavar="HOSTNAME", help="listen beyond loopback for "
                       "the public host name HOSTNAME (put a TLS proxy in front)")  # fmt: skip
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--split", default="", help="only this split's images")
    serve.add_argument("--votes-per-image", type=int, default=None,
                       help="K different reviewers per image (5, as D3S); fixed at the "
                       "first vote")  # fmt: skip
    serve.add_argument("--naturalness", action="store_true", help="also ask naturalness 1-5")
    serve.add_argument("--definitions", help="YAML {class: one-sentence definition}")
    serve.set_defaults(func=run_serve)
    add_reviewer = actions.add_parser("add-reviewer", help="register a reviewer; print the link")
    add_reviewer.add_argument("dataset", type=Path)
    add_reviewer.add_argument("name")
    add_reviewer.add_argument("--host", default="127.0.0.1", help="host in the link")
    add_reviewer.add_argument("--port", type=int, default=8765, help="port in the link")
    add_reviewer.set_defaults(func=run_add_reviewer)
    export = actions.add_parser("export", help="write votes and `verified` by a rule")
    export.add_argument("dataset", type=Path)
    export.add_argument("--rule", default="d3s", choices=["d3s", "majority", "dawid-skene"])
    export.set_defaults(func=run_export)


def review_argv(argv: list[str]) -> list[str]:
    """``review DATASET ...`` means ``review serve DATASET ...``."""
    if len(argv) >= 2 and argv[0] == "review" and argv[1] not in (*REVIEW_ACTIONS, "-h", "--help"):
        return ["review", "serve", *argv[1:]]
    return argv


def run_verify(args: argparse.Namespace) -> int:
    from dreamshift.verify.scores import verify

    oracles = [o for item in args.oracle for o in names(item)]
    summary = verify(args.dataset, oracles, args.split, args.label_map, args.batch_size,
                     args.device)  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 1 if summary["unreadable"] else 0


def run_serve(args: argparse.Namespace) -> int:
    from dreamshift.verify.review import serve

    serve(args.dataset, args.host, args.port, allow_remote=args.allow_remote, split=args.split,
          votes_per_image=args.votes_per_image, naturalness=args.naturalness,
          definitions=args.definitions)  # fmt: skip
    return 0


def run_add_reviewer(args: argparse.Namespace) -> int:
    from dreamshift.verify.review import add_reviewer

    print(add_reviewer(args.dataset, args.name, args.host, args.port))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from dreamshift.verify.review import export

    print(json.dumps(export(args.dataset, args.rule), indent=2))
    return 0
