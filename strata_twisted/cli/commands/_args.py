"""Argument values the CLI takes as text, turned into what the operations take; and the new
passwords it reads (from a terminal, typed twice, or from stdin for scripts)."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from strata_twisted.cli.context import CommandError, UsageError
from strata_twisted.cli.output import printable
from strata_twisted.core.admin._common import domain_name
from strata_twisted.core.admin.errors import InvalidInput

# Options by the field name the operations report (InvalidInput.field).
_OPTIONS = {
    "relay": "--relay",
    "mode": "--mode",
    "tls_policy": "--tls-policy",
    "queue_lifetime": "--queue-lifetime",
    "probe_interval": "--probe-interval",
    "down_after": "--down-after",
    "up_after": "--up-after",
    "portal": "--portal",
    "retention_days": "--retention-days",
    "alert_email": "--alert-email",
    "alert_webhook": "--alert-webhook",
    "alert_webhook_auth": "--alert-webhook-auth",
    "selector": "--selector",
    "limit": "--limit",
    "customer": "--customer",
    "reseller": "--reseller",
    "scheme": "--scheme",
    "role": "--role",
    "scope": "--scope",
    "expires_days": "--expires-days",
    "allow_ip": "--allow-ip",
}
_CLEARABLE = ("alert_email", "alert_webhook", "alert_webhook_auth")


def invalid_text(error: InvalidInput) -> str:
    """An operation's L{InvalidInput}, said in the CLI's terms (the option it came from)."""
    option = _OPTIONS.get(error.field)
    text = f"{option}: {error.message}" if option else error.message
    if error.field in _CLEARABLE:
        text += ' ("" to remove it)'
    return text


def usage(error: InvalidInput) -> UsageError:
    return UsageError(invalid_text(error))


def domain_arg(text: str) -> str:
    """A domain name argument in canonical form, or a usage error."""
    try:
        return domain_name(text)
    except InvalidInput as e:
        raise usage(e) from None


def read_password(
    args: argparse.Namespace, whose: str, check: Callable[[str], object] | None = None
) -> str:
    """
    A new password for ``whose`` (shown in the prompt): the first line of stdin
    (``--password-stdin``), or typed twice at a terminal.  ``check`` (a policy that raises
    L{InvalidInput}) runs on the first entry, so a password it refuses is not typed twice.
    """
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise CommandError("no password on standard input")
        if check is not None:
            check(password)
        return password
    if not sys.stdin.isatty():
        raise UsageError("no terminal to read the password from (scripts: --password-stdin)")
    first = getpass.getpass(f"New password for {printable(whose)}: ")
    if not first:
        raise CommandError("empty password; nothing changed")
    if check is not None:
        check(first)
    if getpass.getpass("Again: ") != first:
        raise CommandError("the passwords do not match; nothing changed")
    return first
