"""
The panel's Events page (#14), in process (L{tests.panel_harness}): the event log filtered by
domain and kind group, paged; the outages with their durations; tenancy.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from strata_twisted.testing import result_of
from tests.panel_harness import PanelWorld, Response


@pytest.fixture
def world(tmp_path: Path) -> PanelWorld:
    return PanelWorld(tmp_path)


def record(world: PanelWorld, kind: str, message: str, domain: str | None) -> None:
    result_of(world.store.record_event(kind, message, domain, {}))
    world.clock.advance(1)


def event_log(page: Response) -> str:
    """The event log's table (the outages table comes before it)."""
    return page.text.split('class="table stack events"', 1)[1]


def outage_table(page: Response) -> str:
    return page.text.split('class="table stack outages"', 1)[1].split("</table>", 1)[0]


def test_the_events_page_lists_the_outage_with_its_duration_and_the_drain(
    world: PanelWorld,
) -> None:
    start = world.clock.seconds()
    result_of(world.store.open_outage("c1.test", start, "connection refused"))
    record(world, "outage.started", "c1.test's primary is down", "c1.test")
    world.clock.advance(599)
    result_of(world.store.close_outage("c1.test", world.clock.seconds()))
    record(world, "outage.ended", "c1.test's primary is up again", "c1.test")
    record(world, "relay.drain_started", "draining the queue to mx.c1.test", "c1.test")
    record(world, "relay.drain_finished", "drained 3 messages to mx.c1.test", "c1.test")
    result_of(world.store.open_outage("c1.test", world.clock.seconds(), "timeout"))
    world.clock.advance(2 * 3600 + 5 * 60)
    page = world.logged_in("c1-admin").get("/events")
    assert page.status == 200
    outages = outage_table(page)
    assert "connection refused" in outages and "10 min" in outages
    assert "timeout" in outages and "ongoing" in outages and "2 h 5 min" in outages
    assert outages.index("timeout") < outages.index("connection refused")  # newest first
    log = event_log(page)
    assert "draining the queue to mx.c1.test" in log and "drained 3 messages" in log
    assert log.index("drained 3 messages") < log.index("draining the queue")  # newest first


def test_events_are_filtered_by_domain_and_kind(world: PanelWorld) -> None:
    record(world, "domain.added", "protecting c1.test", "c1.test")
    record(world, "relay.drain_started", "draining c1", "c1.test")
    record(world, "queue.held", "Q1.1 held by the administrator", "c1.test")
    record(world, "alert.email", "outage alert for c1 sent by email", "c1.test")
    record(world, "outage.started", "c2 down", "c2.test")
    record(world, "retention.purged", "purged 9 messages", None)
    browser = world.logged_in("op")
    everything = event_log(browser.get("/events"))
    assert all(t in everything for t in ("protecting c1", "draining c1", "c2 down", "purged 9"))
    only_c1 = event_log(browser.get("/events?domain=c1.test"))
    assert "draining c1" in only_c1 and "c2 down" not in only_c1 and "purged" not in only_c1
    relay = event_log(browser.get("/events?domain=c1.test&kind=relay"))
    assert "draining c1" in relay and "Q1.1 held" in relay
    assert "protecting c1" not in relay and "alert" not in relay
    changes = event_log(browser.get("/events?kind=change"))
    assert "protecting c1" in changes and "draining" not in changes
    alerts = event_log(browser.get("/events?kind=alert"))
    assert "outage alert for c1" in alerts and "draining" not in alerts
    outages = event_log(browser.get("/events?kind=outage"))
    assert "c2 down" in outages and "c1" not in outages
    exact = browser.get("/events?kind=queue.held")  # the API's kind, as a link may name it
    assert "Q1.1 held" in event_log(exact) and "draining" not in event_log(exact)
    assert exact.contains('<option value="queue.held" selected>')


def test_a_customer_sees_only_its_domains_events(world: PanelWorld) -> None:
    record(world, "relay.drain_started", "draining c1", "c1.test")
    record(world, "outage.started", "c2 down", "c2.test")
    record(world, "retention.purged", "purged 9 messages", None)
    # One browser a world: StubTreq keeps one cookie jar for every browser of the world.
    mine = event_log(world.logged_in("c1-admin").get("/events"))
    assert "draining c1" in mine and "c2 down" not in mine and "purged" not in mine


def test_the_event_log_pages_newest_first(world: PanelWorld) -> None:
    for i in range(60):
        record(world, "relay.delayed", f"event number {i:02d}.", "c1.test")
    browser = world.logged_in("c1-admin")
    page = browser.get("/events?domain=c1.test&kind=relay")
    first = re.findall(r"event number (\d\d)\.", event_log(page))
    assert first == [f"{i:02d}" for i in range(59, 9, -1)] and not page.contains("First page")
    found = re.search(r'<a href="([^"]+)">Next page</a>', page.text)
    assert found is not None
    link = found.group(1).replace("&amp;", "&")
    assert "domain=c1.test" in link and "kind=relay" in link
    page = browser.get(link)
    rest = re.findall(r"event number (\d\d)\.", event_log(page))
    assert rest == [f"{i:02d}" for i in range(9, -1, -1)] and page.contains("First page")
    assert not page.contains("Next page")


def test_another_customer_cannot_open_c1s_events(world: PanelWorld) -> None:
    result_of(world.store.open_outage("c1.test", world.clock.seconds(), "secret reason"))
    record(world, "relay.drain_started", "secret drain", "c1.test")
    browser = world.logged_in("c2-admin")
    page = browser.get("/events?domain=c1.test")
    assert page.status == 404 and not page.contains("secret")
    page = browser.get("/events")
    assert page.status == 200 and not page.contains("secret")
    assert not page.contains('<option value="c1.test"')
