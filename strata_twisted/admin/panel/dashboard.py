"""
The Dashboard (#14): every domain under the account with its state, its queue and the outages
that are open.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from strata_twisted.admin.panel.base import Body, Page, PanelBase
from strata_twisted.core.admin import domains

app = PanelBase.app


class DashboardPages(PanelBase):
    @app.route("/", methods=["GET"])
    async def dashboard(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            views = await domains.list_domains(self.ctx, page.caller)
            return page.render("dashboard.html", title="Dashboard", domains=views)

        return await self.show(request, handler)
