"""The documentation cannot rot: every `dreamshift` command line in the docs and the README
names real commands and options (default suite), every shell block a page marks
`<!-- runnable -->` runs on the embedded world, and the built site's navigation and search
work with nothing fetched from outside this machine (`make docs`, marker `docs`)."""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamshift.cli import build_parser
from dreamshift.cli.reference import commands, markdown_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
)
BIN = Path(sys.executable).parent


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def shell_blocks(text: str) -> Iterator[tuple[bool, str]]:
    """(marked runnable, body) of every bash/sh/shell fence of a Markdown text."""
    for match in FENCE.finditer(text):
        if match["lang"] not in ("bash", "sh", "shell", "console"):
            continue
        before = text[: match.start()].rstrip().splitlines()
        marked = bool(before) and before[-1].strip() == RUNNABLE
        indent = len(match["indent"])
        body = "\n".join(line[indent:] for line in match["body"].splitlines())
        yield marked, body


def runnable_pages() -> list[Path]:
    return [p for p in pages() if any(marked for marked, _ in shell_blocks(p.read_text()))]


# -- command lines name real commands and options ---------------------------------------------


def command_lines(body: str) -> Iterator[list[str]]:
    """Every `dreamshift ...` invocation of a shell block, as words (comments, continuation
    lines and the optional `[...]` brackets of a usage line removed)."""
    joined = re.sub(r"\\\n\s*", " ", body)
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        for part in re.split(r"&&|\|\||;|\||\$\(|\)", line):
            try:
                words = shlex.split(part.replace("[", " ").replace("]", " "))
            except ValueError:
                words = part.replace("[", " ").replace("]", " ").split()
            if "dreamshift" in words:
                yield words[words.index("dreamshift") + 1 :]
            elif "dreamshift.cli" in words:
                yield words[words.index("dreamshift.cli") + 1 :]


def options_of(words: list[str]) -> tuple[str, set[str]]:
    """The command a line runs (its words joined) and its option strings."""
    parser: argparse.ArgumentParser = build_parser()
    names = ["dreamshift"]
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word.startswith("-"):
            break
        if word not in subs[0].choices:
            if parser.prog.endswith("review") and not word.startswith("-"):
                word = "serve"  # `review DATASET` means `review serve DATASET`
            else:
                raise AssertionError(f"`{' '.join(names)}` has no command {word!r}")
        parser = subs[0].choices[word]
        names.append(word)
    flags = {s for a in parser._actions for s in a.option_strings}
    return " ".join(names), flags


def test_every_command_line_in_the_docs_names_real_commands_and_options() -> None:
    checked = 0
    for path in [ROOT / "README.md", *pages()]:
        for _, body in shell_blocks(path.read_text()):
            for words in command_lines(body):
                if not words or words[0] in ("--help", "-h", "--version"):
                    continue
                where = f"{path.relative_to(ROOT)}: dreamshift {' '.join(words)}"
                name, flags = options_of(words)
                for word in words:
                    if word.startswith("--") and len(word) > 2:
                        flag = word.split("=")[0]
                        assert flag in flags, f"{where}\n  {name} has no option {flag}"
                checked += 1
    assert checked > 100, checked  # the docs do hold the project's commands


def test_the_cli_reference_lists_every_command_and_option() -> None:
    text = markdown_reference()
    for words, parser, _ in commands(build_parser()):
        assert f"## {' '.join(words)} {{#{'-'.join(words)}}}" in text
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text, (words, flag)


def test_shell_blocks_are_found_with_their_marks() -> None:
    text = (
        f"text\n\n{RUNNABLE}\n```bash\necho a\n```\n\n```bash\necho b\n```\n\n"
        f"  {RUNNABLE}\n  ```bash\n  echo c\n  ```\n"
    )
    assert list(shell_blocks(text)) == [(True, "echo a"), (False, "echo b"), (True, "echo c")]
    line = "dreamshift learn runs/x --algorithm erm [--erase background] \\\n   --out r  # note"
    assert list(command_lines(line)) == [
        ["learn", "runs/x", "--algorithm", "erm", "--erase", "background", "--out", "r"]
    ]


# -- make docs: the runnable blocks and the built site ----------------------------------------


@pytest.mark.docs
@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_a_pages_runnable_blocks_run_on_the_world(page: Path, tmp_path: Path) -> None:
    script = "\n\n".join(body for marked, body in shell_blocks(page.read_text()) if marked)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"{page.relative_to(ROOT)}: a runnable block failed (exit {done.returncode})\n"
        f"--- stdout (tail)\n{done.stdout[-3000:]}\n--- stderr (tail)\n{done.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def served_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(site)], check=True, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.docs
def test_the_site_navigates_and_searches_with_nothing_fetched_from_outside(
    served_site: str,
) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    outside: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()

        def route(r: object) -> None:
            url = r.request.url  # type: ignore[attr-defined]
            if url.startswith(served_site) or url.startswith("data:"):
                r.continue_()  # type: ignore[attr-defined]
            else:
                outside.append(url)
                r.abort()  # type: ignore[attr-defined]

        page.route("**/*", route)
        page.goto(f"{served_site}/index.html")
        page.get_by_role("link", name="Reference", exact=True).first.click()
        page.wait_for_url("**/reference/index.html")
        page.get_by_role("link", name="Command line").first.click()
        page.wait_for_url("**/reference/cli.html")
        page.locator("#dreamshift-compose").wait_for(state="attached", timeout=15_000)
        assert page.locator("#dreamshift-compose").count() == 1
        page.keyboard.press("/")  # Material's search shortcut
        page.locator("input.md-search__input").fill("recombine")
        results = page.locator(".md-search-result__item")
        results.first.wait_for(timeout=15_000)
        assert results.count() > 0
        browser.close()
    assert outside == []
