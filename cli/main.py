"""Entry point of the `regionfarm` command: parses arguments and hands off to one subcommand."""

from __future__ import annotations

import argparse
import sys

from . import api_cmd, keys_cmd, render_cmd, status_cmd, submit_cmd, worker_cmd

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regionfarm",
        description="A render farm for region-based, multi-prompt diffusion.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    render_cmd.add_parsers(sub)
    submit_cmd.add_parsers(sub)
    api_cmd.add_parsers(sub)
    keys_cmd.add_parsers(sub)
    worker_cmd.add_parsers(sub)
    status_cmd.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or EXIT_OK)
    except KeyboardInterrupt:
        print("regionfarm: interrupted", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
