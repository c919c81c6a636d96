"""
The admin panel's login, sessions and form protection (#14), in process (L{tests.panel_harness}).
"""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest

from strata_twisted.core.admin import accounts
from strata_twisted.core.admin.identity import Caller
from tests.panel_harness import PASSWORD, PanelWorld, run


@pytest.fixture
def world(tmp_path: Path) -> PanelWorld:
    return PanelWorld(tmp_path)


def test_a_page_asks_for_a_login_and_comes_back_after_it(world: PanelWorld) -> None:
    browser = world.browser()
    page = browser.get("/?range=24", follow=False)
    assert page.status == 303 and page.location == "/login?next=%2F%3Frange%3D24"
    page = browser.get("/login?next=%2F")
    assert page.status == 200 and page.contains("Log in")
    page = browser.login("op")
    assert page.status == 200 and page.url.endswith("/") and page.contains("Dashboard")
    assert "strata_session" in browser.cookies and "strata_login" not in browser.cookies


def test_a_wrong_password_shows_the_form_again_and_logs_nobody_in(world: PanelWorld) -> None:
    browser = world.browser()
    page = browser.login("op", "wrong password")
    assert page.status == 401 and page.contains("Wrong name or password.")
    assert "strata_session" not in browser.cookies
    page = browser.login("nobody", PASSWORD)
    assert page.status == 401 and page.contains("Wrong name or password.")


def test_a_login_form_from_another_site_or_without_its_token_is_refused(
    world: PanelWorld,
) -> None:
    browser = world.browser()
    form = browser.get("/login")
    token = form.text.split('name="login_token" value="')[1].split('"')[0]
    fields = {"login_token": token, "name": "op", "password": PASSWORD}
    page = browser.post("/login", fields, headers={"Origin": "http://evil.test"})
    assert page.status == 403 and "strata_session" not in browser.cookies
    page = browser.post("/login", {**fields, "login_token": "forged"})
    assert page.status == 403 and "strata_session" not in browser.cookies
    # A login token is the browser's own: another browser's cookie does not match it.
    other = world.browser()
    page = other.post("/login", fields)
    assert page.status == 403 and "strata_session" not in other.cookies


def test_totp_is_asked_on_a_second_page_and_checked(world: PanelWorld) -> None:
    op = Caller("op", "operator")
    secret = run(accounts.begin_totp(world.ctx, op)).secret
    totp = pyotp.TOTP(secret)
    run(accounts.confirm_totp(world.ctx, op, secret, totp.at(world.clock.seconds())))
    browser = world.browser()
    page = browser.login("op")
    assert page.status == 200 and page.contains("Second factor")
    assert "strata_session" not in browser.cookies and "strata_pending" in browser.cookies
    assert PASSWORD not in page.text
    token = page.text.split('name="login_token" value="')[1].split('"')[0]
    page = browser.post("/login/totp", {"login_token": token, "code": "000000"})
    assert page.status == 401 and page.contains("That code is not right.")
    world.clock.advance(30)  # the next code: a spent one is refused (replay guard)
    page = browser.post(
        "/login/totp", {"login_token": token, "code": totp.at(world.clock.seconds())}
    )
    assert page.status == 200 and page.contains("Dashboard")
    assert "strata_session" in browser.cookies


def test_logout_needs_the_token_and_ends_the_session(world: PanelWorld) -> None:
    browser = world.browser()
    page = browser.login("op")
    page = browser.post("/logout", {})  # no token: refused, still logged in
    assert page.status == 403
    assert browser.get("/").contains("Dashboard")
    page = browser.submit(browser.get("/"), "/logout", {})
    assert page.url.endswith("/login") and "strata_session" not in browser.cookies
    assert browser.get("/", follow=False).status == 303


def test_pages_carry_the_security_headers(world: PanelWorld) -> None:
    browser = world.browser()
    browser.login("op")
    page = browser.get("/")
    csp = page.header("content-security-policy") or ""
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.header("x-frame-options") == "DENY"
    assert page.header("cache-control") == "no-store"
    css = browser.get("/static/panel.css")
    assert css.status == 200 and "--primary" in css.text
    assert browser.get("/static/../templates/base.html").status == 404
    assert browser.get("/static/").status == 404  # no directory listing
    assert browser.get("/no-such-page").status == 404


def test_the_api_and_the_panel_share_the_site_and_the_session(world: PanelWorld) -> None:
    browser = world.browser()
    browser.login("c1-admin")
    answer = browser.get("/api/v1/domains")
    assert answer.status == 200 and '"c1.test"' in answer.text and "c2.test" not in answer.text
