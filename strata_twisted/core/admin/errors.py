"""
Errors of admin operations that the layers above map to an answer (the API: 400 with the field).
"""

from __future__ import annotations

from strata_twisted.errors import StrataError


class InvalidInput(StrataError):
    """A request value that is not acceptable: ``field`` names it (``password``, ``allow_ip``),
    ``message`` says why, in words a client can show."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
