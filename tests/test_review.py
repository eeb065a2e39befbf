"""Label verification: automatic scores, the review web app (in a real Chromium), aggregation."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import small_config
from dreamshift.cli import main
from dreamshift.compose.config import ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.data import verification as vt
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.runner import dream
from dreamshift.errors import DreamshiftError
from dreamshift.verify.aggregate import decide, krippendorff_alpha
from dreamshift.verify.review import add_reviewer, build_app, open_store
from dreamshift.verify.store import TASK_SIZE, Vote

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def dreamed(tmp_path_factory) -> Path:
    """36 dreamed (paste mode) test images of 3 classes x 3 backgrounds, with their guides."""
    tmp = tmp_path_factory.mktemp("review")
    recipe = ShiftRecipe(rho=0.8, train_size=30, val_per_group=0, test_per_group=4,
                         anti_per_group=0)  # fmt: skip
    compose(small_config(recipe=recipe), tmp / "paste", progress=False)
    dream(DreamConfig(source=str(tmp / "paste"), mode="paste", splits=("test",)), tmp / "gen",
          progress=False)  # fmt: skip
    return tmp / "gen"


@pytest.fixture
def dataset(dreamed, tmp_path) -> Path:
    """A fresh copy per test (the review's database lives inside the dataset)."""
    out = tmp_path / "gen"
    shutil.copytree(dreamed, out)
    return out


@contextmanager
def serving(root: Path, **options):
    """The review app of ``root`` on a free loopback port; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(root, **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "the review server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def token_of(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[1]


def stored_votes(root: Path) -> dict[tuple[str, str], Vote]:
    return {(v.sample_id, v.reviewer): v for v in open_store(root).votes()}


def post(
    client, base: str, token: str, action: str, body: dict, csrf: str, origin: str | None = None
):
    headers = {"X-CSRF-Token": csrf, "Origin": origin or base}
    return client.post(f"{base}/r/{token}/{action}", json=body, headers=headers)


# -- automatic scores ---------------------------------------------------------------------------
def test_verify_writes_its_columns_beside_the_manifest_and_keeps_others(dataset):
    manifest_before = hashlib.sha256((dataset / ds.MANIFEST).read_bytes()).hexdigest()
    assert main(["verify", str(dataset), "--oracle", "world", "--oracle", "world-cnn"]) == 0
    table = pq.read_table(dataset / vt.VERIFICATION).to_pylist()
    rows = {r["sample_id"]: r for r in ds.read_manifest(dataset).to_pylist()}
    assert {r["sample_id"] for r in table} == {s for s, r in rows.items() if r["status"] == ds.OK}
    for r in table:
        fg = rows[r["sample_id"]]["fg_class"]
        assert r["world_fg_pred"] in ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe",
                                      "horse", "sheep", "zebra")  # fmt: skip
        assert r["world_pass"] == (r["world_fg_p"] >= 0.5)
        assert r["world_fg_p"] < 0.5 or r["world_fg_pred"] == fg
        assert r["world-cnn_pass"] == (r["world-cnn_pred"] == fg)
        assert 0.0 <= r["world-cnn_p"] <= 1.0
        assert r["agree"] == int(r["world_pass"]) + int(r["world-cnn_pass"])
        assert r["mined"] == (r["agree"] == 0)
    # another writer's column survives a rerun; the rerun replaces only its own
    ids = [r["sample_id"] for r in table]
    vt.update_columns(dataset, ids, {vt.VERIFIED: [True] * len(ids)})
    assert main(["verify", str(dataset), "--oracle", "world-cnn"]) == 0
    again = pq.read_table(dataset / vt.VERIFICATION)
    assert again.column(vt.VERIFIED).to_pylist() == [True] * len(ids)
    assert again.column("world_fg_p").to_pylist() == [r["world_fg_p"] for r in table]
    # agreement counts every oracle the table holds, this run's and the earlier one's
    assert again.column("agree").to_pylist() == [r["agree"] for r in table]
    assert hashlib.sha256((dataset / ds.MANIFEST).read_bytes()).hexdigest() == manifest_before


def test_verify_names_a_dataset_of_other_classes(dataset, tmp_path, capsys):
    meta = json.loads((dataset / ds.DATASET_JSON).read_text())
    meta["classes"] = ["tabby", *meta["classes"][1:]]
    (dataset / ds.DATASET_JSON).write_text(json.dumps(meta))
    assert main(["verify", str(dataset), "--oracle", "world"]) == 1
    assert "tabby" in capsys.readouterr().err


# -- aggregation --------------------------------------------------------------------------------
def votes_of(table: dict[str, str]) -> list[Vote]:
    """``{sample: "yyn*"}``: one vote per character, reviewers r0, r1, ...; * = yes + unsafe."""
    out = []
    for s, answers in table.items():
        for i, a in enumerate(answers):
            present = {"y": "yes", "n": "no", "u": "unsure", "*": "yes"}[a]
            out.append(Vote(s, f"r{i}", present, a == "*", None))
    return out


def test_rules_match_their_definitions():
    votes = votes_of({"a": "yyy", "b": "yyn", "c": "yy*", "d": "yy", "e": "nnu", "f": "y**"})
    assert decide(votes, "d3s", 3) == {"a": True, "b": False, "c": False, "d": False,
                                       "e": False, "f": False}  # fmt: skip
    assert decide(votes, "majority", 3) == {"a": True, "b": True, "c": True, "d": True,
                                            "e": False, "f": False}  # fmt: skip
    # Dawid-Skene on reliable reviewers and one who always says yes: it learns to discount him
    many = {f"s{i}": ("yyy" if i % 2 else "nny") for i in range(20)}
    ds_votes = votes_of(many)
    decided = decide(ds_votes, "dawid-skene", 3)
    assert decided == {s: s in {f"s{i}" for i in range(1, 20, 2)} for s in many}


def test_krippendorff_alpha_equals_the_hand_computed_value():
    # 2 reviewers, 4 images, nominal: answers (y,y) (y,n) (n,n) (n,n).
    # coincidences: o_yy = 2, o_nn = 4, o_yn = o_ny = 1; n = 8, n_y = 3, n_n = 5
    # alpha = 1 - (n - 1) * o_yn_total / (n_y * n_n) = 1 - 7 * 2 / 30
    votes = votes_of({"a": "yy", "b": "yn", "c": "nn", "d": "nn"})
    assert krippendorff_alpha(votes) == pytest.approx(1 - 7 * 2 / 30)
    assert krippendorff_alpha(votes_of({"a": "yy", "b": "yy"})) == 1.0
    assert krippendorff_alpha(votes_of({"a": "y"})) is None


# -- the app ------------------------------------------------------------------------------------
# the sample on the page and how many pixels of its mask overlay are painted
MASK_SHOWN = """(() => {
  const c = document.getElementById("mask"), d = c.getContext("2d")
    .getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  for (let i = 3; i < d.length; i += 4) painted += d[i] > 0;
  return {sample_id: task.items[at].sample_id, painted};
})()"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="`make test` installs Debian's chromium")
def test_task_page_in_chromium_keyboard_undo_progress(dataset, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    link = add_reviewer(dataset, "ada")
    rows = {r["sample_id"]: r for r in ds.read_manifest(dataset).to_pylist()}
    with serving(dataset, votes_per_image=2, naturalness=True) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(link.replace("http://127.0.0.1:8765", base))
        expect(page.locator("#count")).to_have_text(f"0 / {TASK_SIZE}")
        assert page.locator("#strip li").count() == TASK_SIZE
        # the image and its guide are loaded from the dataset
        # polled from here: Playwright's wait_for_function evaluates a string in the page,
        # which the page's Content-Security-Policy (script-src 'self') refuses
        wait_for(lambda: page.evaluate("document.getElementById('image').naturalWidth") > 0)
        wait_for(lambda: page.evaluate("document.getElementById('guide').naturalWidth") > 0)
        # m: the object's mask over the image, painted where the stored mask is; m: off again
        page.keyboard.press("m")
        expect(page.locator("#mask")).to_be_visible()
        expect(page.locator("#show-mask")).to_be_checked()
        shown = page.evaluate(MASK_SHOWN)
        stored = np.asarray(Image.open(dataset / rows[shown["sample_id"]]["mask_path"]))
        assert shown["painted"] == int(stored.astype(bool).sum()) > 0
        page.keyboard.press("m")
        expect(page.locator("#mask")).to_be_hidden()
        first = page.locator("#cls").text_content()
        page.keyboard.press("y")
        expect(page.locator("#count")).to_have_text(f"1 / {TASK_SIZE}")
        page.keyboard.press("x")  # flag the second image, rate it 2, answer no
        page.keyboard.press("2")
        page.keyboard.press("n")
        expect(page.locator("#count")).to_have_text(f"2 / {TASK_SIZE}")
        page.keyboard.press("u")
        expect(page.locator("#count")).to_have_text(f"3 / {TASK_SIZE}")
        page.keyboard.press("z")  # undo the third answer: back on that image, vote deleted
        expect(page.locator("#count")).to_have_text(f"2 / {TASK_SIZE}")
        expect(page.locator("#position")).to_have_text(f"image 3 of {TASK_SIZE}")
        page.keyboard.press("ArrowLeft")
        expect(page.locator("#position")).to_have_text(f"image 2 of {TASK_SIZE}")
        page.keyboard.press("ArrowRight")
        mine = {s: v for (s, r), v in stored_votes(dataset).items() if r == "ada"}
        assert sorted(v.present for v in mine.values()) == ["no", "yes"]
        no = next(v for v in mine.values() if v.present == "no")
        yes = next(v for v in mine.values() if v.present == "yes")
        assert no.unsafe and no.naturalness == 2 and not yes.unsafe and yes.naturalness is None
        assert rows[yes.sample_id]["fg_class"] == first
        # change the second answer to yes, then undo: the earlier no (flagged, rated) is back
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("y")
        wait_for(lambda: stored_votes(dataset)[(no.sample_id, "ada")].present == "yes")
        expect(page.locator("#count")).to_have_text(f"2 / {TASK_SIZE}")
        page.keyboard.press("z")
        wait_for(lambda: stored_votes(dataset)[(no.sample_id, "ada")] == no)
        expect(page.locator("#position")).to_have_text(f"image 2 of {TASK_SIZE}")
        page.keyboard.press("ArrowRight")
        for _ in range(TASK_SIZE - 2):  # answer the rest; the page says the task is done
            page.keyboard.press("y")
        expect(page.locator("#count")).to_have_text(f"{TASK_SIZE} / {TASK_SIZE}")
        expect(page.locator("#done")).to_be_visible()
        page.screenshot(path=str(tmp_path / "task.png"))
        page.keyboard.press("Enter")  # the next task: the 11 images left of 36
        expect(page.locator("#count")).to_have_text("0 / 11")
        browser.close()
        assert not errors, errors
    assert len([1 for (_, r) in stored_votes(dataset) if r == "ada"]) == TASK_SIZE


def test_five_concurrent_reviewers_lose_no_vote_and_get_k_distinct_votes(dataset):
    import httpx

    k, names = 3, [f"rev{i}" for i in range(5)]
    links = {n: add_reviewer(dataset, n) for n in names}
    store = open_store(dataset, k)
    cast: dict[str, list[tuple[str, str]]] = {n: [] for n in names}
    failures: list[str] = []

    def reviewer(name: str, base: str) -> None:
        token = token_of(links[name])
        csrf = store.reviewer(token).csrf
        rng = np.random.default_rng(len(name) + int(name[-1]))
        with httpx.Client(timeout=30) as client:
            while True:
                task = client.get(f"{base}/r/{token}/task").json()
                open_items = [i for i in task["items"] if i["sample_id"] not in task["votes"]]
                if not open_items:
                    return
                for item in open_items:
                    answer = ["yes", "no", "unsure"][int(rng.integers(3))]
                    r = post(client, base, token, "vote",
                             {"sample_id": item["sample_id"], "present": answer}, csrf)  # fmt: skip
                    if r.status_code != 200:
                        failures.append(f"{name}: {r.status_code} {r.text}")
                        return
                    cast[name].append((item["sample_id"], answer))

    with serving(dataset, votes_per_image=k) as base:
        threads = [threading.Thread(target=reviewer, args=(n, base)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not failures, failures
    stored = stored_votes(dataset)
    expected = {(s, n): a for n, pairs in cast.items() for s, a in pairs}
    assert {key: v.present for key, v in stored.items()} == expected  # every vote, no other
    pool = [r["sample_id"] for r in ds.read_manifest(dataset).to_pylist() if r["status"] == ds.OK]
    per_image = {s: sorted(r for (t, r) in stored if t == s) for s in pool}
    assert all(len(rs) == k and len(set(rs)) == k for rs in per_image.values()), per_image


def test_restarted_server_loses_nothing_and_resumes_the_task(dataset):
    import httpx

    link = add_reviewer(dataset, "bo")
    token = token_of(link)
    csrf = open_store(dataset).reviewer(token).csrf
    with serving(dataset, votes_per_image=2) as base, httpx.Client() as client:
        task = client.get(f"{base}/r/{token}/task").json()
        voted = [i["sample_id"] for i in task["items"][:7]]
        for s in voted:
            assert post(client, base, token, "vote", {"sample_id": s, "present": "yes"},
                        csrf).status_code == 200  # fmt: skip
    with serving(dataset) as base, httpx.Client() as client:  # K read back from the store
        again = client.get(f"{base}/r/{token}/task").json()
    assert again["task"] == task["task"] and again["items"] == task["items"]
    assert sorted(again["votes"]) == sorted(voted)
    assert again["progress"]["votes_per_image"] == 2


def test_refuses_traversal_missing_or_foreign_tokens_and_cross_origin_posts(dataset, tmp_path):
    import httpx

    other = tmp_path / "other"
    shutil.copytree(dataset, other)
    foreign = token_of(add_reviewer(other, "eve"))  # a valid token of another dataset
    token = token_of(add_reviewer(dataset, "cy"))
    csrf = open_store(dataset).reviewer(token).csrf
    with serving(dataset) as base, httpx.Client() as client:
        task = client.get(f"{base}/r/{token}/task").json()
        sample = task["items"][0]["sample_id"]
        assert client.get(f"{base}/r/{token}/image/{sample}").status_code == 200
        for path in (f"/r/{token}/image/..%2F..%2Fdataset.json", f"/r/{token}/image/%2E%2E",
                     f"/r/{token}/image/../manifest.parquet", f"/r/{token}/image/nosuchsample",
                     f"/r/{token}/guide/nosuchsample", f"/r/{token}/shards/00000",
                     f"/r/{token}/..%2F..%2Fdataset.json"):  # fmt: skip
            r = client.get(base + path)
            assert r.status_code == 404, (path, r.status_code)
            assert b"schema_version" not in r.content
        for path in ("/", "/r/", "/r//task", f"/r/{foreign}/", f"/r/{foreign}/task",
                     f"/r/{foreign}/image/{sample}", "/r/not-a-token/review.js"):  # fmt: skip
            assert client.get(base + path).status_code == 404, path
        vote = {"sample_id": sample, "present": "yes"}
        assert (
            post(client, base, token, "vote", vote, csrf, "http://evil.example").status_code == 403
        )
        assert (
            client.post(
                f"{base}/r/{token}/vote", json=vote, headers={"X-CSRF-Token": csrf}
            ).status_code
            == 403
        )  # no Origin
        assert post(client, base, token, "vote", vote, "wrong").status_code == 403
        assert post(client, base, foreign, "vote", vote, csrf).status_code == 404
        evil_host = client.get(f"{base}/r/{token}/task", headers={"Host": "evil.example"})
        assert evil_host.status_code == 400  # DNS rebinding: only the hosts it serves
        handed = {i["sample_id"] for i in task["items"]}
        outside = next(r["sample_id"] for r in ds.read_manifest(dataset).to_pylist()
                       if r["sample_id"] not in handed)  # fmt: skip
        assert (
            post(
                client, base, token, "vote", {"sample_id": outside, "present": "yes"}, csrf
            ).status_code
            == 403
        )  # not in one of the reviewer's tasks
        assert stored_votes(dataset) == {}
        assert post(client, base, token, "vote", vote, csrf).status_code == 200
    assert list(stored_votes(dataset)) == [(sample, "cy")]


def test_a_crafted_dataset_cannot_have_the_app_serve_other_files(dataset, tmp_path, capsys):
    """A manifest row naming the review database (every reviewer's tokens), the metadata, a
    dot-folder or a path out is refused when the dataset is opened; a link from inside the
    dataset to a file outside is not served."""
    token = token_of(add_reviewer(dataset, "cy"))  # creates review/review.sqlite
    manifest = ds.DatasetLayout(dataset).manifest_path
    rows = ds.read_rows(dataset)
    for path in ("review/review.sqlite", "dataset.json", "manifest.parquet", "../outside.png",
                 "/etc/passwd.png", ".git/x.png", "shards/../../x.png"):  # fmt: skip
        crafted = [rows[0].replace(path=path), *rows[1:]]
        ds.write_table_atomic(ds.manifest_table(crafted), manifest)
        with pytest.raises(DreamshiftError, match=f"has path {re.escape(repr(path))}"):
            build_app(dataset)
        assert main(["review", str(dataset)]) == 1
        assert path in capsys.readouterr().err
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for reviewers")
    victim = dataset / rows[0].path
    victim.unlink()
    victim.symlink_to(secret)  # a link that stays a valid-looking image path
    ds.write_table_atomic(ds.manifest_table(rows), manifest)
    import httpx

    with serving(dataset) as base, httpx.Client() as client:
        answer = client.get(f"{base}/r/{token}/image/{rows[0].sample_id}")
        assert answer.status_code == 404 and b"not for reviewers" not in answer.content


def test_the_mask_route_serves_the_stored_mask_and_404s_without_one(dataset, tmp_path):
    """``mask/SAMPLE``: the sample's mask file byte for byte, with the security headers; 404 for
    a sample without a mask, an unknown one, a mask linked to a file outside, a foreign token."""
    from starlette.testclient import TestClient

    from dreamshift.verify.app import SECURITY_HEADERS

    token = token_of(add_reviewer(dataset, "cy"))
    client = TestClient(build_app(dataset), base_url="http://127.0.0.1")
    items = client.get(f"/r/{token}/task").json()["items"]
    masked, unmasked, linked = (i["sample_id"] for i in items[:3])
    assert all(i["mask"] for i in items)  # paste dreams carry their guides' masks
    # one row without a mask (as an img2img dream's), one whose mask links outside
    rows = ds.read_rows(dataset)
    rows = [r.replace(mask_path=None, mask_sha256=None) if r.sample_id == unmasked else r
            for r in rows]  # fmt: skip
    ds.write_table_atomic(ds.manifest_table(rows), ds.DatasetLayout(dataset).manifest_path)
    by_id = {r.sample_id: r for r in rows}
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for reviewers")
    (dataset / str(by_id[linked].mask_path)).unlink()
    (dataset / str(by_id[linked].mask_path)).symlink_to(secret)
    client = TestClient(build_app(dataset), base_url="http://127.0.0.1")
    task = {i["sample_id"]: i for i in client.get(f"/r/{token}/task").json()["items"]}
    assert task[masked]["mask"] and not task[unmasked]["mask"]  # the page shows no toggle
    answer = client.get(f"/r/{token}/mask/{masked}")
    stored = (dataset / str(by_id[masked].mask_path)).read_bytes()
    assert answer.status_code == 200 and answer.content == stored
    assert answer.headers["content-type"] == "image/png"
    assert all(answer.headers.get(k) == v for k, v in SECURITY_HEADERS.items())
    pixels = np.asarray(Image.open(io.BytesIO(answer.content)))
    assert pixels.dtype == bool and pixels.any() and not pixels.all()  # 1-bit: the object
    for path in (f"/r/{token}/mask/{unmasked}", f"/r/{token}/mask/nosuchsample",
                 f"/r/{token}/mask/{linked}", f"/r/not-a-token/mask/{masked}"):  # fmt: skip
        refused = client.get(path)
        assert refused.status_code == 404, path
        assert b"not for reviewers" not in refused.content
    assert client.get(f"/r/{token}/image/{unmasked}").status_code == 200  # its image still is


def test_every_response_carries_the_security_headers_and_bodies_are_checked_after_the_token(
    dataset,
):
    """Responses made below the handlers (405, 307, the host check's 400) carry the headers
    too; a deeply nested body is a 400 (not a 500), and a cross-origin one is refused before
    its body is parsed."""
    import httpx

    from dreamshift.verify.app import SECURITY_HEADERS

    token = token_of(add_reviewer(dataset, "cy"))
    csrf = open_store(dataset).reviewer(token).csrf
    with serving(dataset) as base, httpx.Client() as client:
        answers = {
            "405": client.put(f"{base}/r/{token}/task"),
            "307": client.get(f"{base}/r/{token}", follow_redirects=False),
            "400": client.get(f"{base}/r/{token}/task", headers={"Host": "evil.example"}),
            "404": client.get(f"{base}/nothing"),
            "200": client.get(f"{base}/r/{token}/task"),
        }
        for status, answer in answers.items():
            assert str(answer.status_code) == status
            for name, value in SECURITY_HEADERS.items():
                assert answer.headers.get(name) == value, (status, name)
        deep = b"[" * 2048 + b"]" * 2048  # within the 4 KB cap
        url, ok = f"{base}/r/{token}/vote", {"X-CSRF-Token": csrf, "Origin": base}
        assert client.post(url, content=deep, headers=ok).status_code == 400
        foreign = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert client.post(url, content=deep, headers=foreign).status_code == 403


def test_listening_beyond_loopback_needs_the_public_host_name(dataset, capsys):
    assert main(["review", str(dataset), "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "--allow-remote HOSTNAME" in err and "TLS" in err
    from starlette.testclient import TestClient

    app = build_app(dataset, host="0.0.0.0", allow_remote="review.lab.example")
    token = token_of(add_reviewer(dataset, "cy"))
    client = TestClient(app, base_url="http://review.lab.example")
    assert client.get(f"/r/{token}/task").status_code == 200  # the name reviewers use
    other = TestClient(app, base_url="http://evil.example")
    assert other.get(f"/r/{token}/task").status_code == 400


def test_export_writes_votes_and_verified_that_audit_and_learn_use(dataset, tmp_path, capsys):
    store = open_store(dataset, 3)
    for n in ("r0", "r1", "r2"):
        store.add_reviewer(n)
    ok = [r for r in ds.read_manifest(dataset).to_pylist() if r["status"] == ds.OK]
    ids = [r["sample_id"] for r in ok]
    passing = set(ids[::2])  # every other image: 3 x yes; the rest: one no
    for s in ids:
        for i, n in enumerate(("r0", "r1", "r2")):
            present = "yes" if s in passing or i else "no"
            store.vote(Vote(s, n, present, False, 4 if i == 0 else None))
    assert main(["review", "export", str(dataset), "--rule", "d3s"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["verified"] == len(passing)
    # two of three always say yes: the majority and Dawid-Skene pass every image
    shares = {"d3s": len(passing) / len(ids), "majority": 1.0, "dawid-skene": 1.0}
    assert summary["share_passing"] == shares
    table = {r["sample_id"]: r for r in pq.read_table(dataset / vt.VERIFICATION).to_pylist()}
    assert all(table[s][vt.VERIFIED] == (s in passing) for s in ids)
    assert table[ids[1]]["votes_no"] == 1 and table[ids[1]]["naturalness_mean"] == 4.0
    assert json.loads(table[ids[0]]["votes"])[0]["present"] == "yes"
    # audit --verified-only sees the verified images only
    results = tmp_path / "audit.jsonl"
    args = ["--verified-only", "--allow-empty-groups", "--results", str(results)]
    assert main(["audit", str(dataset), "--model", "world-cnn", *args]) == 0
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["verified_only"] and record["n"] == len(passing)
    # learn --verified-only trains on the verified generated images only
    from dreamshift.learn.run import LearnConfig, learn

    cfg = LearnConfig(epochs=1, batch_size=4, split="test", eval_splits=("test",),
                      verified_only=True)  # fmt: skip
    folder = learn(dataset, tmp_path / "learn", cfg, log=lambda *_: None)
    sources = json.loads((folder / "config.json").read_text())["sources"]
    assert sources[0]["n"] == len(passing) and sources[0]["verified_only"]


def test_verified_only_without_a_review_says_how_to_review(dataset, capsys):
    assert main(["audit", str(dataset), "--model", "world-cnn", "--verified-only"]) == 1
    err = capsys.readouterr().err
    assert "dreamshift review" in err and "--verified-only" in err


def test_evaluate_verify_rows_agree_with_the_verify_command(tmp_path):
    from dreamshift.studies.evaluate_verify import score, wrong_class

    recipe = ShiftRecipe(rho=0.8, train_size=0, val_per_group=0, test_per_group=2,
                         anti_per_group=0, spurious_per_class=2)  # fmt: skip
    root = tmp_path / "paste"
    compose(small_config(recipe=recipe), root, progress=False)
    rows = {r.verifier: r for r in score("pastes", root)}
    assert main(["verify", str(root), "--oracle", "world", "--oracle", "world-cnn"]) == 0
    table = pq.read_table(root / vt.VERIFICATION).to_pylist()
    world = rows["world_pass (fg oracle, p >= 0.5)"]
    assert world.n == len(table) == 18 and world.n_empty == 6
    assert world.recall == pytest.approx(np.mean([r["world_pass"] for r in table]))
    cnn = rows["world-cnn (ERM on spurious data)"]
    # the study scores world-cnn over all 10 classes, verify over the dataset's 3: recall of
    # the study's can only be lower
    assert cnn.recall <= np.mean([r["world-cnn_pass"] for r in table]) + 1e-9
    tp, fa = world.recall * world.n, world.false_accept_wrong * world.n
    assert world.precision == pytest.approx(tp / (tp + fa) if tp else 0.0)
    assert wrong_class("zebra") == "bear"


def test_verify_nsfw_flags_nothing_in_the_world_and_is_no_label_check(dataset):
    pytest.importorskip("onnxruntime", reason="`make setup` installs the nsfw scorer")
    from dreamshift.verify.scores import NSFW_THRESHOLD, nsfw_scorer

    assert main(["verify", str(dataset), "--oracle", "nsfw"]) == 0
    table = pq.read_table(dataset / vt.VERIFICATION)
    assert "agree" not in table.column_names and "mined" not in table.column_names
    p = np.array(table.column("nsfw_p").to_pylist())
    assert ((p >= 0) & (p <= 1)).all() and p.max() < NSFW_THRESHOLD  # animals on grass, snow
    assert table.column("nsfw_flag").to_pylist() == [False] * len(p)
    # one image scores the same alone as in a batch
    rows = {r["sample_id"]: r for r in ds.read_manifest(dataset).to_pylist()}
    first = table.column("sample_id")[0].as_py()
    from PIL import Image

    image = np.asarray(Image.open(dataset / rows[first]["path"]).convert("RGB"))[None]
    assert nsfw_scorer()(image)[0] == pytest.approx(p[0], abs=1e-5)


def test_a_rerun_on_some_samples_keeps_the_others_values(tmp_path):
    vt.update_columns(tmp_path, ["a", "b"], {"x": [1, 2], "y": ["p", "q"]})
    vt.update_columns(tmp_path, ["b", "c"], {"x": [3, 4]})
    table = vt.read_table(tmp_path).to_pylist()
    assert table == [{"sample_id": "a", "x": 1, "y": "p"}, {"sample_id": "b", "x": 3, "y": "q"},
                     {"sample_id": "c", "x": 4, "y": None}]  # fmt: skip


def test_an_image_with_its_k_votes_refuses_another_and_leaves_later_tasks(dataset):
    import httpx

    from dreamshift.verify.store import Full

    store = open_store(dataset, 2)
    p, q, r = (store.add_reviewer(n) for n in ("p", "q", "r"))
    pool = [row["sample_id"] for row in ds.read_manifest(dataset).to_pylist()]
    _, r_items = store.task("r", pool)  # r holds images; p and q then fill the first one
    target = r_items[0]
    for who in (p, q):
        store.vote(Vote(target, who.name, "yes", False, None))
    with pytest.raises(Full):
        store.vote(Vote(target, "r", "no", False, None))
    _, again = store.task("r", pool)  # r's open task no longer offers the full image
    assert target not in again and set(again) == set(r_items) - {target}
    with serving(dataset) as base, httpx.Client() as client:
        full = post(client, base, r.token, "vote", {"sample_id": target, "present": "no"},
                    r.csrf)  # fmt: skip
        assert full.status_code == 409
        other = again[0]
        for body in ({"present": "yes", "unsafe": "false"}, {"present": "yes", "naturalness": 3},
                     {"present": "maybe"}):  # fmt: skip
            bad = post(client, base, r.token, "vote", {"sample_id": other, **body}, r.csrf)
            assert bad.status_code == 400, body  # no --naturalness on this server
        huge = client.post(f"{base}/r/{r.token}/vote", content=b"x" * 10_000,
                           headers={"Origin": base, "X-CSRF-Token": r.csrf})  # fmt: skip
        assert huge.status_code == 413
    assert len([v for v in store.votes() if v.sample_id == target]) == 2
    assert {v.sample_id for v in store.votes("r")} == set()


REVIEW_EXTRA = ("starlette", "uvicorn", "crowdkit", "krippendorff")


def test_the_review_extra_is_named_where_it_is_missing(monkeypatch):
    from dreamshift.errors import DreamshiftError
    from dreamshift.verify import aggregate
    from dreamshift.verify.app import create_app

    for module in REVIEW_EXTRA:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    extra = r"pip install 'dreamshift\[review\]'"
    with pytest.raises(DreamshiftError, match=rf"the review app needs starlette.*{extra}"):
        create_app(None, [])
    with pytest.raises(DreamshiftError, match=rf"Dawid-Skene .* needs crowdkit.*{extra}"):
        aggregate.dawid_skene([])
    with pytest.raises(DreamshiftError, match=rf"needs krippendorff.*{extra}"):
        aggregate.krippendorff_alpha([])


def test_the_stages_run_without_the_review_extra(tmp_path):
    """The core install: the review app's libraries blocked from import, a dataset is composed,
    dreamed (paste), verified by the oracles, audited and learned on."""
    script = f"""
import sys
sys.modules.update(dict.fromkeys({REVIEW_EXTRA!r}))
from dreamshift.cli import main
root = {str(tmp_path)!r}
steps = [
    ["compose", "--out", root + "/ds", "--classes", "cat,dog", "--background-names", "grass,snow",
     "--train-size", "8", "--val-per-group", "0", "--test-per-group", "1",
     "--anti-per-group", "0", "--spurious-per-class", "0", "--no-progress"],
    ["dream", root + "/ds", "--out", root + "/copy", "--mode", "paste", "--no-progress"],
    ["verify", root + "/copy", "--oracle", "world"],
    ["audit", root + "/ds", "--model", "world-cnn", "--results", root + "/r.jsonl"],
    ["learn", root + "/ds", "--out", root + "/runs", "--epochs", "1", "--batch-size", "4",
     "--loader-workers", "0"],
]
for argv in steps:
    assert main(argv) == 0, argv
assert not any(sys.modules.get(m) for m in {REVIEW_EXTRA!r})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
