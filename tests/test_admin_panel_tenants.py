"""
The panel's Resellers and customers pages (#14), in process (L{tests.panel_harness}): what the
operator and a reseller admin see and change, what core refuses (another tenant's objects are
"not found", a tenant with something left under it is not removed), and forms without their
CSRF token changing nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyotp
import pytest

from strata_twisted.core.admin import accounts
from strata_twisted.core.admin.identity import Caller
from strata_twisted.model import Customer
from strata_twisted.testing import result_of
from tests.panel_harness import PASSWORD, PanelWorld, run

NEW_PASSWORD = "another long passphrase"  # noqa: S105 (a test account's)
BRANDING = {
    "product_name": "Acme Continuity",
    "logo_url": "https://acme.example/logo.svg",
    "primary_color": "#112233",
    "accent_color": "#445566",
    "support_email": "help@acme.example",
    "support_url": "https://acme.example/help",
}


@pytest.fixture
def world(tmp_path: Path) -> PanelWorld:
    return PanelWorld(tmp_path)


def test_the_operator_adds_a_branded_reseller_and_its_admin_who_can_log_in(
    world: PanelWorld,
) -> None:
    op = world.browser()
    op.login("op")
    page = op.get("/tenants")
    assert page.status == 200 and page.contains("Resellers & customers")
    assert page.contains('href="/tenants/resellers/r1"') and page.contains("Add a reseller")
    assert page.contains('type="color"')
    page = op.submit(page, "/tenants/resellers", {"name": "acme", **BRANDING})
    assert page.status == 200 and page.url.endswith("/tenants/resellers/acme")
    assert page.contains("Reseller acme added.")
    reseller = result_of(world.store.get_reseller("acme"))
    assert reseller is not None and reseller.branding.as_json() == {**BRANDING, "hostnames": []}
    assert page.contains('value="#112233"') and page.contains('value="Acme Continuity"')

    page = op.submit(
        page,
        "/tenants/resellers/acme/admins",
        {"name": "acme-admin", "password": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert page.status == 200 and page.contains("Admin account acme-admin added")
    account = result_of(world.store.get_admin("acme-admin"))
    assert account is not None and (account.role, account.reseller) == ("reseller", "acme")
    listing = op.get("/tenants")
    assert listing.contains("Acme Continuity")

    admin = world.browser()
    assert admin.login("acme-admin", NEW_PASSWORD).contains("Dashboard")
    page = admin.get("/tenants")
    assert page.status == 200 and page.contains("<h1>Customers</h1>")
    assert page.contains("No customers yet.") and not page.contains("Add a reseller")
    assert page.contains('href="/tenants/resellers/acme"')
    page = admin.get("/tenants/resellers/acme")
    assert page.status == 200 and page.contains('acme-admin <span class="muted">(you)</span>')
    # Its own brand is the reseller's to change, but not its host names (the operator's).
    assert page.contains("Acme Continuity") and page.contains("Save branding")
    assert not page.contains("Host names")


def test_colours_left_at_the_default_stay_unset_and_an_edit_keeps_what_it_shows(
    world: PanelWorld,
) -> None:
    op = world.browser()
    op.login("op")
    page = op.get("/tenants")
    # A colour input always sends a value: the default one it showed means "none".
    page = op.submit(
        page,
        "/tenants/resellers",
        {"name": "plain", "primary_color": "#1f5fa8", "accent_color": "#E07B00"},
    )
    assert page.status == 200
    reseller = result_of(world.store.get_reseller("plain"))
    assert reseller is not None and reseller.branding.primary_color == ""
    assert reseller.branding.accent_color == ""
    page = op.submit(
        page,
        "/tenants/resellers/plain/branding",
        {"product_name": "Plain Mail", "primary_color": "#1f5fa8", "accent_color": "#abcdef"},
    )
    assert page.status == 200 and page.contains("Branding of plain saved.")
    reseller = result_of(world.store.get_reseller("plain"))
    assert reseller is not None and reseller.branding.product_name == "Plain Mail"
    assert (reseller.branding.primary_color, reseller.branding.accent_color) == ("", "#abcdef")


def test_bad_input_is_shown_beside_its_field_and_nothing_is_saved(world: PanelWorld) -> None:
    op = world.browser()
    op.login("op")
    page = op.get("/tenants")
    before = result_of(world.store.list_resellers())
    bad = op.submit(page, "/tenants/resellers", {"name": "Not A Name!", **BRANDING})
    assert bad.status == 400 and bad.contains('class="field has-error"')
    assert bad.contains('value="Not A Name!"')  # the form keeps what was typed
    bad = op.submit(page, "/tenants/resellers", {"name": "r1"})
    assert bad.status == 400 and bad.contains("r1")
    bad = op.submit(page, "/tenants/resellers", {"name": "x1", "support_url": "ftp://x"})
    assert bad.status == 400 and bad.contains("expected an http:// or https:// URL")
    assert result_of(world.store.list_resellers()) == before
    bad = op.submit(page, "/tenants/customers", {"name": "c1"})
    assert bad.status == 400
    bad = op.submit(page, "/tenants/customers", {"name": "c9", "reseller": "nope"})
    assert bad.status == 404 and result_of(world.store.get_customer("c9")) is None

    page = op.get("/tenants/customers/c1")
    short = op.submit(
        page,
        "/tenants/customers/c1/admins",
        {"name": "x", "password": "short", "password2": "short"},
    )
    assert short.status == 400 and short.contains("at least")
    differ = op.submit(
        page,
        "/tenants/customers/c1/admins",
        {"name": "x", "password": NEW_PASSWORD, "password2": NEW_PASSWORD + "!"},
    )
    assert differ.status == 400 and differ.contains("the two passwords differ")
    assert result_of(world.store.get_admin("x")) is None


def test_a_reseller_admin_adds_a_customer_under_its_reseller_and_a_customer_admin(
    world: PanelWorld,
) -> None:
    r1 = world.browser()
    r1.login("r1-admin")
    page = r1.get("/tenants")
    assert page.contains('href="/tenants/customers/c1"')
    assert not page.contains("c2") and not page.contains("r2")
    assert not page.contains('name="reseller"')  # its customers go under its reseller
    # A reseller admin's customers go under its reseller, whatever the form says.
    page = r1.submit(page, "/tenants/customers", {"name": "c4", "reseller": "r2"})
    assert page.status == 200 and page.url.endswith("/tenants/customers/c4")
    assert result_of(world.store.get_customer("c4")) == Customer("c4", "r1", world.clock.seconds())
    page = r1.submit(
        page,
        "/tenants/customers/c4/admins",
        {"name": "c4-admin", "password": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert page.status == 200 and page.contains("c4-admin")
    account = result_of(world.store.get_admin("c4-admin"))
    assert account is not None and (account.role, account.customer) == ("customer", "c4")
    assert world.browser().login("c4-admin", NEW_PASSWORD).contains("Dashboard")


def test_the_operator_adds_customers_under_itself_or_under_a_reseller(world: PanelWorld) -> None:
    op = world.browser()
    op.login("op")
    page = op.get("/tenants")
    op.submit(page, "/tenants/customers", {"name": "own", "reseller": ""})
    op.submit(page, "/tenants/customers", {"name": "sold", "reseller": "r2"})
    own = result_of(world.store.get_customer("own"))
    sold = result_of(world.store.get_customer("sold"))
    assert own is not None and own.reseller == ""
    assert sold is not None and sold.reseller == "r2"
    page = op.get("/tenants")
    assert page.contains("operator")  # the reseller column of its own customer
    page = op.get("/tenants/customers/c1")
    assert page.contains('href="/domains/c1.test"') and page.contains("c1-admin")
    assert not page.contains("c2.test")
    page = op.get("/tenants/resellers/r2")
    assert page.contains('href="/tenants/customers/sold"') and page.contains("r2-admin")


def test_a_reseller_admin_reaches_no_other_tenant(world: PanelWorld) -> None:
    result_of(world.store.add_customer(Customer("house", "")))
    r1 = world.browser()
    r1.login("r1-admin")
    for path in ("/tenants/resellers/r2", "/tenants/customers/c2", "/tenants/customers/house"):
        page = r1.get(path)
        assert page.status == 404 and not page.contains("r2-admin")
    own = r1.get("/tenants/resellers/r1")
    assert own.status == 200
    # Its own branding is the reseller's to change; another reseller's is not.
    page = r1.submit(own, "/tenants/resellers/r2/branding", {"product_name": "Mine"})
    assert page.status == 404
    reseller = result_of(world.store.get_reseller("r2"))
    assert reseller is not None and reseller.branding.product_name == ""
    page = r1.submit(own, "/tenants/resellers/r1/remove", {})
    assert page.status == 404 and result_of(world.store.get_reseller("r1")) is not None
    page = r1.submit(
        own,
        "/tenants/resellers/r2/admins",
        {"name": "sneak", "password": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert page.status == 404 and result_of(world.store.get_admin("sneak")) is None
    page = r1.submit(
        own,
        "/tenants/admins/c2-admin/password",
        {"password": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert page.status == 404
    page = r1.submit(own, "/tenants/admins/r2-admin/remove", {})
    assert page.status == 404 and result_of(world.store.get_admin("r2-admin")) is not None
    page = r1.submit(own, "/tenants/customers/c2/remove", {})
    assert page.status == 404 and result_of(world.store.get_customer("c2")) is not None
    assert world.browser().login("c2-admin").contains("Dashboard")  # its password stayed


def test_a_customer_admin_gets_no_tenant_pages(world: PanelWorld) -> None:
    c1 = world.browser()
    page = c1.login("c1-admin")
    assert not page.contains('href="/tenants"')
    for path in ("/tenants", "/tenants/customers/c1", "/tenants/resellers/r1"):
        assert c1.get(path).status == 404
    page = c1.submit(page, "/tenants/customers", {"name": "c7"})
    assert page.status == 404 and result_of(world.store.get_customer("c7")) is None
    page = c1.submit(
        page,
        "/tenants/customers/c1/admins",
        {"name": "c1-second", "password": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert page.status == 404 and result_of(world.store.get_admin("c1-second")) is None


def test_removing_a_tenant_with_something_under_it_shows_the_conflict_and_changes_nothing(
    world: PanelWorld,
) -> None:
    op = world.browser()
    op.login("op")
    page = op.get("/tenants/resellers/r1")
    assert page.contains("Remove reseller r1") and page.contains("data-confirm=")
    page = op.submit(page, "/tenants/resellers/r1/remove", {})
    assert page.status == 409 and page.contains("reseller r1 still has 1 customer(s) (c1)")
    assert page.contains("<h1>Reseller r1</h1>")
    assert result_of(world.store.get_reseller("r1")) is not None
    page = op.submit(page, "/tenants/customers/c1/remove", {})
    assert page.status == 409 and page.contains("1 domain(s) (c1.test)")
    assert result_of(world.store.get_customer("c1")) is not None

    # Empty ones go: a new customer, then a reseller once its admin account is removed.
    page = op.submit(op.get("/tenants"), "/tenants/customers", {"name": "gone"})
    page = op.submit(page, "/tenants/customers/gone/remove", {})
    assert page.status == 200 and page.url.endswith("/tenants")
    assert page.contains("Customer gone removed.")
    assert result_of(world.store.get_customer("gone")) is None
    page = op.submit(page, "/tenants/resellers", {"name": "brief"})
    page = op.submit(
        page,
        "/tenants/resellers/brief/admins",
        {"name": "brief-admin", "password": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    page = op.submit(page, "/tenants/resellers/brief/remove", {})
    assert page.status == 409 and page.contains("admin account(s) (brief-admin)")
    page = op.submit(page, "/tenants/admins/brief-admin/remove", {})
    assert page.status == 200 and result_of(world.store.get_admin("brief-admin")) is None
    page = op.submit(page, "/tenants/resellers/brief/remove", {})
    assert page.status == 200 and result_of(world.store.get_reseller("brief")) is None


def test_a_reseller_admin_resets_a_customer_admins_password_and_turns_its_totp_off(
    world: PanelWorld,
) -> None:
    c1 = world.browser()
    c1.login("c1-admin")
    r1 = world.browser()
    r1.login("r1-admin")
    page = r1.get("/tenants/customers/c1")
    bad = r1.submit(
        page, "/tenants/admins/c1-admin/password", {"password": "short", "password2": "short"}
    )
    assert bad.status == 400 and bad.contains("at least") and bad.contains("<details open>")
    page = r1.submit(
        page,
        "/tenants/admins/c1-admin/password",
        {"password": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert page.status == 200 and page.contains("New password set for c1-admin")
    assert c1.get("/", follow=False).status == 303  # its session ended
    assert world.browser().login("c1-admin", NEW_PASSWORD).contains("Dashboard")
    assert world.browser().login("c1-admin", PASSWORD).status == 401

    who = Caller("c1-admin", "customer", customer="c1")
    secret = run(accounts.begin_totp(world.ctx, who)).secret
    run(accounts.confirm_totp(world.ctx, who, secret, pyotp.TOTP(secret).at(world.clock.seconds())))
    page = r1.get("/tenants/customers/c1")
    page = r1.submit(page, "/tenants/admins/c1-admin/totp-off", {})
    assert page.status == 200 and page.contains("TOTP turned off for c1-admin")
    account = result_of(world.store.get_admin("c1-admin"))
    assert account is not None and account.totp_secret is None


def test_tenant_forms_without_their_csrf_token_change_nothing(world: PanelWorld) -> None:
    op = world.browser()
    op.login("op")
    assert op.post("/tenants/resellers", {"name": "r9"}).status == 403
    assert op.post("/tenants/customers", {"name": "c9"}).status == 403
    assert op.post("/tenants/customers/c1/remove", {}).status == 403
    assert op.post("/tenants/admins/c1-admin/remove", {}).status == 403
    assert op.post("/tenants/resellers/r1/branding", {"product_name": "X"}).status == 403
    assert result_of(world.store.get_reseller("r9")) is None
    assert result_of(world.store.get_customer("c9")) is None
    assert result_of(world.store.get_admin("c1-admin")) is not None
    reseller = result_of(world.store.get_reseller("r1"))
    assert reseller is not None and reseller.branding.product_name == ""


# -- white-label branding ------------------------------------------------------------------------

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73"
    "0000001649444154789c63f8cfc0f09f8181e13f0303c37f00002dfa05fb7f1f1a"
    "6f0000000049454e44ae426082"
)


def test_a_reseller_brands_its_panel_with_a_logo_and_colours(world: PanelWorld) -> None:
    r1 = world.browser()
    r1.login("r1-admin")
    page = r1.get("/reseller/branding")
    assert page.url.endswith("/tenants/resellers/r1#branding") and page.contains("Save branding")
    assert not page.contains("Host names")  # the operator's to assign
    fields = {"product_name": "Acme Continuity", "primary_color": "#8a1c7c",
              "accent_color": "#e07b00", "support_email": "help@acme.example"}  # fmt: skip
    # A bad logo saves nothing, not even the fields beside it.
    page = r1.upload(page, "/tenants/resellers/r1/branding", fields,
                     {"logo": ("logo.svg", "image/svg+xml", b"<svg onload='x()'/>")})  # fmt: skip
    assert page.status == 400 and page.contains("SVG logos are refused")
    reseller = result_of(world.store.get_reseller("r1"))
    assert reseller is not None and reseller.branding.product_name == ""
    page = r1.upload(page, "/tenants/resellers/r1/branding", fields,
                     {"logo": ("logo.png", "image/png", PNG)})  # fmt: skip
    assert page.contains("Branding of r1 saved.")
    logo = result_of(world.store.get_reseller_logo("r1"))
    assert logo is not None and logo.data == PNG
    # The reseller's customers see the brand: product name, logo, colours, support contact.
    c1 = world.browser()
    c1.login("c1-admin")
    page = c1.get("/")
    assert '<span class="product">Acme Continuity</span>' in page.text
    assert "<title>Dashboard · Acme Continuity</title>" in page.text
    src = re.search(r'<img class="logo" src="([^"]+)"', page.text)
    assert src is not None and src.group(1).startswith("/api/v1/branding/logo?v=")
    image = c1.get(src.group(1).replace("&amp;", "&"))
    assert image.status == 200 and image.header("content-type") == "image/png"
    assert "--primary: #8a1c7c;" in c1.get("/theme.css").text
    assert page.contains("help@acme.example")
    # Another reseller's customers and the operator keep Strata's look.
    for name in ("c2-admin", "op"):
        other = world.browser()
        other.login(name)
        page = other.get("/")
        assert '<span class="product">Strata</span>' in page.text and "Acme" not in page.text
        assert "--primary" not in other.get("/theme.css").text


def test_the_operator_assigns_host_names_and_the_login_page_wears_the_brand(
    world: PanelWorld,
) -> None:
    op = world.browser()
    op.login("op")
    page = op.get("/tenants/resellers/r1")
    assert page.contains("Host names")
    fields = {"product_name": "Acme Continuity", "hostnames": "panel.acme.test\nwebmail.acme.test"}
    page = op.upload(page, "/tenants/resellers/r1/branding", fields,
                     {"logo": ("logo.png", "image/png", PNG)})  # fmt: skip
    assert page.contains("Branding of r1 saved.")
    reseller = result_of(world.store.get_reseller("r1"))
    assert reseller is not None
    assert reseller.branding.hostnames == ("panel.acme.test", "webmail.acme.test")
    # A host name another reseller has is refused beside its field, and nothing changes.
    page = op.get("/tenants/resellers/r2")
    page = op.upload(page, "/tenants/resellers/r2/branding",
                     {"product_name": "Other", "hostnames": "panel.acme.test"}, {})  # fmt: skip
    assert page.status == 409 and page.contains("panel.acme.test")
    reseller = result_of(world.store.get_reseller("r2"))
    assert reseller is not None and reseller.branding.product_name == ""
    # Before anybody logs in, the panel under the reseller's host name shows its brand.
    visitor = world.browser(origin="http://panel.acme.test")
    page = visitor.get("/login")
    assert '<span class="product">Acme Continuity</span>' in page.text
    src = re.search(r'<img class="logo" src="([^"]+)"', page.text)
    assert src is not None and src.group(1).startswith("/branding/logo?host=panel.acme.test")
    assert visitor.get(src.group(1).replace("&amp;", "&")).status == 200
    assert '<span class="product">Strata</span>' in world.browser().get("/login").text
