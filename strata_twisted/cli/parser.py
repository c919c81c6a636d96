"""The ``strata`` argument parser, built from the command groups in L{GROUPS}."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from strata_twisted import __version__
from strata_twisted.cli.commands import (
    accounts,
    alert,
    dkim,
    domain,
    events,
    queue,
    status,
    tenants,
    users,
)
from strata_twisted.cli.registry import COMMON, Subparsers

# Each group's ``register(commands)``, in the order ``strata --help`` lists them.
GROUPS: tuple[Callable[[Subparsers], None], ...] = (
    domain.register,
    queue.register,
    events.register,
    users.register,
    dkim.register,
    alert.register,
    tenants.register,
    accounts.register,
    status.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strata",
        description="Administer Strata, the email continuity server.",
        parents=[COMMON],
    )
    parser.add_argument("--version", action="version", version=f"strata {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in GROUPS:
        register(commands)
    return parser
