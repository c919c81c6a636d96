"""
The panel's domain pages (#14), in process (L{tests.panel_harness}): the list, Continuity → Add
Domain (labels, errors beside their fields with nothing saved, the A/B/C routing it shows after),
a domain's settings, and the domain page's forms (portal drill, users, DKIM, test alert, remove),
each read back through core or the store; another customer's admin gets 404 everywhere and
changes nothing; a form without its CSRF token changes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from strata_twisted.core.admin import domains
from strata_twisted.core.admin.identity import Caller
from strata_twisted.core.credentials import hash_password
from strata_twisted.model import Domain, Outage, RelayTarget
from strata_twisted.testing import result_of
from tests.panel_harness import PanelBrowser, PanelWorld, Response, run

OP = Caller("op", "operator")
NEW = {
    "name": "example.test",
    "customer": "c1",
    "mode": "both",
    "relay": "127.0.0.1:9",
    "monitored": "on",
    "alert_email": "ops@alerts.test, boss@alerts.test",
}


@pytest.fixture
def world(tmp_path: Path) -> PanelWorld:
    return PanelWorld(tmp_path)


def _upload(browser: PanelBrowser, path: str, fields: dict[str, str], content: bytes) -> Response:
    """Post a passwd-file in the form's ``file`` field, as a browser does."""
    return browser.post(path, fields, files={"file": ("users.passwd", "text/plain", content)})


def _domain(world: PanelWorld, name: str) -> Domain | None:
    found: Domain | None = result_of(world.store.get_domain(name))
    return found


def _names(world: PanelWorld) -> set[str]:
    return {d.name for d in result_of(world.store.list_domains())}


def _error_beside(page: Response, field: str) -> str | None:
    """The error text shown in the field's own error element, if any."""
    found = re.search(
        rf'<span class="field-error" id="{re.escape(field)}-error">([^<]*)<', page.text
    )
    return found.group(1) if found else None


def _users(world: PanelWorld, domain: str) -> dict[str, str]:
    return {u.address: u.password_hash for u in result_of(world.store.list_users(domain))}


# -- the list and Add Domain ---------------------------------------------------------------------


def test_the_list_shows_only_the_callers_domains_with_their_state(world: PanelWorld) -> None:
    world.queue("a@c1.test", "b@c1.test")
    page = world.logged_in("c1-admin").get("/domains")
    assert page.status == 200
    assert '<a href="/domains/c1.test">c1.test</a>' in page.text
    assert "c2.test" not in page.text and "op.test" not in page.text
    row = page.text.split('href="/domains/c1.test"')[1].split("</tr>")[0]
    assert 'data-label="Queued" class="num">2' in row and "Relay only" in row
    assert "unknown" in row and "closed" in row
    every = world.logged_in("op").get("/domains")
    assert all(f'href="/domains/{d}"' in every.text for d in ("c1.test", "c2.test", "op.test"))


def test_the_add_form_has_the_product_descriptions_labels_and_options(world: PanelWorld) -> None:
    page = world.logged_in("r1-admin").get("/domains/add")
    assert page.status == 200
    for field, label in (
        ("name", "Domain name"),
        ("mode", "Delivery mode"),
        ("relay", "Relay host"),
        ("monitored", "Monitoring"),
        ("alert_email", "Alert email addresses"),
        ("customer", "Customer"),
    ):
        assert f'<label for="{field}">{label}</label>' in page.text, label
        assert f'id="{field}"' in page.text
    assert '<option value="relay" selected>Relay only</option>' in page.text
    assert '<option value="both">Both (local + relay)</option>' in page.text
    assert re.search(r'<select id="mode" name="mode"', page.text)
    assert re.search(r'<input type="checkbox" id="monitored" name="monitored" checked', page.text)
    assert '<button type="submit" class="primary">Add Domain</button>' in page.text
    # The advanced settings are folded away, and the reseller picks among its own customers.
    assert '<details class="advanced">' in page.text and 'id="tls_policy"' in page.text
    assert '<option value="c1">c1</option>' in page.text and 'value="c2"' not in page.text
    # A customer admin's own customer is implied: no choice.
    assert 'id="customer"' not in world.logged_in("c1-admin").get("/domains/add").text


def test_a_reseller_admin_adds_a_domain_and_sees_how_to_route_its_mail(world: PanelWorld) -> None:
    browser = world.logged_in("r1-admin")
    page = browser.submit(browser.get("/domains/add"), "/domains/add", NEW)
    assert page.status == 200 and page.url.endswith("/domains/example.test?added=1")
    assert page.contains("example.test is protected now.")
    added = _domain(world, "example.test")
    assert added is not None
    assert added.customer == "c1" and added.mode == "both" and added.monitored
    assert added.relay == RelayTarget("127.0.0.1", 9)
    assert added.alert_emails == ("ops@alerts.test", "boss@alerts.test")
    # A, B and C: the intake's host and port, and the backup MX record.
    assert page.contains(
        "Add <code>strata.test:2525</code> as the filter's second (failover) destination"
    )
    assert page.contains("(smart host) at <code>strata.test</code>, port <code>2525</code>")
    assert page.contains("<pre>example.test.  3600  IN  MX  20 strata.test.</pre>")
    # The new domain is the customer's: its admin sees it; the other reseller's does not.
    assert world.logged_in("c1-admin").get("/domains/example.test").status == 200
    assert world.logged_in("r2-admin").get("/domains/example.test").status == 404


def test_monitoring_unticked_and_advanced_settings_are_stored(world: PanelWorld) -> None:
    browser = world.logged_in("op")
    fields = {k: v for k, v in NEW.items() if k != "monitored"}
    fields.update(
        customer="", tls_policy="verify", portal="always", retention_days="7",
        queue_lifetime="2", probe_interval="30", down_after="4", up_after="3",
        hold_rejected="on", alert_webhook="https://sms.test/hook", alert_webhook_auth="Bearer x",
    )  # fmt: skip
    page = browser.submit(browser.get("/domains/add"), "/domains/add", fields)
    assert page.status == 200
    added = _domain(world, "example.test")
    assert added is not None and added.customer == "" and not added.monitored
    assert (added.tls_policy, added.portal, added.retention_days) == ("verify", "always", 7)
    assert (added.queue_lifetime, added.probe_interval) == (2 * 86400.0, 30.0)
    assert (added.down_after, added.up_after, added.hold_rejected) == (4, 3, True)
    assert added.alert_webhook == "https://sms.test/hook"
    assert added.alert_webhook_auth == "Bearer x"
    assert "Bearer x" not in page.text


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("relay", "mx.c1.test:99999", "port"),
        ("relay", "", "enter the primary mail server"),
        ("name", "not a domain!", ""),
        ("name", "", "enter the domain name"),
        ("alert_email", "ops@alerts.test, nobody", ""),
        ("queue_lifetime", "-1", "days"),
        ("down_after", "three", "whole number"),
    ],
)
def test_a_bad_field_is_shown_beside_it_with_the_values_kept_and_nothing_saved(
    world: PanelWorld, field: str, value: str, expected: str
) -> None:
    browser = world.logged_in("r1-admin")
    before = _names(world)
    page = browser.submit(browser.get("/domains/add"), "/domains/add", {**NEW, field: value})
    assert page.status == 400 and page.contains("Nothing was saved")
    error = _error_beside(page, field)
    assert error is not None and expected in error
    assert _names(world) == before
    kept = {k: v for k, v in NEW.items() if k not in (field, "monitored", "customer")}
    for name, text in kept.items():
        assert (
            f'name="{name}" value="{text}"' in page.text or f'value="{text}" selected' in page.text
        )
    assert '<option value="c1" selected>c1</option>' in page.text
    assert '<option value="both" selected>Both (local + relay)</option>' in page.text


def test_every_bad_field_is_shown_at_once(world: PanelWorld) -> None:
    browser = world.logged_in("r1-admin")
    bad = {**NEW, "name": "-bad-", "relay": "mx.test:0", "alert_email": "x", "up_after": "0"}
    page = browser.submit(browser.get("/domains/add"), "/domains/add", bad)
    assert page.status == 400
    for field in ("name", "relay", "alert_email", "up_after"):
        assert _error_beside(page, field), field
    assert '<details class="advanced" open>' in page.text  # up_after is folded away
    assert "example.test" not in _names(world)


def test_a_reseller_must_choose_one_of_its_own_customers(world: PanelWorld) -> None:
    browser = world.logged_in("r1-admin")
    page = browser.submit(browser.get("/domains/add"), "/domains/add", {**NEW, "customer": ""})
    assert page.status == 400 and "customer" in (_error_beside(page, "customer") or "")
    page = browser.submit(browser.get("/domains/add"), "/domains/add", {**NEW, "customer": "c2"})
    assert page.status == 400 and _error_beside(page, "customer")
    assert "example.test" not in _names(world)


def test_a_domain_protected_already_is_an_error_beside_its_name(world: PanelWorld) -> None:
    browser = world.logged_in("r1-admin")
    page = browser.submit(browser.get("/domains/add"), "/domains/add", {**NEW, "name": "C2.test"})
    assert page.status == 400 and "exists already" in (_error_beside(page, "name") or "")
    found = _domain(world, "c2.test")
    assert found is not None and found.customer == "c2"


# -- settings --------------------------------------------------------------------------------


def test_settings_show_the_domain_and_save_a_change(world: PanelWorld) -> None:
    browser = world.logged_in("c1-admin")
    form = browser.get("/domains/c1.test/settings")
    assert form.status == 200 and 'name="relay" value="mx.c1.test:25"' in form.text
    assert '<label for="relay">Relay host</label>' in form.text
    page = browser.submit(
        form, "/domains/c1.test/settings",
        {"relay": "mx2.c1.test:2525", "mode": "both", "alert_email": "a@alerts.test",
         "tls_policy": "required", "portal": "outage", "monitored": "on"},
    )  # fmt: skip
    assert page.status == 200 and page.contains("Saved the settings of c1.test.")
    saved = _domain(world, "c1.test")
    assert saved is not None and saved.relay == RelayTarget("mx2.c1.test", 2525)
    assert (saved.mode, saved.tls_policy, saved.alert_email) == (
        "both",
        "required",
        "a@alerts.test",
    )
    page = browser.submit(form, "/domains/c1.test/settings", {"relay": "bad host", "mode": "x"})
    assert page.status == 400 and _error_beside(page, "relay") and _error_beside(page, "mode")
    assert _domain(world, "c1.test") == saved


# -- the domain page -------------------------------------------------------------------------


def test_the_domain_page_shows_health_portal_users_dkim_and_the_checklist(
    world: PanelWorld,
) -> None:
    result_of(world.store.open_outage("c1.test", world.clock.seconds() - 120, "refused"))
    world.queue("a@c1.test")
    page = world.logged_in("c1-admin").get("/domains/c1.test")
    assert page.status == 200
    assert page.contains("Relay host <code>mx.c1.test:25</code>")
    assert re.search(r'Portal <span class="state state-up">open</span>', page.text)
    assert page.contains("(an outage is open)")
    assert page.contains("No users yet") and page.contains("No key yet")
    assert page.contains("Open the portal for a drill") and page.contains("Send a test alert")
    steps = dict(re.findall(r'data-step="(\w+)">.*?state state-(\w+)', page.text, re.S))
    assert steps["protected"] == "done" and steps["routing"] == "done"
    assert steps["outage"] == "done" and steps["queued"] == "done"
    assert steps["alert_contacts"] == "pending" and steps["drained"] == "pending"
    assert page.contains("1 queued now")


def test_the_drill_switch_opens_and_closes_the_portal(world: PanelWorld) -> None:
    browser = world.logged_in("c1-admin")
    page = browser.get("/domains/c1.test")
    page = browser.submit(page, "/domains/c1.test/portal", {"drill": "open"})
    assert page.status == 200 and page.contains("is open for a drill")
    view = run(domains.show_domain(world.ctx, OP, "c1.test"))
    assert view.portal.open and view.portal.reason == "drill"
    assert page.contains("End the drill") and page.contains("(open for a drill)")
    page = browser.submit(page, "/domains/c1.test/portal", {"drill": "close"})
    view = run(domains.show_domain(world.ctx, OP, "c1.test"))
    assert not view.portal.open and view.domain.portal == "outage"
    assert page.contains("Open the portal for a drill")


def test_users_are_added_reset_removed_and_uploaded(world: PanelWorld) -> None:
    browser = world.logged_in("c1-admin")
    page = browser.get("/domains/c1.test")
    page = browser.submit(
        page, "/domains/c1.test/users/add", {"address": "ann", "password": "first secret"}
    )
    assert page.status == 200 and page.contains("Added the user ann@c1.test.")
    first = _users(world, "c1.test")["ann@c1.test"]
    assert first.startswith("{SHA512-CRYPT}") and "first secret" not in page.text
    assert page.contains("ann@c1.test")
    # Twice: an error beside the address, nothing changed.
    again = browser.submit(page, "/domains/c1.test/users/add", {"address": "ann", "password": "x"})
    assert again.status == 400 and "exists already" in (
        _error_beside(again, "add_user-address") or ""
    )
    assert _users(world, "c1.test")["ann@c1.test"] == first
    # Another domain's address is not added through this page.
    other = browser.submit(
        page, "/domains/c1.test/users/add", {"address": "x@c2.test", "password": "x"}
    )
    assert other.status == 400 and _error_beside(other, "add_user-address")
    assert _users(world, "c2.test") == {}
    page = browser.submit(
        page, "/domains/c1.test/users/password", {"address": "ann@c1.test", "password": "pw2"}
    )
    assert page.contains("Changed the password of ann@c1.test.")
    assert _users(world, "c1.test")["ann@c1.test"] != first
    page = browser.submit(page, "/domains/c1.test/users/remove", {"address": "ann@c1.test"})
    assert page.contains("Removed the user ann@c1.test.") and _users(world, "c1.test") == {}

    hashed = hash_password("secret").text
    good = f"bob@c1.test:{hashed}\ncat@c1.test:{hashed}\n".encode()
    page = _upload(
        browser, "/domains/c1.test/users/import", {"csrf": page.csrf(), "mode": "replace"}, good
    )
    assert page.status == 200 and page.contains("Imported 2 user(s)")
    assert page.contains("2 added, 0 updated, 0 removed")
    assert set(_users(world, "c1.test")) == {"bob@c1.test", "cat@c1.test"}
    bad = f"dan@c1.test:{hashed}\nbroken line\n".encode()
    page = _upload(
        browser, "/domains/c1.test/users/import", {"csrf": page.csrf(), "mode": "merge"}, bad
    )
    assert page.status == 400
    error = _error_beside(page, "import-file") or ""
    assert "1 bad line(s); nothing imported" in error and "line 2" in error
    assert hashed not in page.text
    assert set(_users(world, "c1.test")) == {"bob@c1.test", "cat@c1.test"}


def test_dkim_generate_shows_the_txt_record(world: PanelWorld) -> None:
    browser = world.logged_in("c1-admin")
    page = browser.get("/domains/c1.test")
    page = browser.submit(
        page, "/domains/c1.test/dkim", {"selector": "panel1", "algorithm": "ed25519"}
    )
    assert page.status == 200 and page.contains("Generated the DKIM key panel1")
    assert page.contains("<code>panel1._domainkey.c1.test.</code>")
    assert re.search(r"<pre>v=DKIM1; k=ed25519; p=[A-Za-z0-9+/=]+</pre>", page.text)
    # The same selector again, without "replace": an error beside the selector.
    again = browser.submit(page, "/domains/c1.test/dkim", {"selector": "panel1"})
    assert again.status == 400 and "exists already" in (_error_beside(again, "dkim-selector") or "")


def test_a_test_alert_goes_to_the_webhook_and_the_checklist_sees_it(world: PanelWorld) -> None:
    browser = world.logged_in("c1-admin")
    page = browser.submit(browser.get("/domains/c1.test"), "/domains/c1.test/alert-test", {})
    assert page.contains("has no alert webhook and no alert email: nothing to test")
    run(domains.update_domain(world.ctx, OP, "c1.test", {"alert_webhook": "https://sms.test/h"}))
    sent: list[tuple[str, int]] = []

    def webhook(domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        sent.append((domain.name, queued))
        return succeed(None)

    world.ctx.send_webhook = webhook
    page = browser.submit(page, "/domains/c1.test/alert-test", {})
    assert sent == [("c1.test", 0)]
    assert page.contains("Test alert delivered to the webhook https://sms.test/h.")
    assert re.search(r'data-step="alert_test">.*?state state-done', page.text, re.S)

    def failing(domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return fail(RuntimeError("webhook https://sms.test/h answered 500"))

    world.ctx.send_webhook = failing
    page = browser.submit(page, "/domains/c1.test/alert-test", {})
    assert page.contains("Test alert: webhook https://sms.test/h answered 500")
    # With no sender in the process, the page says so instead of failing.
    world.ctx.send_webhook = None
    page = browser.submit(page, "/domains/c1.test/alert-test", {})
    assert page.contains("webhook calls are not available in this process")


def test_removing_a_domain(world: PanelWorld) -> None:
    world.queue("a@c1.test")
    browser = world.logged_in("c1-admin")
    page = browser.get("/domains/c1.test")
    assert 'class="danger" data-confirm="Stop protecting c1.test?"' in page.text
    page = browser.submit(page, "/domains/c1.test/remove", {})
    assert page.url.endswith("/domains") and page.contains("Stopped protecting c1.test.")
    assert page.contains("1 queued and 0 held message(s) stay")
    assert "c1.test" not in _names(world)


# -- tenancy and CSRF ------------------------------------------------------------------------

_POSTS = [
    ("/domains/c1.test/settings", {"relay": "evil.test", "mode": "relay"}),
    ("/domains/c1.test/portal", {"drill": "open"}),
    ("/domains/c1.test/users/add", {"address": "eve@c1.test", "password": "x"}),
    ("/domains/c1.test/users/password", {"address": "ann@c1.test", "password": "x"}),
    ("/domains/c1.test/users/remove", {"address": "ann@c1.test"}),
    ("/domains/c1.test/dkim", {"selector": "evil", "algorithm": "ed25519"}),
    ("/domains/c1.test/alert-test", {}),
    ("/domains/c1.test/remove", {}),
]


def _snapshot(world: PanelWorld) -> tuple[object, ...]:
    events = result_of(world.store.list_events(None, 1000))
    return (_domain(world, "c1.test"), _users(world, "c1.test"), len(events))


def test_another_customers_admin_gets_404_everywhere_and_changes_nothing(
    world: PanelWorld,
) -> None:
    run(domains.update_domain(world.ctx, OP, "c1.test", {"alert_email": "a@alerts.test"}))
    owner = world.logged_in("c1-admin")
    owner.submit(owner.get("/domains/c1.test"), "/domains/c1.test/users/add",
                 {"address": "ann", "password": "pw"})  # fmt: skip
    before = _snapshot(world)
    browser = world.logged_in("c2-admin")
    for path in ("/domains/c1.test", "/domains/c1.test/settings"):
        assert browser.get(path).status == 404, path
    own = browser.get("/domains/c2.test")
    for path, data in _POSTS:
        assert browser.submit(own, path, data).status == 404, path
    page = _upload(
        browser, "/domains/c1.test/users/import", {"csrf": own.csrf(), "mode": "replace"},
        b"eve@c1.test:{PLAIN}x\n",
    )  # fmt: skip
    assert page.status == 404
    assert _snapshot(world) == before
    assert "c1.test" not in browser.get("/domains").text


def test_a_post_without_its_csrf_token_changes_nothing(world: PanelWorld) -> None:
    browser = world.logged_in("c1-admin")
    before = _snapshot(world)
    for path, data in [*_POSTS, ("/domains/add", {**NEW, "customer": ""})]:
        assert browser.post(path, data).status == 403, path
        assert browser.post(path, {**data, "csrf": "forged"}).status == 403, path
    assert _snapshot(world) == before and "example.test" not in _names(world)
