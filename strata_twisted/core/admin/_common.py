"""Small checks the admin operations share: names as the caller typed them, into canonical
form, with the field they came from; listings' cursors and page sizes."""

from __future__ import annotations

from typing import Final

from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.errors import InvalidDomainName
from strata_twisted.model import InvalidName, InvalidUser, check_tenant_name, credential_key
from strata_twisted.model import normalize_domain as _normalize_domain


def domain_name(text: str, field: str = "name") -> str:
    """The canonical (ASCII) form of a domain name, or L{InvalidInput} for ``field``."""
    try:
        return _normalize_domain(text)
    except InvalidDomainName as e:
        raise InvalidInput(field, str(e)) from None


def user_address(text: str, field: str = "address") -> tuple[str, str]:
    """The canonical address of a synced user and its domain, or L{InvalidInput}."""
    try:
        return credential_key(text)
    except InvalidUser as e:
        raise InvalidInput(field, str(e)) from None


def tenant_name(text: str, field: str = "name") -> str:
    """A valid reseller or customer name, or L{InvalidInput}."""
    try:
        return check_tenant_name(text, field)
    except InvalidName as e:
        raise InvalidInput(field, str(e)) from None


# The largest page a listing gives (queue entries, events).
MAX_PAGE: Final = 1000


def page_cursor(text: str | None) -> int | None:
    """The position a listing's cursor names (None: from the start), or L{InvalidInput}."""
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 19:
        raise InvalidInput("cursor", "not a cursor this listing returned")
    return int(text)


def page_limit(limit: int) -> int:
    """``limit`` if it is a page size a listing gives (1 to L{MAX_PAGE}), or L{InvalidInput}."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("limit", f"expected a whole number from 1 to {MAX_PAGE}")
    return limit
