"""
White-label branding in core (#14): host names (canonical, unique across resellers, assigned by
the operator), the uploaded logo (checked by its bytes, SVG refused, audited), and the brand each
caller and each host name sees.  MemoryStore on a task.Clock, with the tenants of
L{tests.test_core_admin_ops}: r1 with customer c1, r2 with c2, and the operator's own "own".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from strata_twisted.core.admin import branding, tenants
from strata_twisted.core.admin.errors import Conflict, InvalidInput
from strata_twisted.core.admin.identity import Caller, InsufficientScope
from strata_twisted.errors import NotFound
from strata_twisted.model import Customer, ResellerLogo
from strata_twisted.testing import result_of
from tests.test_core_admin_ops import C1, C2, OP, R1, R2, World, run

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 40
GIF = b"GIF89a" + b"\x00" * 20
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>'
OWN = Caller("own-admin", "customer", customer="own")


@pytest.fixture
def world(tmp_path: Path) -> World:
    made = World(tmp_path)
    result_of(made.store.add_customer(Customer("own")))
    return made


def brand_r1(world: World) -> None:
    run(
        tenants.update_reseller(
            world.ctx,
            OP,
            "r1",
            {
                "product_name": "Acme Continuity",
                "primary_color": "#112233",
                "support_email": "help@acme-it.test",
                "support_url": "https://acme-it.test/help",
                "hostnames": ["Webmail.Acme-IT.test", "panel.acme-it.test."],
            },
        )
    )


# -- host names --------------------------------------------------------------------------------


def test_host_names_are_canonical_sorted_and_shown(world: World) -> None:
    brand_r1(world)
    shown = run(tenants.show_reseller(world.ctx, OP, "r1"))
    assert shown.branding.hostnames == ("panel.acme-it.test", "webmail.acme-it.test")
    assert shown.as_json()["hostnames"] == ["panel.acme-it.test", "webmail.acme-it.test"]
    added = run(tenants.add_reseller(world.ctx, OP, "r3", {"hostnames": ["mail.r3.test"]}))
    assert added.branding.hostnames == ("mail.r3.test",)


@pytest.mark.parametrize(
    "value",
    ["webmail.acme.test", ["not a host"], ["localhost"], ["[::1]"], [1], ["a.test"] * 21 + ["b"]],
    ids=["string", "spaces", "one-label", "literal", "number", "too-many"],
)
def test_bad_host_names_are_refused_naming_the_field(world: World, value: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        run(tenants.update_reseller(world.ctx, OP, "r1", {"hostnames": value}))
    assert refused.value.field == "hostnames"
    assert run(tenants.show_reseller(world.ctx, OP, "r1")).branding.hostnames == ()


def test_a_host_name_taken_by_another_reseller_is_a_conflict_naming_the_field(
    world: World,
) -> None:
    brand_r1(world)
    with pytest.raises(Conflict) as taken:
        run(tenants.update_reseller(world.ctx, OP, "r2", {"hostnames": ["WEBMAIL.acme-it.test"]}))
    assert getattr(taken.value, "field", None) == "hostnames"
    assert "webmail.acme-it.test" in str(taken.value)
    with pytest.raises(Conflict):
        run(tenants.add_reseller(world.ctx, OP, "r3", {"hostnames": ["panel.acme-it.test"]}))
    assert result_of(world.store.get_reseller("r3")) is None
    # Its own names again are no conflict.
    brand_r1(world)


def test_a_reseller_admin_brands_its_own_reseller_but_assigns_no_host_names(
    world: World,
) -> None:
    updated = run(tenants.update_reseller(world.ctx, R1, "r1", {"product_name": "Mine"}))
    assert updated.branding.product_name == "Mine"
    with pytest.raises(InvalidInput) as refused:
        run(tenants.update_reseller(world.ctx, R1, "r1", {"hostnames": ["x.r1.test"]}))
    assert refused.value.field == "hostnames"
    for caller, name in ((R1, "r2"), (C1, "r1"), (R2, "r1")):
        with pytest.raises(NotFound):
            run(tenants.update_reseller(world.ctx, caller, name, {"product_name": "x"}))
    with pytest.raises(InsufficientScope):
        reader = Caller("r1-reader", "reseller", reseller="r1", scope="read")
        run(tenants.update_reseller(world.ctx, reader, "r1", {"product_name": "x"}))


# -- the logo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")],
)
def test_a_logo_is_recognised_by_its_bytes(world: World, data: bytes, content_type: str) -> None:
    world.clock.advance(5)
    logo = run(branding.set_reseller_logo(world.ctx, OP, "r1", data))
    assert logo == ResellerLogo(data, content_type, world.clock.seconds())
    assert run(branding.reseller_logo(world.ctx, R1, "r1")) == logo
    assert world.audit()[-1] == ("reseller.logo.set", "r1", "r1", "")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (SVG, "SVG"),
        (b"  <svg onload='x()'/>", "SVG"),
        (b"", "empty"),
        (b"%PDF-1.7", "PNG, JPEG, GIF or WebP"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (256 * 1024), "256 KiB"),
    ],
    ids=["svg", "bare-svg", "empty", "pdf", "too-large"],
)
def test_a_logo_that_is_not_a_small_raster_image_is_refused(
    world: World, data: bytes, says: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        run(branding.set_reseller_logo(world.ctx, OP, "r1", data))
    assert refused.value.field == "logo"
    assert says in refused.value.message
    assert result_of(world.store.get_reseller_logo("r1")) is None
    assert world.audit() == []


def test_who_may_set_read_and_clear_a_logo(world: World) -> None:
    run(branding.set_reseller_logo(world.ctx, R1, "r1", PNG))
    for caller, name in ((R2, "r1"), (C1, "r1"), (R1, "r2"), (OP, "nobody")):
        with pytest.raises(NotFound):
            run(branding.set_reseller_logo(world.ctx, caller, name, GIF))
        with pytest.raises(NotFound):
            run(branding.clear_reseller_logo(world.ctx, caller, name))
    with pytest.raises(NotFound):
        run(branding.reseller_logo(world.ctx, C1, "r1"))
    assert run(branding.clear_reseller_logo(world.ctx, R1, "r1")) is True
    assert run(branding.clear_reseller_logo(world.ctx, OP, "r1")) is False
    assert run(branding.reseller_logo(world.ctx, OP, "r1")) is None
    assert [a for a, *_ in world.audit()] == ["reseller.logo.set", "reseller.logo.clear"]


# -- the brand a page shows --------------------------------------------------------------------


def test_each_caller_sees_its_resellers_brand_or_none(world: World) -> None:
    brand_r1(world)
    world.clock.advance(1.5)
    run(branding.set_reseller_logo(world.ctx, OP, "r1", PNG))
    for caller in (R1, C1):
        view = run(branding.branding_for(world.ctx, caller))
        assert view is not None
        assert view.product_name == "Acme Continuity"
        assert view.has_logo
        assert run(branding.logo_for(world.ctx, caller)) is not None
    # r2 has a brand with nothing in it; the operator and its own customers have none.
    blank = run(branding.branding_for(world.ctx, C2))
    assert blank is not None and blank.product_name == "" and not blank.has_logo
    assert run(branding.logo_for(world.ctx, C2)) is None
    for caller in (OP, OWN):
        assert run(branding.branding_for(world.ctx, caller)) is None
        assert run(branding.logo_for(world.ctx, caller)) is None


def test_the_public_json_names_no_tenant_and_versions_the_logo(world: World) -> None:
    brand_r1(world)
    view = run(branding.branding_for_host(world.ctx, "webmail.acme-it.test"))
    assert view is not None
    assert view.as_json("/branding/logo?host=webmail.acme-it.test") == {
        "product_name": "Acme Continuity",
        "primary_color": "#112233",
        "accent_color": "",
        "support_email": "help@acme-it.test",
        "support_url": "https://acme-it.test/help",
        "logo_url": None,
        "has_logo": False,
    }
    run(tenants.update_reseller(world.ctx, OP, "r1", {"logo_url": "https://cdn.test/l.png"}))
    view = run(branding.branding_for_host(world.ctx, "webmail.acme-it.test"))
    assert view is not None and view.as_json("/x")["logo_url"] == "https://cdn.test/l.png"
    world.clock.advance(2.25)
    run(branding.set_reseller_logo(world.ctx, OP, "r1", GIF))
    view = run(branding.branding_for_host(world.ctx, "webmail.acme-it.test"))
    assert view is not None
    url = view.as_json("/branding/logo?host=webmail.acme-it.test")["logo_url"]
    assert url == "/branding/logo?host=webmail.acme-it.test&v=1000002250"


@pytest.mark.parametrize(
    "host",
    [
        "webmail.acme-it.test",
        "WEBMAIL.Acme-IT.test:8443",
        "webmail.acme-it.test.",
        " panel.acme-it.test:80",
    ],
)
def test_a_host_name_finds_its_brand_whatever_its_case_and_port(world: World, host: str) -> None:
    brand_r1(world)
    run(branding.set_reseller_logo(world.ctx, OP, "r1", JPEG))
    view = run(branding.branding_for_host(world.ctx, host))
    assert view is not None and view.product_name == "Acme Continuity"
    logo = run(branding.logo_for_host(world.ctx, host))
    assert logo is not None and logo.content_type == "image/jpeg"


@pytest.mark.parametrize(
    "host",
    ["other.test", "", "127.0.0.1:80", "[::1]:80", "acme-it.test", "a b", "x:y:z", "é" * 300],
)
def test_any_other_host_has_no_brand(world: World, host: str) -> None:
    brand_r1(world)
    assert run(branding.branding_for_host(world.ctx, host)) is None
    assert run(branding.logo_for_host(world.ctx, host)) is None
