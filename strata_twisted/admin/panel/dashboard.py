"""
The Dashboard (#14): every domain under the account with its state (normal, outage, draining,
held), its queue and oldest message, the drain estimate while it drains, the relay's last 24
hours, the outages that are open, and two charts (queue depth, and each domain's outage
timeline) from the time series the sampler keeps.  During an outage the page refreshes
itself: in place with JavaScript, by a ``<meta refresh>`` without.
"""

from __future__ import annotations

from typing import Final

from twisted.web.iweb import IRequest

from strata_twisted.admin.panel.base import Body, Page, PanelBase
from strata_twisted.admin.panel.charts import LABEL, depth_chart, timeline_chart
from strata_twisted.core.admin import dashboard

app = PanelBase.app

PERIODS: Final = {24: "last 24 hours", 168: "last 7 days", 720: "last 30 days"}
# The domains table shows the ones that need attention first, and this many in all unless
# asked for every one (an operator may have thousands).
SHOWN: Final = 200


class DashboardPages(PanelBase):
    @app.route("/", methods=["GET"])
    async def dashboard(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            hours = int(page.arg("hours", "24")) if page.arg("hours") in _HOURS else 24
            board = await dashboard.dashboard(self.ctx, page.caller)
            chart = await dashboard.series(self.ctx, page.caller, hours=hours)
            # Outages first, then drains, held mail, and the rest by name.
            rank = {"outage": 0, "draining": 1, "held": 2, "normal": 3}
            rows = sorted(board.rows, key=lambda r: (rank[r.state], r.name))
            every = page.arg("all") == "1"
            return page.render(
                "dashboard.html",
                title="Dashboard",
                board=board,
                rows=rows if every else rows[:SHOWN],
                more=not every and len(rows) > SHOWN,
                busy=board.refresh_after < dashboard.REFRESH_QUIET,
                hours=hours,
                period=PERIODS[hours],
                depth=depth_chart(chart),
                timeline=timeline_chart(chart),
                label=LABEL,
            )

        return await self.show(request, handler)


_HOURS: Final = frozenset(str(h) for h in PERIODS)
