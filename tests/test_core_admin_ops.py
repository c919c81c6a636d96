"""
core/admin's operations (#13) as plain calls on a MemoryStore with a task.Clock: what each role
may see and do, what another tenant's objects answer (not found, and nothing changes), what each
scope allows, bulk queue moves with no cap, paging, and the audit records with their owners.

The tenants: reseller r1 with customer c1 (domain c1.test), reseller r2 with customer c2
(c2.test), and the operator's own op.test.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from strata_twisted.config import Settings
from strata_twisted.core.admin import alerts, dkim, domains, events, queue, status, tenants, users
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import Conflict, InvalidInput
from strata_twisted.core.admin.identity import Caller, InsufficientScope
from strata_twisted.core.credentials import hash_password
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import (
    HELD,
    QUEUED,
    Customer,
    Delivery,
    Domain,
    EventFilter,
    Outage,
    QueueFilter,
    RelayTarget,
    Reseller,
)
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of, store_message

T = TypeVar("T")

OP = Caller("op", "operator")
R1 = Caller("r1-admin", "reseller", reseller="r1")
R2 = Caller("r2-admin", "reseller", reseller="r2")
C1 = Caller("c1-admin", "customer", reseller="r1", customer="c1")
C2 = Caller("c2-admin", "customer", reseller="r2", customer="c2")
# Everyone who sees c1.test, and who owns it.
SEES_C1 = [OP, R1, C1]
OTHERS_OF_C1 = [R2, C2]


def run(operation: Coroutine[Any, Any, T]) -> T:
    return result_of(Deferred.fromCoroutine(operation))


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = MemoryStore(self.clock)
        self.running = True
        s = self.store
        self.ctx = AdminContext(
            domains=s, queue=s, messages=s, events=s, monitor=s, control=s, credentials=s,
            tenants=s, admins=s, audit=s, series=s, clock=self.clock,
            settings=Settings(data_dir=tmp_path, hostname="strata.test"),
            server_running=lambda: self.running,
        )  # fmt: skip
        for reseller in ("r1", "r2"):
            result_of(s.add_reseller(Reseller(reseller)))
        result_of(s.add_customer(Customer("c1", "r1")))
        result_of(s.add_customer(Customer("c2", "r2")))
        for name, customer in (("c1.test", "c1"), ("c2.test", "c2"), ("op.test", "")):
            result_of(s.add_domain(Domain(name, RelayTarget("mx." + name), customer=customer)))
        self.count = 0

    def queue(self, *recipients: str, sender: str = "s@sender.test") -> str:
        self.count += 1
        message_id = f"Q{self.count}"
        deliveries = [Delivery(r, r.split("@")[1]) for r in recipients]
        body = b"Subject: hi\r\n\r\nbody\r\n"
        result_of(
            store_message(
                self.store, message_id, body, deliveries, sender=sender,
                received_at=self.clock.seconds(),
            )
        )  # fmt: skip
        return message_id

    def states(self) -> dict[str, str]:
        return {e.id: e.state for e in result_of(self.store.list_entries())}

    def audit(self) -> list[tuple[str, str, str, str]]:
        records = result_of(self.store.list_audit(limit=10_000))
        return [(r.action, r.target, r.reseller, r.customer) for r in reversed(records)]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _name(caller: Caller) -> str:
    return caller.name


# -- domains -----------------------------------------------------------------------------------


def test_domain_list_shows_each_role_only_its_own(world: World) -> None:
    seen = {
        c.name: [v.domain.name for v in run(domains.list_domains(world.ctx, c))]
        for c in (OP, R1, C1, R2)
    }
    assert seen == {
        "op": ["c1.test", "c2.test", "op.test"],
        "r1-admin": ["c1.test"],
        "c1-admin": ["c1.test"],
        "r2-admin": ["c2.test"],
    }
    world.queue("a@c1.test", "b@c1.test")
    [view] = run(domains.list_domains(world.ctx, C1))
    assert (view.queued, view.held, view.health, view.portal.open) == (2, 0, "unknown", False)
    assert view.oldest_received_at == world.clock.seconds()
    assert view.as_json()["reseller"] == "r1" and view.as_json()["customer"] == "c1"


@pytest.mark.parametrize("caller", SEES_C1, ids=_name)
def test_domain_show_update_and_remove_by_each_role_that_sees_it(
    world: World, caller: Caller
) -> None:
    assert run(domains.show_domain(world.ctx, caller, "C1.Test")).domain.name == "c1.test"
    change = run(domains.update_domain(world.ctx, caller, "c1.test", {"mode": "both"}))
    assert (change.before.mode, change.after.mode) == ("relay", "both")
    removed = run(domains.remove_domain(world.ctx, caller, "c1.test"))
    assert removed.name == "c1.test"
    assert result_of(world.store.get_domain("c1.test")) is None
    # Audited under the domain's tenant, so r1 and c1 read these records.
    assert world.audit() == [
        ("domain.update", "c1.test", "r1", "c1"),
        ("domain.remove", "c1.test", "r1", "c1"),
    ]
    kinds = [e.kind for e in result_of(world.store.list_events())]
    assert kinds == ["domain.updated", "domain.removed"]


@pytest.mark.parametrize(
    ("caller", "customer", "owner"),
    [
        (OP, None, ("", "")),
        (OP, "c1", ("r1", "c1")),
        (R1, "c1", ("r1", "c1")),
        (C1, None, ("r1", "c1")),
    ],
    ids=["operator-own", "operator-for-c1", "reseller", "customer"],
)  # fmt: skip
def test_domain_add_by_each_role_goes_under_the_right_customer(
    world: World, caller: Caller, customer: str | None, owner: tuple[str, str]
) -> None:
    fields = {"relay": "mx.new.test:2525", "portal": "always", "alert_email": "noc@new.test"}
    added = run(domains.add_domain(world.ctx, caller, "New.Test", fields, customer=customer))
    assert (added.name, added.relay.port, added.portal) == ("new.test", 2525, "always")
    assert added.customer == owner[1]
    assert world.audit() == [("domain.add", "new.test", *owner)]
    with pytest.raises(AlreadyExists):
        run(domains.add_domain(world.ctx, caller, "new.test", {"relay": "h"}, customer=customer))


def test_a_reseller_must_put_a_new_domain_under_one_of_its_customers(world: World) -> None:
    with pytest.raises(InvalidInput) as e:
        run(domains.add_domain(world.ctx, R1, "new.test", {"relay": "h"}))
    assert e.value.field == "customer"
    for caller in (R1, C1):
        with pytest.raises(NotFound):
            run(domains.add_domain(world.ctx, caller, "new.test", {"relay": "h"}, customer="c2"))
    assert result_of(world.store.get_domain("new.test")) is None and world.audit() == []


@pytest.mark.parametrize("caller", OTHERS_OF_C1, ids=_name)
def test_another_tenants_domain_is_not_found_and_nothing_changes(
    world: World, caller: Caller
) -> None:
    entry = world.queue("a@c1.test")
    before = result_of(world.store.get_domain("c1.test"))
    for operation in (
        domains.show_domain(world.ctx, caller, "c1.test"),
        domains.update_domain(world.ctx, caller, "c1.test", {"mode": "both"}),
        domains.remove_domain(world.ctx, caller, "c1.test"),
        users.list_users(world.ctx, caller, "c1.test"),
        users.import_users(world.ctx, caller, "c1.test", b"a@c1.test:{PLAIN}x\n"),
        dkim.show_dkim(world.ctx, caller, "c1.test"),
        dkim.generate_dkim(world.ctx, caller, "c1.test", "s1", "ed25519"),
        queue.show_queue(world.ctx, caller, entry),
        queue.show_queue(world.ctx, caller, entry + ".1"),
        queue.queue_action(world.ctx, caller, "hold", ids=[entry + ".1"]),
        queue.queue_action(world.ctx, caller, "delete", ids=[entry]),
        queue.flush_queue(world.ctx, caller, "c1.test"),
        events.list_outages(world.ctx, caller, "c1.test"),
        tenants.show_customer(world.ctx, caller, "c1"),
        tenants.remove_customer(world.ctx, caller, "c1"),
        tenants.add_customer(world.ctx, caller, "c9", "r1"),
        alerts.test_alert(world.ctx, caller, "c1.test", lambda d, o, q: succeed(None)),
    ):
        with pytest.raises(NotFound):
            run(operation)
    # A filter naming the domain is not found either (an empty page would tell it exists).
    only_c1 = QueueFilter(domains=("c1.test",))
    listings: tuple[Coroutine[Any, Any, object], ...] = (
        queue.queue_action(world.ctx, caller, "hold", query=only_c1),
        queue.list_queue(world.ctx, caller, only_c1),
        queue.count_queue(world.ctx, caller, only_c1),
        events.list_events(world.ctx, caller, EventFilter(domains=("c1.test",))),
    )
    for listing in listings:
        with pytest.raises(NotFound):
            run(listing)
    assert result_of(world.store.get_domain("c1.test")) == before
    assert world.states() == {f"{entry}.1": QUEUED}
    assert result_of(world.store.get_customer("c1")) is not None
    assert result_of(world.store.requests_after(0)) == []
    assert world.audit() == []
    assert not (world.ctx.settings.data_dir / "dkim").exists()


# -- scopes ------------------------------------------------------------------------------------


def test_a_read_scope_caller_reads_but_cannot_hold(world: World) -> None:
    entry = world.queue("a@c1.test")
    for caller in (OP, R1, C1):
        reader = replace(caller, scope="read")
        assert run(queue.list_queue(world.ctx, reader)).entries[0].id == f"{entry}.1"
        with pytest.raises(InsufficientScope):
            run(queue.queue_action(world.ctx, reader, "hold", ids=[entry]))
        with pytest.raises(InsufficientScope):
            run(queue.queue_action(world.ctx, reader, "hold", query=QueueFilter()))
        with pytest.raises(InsufficientScope):
            run(queue.flush_queue(world.ctx, reader))
    assert world.states() == {f"{entry}.1": QUEUED} and world.audit() == []


def test_an_operate_scope_caller_acts_on_the_queue_and_drills_but_cannot_add_a_domain(
    world: World,
) -> None:
    entry = world.queue("a@c1.test")
    for caller in (OP, R1, C1):
        operator = replace(caller, scope="operate")
        with pytest.raises(InsufficientScope):
            run(domains.add_domain(world.ctx, operator, "new.test", {"relay": "h"}, "c1"))
        with pytest.raises(InsufficientScope):
            run(domains.update_domain(world.ctx, operator, "c1.test", {"relay": "other"}))
        with pytest.raises(InsufficientScope):
            run(domains.remove_domain(world.ctx, operator, "c1.test"))
        with pytest.raises(InsufficientScope):
            run(users.add_user(world.ctx, operator, "u@c1.test", "pw"))
    drill = replace(C1, scope="operate")
    assert (
        run(domains.update_domain(world.ctx, drill, "c1.test", {"portal": "open"})).after.portal
        == "open"
    )
    assert (
        run(domains.update_domain(world.ctx, drill, "c1.test", {"portal": "outage"})).after.portal
        == "outage"
    )
    report = run(queue.queue_action(world.ctx, drill, "hold", ids=[entry]))
    assert [c.after.state for c in report.changed] == [HELD]
    assert result_of(world.store.get_domain("new.test")) is None


# -- the queue ---------------------------------------------------------------------------------


def test_a_bulk_hold_over_a_filter_of_2500_entries_changes_every_one(world: World) -> None:
    for _ in range(1250):
        world.queue("a@c1.test", "b@c1.test")
    other = world.queue("x@c2.test")
    report = run(queue.queue_action(world.ctx, R1, "hold", query=QueueFilter(domains=("c1.test",))))
    assert len(report.changed) == 2500 and report.skipped == []
    states = world.states()
    assert sum(1 for s in states.values() if s == HELD) == 2500
    assert states[f"{other}.1"] == QUEUED
    assert run(queue.count_queue(world.ctx, C1, QueueFilter(states=(HELD,)))) == 2500
    # One audit record for the domain, under its owner; one event per entry, as before.
    assert world.audit() == [("queue.hold", "c1.test", "r1", "c1")]
    held = result_of(world.store.query_events(EventFilter(kinds=("queue.held",)), None, 5000))
    assert len(held) == 2500
    # And back: a release over the same filter, with a flush request for the running server.
    released = run(queue.queue_action(world.ctx, C1, "release", query=QueueFilter()))
    assert len(released.changed) == 2500
    assert [r.domain for r in result_of(world.store.requests_after(0))] == ["c1.test"]


def test_queue_pages_return_every_entry_exactly_once(world: World) -> None:
    for n in range(23):
        world.queue(f"u{n}@c1.test", f"v{n}@c2.test", f"w{n}@op.test")
    for caller, expected in ((OP, 69), (R1, 23), (C2, 23)):
        seen: list[str] = []
        cursor = None
        while True:
            page = run(queue.list_queue(world.ctx, caller, QueueFilter(), cursor, limit=7))
            assert len(page.entries) <= 7
            seen.extend(e.id for e in page.entries)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == expected
    c1_only = run(queue.list_queue(world.ctx, OP, QueueFilter(domains=("C1.TEST",)), limit=100))
    assert {e.domain for e in c1_only.entries} == {"c1.test"} and c1_only.next_cursor is None
    with pytest.raises(InvalidInput) as e:
        run(queue.list_queue(world.ctx, OP, cursor="nope"))
    assert e.value.field == "cursor"


@pytest.mark.parametrize("caller", SEES_C1, ids=_name)
def test_queue_show_and_moves_by_id_for_each_role(world: World, caller: Caller) -> None:
    mixed = world.queue("a@c1.test", "b@c2.test")
    shown = run(queue.show_queue(world.ctx, caller, mixed))
    visible = ["a@c1.test"] if caller is not OP else ["a@c1.test", "b@c2.test"]
    assert [e.recipient for e in shown.entries] == visible
    assert list(shown.recipients) == visible  # another tenant's recipients stay hidden
    assert b"Subject: hi" in shown.headers
    # A queue id means the entries of it the caller sees.
    held = run(queue.queue_action(world.ctx, caller, "hold", ids=[mixed]))
    assert [c.after.id for c in held.changed] == [f"{mixed}.{n + 1}" for n in range(len(visible))]
    again = run(queue.queue_action(world.ctx, caller, "hold", ids=[f"{mixed}.1"]))
    assert again.changed == [] and [(s.entry.id, s.state) for s in again.skipped] == [
        (f"{mixed}.1", HELD)
    ]
    retried = run(queue.queue_action(world.ctx, caller, "release", ids=[f"{mixed}.1"]))
    assert retried.flush_requests and retried.flush_requests[0][0] == "c1.test"
    world.clock.advance(60)
    retry = run(queue.queue_action(world.ctx, caller, "retry", ids=[f"{mixed}.1"]))
    assert retry.changed[0].after.next_attempt_at == world.clock.seconds()
    bounced = run(queue.queue_action(world.ctx, caller, "bounce", ids=[f"{mixed}.1"]))
    [dsn] = bounced.dsns
    assert dsn.dsn is not None and dsn.sender == "s@sender.test"
    dsn_entries = result_of(world.store.entries_for_message(dsn.dsn))
    assert [(e.recipient, e.state) for e in dsn_entries] == [("s@sender.test", QUEUED)]
    # One audit record per domain a move touched (the operator's hold touched c1 and c2).
    actions = [a for a, _, _, _ in world.audit()]
    holds = ["queue.hold"] * (2 if caller is OP else 1)
    assert actions == [*holds, "queue.release", "queue.retry", "queue.bounce"]
    assert ("queue.bounce", "c1.test", "r1", "c1") in world.audit()


def test_unknown_ids_change_nothing_and_a_server_is_needed_to_flush(world: World) -> None:
    entry = world.queue("a@op.test")
    with pytest.raises(NotFound):
        run(queue.queue_action(world.ctx, OP, "hold", ids=[entry, "NOPE"]))
    assert world.states() == {f"{entry}.1": QUEUED}
    world.running = False
    with pytest.raises(Conflict):
        run(queue.flush_queue(world.ctx, OP))
    released = run(queue.queue_action(world.ctx, OP, "hold", ids=[entry]))
    assert released.server_running is False
    assert result_of(world.store.requests_after(0)) == []
    world.running = True
    result = run(queue.flush_queue(world.ctx, C1))
    assert [r.domain for r in result_of(world.store.requests_after(0))] == ["c1.test"]
    assert result.domain is None


# -- events, status ----------------------------------------------------------------------------


def test_events_are_paged_and_scoped(world: World) -> None:
    for n in range(5):
        result_of(world.store.record_event("relay.bounced", f"c1 {n}", "c1.test"))
        result_of(world.store.record_event("relay.bounced", f"c2 {n}", "c2.test"))
    result_of(world.store.record_event("server.started", "up", None))
    first = run(events.list_events(world.ctx, C1, limit=3))
    second = run(events.list_events(world.ctx, C1, cursor=first.next_cursor, limit=3))
    messages = [e.message for e in first.events + second.events]
    assert messages == [f"c1 {n}" for n in (4, 3, 2, 1, 0)] and second.next_cursor is None
    every = run(events.list_events(world.ctx, OP, limit=100)).events
    assert len(every) == 11
    result_of(world.store.open_outage("c2.test", world.clock.seconds(), "refused"))
    assert run(events.list_outages(world.ctx, R1)) == []
    [outage] = run(events.list_outages(world.ctx, C2))
    assert isinstance(outage, Outage) and outage.domain == "c2.test"


def test_status_counts_only_what_the_caller_sees(world: World) -> None:
    world.queue("a@c1.test", "b@c2.test")
    mine = run(status.status(world.ctx, R1))
    assert [d.name for d in mine.domains] == ["c1.test"]
    assert (mine.queued, mine.messages) == (1, None)
    everything = run(status.status(world.ctx, OP))
    assert (everything.queued, everything.messages, len(everything.domains)) == (2, 1, 3)


# -- users and aliases ------------------------------------------------------------------------


@pytest.mark.parametrize("caller", SEES_C1, ids=_name)
def test_users_and_aliases_for_each_role(world: World, caller: Caller) -> None:
    added = run(users.add_user(world.ctx, caller, "Alice@C1.test", "s3cret", "SSHA512"))
    assert (added.address, added.scheme) == ("alice@c1.test", "SSHA512")
    with pytest.raises(AlreadyExists):
        run(users.add_user(world.ctx, caller, "alice@c1.test", "x"))
    run(users.set_password(world.ctx, caller, "alice@c1.test", "n3w"))
    sha = hash_password("b")
    done = run(users.import_users(world.ctx, caller, "c1.test", f"bob:{sha.text}\n".encode(), True))
    assert (done.change.added, done.change.removed) == (1, 0)
    assert [u.address for u in run(users.list_users(world.ctx, caller, "c1.test"))] == [
        "alice@c1.test",
        "bob@c1.test",
    ]
    change = run(users.add_alias(world.ctx, caller, "sales@c1.test", "alice@c1.test"))
    assert change.changed and change.previous_user is None
    assert run(users.list_aliases(world.ctx, caller)) == [("sales@c1.test", "alice@c1.test")]
    run(users.remove_alias(world.ctx, caller, "sales@c1.test"))
    replaced = run(users.import_users(world.ctx, caller, "c1.test", f"bob:{sha.text}\n".encode()))
    assert replaced.change.removed == 1
    gone = run(users.remove_user(world.ctx, caller, "bob@c1.test"))
    assert gone.users_left is False
    owners = {(r, c) for _, _, r, c in world.audit()}
    assert owners == {("r1", "c1")}
    # No password or hash in the audit log or the events.
    logged = repr(result_of(world.store.list_audit(limit=100)))
    logged += repr(result_of(world.store.list_events()))
    assert "s3cret" not in logged and "n3w" not in logged and sha.value not in logged


def test_another_tenants_users_and_aliases_are_not_found(world: World) -> None:
    run(users.add_user(world.ctx, OP, "alice@c1.test", "pw"))
    run(users.add_alias(world.ctx, OP, "help@any.test", "alice@c1.test"))
    run(users.add_user(world.ctx, OP, "bob@c2.test", "pw"))
    before = world.audit()
    for operation in (
        users.set_password(world.ctx, C2, "alice@c1.test", "x"),
        users.remove_user(world.ctx, C2, "alice@c1.test"),
        users.add_user(world.ctx, R2, "eve@c1.test", "x"),
        users.remove_alias(world.ctx, R2, "help@any.test"),
        users.list_aliases(world.ctx, C2, "alice@c1.test"),
    ):
        with pytest.raises(NotFound):
            run(operation)
    # Taking another tenant's alias is refused, not a silent move.
    with pytest.raises(AlreadyExists):
        run(users.add_alias(world.ctx, C2, "help@any.test", "bob@c2.test"))
    assert run(users.list_aliases(world.ctx, C2)) == []
    assert result_of(world.store.list_aliases()) == [("help@any.test", "alice@c1.test")]
    assert world.audit() == before
    with pytest.raises(InvalidInput) as bad:
        run(users.import_users(world.ctx, C1, "c1.test", b"x@c1.test:{PLAIN}pw\nbad\n"))
    assert bad.value.field == "passwd_file" and len(bad.value.details) == 2


# -- dkim, alert test --------------------------------------------------------------------------


@pytest.mark.parametrize("caller", SEES_C1, ids=_name)
def test_dkim_for_each_role(world: World, caller: Caller) -> None:
    assert run(dkim.show_dkim(world.ctx, caller, "c1.test")).key is None
    made = run(dkim.generate_dkim(world.ctx, caller, "c1.test", "S1", "ed25519"))
    assert made.key is not None and made.key.selector == "s1"
    assert run(dkim.show_dkim(world.ctx, caller, "c1.test")).as_json()["selector"] == "s1"
    with pytest.raises(AlreadyExists):
        run(dkim.generate_dkim(world.ctx, caller, "c1.test", "s1", "ed25519"))
    with pytest.raises(InvalidInput):
        run(dkim.generate_dkim(world.ctx, caller, "c1.test", "../x", "ed25519"))
    assert world.audit() == [("dkim.generate", "c1.test", "r1", "c1")]
    assert "PRIVATE" not in repr(result_of(world.store.list_audit()))


@pytest.mark.parametrize("caller", SEES_C1, ids=_name)
def test_alert_test_for_each_role(world: World, caller: Caller) -> None:
    with pytest.raises(Conflict):
        run(alerts.test_alert(world.ctx, caller, "c1.test", lambda d, o, q: succeed(None)))
    run(
        domains.update_domain(
            world.ctx, OP, "c1.test",
            {"alert_webhook": "https://hook.test/x?key=k3y", "alert_email": "noc@c1.test"},
        )
    )  # fmt: skip
    calls: list[str] = []

    def webhook(domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        calls.append(domain.name)
        return succeed(None)

    result = run(alerts.test_alert(world.ctx, caller, "c1.test", webhook))
    assert calls == ["c1.test"] and result.failures == []
    assert result.webhook == "https://hook.test/x" and result.email_route == "c1.test"
    assert [r.domain for r in result_of(world.store.requests_after(0))] == ["c1.test"]
    assert ("alert.test", "c1.test", "r1", "c1") in world.audit()
    assert "k3y" not in repr(result_of(world.store.list_audit()))


# -- tenants -----------------------------------------------------------------------------------


def test_resellers_are_the_operators(world: World) -> None:
    added = run(tenants.add_reseller(world.ctx, OP, "r3", {"product_name": "Mailsafe"}))
    assert added.branding.product_name == "Mailsafe"
    updated = run(tenants.update_reseller(world.ctx, OP, "r3", {"support_email": "s@r3.test"}))
    assert (updated.branding.product_name, updated.branding.support_email) == (
        "Mailsafe",
        "s@r3.test",
    )
    for caller in (R1, C1):
        with pytest.raises(NotFound):
            run(tenants.add_reseller(world.ctx, caller, "r4"))
        with pytest.raises(NotFound):
            run(tenants.remove_reseller(world.ctx, caller, "r3"))
        with pytest.raises(NotFound):
            run(tenants.update_reseller(world.ctx, caller, "r2", {"product_name": "x"}))
    # A customer admin does not brand its reseller (the reseller admin may: #14).
    with pytest.raises(NotFound):
        run(tenants.update_reseller(world.ctx, C1, "r1", {"product_name": "x"}))
    assert [r.name for r in run(tenants.list_resellers(world.ctx, R1))] == ["r1"]
    assert run(tenants.list_resellers(world.ctx, C1)) == []
    with pytest.raises(Conflict) as held:
        run(tenants.remove_reseller(world.ctx, OP, "r1"))
    assert "1 customer(s) (c1)" in str(held.value)
    run(tenants.remove_reseller(world.ctx, OP, "r3"))
    with pytest.raises(InvalidInput):
        run(tenants.add_reseller(world.ctx, OP, "Bad Name"))
    assert world.audit() == [
        ("reseller.add", "r3", "r3", ""),
        ("reseller.update", "r3", "r3", ""),
        ("reseller.remove", "r3", "r3", ""),
    ]


@pytest.mark.parametrize(
    ("caller", "reseller", "under"),
    [(OP, None, ""), (OP, "r2", "r2"), (R1, None, "r1"), (R1, "r1", "r1")],
    ids=["operator-own", "operator-for-r2", "reseller", "reseller-named"],
)
def test_customers_add_list_and_remove(
    world: World, caller: Caller, reseller: str | None, under: str
) -> None:
    added = run(tenants.add_customer(world.ctx, caller, "c9", reseller))
    assert added.reseller == under
    assert "c9" in [c.name for c in run(tenants.list_customers(world.ctx, caller))]
    with pytest.raises(AlreadyExists):
        run(tenants.add_customer(world.ctx, caller, "c9", reseller))
    run(domains.add_domain(world.ctx, caller, "c9.test", {"relay": "h"}, customer="c9"))
    with pytest.raises(Conflict) as held:
        run(tenants.remove_customer(world.ctx, caller, "c9"))
    assert "1 domain(s) (c9.test)" in str(held.value)
    run(domains.remove_domain(world.ctx, caller, "c9.test"))
    run(tenants.remove_customer(world.ctx, caller, "c9"))
    assert result_of(world.store.get_customer("c9")) is None
    assert ("customer.remove", "c9", under, "c9") in world.audit()


def test_customer_admins_and_other_resellers_cannot_add_customers_elsewhere(world: World) -> None:
    with pytest.raises(NotFound):
        run(tenants.add_customer(world.ctx, C1, "c9"))
    with pytest.raises(NotFound):
        run(tenants.add_customer(world.ctx, R1, "c9", "r2"))
    assert [c.name for c in run(tenants.list_customers(world.ctx, R2))] == ["c2"]
    assert [c.name for c in run(tenants.list_customers(world.ctx, C1))] == ["c1"]
    with pytest.raises(NotFound):
        run(tenants.list_customers(world.ctx, R1, "r2"))
    assert result_of(world.store.get_customer("c9")) is None and world.audit() == []


def test_domain_choices_are_the_names_each_role_sees(world: World) -> None:
    assert run(domains.domain_choices(world.ctx, OP)) == ["c1.test", "c2.test", "op.test"]
    assert run(domains.domain_choices(world.ctx, R1)) == ["c1.test"]
    assert run(domains.domain_choices(world.ctx, C1)) == ["c1.test"]
    assert run(domains.domain_choices(world.ctx, R2)) == ["c2.test"]
