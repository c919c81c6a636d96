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

import os
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.peers.browser import Browser
from tests.peers.net import free_port
from tests.peers.postfix import PostfixInstance, maildir_messages, postfix_installed
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
WIDE = (1280, 900)
T = TypeVar("T")

# A 2×2 PNG (the reseller's logo), made here so nothing is downloaded.
LOGO = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73"
    "0000001649444154789c63f8cfc0f09f8181e13f0303c37f00002dfa05fb7f1f1a"
    "6f0000000049454e44ae426082"
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
        found: T = WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(
            lambda d: condition(d) or False, message=what
        )
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
                assert overflow <= 1, f"{name}: the page is {overflow}px wider than a phone"
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


@pytest.fixture
def panel_browser(tmp_path: Path) -> Iterator[Browser]:
    browser = Browser(tmp_path / "browser", width=WIDE[0], height=WIDE[1])
    try:
        browser.start()
        yield browser
    finally:
        browser.close()


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

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EvilSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_mail(port: int, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "boss@sender.test"
    message["To"] = f"alice@{DOMAIN}"
    message["Subject"] = subject
    message.set_content("Numbers attached in spirit.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(message)


# -- the test --------------------------------------------------------------------------------


def test_an_msp_runs_an_outage_from_the_panel(
    strata: StrataProcess, panel_browser: Browser, tmp_path: Path
) -> None:
    assert postfix_installed(), "Postfix is required (apt-get install postfix)"
    first_password = bootstrap_password(strata)
    base = f"http://127.0.0.1:{strata.admin_port}"
    panel = Panel(panel_browser.driver, base)
    relay_port = free_port()
    logo = tmp_path / "acme-logo.png"
    logo.write_bytes(LOGO)

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
    panel.wait(lambda d: "Branding saved" in panel.text(), "the logo saved")
    panel.shoot("reseller")
    panel.submit(
        "Add admin account",
        {"Account name": "acme-admin", "Password": PASSWORD, "Password again": PASSWORD},
    )
    panel.wait(lambda d: "acme-admin" in panel.text(), "the reseller's admin account")
    panel.shoot("tenants-operator")
    panel.logout()

    # 2. The reseller's admin: its branding, a customer, and the domain.
    panel.login("acme-admin", PASSWORD)
    brand = panel.driver.find_element(By.CSS_SELECTOR, ".brand")
    assert PRODUCT in brand.text
    header = panel.driver.find_element(By.CSS_SELECTOR, "header.top")
    assert header.value_of_css_property("background-color") == "rgba(138, 28, 124, 1)"
    logo_shown = panel.driver.find_element(By.CSS_SELECTOR, ".brand img.logo")
    assert panel.driver.execute_script("return arguments[0].naturalWidth", logo_shown) == 2
    panel.open("/tenants")
    panel.submit("Add customer", {"Name": "globex"})
    panel.wait(lambda d: "/tenants/customers/globex" in d.current_url, "the customer's page")
    panel.submit(
        "Add admin account",
        {"Account name": "globex-admin", "Password": PASSWORD, "Password again": PASSWORD},
    )
    panel.open("/tenants")
    panel.submit("Add customer", {"Name": "initech"})
    panel.wait(lambda d: "/tenants/customers/initech" in d.current_url, "the second customer")
    panel.submit(
        "Add admin account",
        {"Account name": "initech-admin", "Password": PASSWORD, "Password again": PASSWORD},
    )
    panel.wait(lambda d: "initech-admin" in panel.text(), "the other customer's admin")

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

    # 4. The primary comes back: a real Postfix on the relay port.
    primary = PostfixInstance.primary(tmp_path / "postfix", relay_port, [DOMAIN])
    primary.start()
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
        text = panel.text()
        assert "ongoing" not in text.split("Event log")[0], text
        panel.shoot("events")
        assert "outage" in text.lower() and "deliver" in text.lower(), text
        (delivered,) = maildir_messages(maildir)
        assert SUBJECT.encode() in delivered.read_bytes()
    finally:
        primary.stop()

    panel.open(f"/domains/{DOMAIN}")
    panel.shoot("domain")
    for page in ("/domains", "/account", "/tenants"):
        panel.open(page)
        panel.shoot(page.strip("/"))
    panel.logout()

    # 5. Another customer's admin cannot open any of it by URL.
    panel.login("initech-admin", PASSWORD)
    for path in (f"/domains/{DOMAIN}", f"/queue?domain={DOMAIN}", f"/events?domain={DOMAIN}"):
        panel.open(path)
        assert "Not found" in panel.driver.title or "Not found" in panel.text(), path
        assert SUBJECT not in panel.text()
    panel.open("/")
    assert DOMAIN not in panel.text()
    panel.logout()

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
