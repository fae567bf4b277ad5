"""The `vallum` command: run, check, health, ca, policy, autocert."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from services.commands import autocert, ca, check, demo, health, policy, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vallum", description="Vallum: an identity-aware access proxy."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parser(sub)
    check.add_parser(sub)
    health.add_parser(sub)
    ca.add_parser(sub)
    policy.add_parser(sub)
    autocert.add_parser(sub)
    demo.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
