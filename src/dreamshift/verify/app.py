"""``dreamshift review DATASET``: a local web app where people vote on a dataset's labels.

A reviewer opens the link ``dreamshift review add-reviewer DATASET NAME`` printed (its token is
the only credential; without a valid one every route answers 404). A task page holds 25 images
(D3S's MTurk tasks did): the image, the guide it was dreamed from, the class name and its
definition, "is a <class> in the image?" yes/no/unsure, "anything unsafe or broken?", and
optionally naturalness 1-5 (Maung Maung et al. 2024 asked people to rate it). Keyboard first:
y/n/u answer and move on, x flags, 1-5 rate, arrows move, z or Backspace undoes the last answer,
m shows the object's mask over the image (where the sample has one: ``mask_path``).

Safety: images and masks are looked up by sample id in the manifest and served only when the
file lies inside the dataset (or its guides' dataset); POSTs must come from the page's own
origin and carry the reviewer's CSRF token; only hosts the server was started for are answered
(no DNS rebinding); pages forbid framing, inline scripts and referrers.
"""

from __future__ import annotations

import hashlib
import html
import json
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from dreamshift.data import dataset as ds
from dreamshift.data.loading import usable_rows
from dreamshift.errors import DreamshiftError, need_extra
from dreamshift.verify.store import Full, Reviewer, ReviewStore, Vote

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

# what each of the world's classes is, for the task page (a dataset of other classes gives
# its own with --definitions FILE: YAML {class: definition})
WORLD_DEFINITIONS = {
    "bear": "a large, heavy mammal with thick fur, a short tail and a rounded head",
    "bird": "an animal with feathers, wings and a beak",
    "cat": "a small furry animal with pointed ears, whiskers and a long tail",
    "cow": "a large farm animal with a broad body, hooves and often horns",
    "dog": "a domestic animal with a snout, four legs and a wagging tail",
    "elephant": "a very large grey animal with a long trunk, big ears and tusks",
    "giraffe": "a very tall animal with a very long neck and a patched coat",
    "horse": "a large animal with hooves, a mane and a long tail, ridden by people",
    "sheep": "a farm animal with a thick woolly coat",
    "zebra": "a horse-like animal with black and white stripes",
}

MAX_BODY = 4096  # bytes of a POST
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def read_definitions(path: str | Path | None, classes: list[str]) -> dict[str, str]:
    out = {c: WORLD_DEFINITIONS.get(c, "") for c in classes}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise DreamshiftError(f"cannot read definitions {path} ({exc})") from exc
        if not isinstance(data, dict):
            raise DreamshiftError(f"definitions {path} must map each class to a sentence")
        out.update({str(k): str(v) for k, v in data.items() if str(k) in out})
    return out


def _order(sample_id: str) -> str:
    return hashlib.sha256(sample_id.encode()).hexdigest()


@dataclass
class ReviewSite:
    """What the app serves: the dataset's rows to review, their files, the store."""

    root: Path
    store: ReviewStore
    split: str = ""
    naturalness: bool = False
    definitions_file: str | None = None
    rows: dict[str, dict[str, Any]] = field(init=False)
    pool: list[str] = field(init=False)  # sample ids in hand-out order (mixed classes)
    guides: dict[str, Path] = field(init=False)  # sample id -> its guide's file
    definitions: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        meta = ds.DatasetMeta.read(self.root)
        manifest = ds.read_manifest(self.root).to_pylist()
        rows = [r for r in usable_rows(manifest, self.split or None) if r["fg_class"]]
        if not rows:
            raise DreamshiftError(
                f"{self.root} has no usable labelled images"
                f"{f' in split {self.split}' if self.split else ''} to review"
            )
        self.rows = {r["sample_id"]: r for r in rows}
        self.pool = sorted(self.rows, key=_order)
        self.guides = {}
        source = meta.source
        if source and (Path(source) / ds.DATASET_JSON).is_file():
            source_root = Path(source).resolve()
            by_id = {r["sample_id"]: r for r in ds.read_manifest(source_root).to_pylist()}
            for s, r in self.rows.items():
                guide = by_id.get(r.get("guide_sample_id") or "")
                if guide and guide["status"] == ds.OK:
                    path = ds.sample_file(source_root, guide["path"])
                    if path:
                        self.guides[s] = path
        self.definitions = read_definitions(self.definitions_file, list(meta.classes))

    def image(self, sample_id: str) -> Path | None:
        row = self.rows.get(sample_id)
        return ds.sample_file(self.root, row["path"]) if row else None

    def mask(self, sample_id: str) -> Path | None:
        """The sample's object mask file (None: it has none, or it is not inside the dataset)."""
        row = self.rows.get(sample_id)
        return ds.sample_file(self.root, row["mask_path"]) if row and row["mask_path"] else None

    def task_json(self, reviewer: Reviewer) -> dict[str, Any]:
        task_id, items = self.store.task(reviewer.name, self.pool)
        mine = {v.sample_id: v for v in self.store.votes(reviewer.name)}
        return {
            "task": task_id,
            "reviewer": reviewer.name,
            "naturalness": self.naturalness,
            "items": [
                {
                    "sample_id": s,
                    "class": self.rows[s]["fg_class"],
                    "definition": self.definitions.get(self.rows[s]["fg_class"], ""),
                    "guide": s in self.guides,
                    "mask": bool(self.rows[s]["mask_path"]),
                }
                for s in items
            ],
            "votes": {
                s: {"present": v.present, "unsafe": v.unsafe, "naturalness": v.naturalness}
                for s, v in mine.items() if s in items
            },
            "progress": self.store.progress(self.pool),
        }  # fmt: skip


def page(reviewer: Reviewer, site: ReviewSite) -> str:
    name = html.escape(site.root.name)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{html.escape(reviewer.csrf)}">
<title>review {name}</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="review.css"></head>
<body>
<header><b>{name}</b> · reviewer {html.escape(reviewer.name)}
<div class="bar" title="answered in this task"><div id="bar"></div></div>
<span id="count">0 / 0</span> <span id="overall"></span></header>
<main id="main">
<section class="pair">
<figure><div class="stack"><img id="image" alt="image to check">
<canvas id="mask" hidden></canvas></div>
<figcaption>image <label id="mask-toggle" hidden><input type="checkbox" id="show-mask">
object's mask (m)</label></figcaption></figure>
<figure id="guide-fig"><img id="guide" alt="guide it was made from">
<figcaption>guide it was made from</figcaption></figure>
</section>
<p class="question">Is a <b id="cls"></b> in the image? <span id="definition"></span></p>
<div class="answers">
<button id="yes" data-key="y"><u>Y</u>es</button>
<button id="no" data-key="n"><u>N</u>o</button>
<button id="unsure" data-key="u"><u>U</u>nsure</button>
</div>
<label class="flag"><input type="checkbox" id="unsafe"> anything unsafe or broken? (x)</label>
<div id="natural" class="natural" hidden>naturalness (1 unnatural … 5 natural):
<button data-rate="1">1</button><button data-rate="2">2</button><button data-rate="3">3</button>
<button data-rate="4">4</button><button data-rate="5">5</button></div>
<nav><button id="prev">← previous</button> <span id="position"></span>
<button id="next">next →</button> <button id="undo">undo (z)</button></nav>
<ol id="strip"></ol>
</main>
<section id="done" hidden><p>Task done: thank you.</p>
<button id="more">next task (Enter)</button></section>
<section id="empty" hidden><p>Nothing left to review for you.</p></section>
<p id="status" role="status"></p>
<script src="review.js"></script>
</body></html>"""


def static(name: str) -> str:
    return resources.files("dreamshift.verify").joinpath("static", name).read_text()


def _refuse(status: int, text: str) -> Response:
    """A plain-text refusal carrying the security headers."""
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(text, status, headers=SECURITY_HEADERS)


def _site(request: Request) -> ReviewSite:
    """The site that the request's app serves (:func:`create_app` keeps it on ``app.state``)."""
    site: ReviewSite = request.app.state.site
    return site


def _reviewer_of(request: Request) -> Reviewer | None:
    """The reviewer whose token the request's path holds; None for an unknown token."""
    return _site(request).store.reviewer(request.path_params["token"])


def _same_origin(request: Request) -> bool:
    """Whether the request's Origin header names the host that it was sent to."""
    origin, host = request.headers.get("origin"), request.headers.get("host")
    return bool(origin and host) and urlsplit(origin).netloc == host


def home(request: Request) -> Response:
    """GET the task page; a link without its final slash is redirected to it."""
    from starlette.responses import Response

    reviewer = _reviewer_of(request)
    if reviewer is None:
        return _refuse(404, "unknown link: ask for a new one")
    if not request.url.path.endswith("/"):
        return Response(status_code=307, headers={"location": request.url.path + "/"})
    text = page(reviewer, _site(request))
    return Response(text, media_type="text/html", headers=SECURITY_HEADERS)


def asset(request: Request) -> Response:
    """GET the page's script or style sheet."""
    from starlette.responses import Response

    if _reviewer_of(request) is None:
        return _refuse(404, "unknown link: ask for a new one")
    media = {"review.js": "text/javascript", "review.css": "text/css"}
    name = request.path_params["name"]
    if name not in media:
        return _refuse(404, "not found")
    return Response(static(name), media_type=media[name], headers=SECURITY_HEADERS)


def task(request: Request) -> Response:
    """GET the reviewer's current task as JSON (:meth:`ReviewSite.task_json`)."""
    from starlette.responses import JSONResponse

    reviewer = _reviewer_of(request)
    if reviewer is None:
        return _refuse(404, "unknown link: ask for a new one")
    return JSONResponse(_site(request).task_json(reviewer), headers=SECURITY_HEADERS)


def image(request: Request) -> Response:
    """GET a row's image, its guide's or its object mask, looked up by sample id inside the
    dataset."""
    from starlette.responses import FileResponse

    if _reviewer_of(request) is None:
        return _refuse(404, "unknown link: ask for a new one")
    sample_id = request.path_params["sample_id"]
    kind = request.path_params["kind"]
    if kind not in ("image", "guide", "mask"):
        return _refuse(404, "not found")
    site = _site(request)
    if kind == "mask":
        path = site.mask(sample_id)
    else:
        path = site.image(sample_id) if kind == "image" else site.guides.get(sample_id)
    if path is None:
        return _refuse(404, f"no such {kind} in this dataset")
    return FileResponse(path, headers=SECURITY_HEADERS)


async def change(request: Request) -> Response:
    """POST a vote or an undo: checked (origin, CSRF token, action) before its body (at most
    :data:`MAX_BODY`) is read, then applied."""
    from starlette.concurrency import run_in_threadpool

    reviewer = await run_in_threadpool(_reviewer_of, request)
    if reviewer is None:
        return _refuse(404, "unknown link: ask for a new one")
    refused = _refuse_request(request, reviewer)
    if refused is not None:
        return refused
    raw = b""
    async for chunk in request.stream():  # a vote is a few dozen bytes
        raw += chunk
        if len(raw) > MAX_BODY:
            return _refuse(413, "request too large")
    # SQLite writes wait for the disk: off the event loop
    return await run_in_threadpool(_apply_change, request, reviewer, _parse_body(raw))


def _parse_body(raw: bytes) -> Any:
    """The JSON of a request body; None where it is none (or nested too deeply to parse)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _refuse_request(request: Request, reviewer: Reviewer) -> Response | None:
    """The refusal of a change request by its headers (origin, CSRF token) and action."""
    if not _same_origin(request):
        return _refuse(403, "cross-origin request refused")
    sent = request.headers.get("x-csrf-token", "").encode()
    if not secrets.compare_digest(sent, reviewer.csrf.encode()):
        return _refuse(403, "missing or wrong CSRF token: reload the page")
    if request.path_params["action"] not in ("vote", "undo"):
        return _refuse(404, "not found")
    return None


def _apply_change(request: Request, reviewer: Reviewer, body: Any) -> Response:
    """Apply a vote or undo of the reviewer's whose body is checked here, or refuse it."""
    from starlette.responses import JSONResponse

    if not isinstance(body, dict) or not isinstance(body.get("sample_id"), str):
        return _refuse(400, "expected JSON with a sample_id")
    site = _site(request)
    if not site.store.assigned(reviewer.name, body["sample_id"]):
        return _refuse(403, "this image is not in one of your tasks")
    if request.path_params["action"] == "undo":
        removed = site.store.undo(reviewer.name, body["sample_id"])
        return JSONResponse({"undone": removed}, headers=SECURITY_HEADERS)
    return _save_vote(site, reviewer, body)


def _save_vote(site: ReviewSite, reviewer: Reviewer, body: dict[str, Any]) -> Response:
    """Check a vote's answers and store it; answers the task's progress."""
    from starlette.responses import JSONResponse

    sample_id = body["sample_id"]
    unsafe, naturalness = body.get("unsafe", False), body.get("naturalness")
    if not isinstance(unsafe, bool):
        return _refuse(400, "unsafe must be true or false")
    if naturalness is not None and (
        not site.naturalness or not isinstance(naturalness, int) or isinstance(naturalness, bool)
    ):
        return _refuse(400, "naturalness is an integer 1-5, asked only with --naturalness")
    try:
        site.store.vote(Vote(sample_id, reviewer.name, str(body.get("present")), unsafe,
                             naturalness))  # fmt: skip
    except Full as exc:
        return _refuse(409, f"{exc}: thank you, move on to the next one")
    except ValueError as exc:
        return _refuse(400, str(exc))
    return JSONResponse({"saved": True, "progress": site.store.progress(site.pool)},
                        headers=SECURITY_HEADERS)  # fmt: skip


def create_app(site: ReviewSite, allowed_hosts: list[str]) -> Any:
    """The Starlette app of ``site``; ``allowed_hosts``: the Host names it answers."""
    need_extra("starlette", "review", "the review app")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.routing import Route

    routes = [
        Route("/r/{token}", home),
        Route("/r/{token}/", home),
        Route("/r/{token}/task", task),
        Route("/r/{token}/{kind:str}/{sample_id:path}", image),  # an id may hold "/"
        Route("/r/{token}/{action:str}", change, methods=["POST"]),
        Route("/r/{token}/{name:str}", asset),
    ]
    hosts = TrustedHostMiddleware  # only the names the server was started for: no DNS rebinding
    app = Starlette(routes=routes, middleware=[Middleware(hosts, allowed_hosts=allowed_hosts)])
    app.state.site = site  # what the route handlers serve
    return SecurityHeaders(app)


class SecurityHeaders:
    """ASGI wrapper that adds :data:`SECURITY_HEADERS` to every response, including those
    made below the app's handlers (the host check's 400, a 405, a redirect, a 500)."""

    def __init__(self, app: Any):
        self.app = app
        self.state = app.state
        self.raw = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.raw if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
