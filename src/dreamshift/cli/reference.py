"""The command-line reference as Markdown, generated from the argparse parsers themselves.

The documentation site's page ``reference/cli.md`` is this text (``docs/hooks.py`` inserts
it at build time), so it says what ``dreamshift CMD --help`` says and cannot drift from it.

>>> text = markdown_reference()
>>> "## dreamshift compose {#dreamshift-compose}" in text
True
>>> "`--rho RHO`" in text and "#dreamshift-world-train-dream" in text
True
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Iterator

USAGE_WIDTH = 96


def commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ("dreamshift",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every command under ``parser``, depth first: (its words, its parser, its one-line help)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            yield (*words, name), sub, helps.get(name, "")
            yield from commands(sub, (*words, name))


def anchor(words: tuple[str, ...]) -> str:
    """The heading id of a command: ``dreamshift-world-train-dream``."""
    return "-".join(words)


def markdown_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole reference: an index of commands, then one section per command."""
    if parser is None:
        from dreamshift.cli import build_parser

        parser = build_parser()
    every = list(commands(parser))
    lines = ["| command | what it does |", "|---|---|"]
    for words, _, summary in every:
        lines.append(f"| [`{' '.join(words)}`](#{anchor(words)}) | {_cell(summary)} |")
    parts = [_section(("dreamshift",), parser, parser.description or ""), "\n".join(lines)]
    parts += [_section(words, sub, summary) for words, sub, summary in every]
    return "\n\n".join(parts) + "\n"


def _section(words: tuple[str, ...], parser: argparse.ArgumentParser, summary: str) -> str:
    title = " ".join(words)
    out = [f"## {title} {{#{anchor(words)}}}"]
    text = parser.description or summary
    if text:
        out.append(_prose(text))
    formatter = argparse.HelpFormatter(title, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    out.append("```text\n" + formatter.format_help().strip() + "\n```")
    positionals: list[argparse.Action] = []
    options: list[argparse.Action] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            continue
        (options if action.option_strings else positionals).append(action)
    if positionals:
        out.append(_table("argument", positionals, formatter))
    if options:
        out.append(_table("option", options, formatter))
    if parser.epilog:
        out.append(_prose(parser.epilog))
    return "\n\n".join(out)


def _table(kind: str, actions: list[argparse.Action], formatter: argparse.HelpFormatter) -> str:
    rows = [f"| {kind} | meaning |", "|---|---|"]
    for action in actions:
        if action.option_strings:
            metavar = (
                ""
                if action.nargs == 0
                else " " + formatter._format_args(action, action.dest.upper())
            )
            name = ", ".join(f"`{flag}{metavar}`" for flag in action.option_strings)
        else:
            name = f"`{formatter._metavar_formatter(action, action.dest)(1)[0]}`"
        help_text = formatter._expand_help(action) if action.help else ""
        if not help_text and action.option_strings and action.default not in (None, False):
            help_text = f"default: {action.default}"
        rows.append(f"| {name} | {_cell(help_text)} |")
    return "\n".join(rows)


def _prose(text: str) -> str:
    """argparse text as a Markdown paragraph: HTML, emphasis and link brackets escaped."""
    escaped = html.escape(text, quote=False)
    for char in "*[]":
        escaped = escaped.replace(char, "\\" + char)
    return " ".join(escaped.split())


def _cell(text: str) -> str:
    return _prose(text).replace("|", r"\|")
