"""
The admin panel (#14): HTML pages over L{strata_twisted.core.admin}, served by Klein at the root
of the admin site (the JSON API lives under ``/api/v1`` on the same site; L{AdminSite}).
"""

from __future__ import annotations

from strata_twisted.admin.panel.account import AccountPages
from strata_twisted.admin.panel.dashboard import DashboardPages
from strata_twisted.admin.panel.domain_page import DomainPagePages
from strata_twisted.admin.panel.domains import DomainPages
from strata_twisted.admin.panel.events import EventPages
from strata_twisted.admin.panel.login import LoginPages
from strata_twisted.admin.panel.queue import QueuePages
from strata_twisted.admin.panel.tenants import TenantPages


class Panel(
    LoginPages,
    DashboardPages,
    DomainPagePages,
    DomainPages,
    QueuePages,
    EventPages,
    TenantPages,
    AccountPages,
):
    """Every page; ``resource()`` is what the site serves."""


__all__ = ["Panel"]
