"""``edgekit report``: re-render a search run's report from its trial store."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.cli._common import console


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="re-render the report of a search run",
        description="Re-render the report of a search run folder (plots, HTML, Markdown and "
        "JSON under RUN/report/) from its run.json and trial store; works while the search "
        "is still running.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN", help="search run folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.cli.search import print_result
    from edgekit.search import load_result, render_report

    files = render_report(args.run_dir)
    print_result(load_result(args.run_dir))
    for key, path in files.items():
        if not key.startswith("plot_") and key != "html":
            console.print(f"{key}: {path}")
    return 0
