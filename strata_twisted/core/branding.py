"""
White-label branding (#14): which reseller's brand a customer's people see, and what of it is
public.

A customer under a reseller sees that reseller's branding (the panel, webmail, alert emails);
a customer directly under the operator, and the operator, see Strata's own look (None here).
Webmail and the panel's login page find the brand by the host name they are served under.  This
module only reads: changing a brand is L{strata_twisted.core.admin.tenants} and
L{strata_twisted.core.admin.branding}, where the tenancy checks are.  It must never return
anything a stranger may not see: a L{BrandingView} holds no reseller name, no host list and no
customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strata_twisted.interfaces import ITenantStore
from strata_twisted.model import Customer, Reseller, ResellerLogo


async def reseller_of_customer(tenants: ITenantStore, customer: str) -> Reseller | None:
    """The reseller ``customer`` sits under, or None (the operator's own, or no such one)."""
    if not customer:
        return None
    found: Customer | None = await tenants.get_customer(customer)
    if found is None or not found.reseller:
        return None
    reseller: Reseller | None = await tenants.get_reseller(found.reseller)
    return reseller


@dataclass(frozen=True)
class BrandingView:
    """
    What anyone may see of a reseller's brand: shown on login pages before anybody logs in.
    ``logo_url`` is a logo hosted elsewhere (the reseller's setting); ``logo_version`` is set
    (the upload's time, as text) when the reseller uploaded one, which Strata serves itself and
    which wins over ``logo_url``.
    """

    product_name: str = ""
    primary_color: str = ""
    accent_color: str = ""
    support_email: str = ""
    support_url: str = ""
    logo_url: str = ""
    logo_version: str = ""

    @property
    def has_logo(self) -> bool:
        """Whether Strata serves an uploaded logo for this brand."""
        return bool(self.logo_version)

    def as_json(self, uploaded_logo_url: str | None = None) -> dict[str, Any]:
        """The public JSON; ``uploaded_logo_url`` is where this answer's reader fetches the
        uploaded logo (the layer that serves it knows the route), versioned so that a new
        upload is never hidden by a cache."""
        logo: str | None = self.logo_url or None
        if self.has_logo and uploaded_logo_url is not None:
            separator = "&" if "?" in uploaded_logo_url else "?"
            logo = f"{uploaded_logo_url}{separator}v={self.logo_version}"
        return {
            "product_name": self.product_name,
            "primary_color": self.primary_color,
            "accent_color": self.accent_color,
            "support_email": self.support_email,
            "support_url": self.support_url,
            "logo_url": logo,
            "has_logo": self.has_logo,
        }


async def branding_view(tenants: ITenantStore, reseller: Reseller) -> BrandingView:
    """The public view of ``reseller``'s brand (reads whether it has an uploaded logo)."""
    branding = reseller.branding
    logo: ResellerLogo | None = await tenants.get_reseller_logo(reseller.name)
    return BrandingView(
        product_name=branding.product_name,
        primary_color=branding.primary_color,
        accent_color=branding.accent_color,
        support_email=branding.support_email,
        support_url=branding.support_url,
        logo_url=branding.logo_url,
        logo_version="" if logo is None else f"{int(logo.updated_at * 1000)}",
    )
