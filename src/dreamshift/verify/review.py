"""The review of a dataset by people: reviewers' links, the server, and the export of votes.

``dreamshift review add-reviewer DATASET NAME`` prints a link; ``dreamshift review DATASET``
serves the task pages (:mod:`dreamshift.verify.app`); ``dreamshift review export DATASET
--rule d3s`` writes every image's votes and a ``verified`` column into the verification table
(:mod:`dreamshift.data.verification`), which ``audit --verified-only`` and ``learn
--verified-only`` read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dreamshift.data import dataset as ds
from dreamshift.data import verification as vt
from dreamshift.errors import DreamshiftError, need_extra
from dreamshift.verify.aggregate import RULES, by_image, decide, krippendorff_alpha
from dreamshift.verify.store import ReviewStore, db_path, votes_json

LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]


def link(token: str, host: str = "127.0.0.1", port: int = 8765) -> str:
    return f"http://{host}:{port}/r/{token}/"


def open_store(root: str | Path, votes_per_image: int | None = None) -> ReviewStore:
    root = Path(root)
    ds.DatasetMeta.read(root)  # a dataset directory, or a clear error
    return ReviewStore(root, votes_per_image)


def add_reviewer(root: str | Path, name: str, host: str = "127.0.0.1", port: int = 8765) -> str:
    """Register reviewer ``name``; returns the link to give them."""
    return link(open_store(root).add_reviewer(name).token, host, port)


def build_app(
    root: str | Path,
    host: str = "127.0.0.1",
    split: str = "",
    votes_per_image: int | None = None,
    naturalness: bool = False,
    definitions: str | None = None,
    allow_remote: str | None = None,
) -> Any:
    """The review app of ``root``. It answers requests for the loopback names and ``host``;
    ``allow_remote``: also the public host name reviewers' browsers use, which a ``host`` other
    than loopback requires (see :func:`check_host`)."""
    from dreamshift.verify.app import ReviewSite, create_app

    check_host(host, allow_remote)
    site = ReviewSite(
        Path(root), open_store(root, votes_per_image), split, naturalness, definitions
    )
    hosts = sorted({*LOCAL_HOSTS, host, *([allow_remote] if allow_remote else [])})
    return create_app(site, hosts)


def check_host(host: str, allow_remote: str | None) -> None:
    """Refuse to listen beyond loopback unless ``allow_remote`` names the public host name:
    the app speaks plain HTTP, and every link holds a reviewer's secret token."""
    if host not in LOCAL_HOSTS and not allow_remote:
        raise DreamshiftError(
            f"--host {host} opens the review to other machines over plain HTTP, where each "
            "link's token can be read on the way: give --allow-remote HOSTNAME (the name "
            "reviewers' browsers use) and put a TLS proxy in front, or keep 127.0.0.1"
        )


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8765, log: Any = print,
          allow_remote: str | None = None, **options: Any) -> None:  # fmt: skip
    uvicorn = need_extra("uvicorn", "review", "dreamshift review serve")

    app = build_app(root, host, allow_remote=allow_remote, **options)
    store = open_store(root)
    if not store.reviewers():
        log(f"no reviewers yet: `dreamshift review add-reviewer {root} NAME` prints a link")
    if allow_remote:
        log(f"listening on {host} for {allow_remote}: plain HTTP, so serve it to reviewers "
            "only through a TLS proxy (links hold their tokens)")  # fmt: skip
    log(f"review of {root} on http://{host}:{port}/r/<token>/ ({store.votes_per_image} votes "
        f"per image; votes in {db_path(root)}); Ctrl-C stops it, nothing is lost")  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="warning")


def export(root: str | Path, rule: str = "d3s") -> dict[str, Any]:
    """Write votes and ``verified`` (by ``rule``) into the verification table of ``root``.
    Returns the share of voted images that passes each rule and Krippendorff's α."""
    if rule not in RULES:
        raise DreamshiftError(f"unknown rule {rule!r}: choose one of {', '.join(RULES)}")
    root = Path(root)
    if not db_path(root).is_file():
        raise DreamshiftError(
            f"{root} has no review yet: start one with `dreamshift review {root}`"
        )
    store = open_store(root)
    votes = store.votes()
    if not votes:
        raise DreamshiftError(f"{db_path(root)} holds no votes yet: nothing to export")
    k = store.votes_per_image
    images = by_image(votes)
    decisions = {r: decide(votes, r, k) for r in RULES}
    ids = sorted(images)
    natural = [[v.naturalness for v in images[s] if v.naturalness is not None] for s in ids]
    columns: dict[str, list[Any]] = {
        "votes": [votes_json(images[s]) for s in ids],
        "votes_yes": [sum(v.present == "yes" for v in images[s]) for s in ids],
        "votes_no": [sum(v.present == "no" for v in images[s]) for s in ids],
        "votes_unsure": [sum(v.present == "unsure" for v in images[s]) for s in ids],
        "votes_unsafe": [sum(v.unsafe for v in images[s]) for s in ids],
        "naturalness_mean": [float(np.mean(n)) if n else None for n in natural],
        vt.VERIFIED: [decisions[rule][s] for s in ids],
        "verified_rule": [f"{rule} (K={k})"] * len(ids),
    }
    vt.update_columns(root, ids, columns)
    complete = [s for s in ids if len(images[s]) >= k]
    return {
        "images_voted": len(ids),
        "images_with_k_votes": len(complete),
        "votes": len(votes),
        "reviewers": len({v.reviewer for v in votes}),
        "rule": rule,
        "verified": sum(decisions[rule].values()),
        "share_passing": {
            r: float(np.mean([decisions[r][s] for s in complete])) if complete else None
            for r in RULES
        },
        "krippendorff_alpha": krippendorff_alpha(votes),
        "table": str(vt.table_path(root)),
    }
