"""
The failover test checklist (core/admin/checklist.py) with plain calls: a domain walked through
README's "Testing a failover without an outage", each step's state read after each move; the
intake endpoint the A/B/C instructions name; and L{domains.field_problems}.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from strata_twisted.config import ListenAddress, Settings
from strata_twisted.core.admin import alerts, domains, users
from strata_twisted.core.admin.checklist import failover_checklist, intake_endpoint
from strata_twisted.core.admin.identity import Caller
from strata_twisted.core.alerts import format_time
from strata_twisted.errors import NotFound
from strata_twisted.model import Domain, DomainStatus, Outage
from strata_twisted.testing import result_of
from tests.panel_harness import PanelWorld, run

C1 = Caller("c1-admin", "customer", reseller="r1", customer="c1")
C2 = Caller("c2-admin", "customer", reseller="r2", customer="c2")


@pytest.fixture
def world(tmp_path: Path) -> PanelWorld:
    return PanelWorld(tmp_path)


def _states(world: PanelWorld) -> dict[str, str]:
    found = run(failover_checklist(world.ctx, C1, "c1.test"))
    return {s.key: s.state for s in found.steps}


def _step(world: PanelWorld, key: str) -> tuple[str, str, str]:
    step = run(failover_checklist(world.ctx, C1, "c1.test")).step(key)
    return step.state, step.figure, step.next


def test_a_failover_test_walks_the_checklist_step_by_step(world: PanelWorld) -> None:
    assert _states(world) == {
        "protected": "done", "routing": "todo", "users": "skip", "alert_contacts": "todo",
        "alert_test": "todo", "monitor": "todo", "outage": "todo", "queued": "todo",
        "drained": "todo",
    }  # fmt: skip
    state, figure, next_step = _step(world, "routing")
    assert figure == "no mail for this domain has reached Strata yet"
    assert "strata.test:2525" in next_step

    run(domains.update_domain(world.ctx, C1, "c1.test", {"mode": "both"}))
    assert _step(world, "users") == (
        "todo",
        "0 user(s)",
        "Upload the Dovecot passwd-file, or add the users one by one.",
    )
    run(users.add_user(world.ctx, C1, "ann@c1.test", "pw"))
    assert _step(world, "users") == ("done", "1 user(s)", "")

    run(domains.update_domain(world.ctx, C1, "c1.test", {"alert_email": "ops@alerts.test"}))
    assert _step(world, "alert_contacts")[:2] == ("done", "email to ops@alerts.test")
    run(alerts.test_alert(world.ctx, C1, "c1.test", _no_webhook))
    assert _step(world, "alert_test")[0] == "done"

    now = world.clock.seconds()
    result_of(world.store.save_status(DomainStatus("c1.test", "up", since=now - 60)))
    assert _step(world, "monitor")[:2] == ("done", f"primary up since {format_time(now - 60)}")

    # The outage: the monitor opens it, mail arrives at intake and waits.
    result_of(world.store.open_outage("c1.test", now, "connection refused"))
    world.clock.advance(30)
    message = world.queue("ann@c1.test")
    states = _states(world)
    assert states["outage"] == states["queued"] == states["routing"] == "done"
    assert _step(world, "queued")[1] == "1 queued now; 1 received since the last outage began"
    assert _step(world, "drained")[:2] == ("todo", "outage still open; 1 queued")
    assert "portal open (outage)" in _step(world, "outage")[1]

    # The primary is back: the outage closes, the drain delivers, the queue is empty.
    world.clock.advance(90)
    result_of(world.store.close_outage("c1.test", world.clock.seconds()))
    assert _step(world, "drained")[0] == "todo"  # still queued, no drain yet
    (entry,) = result_of(world.store.entries_for_message(message))
    world.store._set_entry_state(entry.id, "delivered")
    result_of(
        world.store.record_event(
            "relay.drain_finished", "drained 1 message (1 delivered)", "c1.test", {}
        )
    )
    state, figure, next_step = _step(world, "drained")
    assert state == "done" and next_step == ""
    assert figure == "outage closed after 2m 0s; 0 queued; drained 1 message (1 delivered)"
    assert run(failover_checklist(world.ctx, C1, "c1.test")).done


def test_a_drill_counts_as_the_simulated_outage(world: PanelWorld) -> None:
    run(domains.update_domain(world.ctx, C1, "c1.test", {"portal": "open"}))
    state, figure, _ = _step(world, "outage")
    assert state == "done" and figure == "portal open for a drill; portal open (drill)"
    assert _step(world, "drained")[1] == "no outage to end yet"


def test_another_tenants_domain_has_no_checklist(world: PanelWorld) -> None:
    with pytest.raises(NotFound):
        run(failover_checklist(world.ctx, C2, "c1.test"))


def test_monitoring_off_says_so(world: PanelWorld) -> None:
    run(domains.update_domain(world.ctx, C1, "c1.test", {"monitored": False}))
    state, figure, next_step = _step(world, "monitor")
    assert state == "todo" and "monitoring is off" in figure
    assert next_step == "Turn monitoring on in the settings."


@pytest.mark.parametrize(
    ("listen", "port"),
    [
        ((ListenAddress("127.0.0.1", 2525), ListenAddress("0.0.0.0", 25)), 25),  # noqa: S104
        ((ListenAddress("::1", 2526), ListenAddress("203.0.113.5", 2500)), 2500),
        ((ListenAddress("127.0.0.1", 2525),), 2525),
        ((), 25),
    ],
)
def test_the_intake_endpoint_is_the_first_public_listener(
    tmp_path: Path, listen: tuple[ListenAddress, ...], port: int
) -> None:
    settings = Settings(data_dir=tmp_path, hostname="strata.example.net")
    settings = replace(settings, intake=replace(settings.intake, listen=listen))
    endpoint = intake_endpoint(settings)
    assert (endpoint.host, endpoint.port) == ("strata.example.net", port)
    assert endpoint.mx_record("example.com") == (
        "example.com.  3600  IN  MX  20 strata.example.net."
    )


def test_field_problems_names_every_bad_field() -> None:
    assert domains.field_problems({"relay": "mx.test", "mode": "both"}) == {}
    problems = domains.field_problems(
        {"relay": "mx.test:0", "mode": "local", "alert_email": "x", "up_after": 0}
    )
    assert set(problems) == {"relay", "mode", "alert_email", "up_after"}
    assert "expected one of relay, both" in problems["mode"]


async def _no_webhook(domain: Domain, outage: Outage, queued: int) -> None:
    raise AssertionError("the domain has no webhook")
