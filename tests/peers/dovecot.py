"""A private Dovecot IMAP server for differential tests and the IMAP benchmark.

`DovecotInstance` writes its own ``dovecot.conf`` under a directory of its own (base_dir, state
dir, log file, passwd-file, Maildirs), starts ``dovecot -F -c FILE`` in a process group of its
own, listening on one 127.0.0.1 port (plain IMAP, plaintext LOGIN allowed, no SSL), and stops
every process of that group again.  It never reads or writes ``/etc/dovecot``: ``-c`` names the
only configuration file, which includes nothing.

Mail is put into a user's INBOX byte for byte by writing Maildir files directly (`deliver`):
Dovecot serves a Maildir file's bytes as they are (it adds a CR before a bare LF on output, and
Strata's intake already stored CRLF), takes INTERNALDATE from the file's mtime and assigns UIDs in
the order of the files' names, so the order of `deliver` calls is the UID order.

Traps handled here (each one cost a failed start or a wrong answer):

- Dovecot refuses mail access as root: mail is owned by the ``mail`` user (``userdb`` static
  uid/gid) when we are root, by ourselves otherwise; every directory on the way to the Maildirs
  must be searchable by that user, so instances live under a fresh ``/tmp`` directory (pytest's
  ``tmp_path`` is under a ``0700`` directory), as for Postfix.
- Each user has what Strata gives every user: INBOX, Drafts, Junk, Sent and Trash (subscribed,
  with their RFC 6154 special use), and "/" as the hierarchy delimiter.
- Without ``-F`` the master forks into the background and its children leave our process group;
  with ``-F`` and ``start_new_session`` the group is ours, so `stop` can reap every process.
- ``mail_max_userip_connections`` defaults to 10 per user and IP: the benchmark's 10 clients
  plus a helper connection would be refused, so it is raised.
- INTERNALDATE is printed in the server's local zone: the process gets ``TZ=UTC`` (Dovecot's
  ``import_environment`` keeps TZ), which is how Strata writes it.
- A Maildir file whose name has no ``,S=`` size is measured by Dovecot itself; we never guess
  sizes in names.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from tests.peers.net import free_port, wait_for_port
from tests.peers.procs import group_members, stat_fields

DOVECOT_BIN = "/usr/sbin/dovecot"
DOVEADM_BIN = "/usr/bin/doveadm"
IMAP_LIBEXEC_DIRS = ("/usr/lib/dovecot", "/usr/libexec/dovecot")
INSTALL_HINT = "install Dovecot's IMAP server: apt-get install dovecot-core dovecot-imapd"

_MAIL_OWNER = "mail"  # Debian's system user for mail storage (uid 8)


class DovecotError(RuntimeError):
    """Dovecot did not start, or a command failed; the message carries the log tail."""


def dovecot_installed() -> bool:
    """Whether Dovecot, doveadm and the IMAP server binary (``dovecot-imapd``) are present."""
    if not (os.access(DOVECOT_BIN, os.X_OK) and os.access(DOVEADM_BIN, os.X_OK)):
        return False
    return any(os.access(Path(d, "imap"), os.X_OK) for d in IMAP_LIBEXEC_DIRS)


def sha512_crypt(password: str) -> str:
    """A Dovecot passwd-file hash, ``{SHA512-CRYPT}$6$...`` (5,000 rounds, as ``doveadm pw``)."""
    from passlib.hash import sha512_crypt as scheme  # type: ignore[import-untyped]  # libpass

    hashed: str = scheme.using(rounds=5000).hash(password)
    return "{SHA512-CRYPT}" + hashed


def _mail_ids() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    owner = pwd.getpwnam(_MAIL_OWNER)
    return owner.pw_uid, owner.pw_gid


class DovecotInstance:
    """
    One private Dovecot under `root`, IMAP on 127.0.0.1:`port`.

    `users` maps addresses (``user@domain``) to passwords; `add_user` adds more before or after
    `start` (Dovecot re-reads the passwd-file when it changes).  `extra_config` is appended to
    ``dovecot.conf`` verbatim (top-level settings override the ones above it).  Use it as a
    context manager or call `stop`; `stop` is idempotent.
    """

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        extra_config: str = "",
    ) -> None:
        self.root = Path(root).resolve()
        self.port = port or free_port()
        self.config = self.root / "dovecot.conf"
        self.base_dir = self.root / "run"
        self.state_dir = self.root / "state"
        self.mail_root = self.root / "mail"
        self.passwd = self.root / "passwd"
        self.log = self.root / "dovecot.log"
        self.extra_config = extra_config
        self.uid, self.gid = _mail_ids()
        self._users: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._delivered = 0
        for address, password in (users or {}).items():
            self.add_user(address, password)

    # ------------------------------------------------------------------ configuration

    def _config_text(self) -> str:
        login_user = internal_user = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            login_user, internal_user = "dovenull", "dovecot"
        return f"""\
# Written by tests/peers/dovecot.py for a private test instance; includes nothing else.
instance_name = strata-test-{self.port}
protocols = imap
listen = 127.0.0.1
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log}
info_log_path = {self.log}
default_internal_user = {internal_user}
default_login_user = {login_user}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {min(self.uid, 1)}
first_valid_gid = {min(self.gid, 1)}
mail_location = maildir:{self.mail_root}/%d/%n
mail_max_userip_connections = 1000
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    auto = subscribe
    special_use = \\Drafts
  }}
  mailbox Junk {{
    auto = subscribe
    special_use = \\Junk
  }}
  mailbox Sent {{
    auto = subscribe
    special_use = \\Sent
  }}
  mailbox Trash {{
    auto = subscribe
    special_use = \\Trash
  }}
}}
passdb {{
  driver = passwd-file
  args = username_format=%u {self.passwd}
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={self.mail_root}/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
{self.extra_config}
"""

    def add_user(self, address: str, password: str) -> None:
        """Add a login (``user@domain``) to the passwd-file, with a SHA512-CRYPT hash."""
        self._users[address] = sha512_crypt(password)
        if self.root.exists():
            self._write_passwd()

    def _write_passwd(self) -> None:
        text = "".join(f"{user}:{hashed}\n" for user, hashed in self._users.items())
        tmp = self.passwd.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.passwd)

    def write_config(self) -> None:
        """Create the instance directories and write ``dovecot.conf`` and the passwd-file."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        for d in (self.base_dir, self.state_dir):
            d.mkdir(exist_ok=True)
            d.chmod(0o755)
        self.mail_root.mkdir(exist_ok=True)
        os.chown(self.mail_root, self.uid, self.gid)
        self.mail_root.chmod(0o755)
        blocked = _unsearchable(self.mail_root, self.uid, self.gid)
        if blocked is not None:
            raise DovecotError(
                f"{blocked} is not searchable by uid {self.uid}: Dovecot could not reach its"
                " Maildirs (pytest's tmp_path is under a 0700 directory; use the"
                " dovecot_factory fixture or a directory under /tmp)"
            )
        self._write_passwd()
        self.config.write_text(self._config_text())

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30.0) -> None:
        """Write the configuration, start the master and wait until IMAP accepts connections."""
        if self.is_running():
            raise DovecotError(f"Dovecot already runs for {self.config}")
        self.write_config()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "TZ": "UTC"}
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [DOVECOT_BIN, "-F", "-c", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not wait_for_port(self.port, 0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                state = (
                    f"exited with {self._process.returncode}"
                    if self._process.poll() is not None
                    else "hung"
                )
                tail = self.log_tail()
                self.stop()
                raise DovecotError(
                    f"Dovecot {state} before listening on 127.0.0.1:{self.port}\n{tail}"
                )

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The master's pid (its process group holds every Dovecot process of this instance)."""
        assert self._process is not None
        return self._process.pid

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the master, wait, then SIGKILL whatever is left of its process group."""
        process, self._process = self._process, None
        if process is None:
            return
        pgid = process.pid
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for member in group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.wait(10)

    def __enter__(self) -> DovecotInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ mail

    def maildir(self, address: str, mailbox: str = "INBOX") -> Path:
        """The Maildir of one of `address`'s mailboxes (Maildir++: INBOX is the root)."""
        local, _, domain = address.partition("@")
        base = self.mail_root / domain / local
        return base if mailbox.upper() == "INBOX" else base / f".{mailbox.replace('/', '.')}"

    def deliver(
        self,
        address: str,
        raw: bytes,
        *,
        internal_date: float | None = None,
        flags: Iterable[str] = (),
        mailbox: str = "INBOX",
    ) -> Path:
        """
        Put `raw` into the user's mailbox byte for byte: a Maildir file in ``cur/`` (``new/``
        would make it \\Recent) with `flags` (system flags only), mtime `internal_date`.

        Messages get UIDs in the order they are delivered: the names sort by a counter.
        """
        letters = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}
        letters["\\Deleted"] = "T"
        info = "".join(sorted(letters[f] for f in flags))
        directory = self.maildir(address, mailbox)
        for sub in ("", "cur", "new", "tmp"):
            d = directory / sub
            if not d.exists():
                d.mkdir(parents=True)
                os.chown(d, self.uid, self.gid)
                d.chmod(0o700)
        for parent in list(directory.parents)[: len(directory.relative_to(self.mail_root).parts)]:
            if parent != self.mail_root and parent.stat().st_uid != self.uid:
                os.chown(parent, self.uid, self.gid)
        self._delivered += 1
        # Dovecot sorts new files by the seconds, then the microseconds (M) of the name.
        name = f"{1_000_000_000 + self._delivered}.M{self._delivered}P{os.getpid()}.strata-test"
        tmp = directory / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, self.uid, self.gid)
        tmp.chmod(0o600)
        if internal_date is not None:
            os.utime(tmp, (internal_date, internal_date))
        final = directory / "cur" / f"{name}:2,{info}"
        tmp.rename(final)
        return final

    def doveadm(self, *args: str, check: bool = True) -> str:
        """Run ``doveadm -c CONFIG ARGS...`` against this instance and return its output."""
        proc = subprocess.run(
            [DOVEADM_BIN, "-c", str(self.config), *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    # ------------------------------------------------------------------ observation

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User+system CPU of the master, its live children and the children it has reaped."""
        if self._process is None:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for member in group_members(self._process.pid):
            fields = stat_fields(member)
            if fields is None:
                continue
            total += int(fields[11]) + int(fields[12])
            if member == self._process.pid:
                total += int(fields[13]) + int(fields[14])
        return total / ticks


def _unsearchable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to `path` that `uid`/`gid` cannot search, or None."""
    if uid == os.geteuid() and uid != 0:
        return None
    for d in [*reversed(path.resolve().parents), path.resolve()]:
        st = d.stat()
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return d
    return None


class DovecotFactory:
    """Builds instances under one ``/tmp`` directory; `close` stops every one and removes it."""

    def __init__(self, base: Path, *, show_logs: bool = True) -> None:
        self.base = base
        self.show_logs = show_logs
        self._started: list[DovecotInstance] = []

    def start(self, users: Mapping[str, str], **kw: object) -> DovecotInstance:
        root = self.base / f"{len(self._started) + 1:02d}-dovecot"
        instance = DovecotInstance(root, users=users, **kw)  # type: ignore[arg-type]
        self._started.append(instance)
        instance.start()
        return instance

    def close(self) -> None:
        errors: list[BaseException] = []
        for instance in reversed(self._started):
            if self.show_logs:  # pytest shows them when a test failed
                print(f"--- dovecot log tail of {instance.root} ---\n{instance.log_tail()}")
            try:
                instance.stop()
            except Exception as e:  # noqa: BLE001 - stop every instance, report afterwards
                errors.append(e)
        self._started.clear()
        if errors:
            raise errors[0]


@contextlib.contextmanager
def dovecot_factory_context(*, show_logs: bool = True) -> Iterator[DovecotFactory]:
    """
    A `DovecotFactory` under a fresh searchable ``/tmp`` directory, cleaned up on exit; raises
    `DovecotError` when Dovecot is not installed (tests then fail, never skip).
    """
    import tempfile

    if not dovecot_installed():
        raise DovecotError(f"Dovecot is required: {INSTALL_HINT}")
    base = Path(tempfile.mkdtemp(prefix="strata-dovecot-"))
    base.chmod(0o755)
    factory = DovecotFactory(base, show_logs=show_logs)
    try:
        yield factory
    finally:
        try:
            factory.close()
        finally:
            shutil.rmtree(base, ignore_errors=True)


__all__ = [
    "INSTALL_HINT",
    "DovecotError",
    "DovecotFactory",
    "DovecotInstance",
    "dovecot_factory_context",
    "dovecot_installed",
    "sha512_crypt",
]
