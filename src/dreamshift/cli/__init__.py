"""``dreamshift <command>``: parses arguments, builds a config, calls the library.

One thin module per command group (compose, dream, verify, audit, learn, tune, data, export,
world). Every command has ``--help``. ``main(argv)`` returns the exit status
(:data:`EXIT_CODES`), so tests call it directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dreamshift import __version__
from dreamshift.cli import audit, compose, data, dream, export, learn, tune, verify, world
from dreamshift.data.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
from dreamshift.errors import DreamshiftError

EXIT_CODES = """exit status: 0 done; 1 the run failed (bad input, named in the message, or some
samples failed and were recorded: run the same command again after fixing the cause);
2 usage error (unknown option or missing argument); 130 interrupted."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamshift",
        description="Image datasets with controlled foreground/background shifts.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"dreamshift {__version__}")
    parser.add_argument(
        "--max-pixels", type=int, metavar="N",
        help=f"the largest image (width x height) to open; larger ones are bad input (default: "
        f"{DEFAULT_MAX_PIXELS:,})",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (world, compose, dream, verify, audit, learn, tune, data, export):
        group.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = verify.review_argv(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    if args.max_pixels is not None:
        if args.max_pixels < 1:
            print("dreamshift: error: --max-pixels must be >= 1", file=sys.stderr)
            return 2
        os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)  # worker processes inherit it
    try:
        return int(args.func(args))
    except DreamshiftError as exc:
        print(f"dreamshift: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dreamshift: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader closed stdout (`dreamshift info DIR | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
