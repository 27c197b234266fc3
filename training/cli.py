"""`python -m training ...`: thin command-line drivers over the training modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from training import data, evaluate, export, fit, judge, official, queue_cli, showcase, summary, warm_start, worker


def build_parser() -> argparse.ArgumentParser:
    """Each module registers its own subcommand: the CLI holds no logic of its own."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # Subcommand registrations (one line per module):
    fit.add_parser(sub)
    summary.add_parser(sub)
    official.add_parser(sub)
    export.add_parser(sub)
    worker.add_parser(sub)
    queue_cli.add_parser(sub)
    warm_start.add_parser(sub)
    data.add_parser(sub)
    showcase.add_parser(sub)
    judge.add_parser(sub)
    evaluate.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
