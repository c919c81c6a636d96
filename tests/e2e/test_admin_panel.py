"""
Issue #14's acceptance: the admin panel in Debian's Chromium against a real ``twistd``, through
a whole outage and its recovery, the way an MSP's people use it.

1. The operator logs in with the generated first password, creates a reseller with a logo and
   colours, and the reseller's admin account.
2. The reseller's admin logs in and sees the reseller's branding (its product name, its logo,
   its colour on the page's header), creates a customer, and adds ``example.test`` through
   Continuity → Add Domain with the labelled fields, delivery mode "Both (local + relay)", and a
   relay host on a loopback port where nothing listens yet.  The page shows what to configure
   for configurations A, B and C.
3. Mail sent to the intake appears: the dashboard shows the domain in outage (within the
   monitor's time) and its portal open; Queue Manager → the domain → Load Queue lists the
   message by its subject; it is held, then released.
4. A real Postfix starts on the relay port: the dashboard shows the drain (the relay's
   deliveries) and the queue empties; the events page lists the outage with its duration, and
   the drain.
5. A customer admin of another customer opens this domain's page, queue and events by URL: 404.
6. A page on another origin posts a form to the panel: refused, nothing changes (the cookie is
   SameSite=Strict, and the origin is checked).

Screenshots of every page, wide and phone-sized (390 × 844, where nothing may scroll sideways),
are saved in ``artifacts/panel/`` (or ``$STRATA_ARTIFACTS/panel``) for the closing note and for
anyone to look at.  Chromium, chromedriver and Postfix are required peers: missing, the test
fails.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.peers.browser import Browser
from tests.peers.fixtures import PostfixFactory
from tests.peers.net import free_port
from tests.peers.postfix import maildir_messages, postfix_installed
from tests.peers.strata import StrataProcess, bootstrap_password

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("STRATA_ARTIFACTS", ROOT / "artifacts")) / "panel"
DOMAIN = "example.test"
SUBJECT = "Panel acceptance: the quarterly numbers"
PASSWORD = "correct horse battery staple"  # noqa: S105 (the test accounts')
PRODUCT = "Acme Continuity"
PRIMARY_COLOUR = "#8a1c7c"
MONITOR = "[monitor]\nprobe_interval = 0.5\nretry_interval = 0.5\ndown_after = 2\nup_after = 2\n"
PHONE = (390, 844)
# What a page may raise while the browser is still on its way to the next one: an element
# gone, or (Chromium's DevTools) "Node with given id does not belong to the document".
_PAGE_TURNING = (NoSuchElementException, StaleElementReferenceException, WebDriverException)
WIDE = (1280, 900)
T = TypeVar("T")


def make_logo(width: int = 120, height: int = 36) -> bytes:
    """The reseller's logo: a PNG made here (so nothing is downloaded), two colour bands."""
    rows = b"".join(
        b"\x00" + (bytes((138, 28, 124)) if y < height // 2 else bytes((224, 123, 0))) * width
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# -- driving the pages ---------------------------------------------------------------------


class Panel:
    """The panel as a person sees it: pages by URL, fields by their labels, buttons by text."""

    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver = driver
        self.base = base
        self.shots: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait(self, condition: Callable[[WebDriver], T | None], what: str, timeout: float = 30) -> T:
        found: T = WebDriverWait(
            self.driver, timeout, poll_frequency=0.2, ignored_exceptions=_PAGE_TURNING
        ).until(lambda d: condition(d) or False, message=what)
        return found

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def form(self, button: str) -> WebElement:
        """The form whose submit button reads ``button``."""
        return self.driver.find_element(
            By.XPATH, f"//form[.//button[normalize-space()={_xpath_text(button)}]]"
        )

    def field(self, label: str, within: WebElement | None = None) -> WebElement:
        """The input that ``<label>`` ``label`` names (in ``within``, or the page)."""
        scope: Any = within if within is not None else self.driver
        found = scope.find_element(By.XPATH, f".//label[normalize-space()={_xpath_text(label)}]")
        target = found.get_attribute("for")
        assert target, f"label {label!r} names no field"
        return self.driver.find_element(By.ID, target)

    def fill(self, form: WebElement, values: dict[str, str]) -> None:
        for label, value in values.items():
            element = self.field(label, form)
            kind = element.get_attribute("type")
            if element.tag_name == "select":
                Select(element).select_by_visible_text(value)
            elif kind == "color":
                self.driver.execute_script("arguments[0].value = arguments[1]", element, value)
            elif kind == "file":
                element.send_keys(value)
            elif kind == "checkbox":
                if element.is_selected() != (value == "on"):
                    element.click()
            else:
                element.clear()
                element.send_keys(value)

    def press(self, button: str, within: WebElement | None = None) -> None:
        scope: Any = within if within is not None else self.driver
        scope.find_element(By.XPATH, f".//button[normalize-space()={_xpath_text(button)}]").click()

    def submit(self, button: str, values: dict[str, str]) -> None:
        form = self.form(button)
        self.fill(form, values)
        self.press(button, form)

    def login(self, name: str, password: str) -> None:
        self.open("/login")
        self.submit("Log in", {"Name": name, "Password": password})
        self.wait(lambda d: "/login" not in d.current_url, f"{name} logged in")

    def logout(self) -> None:
        self.press("Log out")
        self.wait(lambda d: "/login" in d.current_url, "logged out")

    def shoot(self, name: str) -> None:
        """Screenshots of this page, wide and phone-sized; on the phone nothing scrolls
        sideways."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for label, (width, height) in (("wide", WIDE), ("phone", PHONE)):
            self.driver.set_window_size(width, height)
            overflow = self.driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            if label == "phone":
                wide = self.driver.execute_script(_OVERFLOWING)
                assert overflow <= 1, f"{name}: {overflow}px wider than a phone: {wide}"
            path = ARTIFACTS / f"{name}-{label}.png"
            self.driver.save_screenshot(str(path))
            self.shots.append(path)
        self.driver.set_window_size(*WIDE)

    def status_of(self, domain: str) -> str:
        """The dashboard's state badge for ``domain``."""
        return str(
            self.driver.find_element(
                By.CSS_SELECTOR, f'tr[data-domain="{domain}"] td[data-label="Status"] .state'
            ).text
        )

    def cell(self, domain: str, column: str) -> str:
        return str(
            self.driver.find_element(
                By.CSS_SELECTOR, f'tr[data-domain="{domain}"] td[data-label="{column}"]'
            ).text
        )


# The elements that stick out to the right of a phone's screen (for the failure message).
_OVERFLOWING = """
return Array.from(document.querySelectorAll("body *"))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(0, 8)
  .map(e => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className + " "
       + Math.round(e.getBoundingClientRect().right));
"""


def _xpath_text(text: str) -> str:
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", '\"', ".join(f'"{part}"' for part in text.split('"')) + ")"


# -- peers ---------------------------------------------------------------------------------


@pytest.fixture
def strata(tmp_path: Path) -> Iterator[StrataProcess]:
    server = StrataProcess(tmp_path / "strata", admin_port=free_port(), extra_config=MONITOR)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class EvilSite:
    """Another origin (a different port) whose page posts a form to the panel on load."""

    def __init__(self, target: str) -> None:
        page = (
            "<!doctype html><html><body>"
            f'<form id="f" method="post" action="{target}">'
            '<input name="scope" value="matching"><input name="action" value="delete">'
            f'<input name="domain" value="{DOMAIN}"><input name="csrf" value="guessed">'
            '</form><script>document.getElementById("f").submit()</script></body></html>'
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: object) -> None:
                pass

        # Threads: Chromium may open a connection it never uses, which must not hold up the
        # server (a daemon thread each, so closing never waits for them).
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EvilSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_mail(port: int, subject: str) -> None:
    """Send a message to the intake.  A domain just added reaches the intake's copy of the
    domains within ``storage.reload_interval`` (0.5 s): until then it is refused as any
    unknown domain is, so try again for a few seconds."""
    message = EmailMessage()
    message["From"] = "boss@sender.test"
    message["To"] = f"alice@{DOMAIN}"
    message["Subject"] = subject
    message.set_content("Numbers attached in spirit.\n")
    deadline = time.monotonic() + 5
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.send_message(message)
            return
        except smtplib.SMTPRecipientsRefused:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- the test --------------------------------------------------------------------------------


def test_an_msp_runs_an_outage_from_the_panel(
    strata: StrataProcess, browser: Browser, postfix_factory: PostfixFactory, tmp_path: Path
) -> None:
    assert postfix_installed(), "Postfix is required (apt-get install postfix)"
    started = time.monotonic()

    def phase(name: str) -> None:
        print(f"{time.monotonic() - started:6.1f} s  {name}")

    first_password = bootstrap_password(strata)
    base = f"http://127.0.0.1:{strata.admin_port}"
    panel = Panel(browser.driver, base)
    relay_port = free_port()
    logo = tmp_path / "acme-logo.png"
    logo.write_bytes(make_logo())

    # 1. The operator: a reseller with a logo and colours, and its admin.
    panel.login("admin", first_password)
    panel.shoot("dashboard-operator")
    panel.open("/tenants")
    panel.submit(
        "Add reseller",
        {"Name": "acme", "Product name": PRODUCT, "Primary colour": PRIMARY_COLOUR,
         "Support email": "support@acme.test"},
    )  # fmt: skip
    panel.wait(lambda d: "/tenants/resellers/acme" in d.current_url, "the reseller's page")
    panel.submit("Save branding", {"Logo": str(logo)})
    panel.wait(lambda d: "Branding of acme saved" in panel.text(), "the logo saved")
    panel.shoot("reseller")
    panel.submit(
        "Add admin account",
        {"Account name": "acme-admin", "Password": PASSWORD, "Password again": PASSWORD},
    )
    panel.wait(lambda d: "acme-admin" in panel.text(), "the reseller's admin account")
    panel.shoot("tenants-operator")
    panel.logout()

    phase("operator done")
    # 2. The reseller's admin: its branding, a customer, and the domain.
    panel.login("acme-admin", PASSWORD)
    brand = panel.driver.find_element(By.CSS_SELECTOR, ".brand")
    assert PRODUCT in brand.text
    header = panel.driver.find_element(By.CSS_SELECTOR, "header.top")
    assert header.value_of_css_property("background-color") == "rgba(138, 28, 124, 1)"
    logo_shown = panel.driver.find_element(By.CSS_SELECTOR, ".brand img.logo")
    assert panel.driver.execute_script("return arguments[0].naturalWidth", logo_shown) == 120
    panel.open("/tenants")
    panel.submit("Add customer", {"Name": "globex"})
    panel.wait(lambda d: "/tenants/customers/globex" in d.current_url, "the customer's page")
    panel.submit(
        "Add admin account",
        {"Account name": "globex-admin", "Password": PASSWORD, "Password again": PASSWORD},
    )
    panel.wait(lambda d: "globex-admin" in panel.text(), "the customer's admin account")
    panel.open("/tenants")
    panel.submit("Add customer", {"Name": "initech"})
    panel.wait(lambda d: "/tenants/customers/initech" in d.current_url, "the second customer")
    panel.submit(
        "Add admin account",
        {"Account name": "initech-admin", "Password": PASSWORD, "Password again": PASSWORD},
    )
    panel.wait(lambda d: "initech-admin" in panel.text(), "the other customer's admin")

    phase("tenants done")
    # Continuity → Add Domain.
    panel.open("/")
    panel.driver.find_element(By.LINK_TEXT, "Add Domain").click()
    panel.wait(lambda d: d.current_url.endswith("/domains/add"), "the Add Domain page")
    panel.shoot("domain-add")
    panel.submit(
        "Add Domain",
        {
            "Domain name": DOMAIN,
            "Customer": "globex",
            "Delivery mode": "Both (local + relay)",
            "Relay host": f"127.0.0.1:{relay_port}",
            "Monitoring": "on",
            "Alert email addresses": "oncall@globex.test, it@globex.test",
        },
    )
    panel.wait(lambda d: "MX" in panel.text() and DOMAIN in panel.text(), "the A/B/C guide")
    text = panel.text()
    assert "20 strata.test." in text and f"strata.test:{strata.port}" in text, text
    panel.shoot("domain-added")

    phase("domain added")
    # 3. Mail arrives during the outage.
    send_mail(strata.port, SUBJECT)
    panel.open("/")
    deadline = time.monotonic() + 60
    while panel.status_of(DOMAIN) != "outage" or panel.cell(DOMAIN, "Portal") != "open":
        assert time.monotonic() < deadline, panel.text()
        time.sleep(1)
        panel.open("/")
    assert panel.cell(DOMAIN, "Queued") == "1"
    panel.shoot("dashboard-outage")
    panel.open(f"/domains/{DOMAIN}")
    panel.shoot("domain-outage")

    phase("outage seen")
    panel.driver.find_element(By.LINK_TEXT, "Queue Manager").click()
    panel.submit("Load Queue", {"Domain": DOMAIN})
    panel.wait(lambda d: SUBJECT in panel.text(), "the message in the queue")
    panel.shoot("queue")
    row = panel.driver.find_element(
        By.XPATH, f"//tr[.//a[normalize-space()={_xpath_text(SUBJECT)}]]"
    )
    row.find_element(By.CSS_SELECTOR, "input[name=id]").click()
    panel.press("Hold")
    panel.wait(lambda d: "Held 1 message" in panel.text(), "held")
    assert strata.queue()[0]["state"] == "held"
    row = panel.driver.find_element(
        By.XPATH, f"//tr[.//a[normalize-space()={_xpath_text(SUBJECT)}]]"
    )
    assert "held" in row.text
    row.find_element(By.CSS_SELECTOR, "input[name=id]").click()
    panel.press("Release")
    panel.wait(lambda d: "Released 1 message" in panel.text(), "released")
    assert strata.queue()[0]["state"] == "queued"
    panel.driver.find_element(By.PARTIAL_LINK_TEXT, SUBJECT).click()
    panel.wait(lambda d: "Subject: " + SUBJECT in panel.text(), "the message view")
    panel.shoot("queue-message")

    phase("queue done")
    # 4. The primary comes back: a real Postfix on the relay port.
    primary = postfix_factory.primary([DOMAIN], smtpd_port=relay_port)
    try:
        maildir = primary.maildir
        assert maildir is not None
        deadline = time.monotonic() + 60
        while not maildir_messages(maildir):
            assert time.monotonic() < deadline, "the relay never delivered"
            time.sleep(0.5)
        panel.open("/")
        panel.wait(lambda d: panel.cell(DOMAIN, "Queued") == "0", "the queue empty")
        assert panel.status_of(DOMAIN) in ("normal", "draining")
        assert "1 delivered" in panel.cell(DOMAIN, "Relay, 24 h")
        panel.shoot("dashboard-drained")
        panel.open(f"/events?domain={DOMAIN}")
        outages = panel.driver.find_elements(By.CSS_SELECTOR, "#outages tbody tr")
        assert len(outages) == 1, panel.text()
        ended = outages[0].find_element(By.CSS_SELECTOR, 'td[data-label="Ended"]').text
        duration = outages[0].find_element(By.CSS_SELECTOR, 'td[data-label="Duration"]').text
        assert ended.endswith("UTC") and duration.endswith((" s", " min")), outages[0].text
        text = panel.text()
        assert "outage.started" in text and "outage.ended" in text, text
        assert "relay.drain_finished" in text and "1 delivered" in text, text
        panel.shoot("events")
        # The outage's alert emails went out in the reseller's name.
        alerts = re.findall(r"alert for example\.test queued to .* as (\w+)", text)
        assert alerts, text
        shown = json.loads(strata.cli("queue", "show", alerts[0], "--json").stdout)
        headers = shown["headers"]
        assert f"From: {PRODUCT} <support@acme.test>" in headers, headers
        assert shown["sender"] == "support@acme.test" and PRODUCT in headers, shown
        (delivered,) = maildir_messages(maildir)
        assert SUBJECT.encode() in delivered.read_bytes()
    finally:
        primary.stop()  # the factory stops it too; now, so the rest runs without it

    phase("drained")
    panel.open(f"/domains/{DOMAIN}")
    panel.shoot("domain")
    for page in ("/domains", "/account", "/tenants"):
        panel.open(page)
        panel.shoot(page.strip("/"))
    panel.logout()

    phase("pages shot")
    # 5. Another customer's admin cannot open any of it by URL.
    panel.login("initech-admin", PASSWORD)
    for path in (f"/domains/{DOMAIN}", f"/queue?domain={DOMAIN}", f"/events?domain={DOMAIN}"):
        panel.open(path)
        assert "Not found" in panel.driver.title, (path, panel.text())
        assert SUBJECT not in panel.text() and "globex" not in panel.text()
        # The status itself, as the browser got it (with this admin's session cookie).
        status = panel.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0], {credentials: 'same-origin'}).then(r => done(r.status));",
            path,
        )
        assert status == 404, (path, status)
    panel.open("/")
    assert DOMAIN not in panel.text()
    panel.logout()

    phase("tenancy done")
    # 6. A form posted from another origin changes nothing, logged in or not.
    panel.login("acme-admin", PASSWORD)
    send_mail(strata.port, "Still here after the forged form")
    before = strata.queue()
    with EvilSite(base + "/queue/actions") as evil:
        panel.driver.get(evil.url)
        panel.wait(lambda d: d.current_url.startswith(base), "the forged form posted")
    assert strata.queue() == before
    panel.open("/")
    assert PRODUCT in panel.text()  # still logged in: the forged post did not log anybody out
    print("screenshots:", *[str(p) for p in panel.shots], sep="\n  ")
