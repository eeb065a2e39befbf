"""``dreamshift info``: counts per split and per (foreground x background) group, read from the
manifest (only samples whose status is ok count towards groups)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from dreamshift.data import dataset as ds

NO_ANIMAL = "(no animal)"  # the groups' row of background-only images


def dataset_info(root: str | Path) -> dict[str, Any]:
    """Counts of a dataset directory.

    Returns ``{"splits": {split: {"ok": n, "failed": n, "flagged": n, "groups": {fg: {bg: n}}}},
    ...}``; ``flagged`` samples (black or blank images) are not counted in the groups; images
    without an animal (the spurious split) count under :data:`NO_ANIMAL`.
    """
    meta = ds.DatasetMeta.read(root)
    table = ds.read_manifest(root)
    cols = table.select(["split", "status", "fg_class", "bg_class"]).to_pydict()
    status = Counter(zip(cols["split"], cols["status"], strict=True))
    groups = Counter(
        (s, f or NO_ANIMAL, b)
        for s, st, f, b in zip(
            cols["split"], cols["status"], cols["fg_class"], cols["bg_class"], strict=True
        )
        if st == ds.OK
    )
    splits: dict[str, Any] = {}
    for split in dict.fromkeys(cols["split"]):
        splits[split] = {
            "ok": status[(split, ds.OK)],
            "failed": status[(split, ds.FAILED)],
            "flagged": status[(split, ds.FLAGGED)],
            "groups": {
                c: {b: groups[(split, c, b)] for b in meta.backgrounds}
                for c in [*meta.classes, NO_ANIMAL]
                if c != NO_ANIMAL or any(k[:2] == (split, NO_ANIMAL) for k in groups)
            },
        }
    return {
        "root": str(root),
        "complete": meta.complete,
        "num_rows": table.num_rows,
        "planned": meta.num_samples,
        "classes": list(meta.classes),
        "backgrounds": list(meta.backgrounds),
        "assignment": meta.assignment,
        # a dreamed dataset carries its source's rho
        "rho": meta.confounder_strength,
        "splits": splits,
    }


def format_info(info: dict[str, Any]) -> str:
    """A plain-text report: split totals, then one class x background table per split."""
    state = "complete" if info["complete"] else "INCOMPLETE (run the same command again)"
    lines = [
        f"dataset {info['root']}: {info['num_rows']} of {info['planned']} samples, {state}",
        f"rho = {info['rho']}; assigned backgrounds: "
        + ", ".join(f"{c}->{b}" for c, b in info["assignment"].items()),
        "",
        f"{'split':<8}{'ok':>8}{'failed':>8}{'flagged':>8}",
    ]
    for split, s in info["splits"].items():
        lines.append(f"{split:<8}{s['ok']:>8}{s['failed']:>8}{s['flagged']:>8}")
    bgs = info["backgrounds"]
    width = max([len(b) for b in bgs] + [4]) + 1
    cw = max(len(c) for c in [*info["classes"], NO_ANIMAL]) + 1
    for split, s in info["splits"].items():
        lines += ["", f"[{split}] rows = foreground class, columns = background"]
        lines.append(" " * cw + "".join(f"{b:>{width}}" for b in bgs))
        for c in s["groups"]:
            lines.append(f"{c:<{cw}}" + "".join(f"{s['groups'][c][b]:>{width}}" for b in bgs))
    return "\n".join(lines)


def failed_samples(root: str | Path) -> list[tuple[str, str]]:
    """(sample_id, error) of every failed sample."""
    cols = ds.read_manifest(root).select(["sample_id", "status", "error"]).to_pydict()
    return [
        (s, e)
        for s, st, e in zip(cols["sample_id"], cols["status"], cols["error"], strict=True)
        if st == ds.FAILED
    ]
