"""
The panel's Queue Manager (#14), in process (L{tests.panel_harness}): Load Queue, filters,
paging, the moves on one message, on a selection and on everything a filter selects, the
message view, tenancy and the CSRF check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from strata_twisted.core.admin import queue
from strata_twisted.core.admin.identity import Caller
from strata_twisted.model import Delivery
from strata_twisted.testing import result_of, store_message
from tests.panel_harness import PanelWorld, Response, run

_ROW_ID = re.compile(r'name="id" value="([^"]+)"')


@pytest.fixture
def world(tmp_path: Path) -> PanelWorld:
    return PanelWorld(tmp_path)


def row_ids(page: Response) -> list[str]:
    """The entry ids of the table's checkboxes (the message view's hidden id is not a row)."""
    return _ROW_ID.findall(page.text.split("<tbody>", 1)[1]) if "<tbody>" in page.text else []


def store(world: PanelWorld, message_id: str, body: bytes, *recipients: str) -> None:
    deliveries = [Delivery(r, r.split("@")[1]) for r in recipients]
    result_of(
        store_message(world.store, message_id, body, deliveries, sender="s@sender.test",
                      received_at=world.clock.seconds())
    )  # fmt: skip


def test_load_queue_lists_a_message_with_its_subject(world: PanelWorld) -> None:
    mine = world.queue("a@c1.test", subject="Quarterly report")
    world.queue("b@c2.test", subject="Not yours")
    browser = world.logged_in("c1-admin")
    form = browser.get("/queue")
    assert form.status == 200 and form.contains('<label for="domain">Domain</label>')
    assert form.contains('<option value="c1.test">') and not form.contains("c2.test")
    assert form.contains("Load Queue") and not form.contains("Quarterly report")
    page = browser.get("/queue?domain=c1.test")
    assert page.status == 200
    assert page.contains("Quarterly report") and page.contains("a@c1.test")
    assert page.contains("s@sender.test") and page.contains('class="state state-queued"')
    assert page.contains(f'href="/queue/{mine}"') and not page.contains("Not yours")
    assert row_ids(page) == [f"{mine}.1"] and page.contains("1 matching entry")
    # Every domain the caller sees, still only its own.
    page = browser.get("/queue?domain=*")
    assert row_ids(page) == [f"{mine}.1"] and not page.contains("b@c2.test")


def test_subjects_are_decoded_and_found_past_a_long_header(world: PanelWorld) -> None:
    store(world, "E1", b"Subject: =?utf-8?q?Caf=C3=A9_<b>?=\r\n\r\nbody\r\n", "a@c1.test")
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"x" * 70) for i in range(200))
    store(world, "E2", padding + b"Subject: deep down\r\n\r\nbody\r\n", "a@c1.test")
    store(world, "E3", b"From: x@y.test\r\n\r\nno subject\r\n", "a@c1.test")
    page = world.logged_in("c1-admin").get("/queue?domain=c1.test")
    assert page.contains("Café <b>") and "<b>" not in page.text  # decoded, and escaped
    assert page.contains("deep down") and page.contains("(no subject)")
    # The core operation shows nothing of another tenant's messages.
    entries = result_of(world.store.list_entries())
    assert run(queue.queue_subjects(world.ctx, Caller("c2-admin", "customer", customer="c2"),
                                    entries)) == {}  # fmt: skip


def test_filters_select_by_state_sender_recipient_and_age(world: PanelWorld) -> None:
    old = world.queue("a@c1.test", sender="alice@far.test", subject="old one")
    world.clock.advance(3600)
    new = world.queue("bob@c1.test", sender="carol@far.test", subject="new one")
    browser = world.logged_in("c1-admin")
    run(queue.queue_action(world.ctx, Caller("op", "operator"), "hold", ids=[new]))
    assert row_ids(browser.get("/queue?domain=c1.test")) == [f"{old}.1", f"{new}.1"]
    assert row_ids(browser.get("/queue?domain=c1.test&state=held")) == [f"{new}.1"]
    assert row_ids(browser.get("/queue?domain=c1.test&state=queued")) == [f"{old}.1"]
    assert row_ids(browser.get("/queue?domain=c1.test&sender=ALICE")) == [f"{old}.1"]
    assert row_ids(browser.get("/queue?domain=c1.test&recipient=bob@")) == [f"{new}.1"]
    assert row_ids(browser.get("/queue?domain=c1.test&older_than=30")) == [f"{old}.1"]
    run(queue.queue_action(world.ctx, Caller("op", "operator"), "delete", ids=[old]))
    assert row_ids(browser.get("/queue?domain=c1.test")) == [f"{new}.1"]  # waiting only
    assert row_ids(browser.get("/queue?domain=c1.test&state=any")) == [f"{old}.1", f"{new}.1"]
    page = browser.get("/queue?domain=c1.test&older_than=soon")
    assert page.status == 400 and page.contains("expected a number of minutes")
    assert 'class="field has-error"' in page.text and not row_ids(page)
    page = browser.get("/queue?domain=c1.test&state=lost")
    assert page.status == 400 and page.contains("expected one of waiting")


def test_the_listing_pages_through_a_long_queue_keeping_the_filter(world: PanelWorld) -> None:
    queued = [world.queue(f"u{i}@c1.test", sender="bulk@far.test") for i in range(120)]
    world.queue("other@c1.test", sender="someone@else.test")
    browser = world.logged_in("op")
    page = browser.get("/queue?domain=c1.test&sender=bulk")
    seen = row_ids(page)
    assert len(seen) == 50 and page.contains("120 matching entries")
    assert not page.contains("First page")
    pages = 1
    while True:
        found = re.search(r'<a href="([^"]+)">Next page</a>', page.text)
        if found is None:
            break
        link = found.group(1).replace("&amp;", "&")
        assert "sender=bulk" in link and "domain=c1.test" in link
        page = browser.get(link)
        assert page.contains("First page")
        seen += row_ids(page)
        pages += 1
    assert pages == 3 and seen == [f"{q}.1" for q in queued]


def test_hold_and_release_one_message(world: PanelWorld) -> None:
    mine = world.queue("a@c1.test", subject="hold me")
    browser = world.logged_in("c1-admin")
    page = browser.get("/queue?domain=c1.test")
    page = browser.submit(page, "/queue/actions", {"scope": "selection", "id": [f"{mine}.1"],
                          "action": "hold", "next": "/queue?domain=c1.test"})  # fmt: skip
    assert page.url.endswith("/queue?domain=c1.test")
    assert page.contains("Held 1 message (0 skipped).")
    assert world.states() == {f"{mine}.1": "held"}
    assert page.contains('class="state state-held"') and page.contains("hold me")
    page = browser.submit(page, "/queue/actions", {"scope": "selection", "id": [f"{mine}.1"],
                          "action": "hold", "next": "/queue?domain=c1.test"})  # fmt: skip
    assert page.contains("Held 0 messages (1 skipped).")
    page = browser.submit(page, "/queue/actions", {"scope": "selection", "id": [f"{mine}.1"],
                          "action": "release", "next": "/queue?domain=c1.test"})  # fmt: skip
    assert page.contains("Released 1 message (0 skipped).")
    assert world.states() == {f"{mine}.1": "queued"}


def test_retry_delete_and_bounce_a_selection(world: PanelWorld) -> None:
    first = world.queue("a@c1.test")
    second = world.queue("b@c1.test", "c@c1.test")
    third = world.queue("d@c1.test")
    browser = world.logged_in("c1-admin")
    page = browser.get("/queue?domain=c1.test")
    here = "/queue?domain=c1.test"
    page = browser.submit(page, "/queue/actions", {"scope": "selection", "action": "retry",
                          "id": [f"{first}.1"], "next": here})  # fmt: skip
    assert page.contains("Retried 1 message (0 skipped).")
    page = browser.submit(page, "/queue/actions", {"scope": "selection", "action": "delete",
                          "id": [f"{second}.1", f"{second}.2"], "next": here})  # fmt: skip
    assert page.contains("Deleted 2 messages (0 skipped).")
    page = browser.submit(page, "/queue/actions", {"scope": "selection", "action": "bounce",
                          "id": [f"{third}.1"], "next": here})  # fmt: skip
    assert page.contains("Bounced 1 message (0 skipped); 1 DSN queued to the sender.")
    states = world.states()
    assert states[f"{first}.1"] == "queued"
    assert states[f"{second}.1"] == states[f"{second}.2"] == "deleted"
    assert states[f"{third}.1"] == "bounced"
    # Only the first is still waiting; the page shows so.
    assert row_ids(page) == [f"{first}.1"]


def test_an_empty_selection_changes_nothing(world: PanelWorld) -> None:
    mine = world.queue("a@c1.test")
    browser = world.logged_in("c1-admin")
    page = browser.get("/queue?domain=c1.test")
    page = browser.submit(page, "/queue/actions", {"scope": "selection", "action": "delete",
                          "next": "/queue?domain=c1.test"})  # fmt: skip
    assert page.status == 200 and page.contains("Tick at least one message first")
    assert world.states() == {f"{mine}.1": "queued"}


def test_an_action_on_everything_matching_the_filter(world: PanelWorld) -> None:
    bulk = [world.queue(f"u{i}@c1.test", sender="bulk@far.test") for i in range(3)]
    other = world.queue("x@c1.test", sender="friend@near.test")
    theirs = world.queue("y@c2.test", sender="bulk@far.test")
    browser = world.logged_in("c1-admin")
    page = browser.get("/queue?domain=c1.test&sender=bulk")
    assert page.contains("All 3 matching (every page)")
    assert page.contains('data-confirm="Delete all 3 matching entries?"')
    fields = {"scope": "matching", "action": "hold", "domain": "c1.test", "state": "waiting",
              "sender": "bulk", "next": "/queue?domain=c1.test&sender=bulk"}  # fmt: skip
    page = browser.submit(page, "/queue/actions", fields)
    assert page.contains("Held 3 messages (0 skipped).")
    states = world.states()
    assert [states[f"{q}.1"] for q in bulk] == ["held"] * 3
    assert states[f"{other}.1"] == "queued" and states[f"{theirs}.1"] == "queued"
    # Every domain the customer sees is still only its own.
    page = browser.submit(page, "/queue/actions", {**fields, "domain": "*", "action": "bounce"})
    assert page.contains("Bounced 3 messages (0 skipped)")
    assert world.states()[f"{theirs}.1"] == "queued"


def test_the_message_view_shows_envelope_headers_and_acts_on_it(world: PanelWorld) -> None:
    mine = world.queue("a@c1.test", "b@c1.test", "z@c2.test", subject="<script>x</script>")
    browser = world.logged_in("c1-admin")
    page = browser.get(f"/queue/{mine}")
    assert page.status == 200 and page.contains(f"Message {mine}")
    assert page.contains("s@sender.test") and page.contains("a@c1.test, b@c1.test")
    assert not page.contains("z@c2.test")  # another tenant's recipient stays hidden
    assert '<pre class="headers">Subject: &lt;script&gt;x&lt;/script&gt;' in page.text
    assert "<script>x" not in page.text
    assert page.contains(f"{mine}.1") and page.contains(f"{mine}.2")
    page = browser.submit(page, "/queue/actions", {"scope": "selection", "action": "hold",
                          "id": mine, "next": f"/queue/{mine}"})  # fmt: skip
    assert page.url.endswith(f"/queue/{mine}") and page.contains("Held 2 messages (0 skipped).")
    assert world.states() == {f"{mine}.1": "held", f"{mine}.2": "held", f"{mine}.3": "queued"}
    one = browser.get(f"/queue/{mine}.1")
    assert one.status == 200 and one.contains(f"{mine}.1") and not one.contains(f"{mine}.2")
    assert browser.get("/queue/NOSUCH").status == 404


def test_another_customer_sees_and_changes_nothing_of_c1s_queue(world: PanelWorld) -> None:
    mine = world.queue("a@c1.test", subject="secret plans")
    browser = world.logged_in("c2-admin")
    assert browser.get(f"/queue/{mine}").status == 404
    assert browser.get(f"/queue/{mine}.1").status == 404
    page = browser.get("/queue?domain=c1.test")
    assert page.status == 404 and not page.contains("secret plans")
    page = browser.get("/queue?domain=*")
    assert page.status == 200 and row_ids(page) == [] and not page.contains("secret plans")
    for action in ("hold", "delete", "bounce"):
        answer = browser.submit(page, "/queue/actions", {"scope": "selection", "action": action,
                                "id": [f"{mine}.1"], "next": "/queue"})  # fmt: skip
        assert answer.status == 404
        answer = browser.submit(page, "/queue/actions", {"scope": "matching", "action": action,
                                "domain": "c1.test", "next": "/queue"})  # fmt: skip
        assert answer.status == 404
    assert world.states() == {f"{mine}.1": "queued"}


def test_a_form_without_its_csrf_token_changes_nothing(world: PanelWorld) -> None:
    mine = world.queue("a@c1.test")
    browser = world.logged_in("c1-admin")
    for fields in (
        {"scope": "selection", "action": "delete", "id": f"{mine}.1"},
        {"scope": "matching", "action": "delete", "domain": "c1.test"},
    ):
        assert browser.post("/queue/actions", fields).status == 403
        forged = browser.post("/queue/actions", {**fields, "csrf": "forged"})
        assert forged.status == 403
    assert world.states() == {f"{mine}.1": "queued"}


def test_an_unknown_action_is_refused(world: PanelWorld) -> None:
    mine = world.queue("a@c1.test")
    browser = world.logged_in("op")
    page = browser.get("/queue?domain=c1.test")
    answer = browser.submit(page, "/queue/actions", {"scope": "selection", "action": "purge",
                            "id": f"{mine}.1"})  # fmt: skip
    assert answer.status == 400 and world.states() == {f"{mine}.1": "queued"}
