"""mkdocs hooks: the command-line reference is generated from the argparse parsers at build
time (``dreamshift.cli.reference``), so the page cannot drift from ``dreamshift --help``."""

from __future__ import annotations

from typing import Any

CLI_MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if CLI_MARKER not in markdown:
        return markdown
    from dreamshift.cli.reference import markdown_reference

    return markdown.replace(CLI_MARKER, markdown_reference())
