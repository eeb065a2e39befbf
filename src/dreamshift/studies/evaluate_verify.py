"""How well automatic verification tells a right label from a wrong one on the world.

``dreamshift world evaluate-verify --out DIR``. Held-out silhouettes are pasted on every
background (the guides), plus backgrounds with no animal (the spurious split); tiny-dream dreams
both img2img at several strengths. Each image is then checked three ways, with a truth known by
construction:

- **right label**: the class the guide pasted and the prompt named (a positive: unless the
  generator lost or changed the animal, which is what verification is for);
- **wrong label**: the same image labelled with the next class (a negative);
- **no animal**: a background alone (the spurious split) labelled with a class (a negative;
  photos and pastes only: ``dream`` has nothing to dream on a background alone).

Per verifier we report recall (right labels accepted), the false-accept rate on each kind of
negative, and precision over the right and wrong labels (one of each per image: half the labels
are right). Photos (scene-lit renders, true labels) and the pastes themselves are the first
rows.

The verifiers: ``world_pass`` (the fg oracle gives the class a probability of at least 0.5:
what ``dreamshift verify --oracle world`` writes), the fg and the shape oracle's argmax, and
the shipped world-cnn, an
ERM classifier trained where backgrounds predict the class, as D3S's own classifiers were.

Last, the dreamed split at one strength goes through ``dreamshift review`` with 5 *simulated*
reviewers (each says yes with the fg oracle's probability of the class, unsure 5 % of the time,
flags 1 % of images): the share that passes each aggregation rule and Krippendorff's α. They
show what each rule keeps on votes of that kind; they are not people's votes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dreamshift.data import dataset as ds
from dreamshift.studies.evaluate_dream import wrong_class
from dreamshift.world.animals import CLASSES

STRENGTHS = (0.5, 0.7, 0.9)
SIMULATED_REVIEWERS = 5


@dataclass(frozen=True)
class Row:
    setting: str
    verifier: str
    n: int  # images (each gives one right and one wrong label)
    n_empty: int  # backgrounds alone (0 for dreams)
    recall: float
    false_accept_wrong: float
    false_accept_empty: float | None
    precision: float


def _load(root: Path, split: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    rows = [r for r in ds.read_manifest(root).to_pylist() if r["status"] == ds.OK
            and r["split"] == split]  # fmt: skip
    rows.sort(key=lambda r: r.get("guide_sample_id") or r["sample_id"])
    images = np.stack([np.asarray(Image.open(root / r["path"]).convert("RGB")) for r in rows])
    return images, rows


def _verifiers(images: np.ndarray) -> dict[str, Any]:
    """name -> function(labels) -> (N,) bool accepted."""
    from dreamshift.models.loading import load_classifier
    from dreamshift.verify.scores import world_pass, world_probabilities

    probs = world_probabilities(images)
    cnn = load_classifier("world-cnn", list(CLASSES)).logits(images).argmax(1)

    def named(pred: np.ndarray) -> Any:
        return lambda labels: pred == np.array([CLASSES.index(c) for c in labels])

    return {
        "world_pass (fg oracle, p >= 0.5)": lambda labels: world_pass(probs, labels),
        "fg oracle": named(probs["fg"].argmax(1)),
        "shape oracle": named(probs["shape"].argmax(1)),
        "world-cnn (ERM on spurious data)": named(cnn),
    }


def score(setting: str, root: Path) -> list[Row]:
    images, rows = _load(root, ds.TEST)
    right = [r["fg_class"] for r in rows]
    wrong = [wrong_class(c) for c in right]
    on_animals, on_empty = _verifiers(images), None
    empty: list[str] = []
    if any(r["split"] == ds.SPURIOUS for r in ds.read_manifest(root).to_pylist()):
        empty_images, empty_rows = _load(root, ds.SPURIOUS)
        empty = [CLASSES[i % len(CLASSES)] for i in range(len(empty_rows))]
        on_empty = _verifiers(empty_images)
    out = []
    for name, accept in on_animals.items():
        tp, fp_wrong = accept(right), accept(wrong)
        fp_empty = float(on_empty[name](empty).mean()) if on_empty else None
        precision = tp.sum() / (tp.sum() + fp_wrong.sum()) if tp.any() else 0.0
        out.append(Row(setting, name, len(rows), len(empty), float(tp.mean()),
                       float(fp_wrong.mean()), fp_empty, float(precision)))  # fmt: skip
    return out


def simulate_review(root: Path, seed: int = 0) -> dict[str, Any]:
    """5 simulated reviewers vote on ``root``'s test split through the review store; the
    export's share passing each rule and α."""
    from dreamshift.verify.review import export, open_store
    from dreamshift.verify.scores import world_probabilities
    from dreamshift.verify.store import ReviewStore, Vote, db_path

    if db_path(root).exists():
        db_path(root).unlink()
    images, rows = _load(root, ds.TEST)
    p_fg = world_probabilities(images)["fg"]
    p_yes = {r["sample_id"]: float(p_fg[i, CLASSES.index(r["fg_class"])])
             for i, r in enumerate(rows)}  # fmt: skip
    store: ReviewStore = open_store(root, SIMULATED_REVIEWERS)
    rng = np.random.default_rng(seed)
    pool = sorted(p_yes)
    for n in range(SIMULATED_REVIEWERS):
        name = f"simulated-{n}"
        store.add_reviewer(name)
        while True:
            _, items = store.task(name, pool)
            if not items:
                break
            for s in items:
                u = rng.random()
                present = "unsure" if u < 0.05 else "yes" if rng.random() < p_yes[s] else "no"
                store.vote(Vote(s, name, present, bool(rng.random() < 0.01), None))
    return export(root, "d3s")


def evaluate_verify(
    out: str | Path,
    model: str = "tiny-dream",
    strengths: tuple[float, ...] = STRENGTHS,
    per_group: int = 1,
    empty_per_class: int = 5,
    steps: int = 20,
    review_strength: float = 0.7,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Compose, dream, score; writes ``out/verification.json`` and returns its content."""
    from dreamshift.compose.config import ComposeConfig, Placement, ShiftRecipe
    from dreamshift.compose.runner import compose
    from dreamshift.dream.config import DreamConfig
    from dreamshift.dream.runner import dream

    out = Path(out)
    made = {}
    for render in ("paste", "photo"):
        cfg = ComposeConfig(
            seed=7, size=64, render=render,
            placement=Placement(scale=(0.3, 0.7), max_rotation=15.0),
            recipe=ShiftRecipe(rho=0.1, train_size=0, val_per_group=0, test_per_group=per_group,
                               anti_per_group=0, spurious_per_class=empty_per_class),
            shard_size=1000,
        )  # fmt: skip
        made[render] = out / f"{render}s"
        compose(cfg, made[render], workers=workers, progress=progress)
    rows = score("photos (true labels)", made["photo"]) + score("guides (paste)", made["paste"])
    dreamed = {}
    for strength in strengths:
        target = out / f"img2img-{strength:g}"
        cfg_d = DreamConfig(source=str(made["paste"]), mode="img2img", model=model, steps=steps,
                            strength=strength, splits=(ds.TEST,), shard_size=200)  # fmt: skip
        dream(cfg_d, target, workers=workers, batch_size=4, progress=progress)
        dreamed[strength] = target
        rows += score(f"img2img {strength:g}", target)
    review = simulate_review(dreamed[review_strength]) if review_strength in dreamed else None
    result = {"model": model, "steps": steps, "rows": [asdict(r) for r in rows],
              "simulated_review": {"strength": review_strength, **(review or {})}}  # fmt: skip
    (out / "verification.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| setting | verifier | recall | false accept: wrong class | false accept: no animal "
             "| precision |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['verifier']} | {r['recall']:.1%} | "
            f"{r['false_accept_wrong']:.1%} | "
            + (f"{r['false_accept_empty']:.1%}" if r["false_accept_empty"] is not None else "–")
            + f" | {r['precision']:.1%} |"
        )
    return "\n".join(lines)
