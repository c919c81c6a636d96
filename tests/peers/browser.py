"""
Headless Chromium for end-to-end tests: Debian's ``chromium`` driven through Selenium and Debian's
``chromium-driver``, with a fresh profile and a private download directory.

Only the system's binaries are used (``/usr/bin/chromium``, ``/usr/bin/chromedriver``): the
driver's path is given to Selenium, so Selenium Manager never runs and nothing is downloaded.
The browser is started with everything that would talk to the network on its own turned off
(component updates, sync, background networking, QUIC), so a test's only traffic is to the
loopback servers it visits.  ``close()`` quits the browser and then ends chromedriver's process
group, so no chromium process outlives the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "apt-get install chromium chromium-driver; pip install selenium"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--password-store=basic",
    "--lang=en-US",
)


def chromium_missing() -> str | None:
    """Why this machine cannot run the browser (a sentence with the fix), or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing ({INSTALL_HINT})"
    return None


class Browser:
    """
    One headless Chromium with its profile in ``root/profile`` and downloads in
    ``root/downloads``.  ``driver`` is the Selenium WebDriver.
    """

    def __init__(
        self,
        root: Path,
        *,
        width: int = 1400,
        height: int = 1000,
        host_map: dict[str, str] | None = None,
    ) -> None:
        """``host_map``: host names the browser resolves to the given address, whatever DNS
        says (``{"webmail.acme-it.test": "127.0.0.1"}``), to visit a site by a name of its own."""
        self.root = root
        self.host_map = dict(host_map or {})
        self.profile = root / "profile"
        self.downloads = root / "downloads"
        self.driver_log = root / "chromedriver.log"
        self.width = width
        self.height = height
        self._driver: webdriver.Chrome | None = None
        self._service: Service | None = None

    @property
    def driver(self) -> webdriver.Chrome:
        assert self._driver is not None, "Browser.start() first"
        return self._driver

    def start(self) -> webdriver.Chrome:
        missing = chromium_missing()
        if missing is not None:
            raise RuntimeError(missing)
        for d in (self.profile, self.downloads):
            d.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={self.width},{self.height}")
        if self.host_map:
            rules = ", ".join(f"MAP {host} {address}" for host, address in self.host_map.items())
            options.add_argument(f"--host-resolver-rules={rules}")
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(self.downloads),
                "download.prompt_for_download": False,
                "download.directory_upgrade": True,
                "plugins.always_open_pdf_externally": True,  # download PDFs, do not view them
                "safebrowsing.enabled": False,
                "credentials_enable_service": False,
                "profile.password_manager_enabled": False,
            },
        )
        self._service = Service(
            executable_path=str(CHROMEDRIVER),
            log_output=str(self.driver_log),
            popen_kw={"start_new_session": True},  # chromedriver and chromium: one group
        )
        self._driver = webdriver.Chrome(service=self._service, options=options)
        # Headless Chromium ignores the download prefs unless told through the DevTools protocol.
        self._driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(self.downloads)},
        )
        return self._driver

    def close(self) -> None:
        """Quit the browser, then make sure chromedriver's process group is gone."""
        driver, self._driver = self._driver, None
        if driver is not None:
            try:
                driver.quit()
            except WebDriverException:
                pass
        service, self._service = self._service, None
        process = getattr(service, "process", None) if service is not None else None
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                process.wait(10)
            except Exception:  # noqa: BLE001, S110 - already reaped by Selenium
                pass

    def save_evidence(self, directory: Path, name: str) -> list[Path]:
        """A screenshot and the page source as ``directory/name.png`` and ``.html``."""
        directory.mkdir(parents=True, exist_ok=True)
        saved: list[Path] = []
        if self._driver is None:
            return saved
        png, html = directory / f"{name}.png", directory / f"{name}.html"
        try:
            if self._driver.save_screenshot(str(png)):
                saved.append(png)
        except WebDriverException:
            pass
        try:
            html.write_text(self._driver.page_source)
            saved.append(html)
        except WebDriverException:
            pass
        return saved

    def wait_for_download(self, name: str, timeout: float = 20.0) -> Path:
        """The finished download ``name`` (Chromium writes ``.crdownload`` until it is done)."""
        target = self.downloads / name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            partial = list(self.downloads.glob("*.crdownload"))
            if target.exists() and not partial:
                return target
            time.sleep(0.05)
        present = sorted(p.name for p in self.downloads.iterdir())
        raise AssertionError(f"no download {name!r} within {timeout}s; downloads: {present}")

    def clear_downloads(self) -> None:
        shutil.rmtree(self.downloads, ignore_errors=True)
        self.downloads.mkdir(parents=True)
