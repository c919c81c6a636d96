"""
White-label branding (#14): a reseller's uploaded logo, and the brand each page shows.

- The logo: a PNG, JPEG, GIF or WebP image of at most L{MAX_LOGO_BYTES}, recognised by its
  first bytes (never by what the uploader claims).  SVG is refused: it can carry script, and the
  logo is served to strangers from Strata's own origin.  The operator sets any reseller's; a
  reseller admin its own (the reseller manages its brand); a customer admin none.  Audited.
- The brand a logged-in admin sees (L{branding_for}) and the brand of a host name, for pages
  nobody has logged in to yet (L{branding_for_host}: Roundcube's and the panel's login pages).
  The public answers carry only L{BrandingView}: no reseller name, no customer.
"""

from __future__ import annotations

from typing import Final

from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.core.admin.tenancy import Owner
from strata_twisted.core.branding import BrandingView, branding_view, reseller_of_customer
from strata_twisted.errors import InvalidDomainName, NotFound
from strata_twisted.model import Reseller, ResellerLogo, normalize_domain

LOGO_FIELD: Final = "logo"
MAX_LOGO_BYTES: Final = 256 * 1024

# The image formats a logo may be, by their signatures (the first bytes of the file).
_PNG: Final = b"\x89PNG\r\n\x1a\n"
_JPEG: Final = b"\xff\xd8\xff"
_GIFS: Final = (b"GIF87a", b"GIF89a")


def logo_type(data: bytes) -> str:
    """The MIME type of ``data`` if it is a logo Strata takes, else L{InvalidInput} (``logo``)."""
    if not data:
        raise InvalidInput(LOGO_FIELD, "the logo is empty")
    if len(data) > MAX_LOGO_BYTES:
        raise InvalidInput(
            LOGO_FIELD, f"the logo is larger than {MAX_LOGO_BYTES // 1024} KiB ({len(data)} bytes)"
        )
    if data.startswith(_PNG):
        return "image/png"
    if data.startswith(_JPEG):
        return "image/jpeg"
    if data.startswith(_GIFS):
        return "image/gif"
    # RIFF container: "RIFF", 4 bytes of length, then the form type "WEBP".
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head:
        raise InvalidInput(LOGO_FIELD, "SVG logos are refused (they can carry script)")
    raise InvalidInput(LOGO_FIELD, "the logo must be a PNG, JPEG, GIF or WebP image")


async def _own_reseller(ctx: AdminContext, caller: Caller, name: str) -> Reseller:
    """The reseller ``name`` if ``caller`` may change its brand: the operator, or an admin of
    that reseller; anybody else gets L{NotFound}."""
    found = await ctx.tenancy.reseller(caller, name)
    if not caller.is_operator and caller.reseller != found.name:
        raise NotFound("reseller", name)
    require(caller, "admin")
    return found


async def set_reseller_logo(
    ctx: AdminContext, caller: Caller, name: str, data: bytes
) -> ResellerLogo:
    """Store ``data`` as the reseller's logo (replacing any); L{InvalidInput} ``logo`` for
    anything but a PNG, JPEG, GIF or WebP image of at most 256 KiB."""
    found = await _own_reseller(ctx, caller, name)
    content_type = logo_type(data)
    logo = ResellerLogo(data, content_type, ctx.clock.seconds())
    await ctx.tenants.set_reseller_logo(found.name, logo)
    await ctx.auditor.record(
        caller,
        "reseller.logo.set",
        found.name,
        Owner(found.name),
        {"content_type": content_type, "size": len(data)},
    )
    return logo


async def clear_reseller_logo(ctx: AdminContext, caller: Caller, name: str) -> bool:
    """Remove the reseller's uploaded logo; whether it had one (audited only then)."""
    found = await _own_reseller(ctx, caller, name)
    had: bool = await ctx.tenants.clear_reseller_logo(found.name)
    if had:
        await ctx.auditor.record(caller, "reseller.logo.clear", found.name, Owner(found.name))
    return had


async def reseller_logo(ctx: AdminContext, caller: Caller, name: str) -> ResellerLogo | None:
    """The reseller's uploaded logo, for those who see the reseller."""
    found = await ctx.tenancy.reseller(caller, name)
    require(caller, "read")
    logo: ResellerLogo | None = await ctx.tenants.get_reseller_logo(found.name)
    return logo


# -- the brand a page shows -------------------------------------------------------------------


async def _caller_reseller(ctx: AdminContext, caller: Caller) -> Reseller | None:
    """The reseller whose brand ``caller`` sees: a reseller admin's own, a customer admin's
    customer's; None for the operator and the operator's own customers."""
    if caller.role == "reseller" and caller.reseller:
        found: Reseller | None = await ctx.tenants.get_reseller(caller.reseller)
        return found
    if caller.role == "customer":
        return await reseller_of_customer(ctx.tenants, caller.customer)
    return None


async def branding_for(ctx: AdminContext, caller: Caller) -> BrandingView | None:
    """The brand ``caller``'s pages show, or None (Strata's own look)."""
    reseller = await _caller_reseller(ctx, caller)
    return None if reseller is None else await branding_view(ctx.tenants, reseller)


async def logo_for(ctx: AdminContext, caller: Caller) -> ResellerLogo | None:
    """The uploaded logo of the brand ``caller``'s pages show, or None."""
    reseller = await _caller_reseller(ctx, caller)
    if reseller is None:
        return None
    logo: ResellerLogo | None = await ctx.tenants.get_reseller_logo(reseller.name)
    return logo


def host_name(host: str) -> str | None:
    """The canonical host name in an HTTP ``Host`` value (``Webmail.Acme.test:8443`` →
    ``webmail.acme.test``), or None for an address literal or anything not a host name."""
    text = host.strip()
    if text.startswith("["):  # an IPv6 literal, with or without a port
        return None
    name, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if port and not port.isdigit():
        return None
    if len(name) > 253:
        return None
    try:
        return normalize_domain(name)
    except (InvalidDomainName, ValueError):
        return None


async def _host_reseller(ctx: AdminContext, host: str) -> Reseller | None:
    name = host_name(host)
    if name is None:
        return None
    found: Reseller | None = await ctx.tenants.reseller_for_hostname(name)
    return found


async def branding_for_host(ctx: AdminContext, host: str) -> BrandingView | None:
    """The brand of the reseller that has the host name in ``host`` (a port is ignored), or
    None.  Public: anyone may ask, so it answers with L{BrandingView} only."""
    reseller = await _host_reseller(ctx, host)
    return None if reseller is None else await branding_view(ctx.tenants, reseller)


async def logo_for_host(ctx: AdminContext, host: str) -> ResellerLogo | None:
    """The uploaded logo of the reseller that has the host name in ``host``, or None."""
    reseller = await _host_reseller(ctx, host)
    if reseller is None:
        return None
    logo: ResellerLogo | None = await ctx.tenants.get_reseller_logo(reseller.name)
    return logo
