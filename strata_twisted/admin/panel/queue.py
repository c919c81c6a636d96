"""
Continuity → Queue Manager (#14): a domain's queue, filtered and paged; one message's envelope
and headers; and the moves (hold, release, retry now, delete, bounce) on one message, on the
rows an admin ticks, or on everything the filter selects.

The pages only read forms and show results: the filter is the API's (L{queue_filter}), and the
listing, the count, the subjects and every move are L{strata_twisted.core.admin.queue}'s, which
checks tenancy (another tenant's domain or id is "not found") and scope.  A listing is always a
page (L{PAGE_SIZE} rows), never the whole queue: an operator's may hold many thousands.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final, cast

from twisted.web.iweb import IRequest

from strata_twisted.admin.api import queue_filter
from strata_twisted.admin.http import ApiError
from strata_twisted.admin.panel.base import Body, Page, PanelBase, field_errors, local_path, url
from strata_twisted.core.admin import domains, queue
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.queue import MOVES, QueueAction
from strata_twisted.model import HELD, QUEUE_STATES, QUEUED, QueueFilter

app = PanelBase.app

PAGE_SIZE: Final = 50
ALL_DOMAINS: Final = "*"  # the domain choice for every domain the caller sees
WAITING: Final = "waiting"  # the state choice for entries still to deliver (queued or held)
ANY_STATE: Final = "any"
STATE_CHOICES: Final = (WAITING, *QUEUE_STATES, ANY_STATE)
# Largest "older than" in minutes (the API takes up to 1e12 seconds).
_MAX_MINUTES: Final = 1e10
# The notice after a move: "Held 3 messages (1 skipped)".
_DONE: Final = {
    "hold": "Held",
    "release": "Released",
    "retry": "Retried",
    "delete": "Deleted",
    "bounce": "Bounced",
}


@dataclass(frozen=True)
class QueueForm:
    """The Queue Manager's filter as the admin typed it (the query string, or the hidden
    fields of an "all matching" form).  ``domain`` "" means none chosen yet."""

    domain: str = ""
    state: str = WAITING
    sender: str = ""
    recipient: str = ""
    older_than: str = ""  # minutes

    @classmethod
    def read(cls, page: Page) -> QueueForm:
        return cls(
            domain=page.arg("domain").strip(),
            state=page.arg("state").strip() or WAITING,
            sender=page.arg("sender").strip(),
            recipient=page.arg("recipient").strip(),
            older_than=page.arg("older_than").strip(),
        )

    def fields(self) -> dict[str, str]:
        """The filter's fields, for links and hidden inputs."""
        return {
            "domain": self.domain,
            "state": self.state,
            "sender": self.sender,
            "recipient": self.recipient,
            "older_than": self.older_than,
        }

    def link(self, cursor: str | None = None) -> str:
        return url("/queue", **self.fields(), cursor=cursor)

    def query(self, now: float) -> QueueFilter:
        """The L{QueueFilter} this form selects (L{InvalidInput} or L{ApiError} naming a field
        when one is wrong)."""
        if self.state not in STATE_CHOICES:
            raise InvalidInput("state", f"expected one of {', '.join(STATE_CHOICES)}")
        older: float | None = None
        if self.older_than:
            try:
                older = float(self.older_than)
            except ValueError:
                older = -1.0
            if not 0 <= older < _MAX_MINUTES:
                raise InvalidInput("older_than", "expected a number of minutes (0 or more)")
        picked = self.state if self.state in QUEUE_STATES else None
        query = queue_filter(
            {
                "domain": None if self.domain == ALL_DOMAINS else self.domain,
                "state": picked,
                "sender": self.sender,
                "recipient": self.recipient,
                "older_than": older * 60 if older is not None else None,
            },
            now,
        )
        return replace(query, states=(QUEUED, HELD)) if self.state == WAITING else query


class QueuePages(PanelBase):
    @app.route("/queue", methods=["GET"])
    async def queue_list(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            form = QueueForm.read(page)
            names = await domains.domain_choices(self.ctx, page.caller)
            values: dict[str, Any] = {
                "form": form,
                "domains": names,
                "errors": {},
            }
            if not form.domain:
                return page.render("queue.html", title="Queue Manager", loaded=False, **values)
            try:
                query = form.query(self.ctx.clock.seconds())
                listing = await queue.list_queue(
                    self.ctx, page.caller, query, page.arg("cursor") or None, PAGE_SIZE
                )
            except (InvalidInput, ApiError) as e:
                values["errors"] = field_errors(e, "domain")
                return page.render(
                    "queue.html", status=400, title="Queue Manager", loaded=False, **values
                )
            subjects = await queue.queue_subjects(self.ctx, page.caller, listing.entries)
            matching = await queue.count_queue(self.ctx, page.caller, query)
            return page.render(
                "queue.html",
                title="Queue Manager",
                loaded=True,
                entries=listing.entries,
                subjects=subjects,
                matching=matching,
                first_page=not page.arg("cursor"),
                next_page=form.link(listing.next_cursor) if listing.next_cursor else None,
                here=request.uri.decode("utf-8", "replace"),
                **values,
            )

        return await self.show(request, handler)

    @app.route("/queue/actions", methods=["POST"])
    async def queue_act(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            action = page.arg("action")
            if action not in MOVES:
                raise InvalidInput("action", f"expected one of {', '.join(MOVES)}")
            form = QueueForm.read(page)
            back = local_path(page.arg("next"), form.link() if form.domain else "/queue")
            if page.arg("scope") == "matching":
                if not form.domain:
                    raise InvalidInput("domain", "choose a domain (or all domains) first")
                report = await queue.queue_action(
                    self.ctx,
                    page.caller,
                    cast(QueueAction, action),
                    query=form.query(self.ctx.clock.seconds()),
                )
            else:
                ids = [i.strip() for i in page.args("id") if i.strip()]
                if not ids:
                    page.notice("Tick at least one message first; nothing was changed.", "error")
                    return page.redirect(back)
                report = await queue.queue_action(
                    self.ctx, page.caller, cast(QueueAction, action), ids=ids
                )
            page.notice(report_text(report))
            return page.redirect(back)

        return await self.act(request, handler)

    @app.route("/queue/<string:entry_id>", methods=["GET"])
    async def queue_message(self, request: IRequest, entry_id: str) -> Body:
        async def handler(page: Page) -> Body:
            shown = await queue.show_queue(self.ctx, page.caller, entry_id)
            return page.render(
                "queue_message.html",
                title=f"Message {shown.message.id}",
                shown=shown,
                entry_id=entry_id,
                domains=sorted({e.domain for e in shown.entries}),
                headers=shown.headers.decode("utf-8", "replace"),
                here=request.uri.decode("utf-8", "replace"),
            )

        return await self.show(request, handler)


def report_text(report: queue.ActionReport) -> str:
    """What a move did, in a sentence: "Held 1 message (0 skipped)", with its DSNs."""
    count = len(report.changed)
    text = f"{_DONE[report.action]} {count} message{'' if count == 1 else 's'}"
    text += f" ({len(report.skipped)} skipped)"
    sent = sum(1 for d in report.dsns if d.dsn is not None)
    if report.dsns:
        plural = "" if sent == 1 else "s"
        text += f"; {sent} DSN{plural} queued to the sender{plural}"
        failed = [d.error for d in report.dsns if d.error]
        if failed:
            text += "; " + "; ".join(failed[:3])
    return text + "."
