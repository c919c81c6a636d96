"""``strata``'s entry point: parse, open the data dir, run the command, map its errors to
messages and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from strata_twisted.cli.commands._args import invalid_text
from strata_twisted.cli.context import CommandError, Context, UsageError
from strata_twisted.cli.parser import build_parser
from strata_twisted.config import load_config
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.errors import ConfigError, StrataError


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    creates = bool(getattr(args, "creates", False))
    try:
        settings = load_config(getattr(args, "config", None))
        if creates:  # refuse bad arguments before a new data dir is made for them
            args.precheck(args)
        ctx = Context(settings, out, create=creates)
    except ConfigError as e:
        sys.stderr.write(f"strata: invalid configuration: {e}\n")
        return 2
    except InvalidInput as e:
        sys.stderr.write(f"strata: {invalid_text(e)}\n")
        return 2
    except (UsageError, StrataError) as e:
        sys.stderr.write(f"strata: {e}\n")
        return 2
    status = 0
    try:
        args.func(ctx, args)
    except UsageError as e:
        sys.stderr.write(f"strata: {e}\n")
        status = 2
    except InvalidInput as e:
        # A value the parser could not check (a domain name, an address): the command was not
        # run, it did not fail.
        sys.stderr.write(f"strata: {invalid_text(e)}\n")
        status = 2
    except (CommandError, StrataError) as e:
        sys.stderr.write(f"strata: {e}\n")
        status = 1
    finally:
        ctx.close()
        ctx.flush()
    return status
