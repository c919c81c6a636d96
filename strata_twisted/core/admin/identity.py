"""
Who is calling an admin operation, and what their scope lets them do.

A L{Caller} is built by the layer that authenticated the request (the API from a key or a
session, the CLI for the local operator) and handed to every operation in
L{strata_twisted.core.admin}; operations check it, layers never do.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Final

from strata_twisted.errors import StrataError
from strata_twisted.model import SCOPES, Role, Scope

VIA_CLI: Final = "cli"
VIA_API: Final = "api"
VIA_PANEL: Final = "panel"


class InsufficientScope(StrataError):
    """The caller's key does not allow this operation (a ``read`` key asked to hold mail)."""

    def __init__(self, needed: Scope, has: Scope) -> None:
        super().__init__(f"this needs scope {needed!r}; the credentials have {has!r}")
        self.needed = needed
        self.has = has


@dataclass(frozen=True)
class Caller:
    """
    An authenticated admin.  ``role`` and the tenant fields come from the account: a reseller
    admin has ``reseller``; a customer admin has ``customer`` and, when that customer is a
    reseller's, ``reseller`` too.  ``scope`` is the API key's (a session or the CLI: "admin").
    ``via`` and ``source`` go into the audit log.
    """

    name: str
    role: Role
    reseller: str = ""
    customer: str = ""
    scope: Scope = "admin"
    via: str = VIA_CLI
    source: str = "local"

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


def cli_caller() -> Caller:
    """The local operator at the ``strata`` command: whoever can read the data directory owns
    the installation, as root owns Postfix's ``postqueue``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown"
    return Caller(name=f"cli:{user}", role="operator", via=VIA_CLI, source="local")


def allows(caller: Caller, needed: Scope) -> bool:
    """Whether ``caller``'s scope includes ``needed`` (read < operate < admin)."""
    return SCOPES.index(caller.scope) >= SCOPES.index(needed)


def require(caller: Caller, needed: Scope) -> None:
    """L{InsufficientScope} unless ``caller``'s scope includes ``needed``."""
    if not allows(caller, needed):
        raise InsufficientScope(needed, caller.scope)
