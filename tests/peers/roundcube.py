"""
A private Roundcube for end-to-end tests: Debian's ``roundcube-core`` served by ``php -S`` on
127.0.0.1 from a directory of its own, with our ``roundcube-config/config.inc.php`` on top.

Debian keeps Roundcube's code in ``/usr/share/roundcube``, its install path (symlinks to the code,
``temp``, ``logs``, ``config``) in ``/var/lib/roundcube`` and its configuration in
``/etc/roundcube``.  ``program/include/iniset.php`` honours ``INSTALL_PATH`` and
``RCMAIL_CONFIG_DIR`` when they are already defined (and the framework's bootstrap honours
``RCUBE_PLUGINS_DIR``), so the docroot here holds an ``index.php`` that defines them (the install
path stays Debian's; the config and plugin dirs are ours) and then includes Debian's
``index.php``.  ``skins`` and ``program/{js,resources}`` are symlinks to the package's files; the
plugin dir links Debian's plugins and any extra plugin a test names, which the config enables.
The config dir links Debian's ``defaults.inc.php`` and ``mimetypes.php`` and holds our own
``config.inc.php``: a SQLite database, log and temp dirs under ``root``, a random ``des_key``, IMAP
debug logging, then ``include`` of Strata's file, whose ``STRATA_*`` variables come from the php
process's environment.  (``RCUBE_CONFIG_PATH`` is not used: it only *adds* directories, and
``/etc/roundcube/config.inc.php`` would still be read.)

This module never writes to ``/etc/roundcube``, ``/var/lib/roundcube`` or
``/usr/share/roundcube``, and ``stop()`` ends the php server's whole process group (with
``PHP_CLI_SERVER_WORKERS`` the workers would outlive a plain kill of the parent).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import string
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.peers.net import free_port, wait_for_port

ROUNDCUBE_CODE = Path("/usr/share/roundcube")
ROUNDCUBE_INSTALL = Path("/var/lib/roundcube")
ROUNDCUBE_DEFAULTS = Path("/etc/roundcube/defaults.inc.php")
ROUNDCUBE_MIMETYPES = Path("/etc/roundcube/mimetypes.php")
SQLITE_SCHEMA = ROUNDCUBE_CODE / "SQL" / "sqlite.initial.sql"
STRATA_CONFIG = Path(__file__).resolve().parents[2] / "roundcube-config" / "config.inc.php"
STRATA_PLUGIN = STRATA_CONFIG.parent / "plugins" / "strata_portal"
STRATA_BRANDING_PLUGIN = STRATA_CONFIG.parent / "plugins" / "strata_branding"
INSTALL_HINT = "apt-get install roundcube-core roundcube-sqlite3 php-cli php-sqlite3"


def roundcube_missing() -> str | None:
    """Why this machine cannot run the harness (a sentence with the fix), or None."""
    php = shutil.which("php")
    if php is None:
        return f"php is not installed ({INSTALL_HINT})"
    for path in (ROUNDCUBE_CODE / "index.php", ROUNDCUBE_DEFAULTS, SQLITE_SCHEMA,
                 ROUNDCUBE_INSTALL / "program"):  # fmt: skip
        if not path.exists():
            return f"{path} is missing: Debian's roundcube-core is not installed ({INSTALL_HINT})"
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=30).stdout
    if "pdo_sqlite" not in modules.split():
        return f"PHP has no pdo_sqlite ({INSTALL_HINT})"
    return None


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still there (signal 0 probes without killing)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def php_string(value: str) -> str:
    """A single-quoted PHP string literal: only ``\\`` and ``'`` are escaped there."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RoundcubeServer:
    """
    One Roundcube under ``root``, listening on ``http://127.0.0.1:port/``.

    ``imap_host``/``smtp_host`` are Roundcube host strings (``127.0.0.1:1143``, ``tls://...``);
    they reach our config file as ``STRATA_IMAP_HOST``/``STRATA_SMTP_HOST``.  ``extra_php`` is
    appended after our config file (test-only overrides).  Logs: ``log_dir`` (``imap.log`` with
    the whole IMAP conversation, ``errors.log``) and ``php.log`` (the php server's request log).
    """

    def __init__(
        self,
        root: Path,
        *,
        imap_host: str,
        smtp_host: str = "127.0.0.1:9",
        port: int | None = None,
        product_name: str = "Strata Webmail",
        imap_debug: bool = True,
        extra_php: str = "",
        extra_plugins: Mapping[str, Path] | None = None,
        workers: int = 4,
        admin_url: str = "",
    ) -> None:
        self.root = root
        self.port = port or free_port()
        self.imap_host = imap_host
        self.smtp_host = smtp_host
        self.product_name = product_name
        self.imap_debug = imap_debug
        self.extra_php = extra_php
        self.extra_plugins = dict(extra_plugins or {})
        self.workers = workers
        self.admin_url = admin_url  # STRATA_ADMIN_URL: the strata_branding plugin's Strata
        self.docroot = root / "public_html"
        self.plugins_dir = root / "plugins"
        self.config_dir = root / "config"
        self.log_dir = root / "logs"
        self.temp_dir = root / "temp"
        self.database = root / "roundcube.db"
        self.php_log = root / "php.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    # -- layout ---------------------------------------------------------------------------------

    def _write_layout(self) -> None:
        for d in (self.docroot / "program", self.config_dir, self.log_dir, self.temp_dir,
                  self.plugins_dir):  # fmt: skip
            d.mkdir(parents=True, exist_ok=True)
        public = ROUNDCUBE_INSTALL / "public_html"
        for name in ("skins", "program/js", "program/resources"):
            link = self.docroot / name
            if not link.is_symlink():
                link.symlink_to((public / name).resolve())
        plugins = {p.name: p.resolve() for p in (ROUNDCUBE_INSTALL / "plugins").iterdir()}
        # Ours, which roundcube-config/config.inc.php enables, then the test's own.
        plugins[STRATA_PLUGIN.name] = STRATA_PLUGIN.resolve()
        plugins[STRATA_BRANDING_PLUGIN.name] = STRATA_BRANDING_PLUGIN.resolve()
        plugins |= {name: path.resolve() for name, path in self.extra_plugins.items()}
        for name, target in plugins.items():
            link = self.plugins_dir / name
            if not link.is_symlink():
                link.symlink_to(target)
        if not (self.docroot / "plugins").is_symlink():
            (self.docroot / "plugins").symlink_to(self.plugins_dir)
        (self.docroot / "index.php").write_text(
            "<?php\n"
            "// A private Roundcube: Debian's code and install path, our config and plugins.\n"
            f"define('INSTALL_PATH', {php_string(str(ROUNDCUBE_INSTALL) + '/')});\n"
            f"define('RCMAIL_CONFIG_DIR', {php_string(str(self.config_dir))});\n"
            f"define('RCUBE_PLUGINS_DIR', {php_string(str(self.plugins_dir) + '/')});\n"
            f"include {php_string(str(ROUNDCUBE_CODE / 'index.php'))};\n"
        )
        for source in (ROUNDCUBE_DEFAULTS, ROUNDCUBE_MIMETYPES):
            link = self.config_dir / source.name
            if source.exists() and not link.is_symlink():
                link.symlink_to(source)
        alphabet = string.ascii_letters + string.digits
        des_key = "".join(secrets.choice(alphabet) for _ in range(24))
        (self.config_dir / "config.inc.php").write_text(
            "<?php\n"
            "$config = [];\n"
            f"$config['db_dsnw'] = {php_string(f'sqlite:///{self.database}?mode=0600')};\n"
            f"$config['log_dir'] = {php_string(str(self.log_dir) + '/')};\n"
            f"$config['temp_dir'] = {php_string(str(self.temp_dir) + '/')};\n"
            "$config['log_driver'] = 'file';\n"
            f"$config['des_key'] = {php_string(des_key)};\n"
            f"$config['imap_debug'] = {'true' if self.imap_debug else 'false'};\n"
            "$config['log_logins'] = true;\n"
            "$config['skin'] = 'elastic';\n"
            f"$config['plugins'] = [{', '.join(php_string(n) for n in self.extra_plugins)}];\n"
            "$config['language'] = 'en_US';\n"
            "$config['enable_spellcheck'] = false;\n"
            "$config['enable_installer'] = false;\n"
            f"include {php_string(str(STRATA_CONFIG))};\n" + self.extra_php
        )
        if not self.database.exists():
            with sqlite3.connect(self.database) as db:
                db.executescript(SQLITE_SCHEMA.read_text())
            db.close()

    # -- process --------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        assert self.process is None or self.process.poll() is not None
        missing = roundcube_missing()
        if missing is not None:
            raise RuntimeError(missing)
        self._write_layout()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("STRATA_", "RCUBE_", "ROUNDCUBE_"))}  # fmt: skip
        env |= {
            "STRATA_IMAP_HOST": self.imap_host,
            "STRATA_SMTP_HOST": self.smtp_host,
            "STRATA_PRODUCT_NAME": self.product_name,
            "STRATA_ADMIN_URL": self.admin_url,
            "PHP_CLI_SERVER_WORKERS": str(self.workers),
        }
        with self.php_log.open("ab") as out:
            self.process = subprocess.Popen(
                ["php", "-d", "display_errors=stderr", "-d", "upload_max_filesize=60M",
                 "-d", "post_max_size=60M", "-S", f"127.0.0.1:{self.port}",
                 "-t", str(self.docroot)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.root, env=env, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while not wait_for_port(self.port, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"php -S did not listen on {self.port}\n{self.logs_tail()}")
        # The login page renders only when the config, the database and the skin all load.
        try:
            with urllib.request.urlopen(self.url, timeout=timeout) as response:  # noqa: S310
                page = response.read().decode("utf-8", "replace")
        except urllib.error.URLError as e:
            raise RuntimeError(f"Roundcube's login page failed: {e}\n{self.logs_tail()}") from e
        if 'name="_user"' not in page:
            raise RuntimeError(
                f"Roundcube served no login form:\n{page[:2000]}\n{self.logs_tail()}"
            )

    def stop(self) -> None:
        """End php -S and its workers (its own process group), SIGTERM then SIGKILL."""
        if self.process is None:
            return
        # The group outlives a dead parent (its workers keep serving), so always signal it.
        pgid = self.process.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(pgid):
                break
            time.sleep(0.2)

    # -- logs -----------------------------------------------------------------------------------

    def log(self, name: str) -> str:
        """The text of ``log_dir/name`` (``imap``, ``errors``, ``userlogins``), or ``""``."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs_tail(self, chars: int = 4000) -> str:
        parts = []
        for path in [self.php_log, *sorted(self.log_dir.glob("*.log"))]:
            if path.exists() and path.name != "imap.log":
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)
