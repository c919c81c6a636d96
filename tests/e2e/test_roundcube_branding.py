"""
Issue #14, acceptance: "the webmail served under the reseller's host name shows the reseller's
product name on its login page".

A real ``twistd -n strata`` with its admin listener; through its API the operator makes a
reseller with a product name, a host name (``webmail.acme-it.test``) and an uploaded logo.
Debian's Roundcube (``php -S``) runs our config with the strata_branding plugin pointed at that
admin listener (``STRATA_ADMIN_URL``).  Headless Chromium resolves both test host names to
127.0.0.1 and opens the login page under each: under the reseller's, the title and heading name
the reseller's product and the logo is the uploaded image (loaded, with its size); under another
host name, Roundcube's configured look is left alone.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.peers.admin_api import AdminClient
from tests.peers.browser import Browser
from tests.peers.net import free_port
from tests.peers.strata import StrataProcess, bootstrap_password

pytestmark = [pytest.mark.interop]

BRANDED = "webmail.acme-it.test"
OTHER = "webmail.other.test"
PRODUCT = "Acme Continuity Mail"
DEFAULT = "Strata Webmail"  # the RoundcubeServer's STRATA_PRODUCT_NAME


def png(width: int, height: int) -> bytes:
    """A valid, opaque red PNG of ``width`` × ``height`` (so the browser really decodes it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def logo_state(browser: Browser) -> dict[str, Any]:
    """The login page's logo: its src and what the browser decoded (0 × 0: not loaded)."""
    state: dict[str, Any] = browser.driver.execute_script(
        "const i = document.getElementById('logo');"
        "return i ? {src: i.getAttribute('src'), complete: i.complete,"
        " width: i.naturalWidth, height: i.naturalHeight} : null;"
    )
    return state


def test_the_webmail_under_a_resellers_host_name_shows_its_brand(
    strata_factory: Any, roundcube_factory: Any, tmp_path: Any, evidence_dir: Any
) -> None:
    admin_port = free_port()
    strata: StrataProcess = strata_factory(admin_port=admin_port)
    strata.start()
    operator = AdminClient(admin_port)
    assert operator.login("admin", bootstrap_password(strata)).status == 200
    made = operator.post(
        "/api/v1/resellers",
        {
            "name": "acme-it",
            "product_name": PRODUCT,
            "support_url": "https://help.acme-it.test/",
            "hostnames": [BRANDED],
        },
    )
    assert made.status == 201, made.body
    image = png(37, 23)
    stored = operator.request(
        "PUT", "/api/v1/resellers/acme-it/logo", raw=image, content_type="image/png"
    )
    assert stored.status == 200, stored.body

    roundcube = roundcube_factory(
        imap_host="127.0.0.1:9", admin_url=f"http://127.0.0.1:{admin_port}", workers=2
    )
    browser = Browser(tmp_path / "browser", host_map={BRANDED: "127.0.0.1", OTHER: "127.0.0.1"})
    try:
        browser.start()
        driver = browser.driver
        try:
            driver.get(f"http://{BRANDED}:{roundcube.port}/")
            driver.find_element(By.NAME, "_user")
            assert PRODUCT in driver.title
            heading = driver.find_element(By.CSS_SELECTOR, "h1").get_attribute("textContent")
            assert heading is not None and PRODUCT in heading
            browser.driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "const i = document.getElementById('logo');"
                "if (i.complete) done(); else { i.onload = done; i.onerror = done; }"
            )
            logo = logo_state(browser)
            assert "strata-logo" in logo["src"]
            assert (logo["width"], logo["height"]) == (37, 23)  # our image, decoded

            driver.get(f"http://{OTHER}:{roundcube.port}/")
            driver.find_element(By.NAME, "_user")
            assert DEFAULT in driver.title
            assert PRODUCT not in driver.page_source
            assert "strata-logo" not in (logo_state(browser) or {}).get("src", "")
        except BaseException:
            browser.save_evidence(evidence_dir, "branding")
            print(roundcube.logs_tail())
            raise
    finally:
        browser.close()
