"""
The Dashboard page (#14), in process (L{tests.panel_harness}): states, outages with their
durations, the portal, the queue, tenancy, and the two charts drawn from the sampler's series.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from strata_twisted.admin.panel.charts import depth_chart
from strata_twisted.core.admin.dashboard import Series
from strata_twisted.core.series import SeriesSampler
from strata_twisted.testing import result_of
from tests.panel_harness import PanelWorld


@pytest.fixture
def world(tmp_path: Path) -> PanelWorld:
    return PanelWorld(tmp_path)


def sampler(world: PanelWorld) -> SeriesSampler:
    s = world.store
    return SeriesSampler(world.clock, s, s, s, s, s)


def row(page_text: str, domain: str) -> str:
    found = re.search(rf'<tr data-domain="{re.escape(domain)}">(.*?)</tr>', page_text, re.S)
    assert found is not None, f"no row for {domain}"
    return found.group(1)


def test_an_outage_shows_its_state_duration_portal_and_queue(world: PanelWorld) -> None:
    started = world.clock.seconds()
    result_of(world.store.open_outage("c1.test", started, "connection refused"))
    world.queue("a@c1.test", subject="first")
    world.clock.advance(125)
    browser = world.browser()
    browser.login("r1-admin")
    page = browser.get("/")
    assert page.status == 200
    mine = row(page.text, "c1.test")
    assert 'class="state state-outage">outage' in mine and "for 2 min" in mine
    assert ">open<" in mine  # the webmail portal opened with the outage
    assert re.search(r'data-label="Queued" class="num">1<', mine)
    assert re.search(r'data-label="Oldest">2 min<', mine)
    outages = page.text.split('id="outages"')[1].split("</table>")[0]
    assert "c1.test" in outages and "2 min" in outages and "connection refused" in outages
    # During an outage the page refreshes itself, with or without JavaScript.
    assert 'data-refresh="10"' in page.text and 'http-equiv="refresh" content="10"' in page.text
    # r1's admin sees r1's domains only.
    assert "c2.test" not in page.text and "op.test" not in page.text


def test_a_quiet_account_does_not_refresh_fast(world: PanelWorld) -> None:
    browser = world.browser()
    browser.login("c2-admin")
    page = browser.get("/")
    mine = row(page.text, "c2.test")
    assert 'state-normal">normal' in mine and ">closed<" in mine
    assert "http-equiv" not in page.text and 'data-refresh="60"' in page.text
    assert "c1.test" not in page.text


def test_the_charts_draw_the_sampled_series(world: PanelWorld) -> None:
    result_of(world.store.open_outage("c1.test", world.clock.seconds(), "down"))
    for _ in range(3):
        world.queue("a@c1.test")
        result_of(sampler(world).sample())
        world.clock.advance(60)
    browser = world.browser()
    browser.login("op")
    page = browser.get("/")
    assert '<polyline class="line" points="' in page.text
    assert 'aria-label="Queued messages over the last 24 hours; peak 3"' in page.text
    timeline = page.text.split("Outage timeline")[1]
    assert '<rect class="seg-outage"' in timeline and "c1.test" in timeline
    week = browser.get("/?hours=168")
    assert 'aria-label="Queued messages over the last 7 days; peak 3"' in week.text
    assert browser.get("/?hours=9999").status == 200  # an odd period falls back to a day
    # c1.test's reseller and customer see its depth (their scopes' totals) and its timeline.
    for name in ("r1-admin", "c1-admin"):
        mine = world.browser()
        mine.login(name)
        page = mine.get("/")
        assert "peak 3" in page.text, name
        assert '<rect class="seg-outage"' in page.text.split("Outage timeline")[1], name
    # Another reseller's admin sees neither the depth nor the timeline of c1.test.
    other = world.browser()
    other.login("r2-admin")
    page = other.get("/")
    assert "peak 0" in page.text and "No outage, drain or held mail" in page.text


def test_depth_chart_scales_to_a_round_peak() -> None:
    series = Series(0, 600, 60, None, [(at, at // 60, 0) for at in range(0, 600, 60)], {})
    chart = depth_chart(series)
    assert chart.peak == 9 and [t.label for t in chart.y_ticks] == ["0", "5", "10"]
    points = [tuple(map(float, p.split(","))) for p in chart.line.split()]
    assert len(points) == 10 and points[0][1] > points[-1][1]  # rising: y shrinks upwards
    empty = depth_chart(Series(0, 600, 60, None, [(at, 0, 0) for at in range(0, 600, 60)], {}))
    assert empty.empty and empty.peak == 0
