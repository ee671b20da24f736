"""The ``edgekit`` command line: a table of subcommands, one module each.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed args and returning an exit code). Modules are imported
when the parser is built, so they must keep heavy imports (torch, TensorFlow) inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edgekit import __version__
from edgekit.errors import EdgekitError

logger = logging.getLogger("edgekit")

# Order here is the order in `edgekit --help`.
SUBCOMMAND_MODULES = (
    "edgekit.cli.boards",
    "edgekit.cli.data",
    "edgekit.cli.space",
    "edgekit.cli.train",
    "edgekit.cli.estimate",
    "edgekit.cli.export",
    "edgekit.cli.search",
    "edgekit.cli.report",
    "edgekit.cli.demo",
)

EXIT_OK, EXIT_USER_ERROR, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekit",
        description=(
            "Memory-budgeted neural architecture search, int8 export and on-device timing "
            "for microcontrollers."
        ),
        epilog="Run 'edgekit COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks and debug logging"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(debug=args.debug, quiet=args.quiet)
    try:
        return int(args.func(args) or EXIT_OK)
    except EdgekitError as e:
        if args.debug:
            raise
        print(f"edgekit: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130


def _setup_logging(debug: bool, quiet: bool) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(show_time=debug, show_path=debug, markup=False, rich_tracebacks=True)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    # Third-party libraries stay quiet unless debugging.
    for noisy in ("matplotlib", "PIL", "absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
