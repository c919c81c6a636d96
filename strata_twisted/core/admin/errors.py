"""
The errors admin operations raise besides L{NotFound}, L{AlreadyExists} and
L{InsufficientScope}: bad input naming the offending field, and a change refused because of
what the object still holds.  Each layer maps them to its own answer (the API: 400 with the
field, 409; the CLI: exit 2 or 1 with its message).
"""

from __future__ import annotations

from strata_twisted.errors import StrataError


class InvalidInput(StrataError):
    """
    A value the operation cannot take.  ``field`` names it as the API spells it (``relay``,
    ``alert_webhook``, ``cursor``); ``message`` says what is wrong without echoing secrets;
    ``details`` lists the individual problems when there are several (a passwd-file's bad lines).
    """

    def __init__(self, field: str, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.details = details


class Conflict(StrataError):
    """The object cannot change now because of what it holds (a customer that still has
    domains, a reseller that still has customers)."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
