"""
The panel's Account page (#14), in process (L{tests.panel_harness}): changing one's password,
enrolling and removing the TOTP second factor, and API keys shown once, working on the API and
stopping after revocation; forms without their CSRF token change nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyotp
import pytest

from strata_twisted.testing import result_of
from tests.panel_harness import PASSWORD, PanelWorld

NEW_PASSWORD = "another long passphrase"  # noqa: S105 (a test account's)
_KEY = re.compile(r"strata_[a-z2-7]{12}_[A-Za-z0-9_-]{32,}")
_SECRET = re.compile(r'name="secret" value="([A-Z2-7]+)"')
_CODE = re.compile(r"<code>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</code>")


@pytest.fixture
def world(tmp_path: Path) -> PanelWorld:
    return PanelWorld(tmp_path)


def test_the_account_page_shows_the_account(world: PanelWorld) -> None:
    browser = world.browser()
    browser.login("c1-admin")
    page = browser.get("/account")
    assert page.status == 200 and page.contains("c1-admin · customer of customer c1")
    assert page.contains("Set up TOTP") and page.contains("No API keys.")


def test_changing_the_password_needs_the_current_one_and_ends_other_sessions(
    world: PanelWorld,
) -> None:
    other = world.browser()
    other.login("r1-admin")
    browser = world.browser()
    browser.login("r1-admin")
    page = browser.get("/account")
    fields = {"new_password": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    wrong = browser.submit(page, "/account/password", {"current_password": "nope", **fields})
    assert wrong.status == 400 and wrong.contains("the current password is wrong")
    differ = browser.submit(
        page,
        "/account/password",
        {"current_password": PASSWORD, **fields, "new_password2": NEW_PASSWORD + "!"},
    )
    assert differ.status == 400 and differ.contains("the two new passwords differ")
    short = browser.submit(
        page,
        "/account/password",
        {"current_password": PASSWORD, "new_password": "short", "new_password2": "short"},
    )
    assert short.status == 400 and short.contains("at least")
    assert other.get("/", follow=False).status == 200  # nothing changed yet

    old_cookie = browser.cookies["strata_session"]
    page = browser.submit(page, "/account/password", {"current_password": PASSWORD, **fields})
    assert page.status == 200 and page.url.endswith("/account")
    assert page.contains("Password changed. Your other sessions were logged out.")
    assert browser.cookies["strata_session"] != old_cookie  # this browser: a new session
    assert browser.get("/account", follow=False).status == 200
    assert other.get("/", follow=False).status == 303  # the other one: logged out
    assert world.browser().login("r1-admin", NEW_PASSWORD).contains("Dashboard")
    assert world.browser().login("r1-admin", PASSWORD).status == 401


def test_totp_enrolment_shows_the_recovery_codes_once_and_then_login_asks_for_a_code(
    world: PanelWorld,
) -> None:
    browser = world.browser()
    browser.login("op")
    page = browser.submit(browser.get("/account"), "/account/totp", {})
    assert page.status == 200 and page.contains("otpauth://totp/")
    found = _SECRET.search(page.text)
    assert found is not None
    secret = found.group(1)
    totp = pyotp.TOTP(secret)
    wrong = browser.submit(page, "/account/totp/confirm", {"secret": secret, "code": "000000"})
    assert wrong.status == 400 and wrong.contains("the code is wrong")
    assert wrong.contains(f'value="{secret}"')  # the same secret, to try again
    account = result_of(world.store.get_admin("op"))
    assert account is not None and account.totp_secret is None

    done = browser.submit(
        page, "/account/totp/confirm", {"secret": secret, "code": totp.at(world.clock.seconds())}
    )
    assert done.status == 200 and done.contains("TOTP is on")
    codes = _CODE.findall(done.text)
    assert len(codes) >= 8
    account = result_of(world.store.get_admin("op"))
    assert account is not None and account.totp_secret == secret
    page = browser.get("/account")
    assert page.contains("Turn off TOTP") and not any(code in page.text for code in codes)

    fresh = world.browser()
    asked = fresh.login("op")
    assert asked.contains("Second factor") and "strata_session" not in fresh.cookies
    world.clock.advance(30)  # the code confirming the enrolment is spent
    fresh = world.browser()
    assert fresh.login("op", code=totp.at(world.clock.seconds())).contains("Dashboard")

    # Off again with a recovery code; a wrong code changes nothing.
    page = browser.get("/account")
    wrong = browser.submit(page, "/account/totp/disable", {"code": "123456"})
    assert wrong.status == 400 and wrong.contains("the code is wrong")
    page = browser.submit(page, "/account/totp/disable", {"code": codes[0]})
    assert page.status == 200 and page.contains("TOTP is off")
    account = result_of(world.store.get_admin("op"))
    assert account is not None and account.totp_secret is None


def test_a_tampered_totp_secret_is_refused(world: PanelWorld) -> None:
    browser = world.browser()
    browser.login("op")
    page = browser.submit(browser.get("/account"), "/account/totp", {})
    page = browser.submit(page, "/account/totp/confirm", {"secret": "short", "code": "123456"})
    assert page.status == 400 and page.contains("base32")
    account = result_of(world.store.get_admin("op"))
    assert account is not None and account.totp_secret is None


def test_an_api_key_is_shown_once_works_on_the_api_and_stops_after_revocation(
    world: PanelWorld,
) -> None:
    browser = world.browser()
    browser.login("c1-admin")
    page = browser.get("/account")
    made = browser.submit(
        page, "/account/keys", {"scope": "read", "expires_days": "30", "allow_ip": ""}
    )
    assert made.status == 200 and made.header("cache-control") == "no-store"
    found = _KEY.search(made.text)
    assert found is not None
    key = found.group(0)
    key_id = key.split("_")[1]
    listing = browser.get("/account")
    assert listing.contains(key_id) and key not in listing.text
    assert _KEY.search(listing.text) is None
    assert listing.contains('<td data-label="Scope">read</td>')
    assert listing.contains('<td data-label="Last used">never</td>')

    bearer = {"Authorization": f"Bearer {key}"}
    answer = world.browser().get("/api/v1/status", headers=bearer)
    assert answer.status == 200
    answer = world.browser().get("/api/v1/domains", headers=bearer)
    assert answer.status == 200 and "c1.test" in answer.text and "c2.test" not in answer.text
    assert not browser.get("/account").contains('<td data-label="Last used">never</td>')

    page = browser.submit(listing, f"/account/keys/{key_id}/revoke", {})
    assert page.status == 200 and page.contains(f"API key {key_id} revoked.")
    assert world.browser().get("/api/v1/status", headers=bearer).status == 401
    assert result_of(world.store.list_api_keys("c1-admin")) == []


def test_a_key_limited_to_other_networks_is_refused_here(world: PanelWorld) -> None:
    browser = world.browser()
    browser.login("op")
    made = browser.submit(
        browser.get("/account"),
        "/account/keys",
        {"scope": "admin", "allow_ip": "192.0.2.0/24\n2001:db8::/32"},
    )
    found = _KEY.search(made.text)
    assert found is not None and made.contains("192.0.2.0/24, 2001:db8::/32")
    answer = world.browser().get(
        "/api/v1/status", headers={"Authorization": f"Bearer {found.group(0)}"}
    )
    assert answer.status == 401


def test_bad_key_settings_are_shown_beside_their_fields_and_no_key_is_made(
    world: PanelWorld,
) -> None:
    browser = world.browser()
    browser.login("op")
    page = browser.get("/account")
    for data, message in (
        ({"scope": "read", "expires_days": "soon"}, "enter a whole number of days"),
        ({"scope": "read", "expires_days": "0"}, "expires_days must be a whole number"),
        ({"scope": "read", "allow_ip": "not-a-net"}, "not a network (CIDR): 'not-a-net'"),
        ({"scope": "root"}, "scope must be one of"),
    ):
        answer = browser.submit(page, "/account/keys", data)
        assert answer.status == 400 and answer.contains(message), message
        assert answer.contains('class="field has-error"') and _KEY.search(answer.text) is None
    assert result_of(world.store.list_api_keys("op")) == []


def test_account_forms_without_their_csrf_token_change_nothing(world: PanelWorld) -> None:
    browser = world.browser()
    browser.login("op")
    answer = browser.post(
        "/account/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert answer.status == 403
    assert browser.post("/account/keys", {"scope": "admin"}).status == 403
    assert browser.post("/account/totp", {}).status == 403
    assert result_of(world.store.list_api_keys("op")) == []
    assert world.browser().login("op", PASSWORD).contains("Dashboard")
