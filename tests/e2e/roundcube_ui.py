"""
Roundcube 1.6's Elastic skin as a user sees it, for Selenium: log in, read the message list, open
a message, download an attachment, quick-search, delete, switch folders, create a folder in
Settings > Folders, reply to a message or compose a new one (recipients, subject, text, an
uploaded attachment) and send it, switch the list to Threads and expand a thread, delete a folder
in Settings > Folders, log out.

Every step waits explicitly for what the user would wait for (a row, a header, a toast), never
for a fixed time, and a step that times out says what it saw instead.  The selectors are those
of ``/usr/share/roundcube/skins/elastic/templates`` (``mail.html``, ``message.html``,
``folders.html``, ``compose.html``, ``includes/menu.html``, ``includes/mail-menu.html``) and
of ``program/js/app.js`` (the thread rows of the message list, the confirmation dialogs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar, cast

from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

T = TypeVar("T")

ROW = "#messagelist tbody tr.message"
ROW_SUBJECT = "td.subject span.subject"
# The button of a confirmation or options dialog (rcmail.simple_dialog: "mainaction <label>").
DIALOG_BUTTON = ".ui-dialog .ui-dialog-buttonpane button.mainaction"

# What app.js knows of one list row in Threads mode (rcube_list_widget.rows[uid]): depth 0 is a
# thread's root; a reply has depth 1 and its parent's UID; ``expanded`` says whether the row's
# children are shown.  The row's place in the table and whether it is on screen come with it.
_THREAD_ROWS_JS = """
var list = rcmail.message_list, out = [];
$('#messagelist tbody tr.message').each(function(position) {
  var row = list.rows[this.uid] || {}, subject = this.querySelector('td.subject span.subject');
  out.push({uid: String(this.uid), subject: subject ? subject.textContent.trim() : '',
            depth: row.depth || 0, parent_uid: String(row.parent_uid || ''),
            has_children: !!row.has_children, expanded: !!row.expanded,
            shown: this.style.display != 'none', position: position,
            classes: this.className, indent: $('td.subject', this).css('padding-left')});
});
return out;
"""

# Roundcube is idle: no request in flight (``busy``), nothing "Loading..." on screen.
_IDLE_JS = (
    "return !!(window.rcmail && !rcmail.busy"
    " && !document.querySelector('#messagestack div.loading'));"
)
# The preview pane (if the layout has one) shows the selected message, and nothing is loading.
_PREVIEW_SHOWN_JS = (
    "var f = document.getElementById('messagecontframe');"
    " if (!f || !f.offsetParent) return true;"
    " var w = f.contentWindow, uid = rcmail.get_single_uid();"
    " return !!(uid && w && w.rcmail && w.rcmail.env && String(w.rcmail.env.uid) == String(uid)"
    " && w.document.readyState == 'complete' && !rcmail.busy);"
)


class RoundcubeUI:
    """One browser session on one Roundcube at ``url``."""

    def __init__(self, driver: WebDriver, url: str, timeout: float = 15.0) -> None:
        self.driver = driver
        self.url = url
        self.timeout = timeout

    # -- waiting --------------------------------------------------------------------------------

    def wait(self, condition: Callable[[WebDriver], T], what: str,
             timeout: float | None = None) -> T:  # fmt: skip
        """Poll ``condition`` until it is truthy; on timeout, fail saying ``what`` was awaited."""

        def guarded(driver: WebDriver) -> T | bool:
            try:
                return condition(driver)
            except (StaleElementReferenceException, NoSuchElementException):
                return False  # the list or page is being redrawn: look again

        try:
            result = WebDriverWait(self.driver, timeout or self.timeout, 0.05).until(guarded)
        except TimeoutException:
            raise AssertionError(
                f"timed out after {timeout or self.timeout}s waiting for {what};"
                f" page {self.driver.current_url!r}; messages shown: {self.messages()!r}"
            ) from None
        return cast(T, result)

    def wait_idle(self) -> None:
        self.wait(lambda d: d.execute_script(_IDLE_JS), "Roundcube to finish its requests")

    def messages(self) -> list[str]:
        """The toasts Roundcube shows (errors, confirmations), for failure reports."""
        try:
            return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, "#messagestack div")
                    if e.text]  # fmt: skip
        except WebDriverException:
            return []

    def visible(self, css: str) -> WebElement | None:
        for element in self.driver.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed():
                return element
        return None

    def click(self, css: str, what: str) -> None:
        """Click the first visible ``css`` once it is enabled (Roundcube marks a button whose
        command is not available yet with the class ``disabled``) and Roundcube is idle."""

        def ready(driver: WebDriver) -> WebElement | None:
            e = self.visible(css)
            if e is None or not e.is_enabled():
                return None
            return None if "disabled" in (e.get_attribute("class") or "").split() else e

        element = self.wait(ready, what)
        assert isinstance(element, WebElement)
        self.wait_idle()  # Roundcube drops a command given while it is busy
        element.click()

    # -- login ----------------------------------------------------------------------------------

    def submit_login(self, user: str, password: str) -> None:
        self.driver.get(self.url)
        form_user = self.wait(lambda d: d.find_element(By.ID, "rcmloginuser"), "the login form")
        form_user.clear()
        form_user.send_keys(user)
        password_field = self.driver.find_element(By.ID, "rcmloginpwd")
        password_field.clear()
        password_field.send_keys(password)
        self.driver.find_element(By.ID, "rcmloginsubmit").click()

    def login(self, user: str, password: str) -> float:
        """Log in and wait for the INBOX list; returns the seconds it took."""
        started = time.monotonic()
        self.submit_login(user, password)
        self.wait(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "#messagelist")
                and d.execute_script("return window.rcmail && rcmail.env.mailbox == 'INBOX'")
            ),
            f"the mail view after logging in as {user}",
        )
        self.wait_idle()
        return time.monotonic() - started

    def login_refused(self, user: str, password: str) -> str:
        """Submit a login that must fail; returns the error Roundcube shows."""
        self.submit_login(user, password)

        def outcome(driver: WebDriver) -> str | None:
            if driver.execute_script("return !!(window.rcmail && rcmail.task != 'login')"):
                return "logged in"
            toast = self.visible("#messagestack div.warning, #messagestack div.error")
            return toast.text if toast is not None and toast.text else None

        shown = self.wait(outcome, f"the login of {user} to be refused")
        assert shown is not None
        assert shown != "logged in", f"Roundcube logged {user} in: {self.driver.current_url}"
        assert self.driver.find_elements(By.ID, "rcmloginuser"), "left the login page"
        return shown

    def logout(self) -> None:
        self.click("#taskmenu a.logout", "the Logout button")
        self.wait(lambda d: d.find_elements(By.ID, "rcmloginuser"), "the login form after logout")

    # -- the message list -----------------------------------------------------------------------

    def rows(self) -> list[WebElement]:
        """The list's rows on screen (a removed row may linger hidden in the table)."""
        return [r for r in self.driver.find_elements(By.CSS_SELECTOR, ROW) if r.is_displayed()]

    def subjects(self) -> list[str]:
        return [r.find_element(By.CSS_SELECTOR, ROW_SUBJECT).text.strip() for r in self.rows()]

    def wait_subjects(self, expected: set[str], where: str) -> list[str]:
        """Wait until the list shows exactly the subjects ``expected`` (in any order)."""
        seen: list[list[str]] = [[]]

        def shows(driver: WebDriver) -> bool:
            if not driver.execute_script(_IDLE_JS):
                return False
            seen[0] = self.subjects()
            return set(seen[0]) == expected and len(seen[0]) == len(expected)

        try:
            self.wait(shows, f"{where} to list {sorted(expected)}")
        except AssertionError as e:
            raise AssertionError(f"{e}; the list showed {seen[0]}") from None
        return seen[0]

    def row(self, subject: str) -> WebElement:
        for row in self.rows():
            if row.find_element(By.CSS_SELECTOR, ROW_SUBJECT).text.strip() == subject:
                return row
        raise NoSuchElementException(f"no row with subject {subject!r}")

    def select(self, subject: str) -> None:
        """Click the row and wait for its preview, as a user does before acting on it.

        Roundcube loads the preview after a short timer and is busy until it is shown; a toolbar
        command given meanwhile is silently dropped, so the wait is part of the step.
        """
        row = self.wait(lambda d: self.row(subject), f"the row {subject!r}")
        row.find_element(By.CSS_SELECTOR, "td.subject").click()
        self.wait(
            lambda d: "selected" in (self.row(subject).get_attribute("class") or ""),
            f"the row {subject!r} to be selected",
        )
        self.wait(lambda d: d.execute_script(_PREVIEW_SHOWN_JS), f"the preview of {subject!r}")
        self.wait_idle()

    def open_message(self, subject: str) -> None:
        """Double-click the row: Roundcube shows the message on a page of its own."""
        row = self.wait(lambda d: self.row(subject), f"the row {subject!r}")
        ActionChains(self.driver).double_click(
            row.find_element(By.CSS_SELECTOR, "td.subject")
        ).perform()
        self.wait(
            lambda d: (
                d.execute_script("return window.rcmail && rcmail.env.action == 'show'")
                and d.find_elements(By.CSS_SELECTOR, "h2.subject")
            ),
            f"the message page of {subject!r}",
        )
        self.wait_idle()

    def shown_subject(self) -> str:
        """The subject on the message page, without the screen-reader label and the links."""
        return str(
            self.driver.execute_script(
                "var h = document.querySelector('h2.subject').cloneNode(true);"
                "h.querySelectorAll('.voice, a').forEach(function(v) { v.remove(); });"
                "return h.textContent.trim();"
            )
        )

    def attachment_names(self) -> list[str]:
        return [
            e.text.strip()
            for e in self.driver.find_elements(
                By.CSS_SELECTOR, "#attachment-list li .attachment-name"
            )
        ]

    def download_attachment(self, name: str) -> None:
        """The attachment's options menu, then Download."""
        item = self.wait(
            lambda d: next(
                (li for li in d.find_elements(By.CSS_SELECTOR, "#attachment-list li")
                 if li.find_element(By.CSS_SELECTOR, ".attachment-name").text.strip() == name),
                None,
            ),
            f"the attachment {name!r}",
        )  # fmt: skip
        assert item is not None
        item.find_element(By.CSS_SELECTOR, "a.dropdown").click()
        self.click("#attachmenudownload", "Download in the attachment menu")

    def back_to_mail(self) -> None:
        self.click("#taskmenu a.mail", "the Mail button")
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#messagelist"), "the message list")
        self.wait_idle()

    def search(self, text: str) -> None:
        """Roundcube's quick search (subject by default), submitted with Enter."""
        box = self.wait(lambda d: self.visible("#mailsearchform"), "the quick-search box")
        assert box is not None
        box.clear()
        box.send_keys(text, Keys.ENTER)
        self.wait_idle()

    def reset_search(self) -> None:
        self.click("#layout-list .searchbar a.reset", "the reset-search button")
        self.wait_idle()

    def delete_selected(self, subject: str) -> None:
        self.select(subject)
        self.click("#toolbar-menu a.delete", "the Delete button")
        self.wait(lambda d: subject not in self.subjects(), f"{subject!r} to leave the list")
        self.wait_idle()

    # -- list mode and threads ------------------------------------------------------------------

    def set_list_mode(self, mode: str) -> None:
        """The list's Options dialog: List mode ``list`` or ``threads``, Save; waits for the list
        redrawn in that mode.

        Roundcube offers the List mode field (and threads at all) only when the IMAP server
        announces THREAD=REFS, THREAD=REFERENCES or THREAD=ORDEREDSUBJECT
        (``rcube_imap::set_threading``, ``env.threads`` in ``actions/mail/index.php``).
        """
        if not self.driver.execute_script("return !!rcmail.env.threads"):
            raise AssertionError(
                "Roundcube offers no Threads list mode: the IMAP server announced no THREAD"
            )
        self.click("#listmenulink", "the Options button of the message list")
        field = self.wait(
            lambda d: next(
                (e for e in d.find_elements(By.CSS_SELECTOR, ".ui-dialog select[name='mode']")
                 if e.is_displayed()),
                None,
            ),
            "the List mode field of the list options dialog",
        )  # fmt: skip
        assert field is not None
        Select(field).select_by_value(mode)
        self.click(DIALOG_BUTTON, "the Save button of the list options dialog")
        threads = mode == "threads"
        self.wait(
            lambda d: (
                bool(d.execute_script("return rcmail.env.threading")) == threads
                and d.execute_script(_IDLE_JS)
            ),
            f"the message list in {mode} mode",
        )

    def thread_rows(self) -> list[dict[str, object]]:
        """Each row of the list in table order, as app.js threads it (see ``_THREAD_ROWS_JS``)."""
        rows = self.driver.execute_script(_THREAD_ROWS_JS)
        assert isinstance(rows, list), rows
        return rows

    def expand_thread(self, subject: str) -> None:
        """Click the expand arrow of the thread whose root has ``subject``."""
        row = self.wait(lambda d: self.row(subject), f"the thread root {subject!r}")
        expando = row.find_element(By.CSS_SELECTOR, "div[id^='rcmexpando']")
        assert "collapsed" in (expando.get_attribute("class") or ""), (
            f"the thread {subject!r} is not collapsed: {expando.get_attribute('class')!r}"
        )
        expando.click()
        self.wait(
            lambda d: "expanded" in (expando.get_attribute("class") or ""),
            f"the thread {subject!r} to expand",
        )

    def open_folder(self, name: str) -> None:
        self.click(f'#mailboxlist li.mailbox a[rel="{name}"]', f"the folder {name!r}")
        self.wait(
            lambda d: d.execute_script("return rcmail.env.mailbox") == name,
            f"the folder {name!r} to open",
        )
        self.wait_idle()

    def folder_names(self) -> list[str]:
        """The folders in the mail view's folder list (their IMAP names)."""
        return [
            e.get_attribute("rel") or ""
            for e in self.driver.find_elements(By.CSS_SELECTOR, "#mailboxlist li.mailbox > a")
        ]

    # -- settings -------------------------------------------------------------------------------

    def create_folder(self, name: str) -> None:
        """Settings > Folders > Create: type the name, Save, and wait for it in the list."""
        self.click("#taskmenu a.settings", "the Settings button")
        self.click("#settings-menu li.folders a", "Folders in the settings menu")
        self.wait(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#subscription-table li"),
            "the folder list in Settings",
        )
        self.click("#toolbar-menu a.create", "the Create button")
        frame = self.wait(
            lambda d: d.find_element(By.ID, "preferences-frame"), "the folder form frame"
        )
        self.driver.switch_to.frame(frame)
        try:
            field = self.wait(
                lambda d: (e := self.visible("input[name='_name']")) is not None and e,
                "the folder name field",
            )
            assert isinstance(field, WebElement)
            field.send_keys(name)
            # The form's own Save button (on a phone, Elastic shows a copy in the page footer).
            self.click(".formbuttons button.submit", "the Save button of the folder form")
        finally:
            self.driver.switch_to.default_content()
        self.wait(
            lambda d: any(
                (li.get_attribute("id") or "").startswith("rcmli") and name in li.text.splitlines()
                for li in d.find_elements(By.CSS_SELECTOR, "#subscription-table li")
            ),
            f"the folder {name!r} in Settings > Folders",
        )
        self.wait_idle()

    def delete_folder(self, name: str) -> None:
        """Settings > Folders: select ``name``, Delete, confirm; wait until it leaves the list."""

        def folder_rows(driver: WebDriver) -> list[WebElement]:
            return [
                li
                for li in driver.find_elements(By.CSS_SELECTOR, "#subscription-table li")
                if (li.get_attribute("id") or "").startswith("rcmli")
                and name in li.text.splitlines()
            ]

        self.click("#taskmenu a.settings", "the Settings button")
        self.click("#settings-menu li.folders a", "Folders in the settings menu")
        row = self.wait(lambda d: next(iter(folder_rows(d)), None), f"{name!r} in Settings")
        assert row is not None
        row.find_element(By.CSS_SELECTOR, "a").click()
        # Selecting the folder loads its form and enables Delete (not for special folders).
        self.click("#toolbar-menu a.delete", "the Delete button of Settings > Folders")
        self.click(DIALOG_BUTTON, "Delete in the confirmation dialog")
        self.wait(lambda d: not folder_rows(d), f"the folder {name!r} to leave Settings > Folders")
        self.wait_idle()

    # -- compose --------------------------------------------------------------------------------

    def reply(self) -> None:
        """Reply (to the sender) from the message page or the selected row; waits for the form."""
        self.click("#toolbar-menu a.reply", "the Reply button")
        self.wait_compose("the reply form")

    def compose(self) -> None:
        """The Compose button of the task menu; waits for an empty form."""
        self.click("#taskmenu a.compose", "the Compose button")
        self.wait_compose("the compose form")

    def wait_compose(self, what: str = "the compose form") -> None:
        self.wait(
            lambda d: (
                d.execute_script("return window.rcmail && rcmail.env.action == 'compose'")
                and self.visible("#composebody") is not None
                and self.visible("#compose-subject") is not None
            ),
            what,
        )
        self.wait_idle()

    def recipients(self) -> str:
        """The To field as Roundcube will send it (the hidden ``_to`` the recipient boxes fill)."""
        return str(self.driver.execute_script("return document.getElementById('_to').value"))

    def add_recipients(self, addresses: Iterable[str]) -> None:
        """Type the addresses into To, each ended by a comma (which makes it a recipient box)."""
        wanted = list(addresses)
        field = self.wait(
            lambda d: self.visible("#compose_to .recipient-input input"), "the To input"
        )
        assert field is not None
        field.click()
        field.send_keys("".join(f"{address}, " for address in wanted))
        self.wait(
            lambda d: all(address in self.recipients() for address in wanted),
            f"the recipients {wanted} in To (has {self.recipients()!r})",
        )

    def write_subject(self, subject: str) -> None:
        field = self.wait(lambda d: self.visible("#compose-subject"), "the Subject field")
        assert field is not None
        field.clear()
        field.send_keys(subject)

    def write_body(self, text: str) -> None:
        """Type ``text`` into the (plain-text) body where the caret is (Roundcube puts it where
        the user writes: above or below the quote of a reply, as configured)."""
        body = self.wait(lambda d: self.visible("#composebody"), "the message body")
        assert body is not None
        body.send_keys(text)

    def body_text(self) -> str:
        return str(self.driver.execute_script(
            "return document.getElementById('composebody').value"
        ))  # fmt: skip

    def attach(self, path: Path) -> None:
        """Upload ``path`` as the user's file dialog would: into the (hidden) file input of the
        upload form, whose change starts the upload; waits until the attachment is listed."""
        field = self.wait(
            lambda d: d.find_element(By.CSS_SELECTOR, "form[name='uploadform'] input[type=file]"),
            "the attachment upload input",
        )
        field.send_keys(str(path))
        self.wait(
            lambda d: path.name in self.compose_attachment_names(),
            f"the upload of {path.name!r} to finish",
            timeout=max(self.timeout, 30.0),
        )
        self.wait_idle()

    def compose_attachment_names(self) -> list[str]:
        """The uploaded attachments of the compose form (an upload in progress is not listed)."""
        return [
            e.text.strip()
            for e in self.driver.find_elements(
                By.CSS_SELECTOR, "#attachment-list li[id^='rcmfile'] .attachment-name"
            )
        ]

    def send(self, timeout: float = 30.0) -> None:
        """Send, and wait until Roundcube is back at the message list (it goes there only once
        the message was sent and its copy saved to Sent); an error Roundcube shows fails at once.
        """
        self.click(".formbuttons button.send", "the Send button")

        def outcome(driver: WebDriver) -> str | None:
            error = self.visible("#messagestack div.error, #messagestack div.warning")
            if error is not None and error.text:
                return f"error: {error.text}"
            if driver.execute_script(
                "return !!(window.rcmail && rcmail.env.task == 'mail' && rcmail.env.action == ''"
                " && document.getElementById('messagelist'))"
            ):
                return "sent"
            return None

        result = self.wait(outcome, "the message to be sent", timeout=timeout)
        assert result == "sent", f"Roundcube did not send the message: {result}"
        self.wait_idle()
