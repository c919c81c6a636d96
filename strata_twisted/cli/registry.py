"""
How command groups join the parser.  Each group is one module under
L{strata_twisted.cli.commands} with a ``register(commands)`` function that adds its parsers with
L{group} and L{sub}; L{strata_twisted.cli.parser.GROUPS} lists the modules.  A new group (say
``strata admin``) is one module and one line there.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from strata_twisted.cli.context import Context

Command = Callable[[Context, Any], None]
Subparsers = Any  # argparse's _SubParsersAction, which it does not export


def common_options() -> argparse.ArgumentParser:
    """The options every command takes, wherever they appear on the line."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="TOML config file (default: ./strata.toml when present, else the embedded default)",
    )
    return common


COMMON = common_options()


def group(commands: Subparsers, name: str, help_text: str, description: str) -> Subparsers:
    """A command group (``strata domain ...``): returns its subparsers, for L{sub}."""
    parser = commands.add_parser(name, help=help_text, parents=[COMMON], description=description)
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def sub(
    actions: Subparsers,
    name: str,
    help_text: str,
    func: Command,
    json_flag: bool = False,
) -> argparse.ArgumentParser:
    """One command running ``func(ctx, args)``; ``json_flag``: it takes ``--json``."""
    p: argparse.ArgumentParser = actions.add_parser(
        name, help=help_text, description=help_text, parents=[COMMON]
    )
    p.set_defaults(func=func)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON document")
    return p
