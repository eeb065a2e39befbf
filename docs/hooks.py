"""mkdocs hooks: the command-line reference is generated from the argparse parsers at build
time (``dreamshift.cli.reference``), so the page cannot drift from ``dreamshift --help``; the
docstrings' Sphinx roles (``:func:`name```) are shown as the plain code they name."""

from __future__ import annotations

import re
from typing import Any

CLI_MARKER = "<!-- cli-reference -->"
SPHINX_ROLE = re.compile(r":(?:mod|func|class|data|meth|attr|obj):(?=<code>)")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if CLI_MARKER not in markdown:
        return markdown
    from dreamshift.cli.reference import markdown_reference

    return markdown.replace(CLI_MARKER, markdown_reference())


def on_page_content(html: str, page: Any, **_: Any) -> str:
    return SPHINX_ROLE.sub("", html)
