"""A private Postfix instance for interop tests and benchmarks.

`PostfixInstance` writes its own ``main.cf`` and ``master.cf`` under a directory of its own, with
its own queue and data directories and its own log file, starts ``master`` with
``postfix -c DIR start``, and stops it again. It listens only on 127.0.0.1, on the one smtpd port
it was given; every other service is a UNIX socket inside its queue directory.

It must never touch the system instance: it does not read or write ``/etc/postfix`` (Postfix itself
still reads the compiled-in ``meta_directory``, ``/etc/postfix/postfix-files``, which is read-only
metadata), never runs ``postfix`` without ``-c``, and never opens a socket off loopback.

Three presets cover what Strata's tests and benchmarks need:

- `PostfixInstance.relay_to` — a sending MTA that relays mail for some domains to a fixed
  next hop (Strata's intake, or ``smtp-sink``), retrying deferred mail within seconds;
- `PostfixInstance.backup_mx` — Postfix as a backup MX whose primary is unreachable, so accepted
  mail stays in its queue (the intake benchmark's comparison peer);
- `PostfixInstance.primary` — a primary that delivers its domains into one Maildir.

Traps that this module handles (each one cost a failed start):

- ``maillog_file`` must start with one of ``maillog_file_prefixes`` (default ``/var, /dev/stdout``),
  so the prefixes are set to the instance's directory; ``postlogd`` needs a ``postlog`` service.
- Postfix daemons drop privileges to ``mail_owner`` and ``virtual`` to the mailbox owner: any path
  they open by its absolute name (master's lock file in ``data_directory``, the Maildir) needs
  every parent directory to be searchable by that user. pytest's ``tmp_path`` lives under a
  ``0700`` directory, so the fixture puts instances under a fresh ``/tmp`` directory instead, and
  `PostfixInstance` checks this up front.
- A non-default config directory is accepted without ``alternate_config_directories`` only because
  we are root (``mail_conf_suck`` checks the list for non-root callers only); `PostfixInstance`
  refuses to run as another user rather than editing ``/etc/postfix/main.cf``.
- ``chroot`` must be ``n`` for every service (there is no chroot jail under the instance directory).
- ``postfix check`` (run by ``start``) creates the queue subdirectories with the right owners
  (``post-install create-missing``); the instance directory itself must be root-owned.
- ``virtual`` refuses to run (``fatal: configuration error``) when ``virtual_mailbox_limit`` is
  smaller than ``message_size_limit``; both mailbox limits are off here.
- ``in_flow_delay`` (default 1s) makes smtpd sleep before each message when the queue manager falls
  behind, which is the normal state of a backup MX whose primary is down; `backup_mx` turns it off
  so the benchmark measures intake, not the throttle.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.peers.net import free_port, wait_for_port
from tests.peers.procs import alive, group_members, stat_fields

POSTFIX_BIN = "/usr/sbin/postfix"
POSTCONF_BIN = "/usr/sbin/postconf"
POSTQUEUE_BIN = "/usr/sbin/postqueue"
POSTSUPER_BIN = "/usr/sbin/postsuper"
SMTP_SINK_BIN = "/usr/sbin/smtp-sink"
SMTP_SOURCE_BIN = "/usr/sbin/smtp-source"

INSTALL_HINT = "install Postfix: apt-get install postfix swaks (the Debian package ships smtp-sink)"

_MAIL_OWNER = "postfix"
_SETGID_GROUP = "postdrop"


class PostfixError(RuntimeError):
    """A Postfix command failed or the instance did not come up; the message has the log tail."""


def postfix_installed() -> bool:
    """Whether the Postfix programs this module runs are present."""
    return all(
        os.access(p, os.X_OK) for p in (POSTFIX_BIN, POSTCONF_BIN, POSTQUEUE_BIN, POSTSUPER_BIN)
    )


def searchable_by(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to `path` that `uid`/`gid` cannot search, or None."""
    for d in [*reversed(path.resolve().parents), path.resolve()]:
        if not d.exists():
            break
        st = d.stat()
        if st.st_uid == uid:
            bit = 0o100
        elif st.st_gid == gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return d
    return None


def maildir_messages(maildir: Path) -> list[Path]:
    """The message files delivered to a Maildir (``new/`` and ``cur/``), oldest name first."""
    found: list[Path] = []
    for sub in ("new", "cur"):
        d = maildir / sub
        if d.is_dir():
            found.extend(p for p in d.iterdir() if p.is_file())
    return sorted(found, key=lambda p: p.name)


_DEFAULTS: dict[str, str] | None = None


def _postconf_defaults() -> dict[str, str]:
    """``postconf -d`` for the directories compiled into this Postfix."""
    global _DEFAULTS
    if _DEFAULTS is None:
        names = ["daemon_directory", "shlib_directory", "meta_directory", "command_directory"]
        out = subprocess.run(
            [POSTCONF_BIN, "-d", "-h", *names], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        _DEFAULTS = dict(zip(names, out, strict=True))
    return _DEFAULTS


# Every service is a UNIX socket inside the queue directory, and none is chrooted. The smtpd
# listener on 127.0.0.1:PORT is added in front of these by `PostfixInstance._master_cf`.
_MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _inline_map(entries: Mapping[str, str]) -> str:
    """A Postfix ``inline:`` table (no postmap needed), e.g. ``inline:{ a=b, c=d }``."""
    return "inline:{ " + ", ".join(f"{k}={v}" for k, v in entries.items()) + " }"


class PostfixInstance:
    """One private Postfix instance under `root`, with smtpd on 127.0.0.1:`smtpd_port`.

    `main_cf` entries override the base settings (and the preset's); `extra_master_cf` is appended
    to ``master.cf`` verbatim (keep its services on UNIX sockets or 127.0.0.1). Nothing is written
    before `start`. Use it as a context manager or call `stop` yourself; `stop` is idempotent.
    """

    def __init__(
        self,
        root: Path,
        *,
        smtpd_port: int,
        myhostname: str = "postfix.test",
        main_cf: Mapping[str, str] | None = None,
        extra_master_cf: str = "",
    ) -> None:
        self.root = Path(root).resolve()
        self.smtpd_port = smtpd_port
        self.myhostname = myhostname
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "data"
        self.maillog_path = self.root / "maillog"
        self.main_cf: dict[str, str] = self._base_main_cf()
        self.main_cf.update(main_cf or {})
        self.extra_master_cf = extra_master_cf
        self._master_pid: int | None = None

    # ---------------------------------------------------------------- presets

    @classmethod
    def relay_to(
        cls,
        root: Path,
        smtpd_port: int,
        domains: Iterable[str],
        nexthop: str = "[127.0.0.1]:2525",
        *,
        main_cf: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> PostfixInstance:
        """A sending MTA: accepts mail for `domains` and relays it to `nexthop` (no DNS).

        Deferred mail is retried every few seconds, so a test can take the next hop down and up.
        """
        domains = list(domains)
        settings = {
            "relay_domains": ", ".join(domains),
            "transport_maps": _inline_map({d: f"smtp:{nexthop}" for d in domains}),
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            **_FAST_RETRY,
            **(main_cf or {}),
        }
        return cls(root, smtpd_port=smtpd_port, main_cf=settings, **kw)

    @classmethod
    def backup_mx(
        cls,
        root: Path,
        smtpd_port: int,
        domains: Iterable[str],
        unreachable: str = "[127.0.0.1]:1",
        *,
        main_cf: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> PostfixInstance:
        """Postfix as a backup MX for `domains` whose primary (`unreachable`) is down.

        Accepted mail stays deferred in the queue. Tuned for a fair durable-intake comparison:
        Postfix's own fsync behaviour is kept, and nothing throttles loopback clients (no anvil
        limits, no in-flow delay, 100 smtpd processes, no recipient verification or header checks).
        """
        domains = list(domains)
        settings = {
            "relay_domains": ", ".join(domains),
            "transport_maps": _inline_map({d: f"smtp:{unreachable}" for d in domains}),
            # A backup MX accepts its domains from anyone and nothing else from anyone.
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "relay_recipient_maps": "",
            "default_process_limit": "100",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "smtpd_client_recipient_rate_limit": "0",
            "smtpd_client_new_tls_session_rate_limit": "0",
            "smtpd_client_auth_rate_limit": "0",
            "smtpd_client_event_limit_exceptions": "127.0.0.0/8",
            "in_flow_delay": "0s",
            "header_checks": "",
            "body_checks": "",
            "smtp_connect_timeout": "5s",
            **(main_cf or {}),
        }
        return cls(root, smtpd_port=smtpd_port, main_cf=settings, **kw)

    @classmethod
    def primary(
        cls,
        root: Path,
        smtpd_port: int,
        domains: Iterable[str],
        maildir: Path | None = None,
        *,
        main_cf: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> PostfixInstance:
        """A primary that delivers every recipient in `domains` into one Maildir.

        `maildir` defaults to ``root/maildir``; it is created and given to the ``postfix`` user,
        which the ``virtual`` agent delivers as. Read it with `maildir_messages`.
        """
        domains = list(domains)
        root = Path(root).resolve()
        maildir = Path(maildir).resolve() if maildir is not None else root / "maildir"
        owner = pwd.getpwnam(_MAIL_OWNER)
        settings = {
            "virtual_mailbox_domains": ", ".join(domains),
            "virtual_mailbox_base": str(maildir.parent),
            # A trailing "/" means Maildir format; one catch-all mailbox for every recipient.
            "virtual_mailbox_maps": f"static:{maildir.name}/",
            "virtual_uid_maps": f"static:{owner.pw_uid}",
            "virtual_gid_maps": f"static:{owner.pw_gid}",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            **_FAST_RETRY,
            **(main_cf or {}),
        }
        instance = cls(root, smtpd_port=smtpd_port, main_cf=settings, **kw)
        instance.maildir = maildir
        return instance

    maildir: Path | None = None
    """The Maildir a `primary` delivers to (None for other presets)."""

    # ---------------------------------------------------------------- config

    def _base_main_cf(self) -> dict[str, str]:
        dirs = _postconf_defaults()
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "daemon_directory": dirs["daemon_directory"],
            "shlib_directory": dirs["shlib_directory"],
            "meta_directory": dirs["meta_directory"],
            "command_directory": dirs["command_directory"],
            "mail_owner": _MAIL_OWNER,
            "setgid_group": _SETGID_GROUP,
            "myhostname": self.myhostname,
            "mydomain": self.myhostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_banner": "$myhostname ESMTP Postfix",
            "syslog_name": f"postfix-{self.smtpd_port}",
            "maillog_file": str(self.maillog_path),
            "maillog_file_prefixes": str(self.root),
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "smtputf8_enable": "yes",
            # 50 MiB for the 20 MiB test messages; the mailbox limits may not be smaller.
            "message_size_limit": "52428800",
            "mailbox_size_limit": "0",
            "virtual_mailbox_limit": "0",
        }

    def _master_cf(self) -> str:
        smtpd = f"127.0.0.1:{self.smtpd_port} inet n - n - - smtpd\n"
        extra = self.extra_master_cf
        if extra and not extra.endswith("\n"):
            extra += "\n"
        return smtpd + _MASTER_CF_SERVICES + extra

    def write_config(self) -> None:
        """Create the instance directories and write ``main.cf`` and ``master.cf``."""
        if os.geteuid() != 0:
            raise PostfixError(
                "a private Postfix instance needs root (as non-root, `postfix -c` requires the"
                " directory in /etc/postfix/main.cf's alternate_config_directories)"
            )
        owner = pwd.getpwnam(_MAIL_OWNER)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chown(self.root, 0, 0)
        self.root.chmod(0o755)
        blocked = searchable_by(self.root, owner.pw_uid, owner.pw_gid)
        if blocked is not None:
            raise PostfixError(
                f"{blocked} is not searchable by user {_MAIL_OWNER}: Postfix daemons could not"
                f" reach {self.root} (pytest's tmp_path is under a 0700 directory; use the"
                " postfix_factory fixture or a directory under /tmp)"
            )
        for d in (self.config_dir, self.queue_dir):
            d.mkdir(exist_ok=True)
            os.chown(d, 0, 0)
            d.chmod(0o755)
        self.data_dir.mkdir(exist_ok=True)
        os.chown(self.data_dir, owner.pw_uid, 0)
        self.data_dir.chmod(0o700)
        if self.maildir is not None:
            for sub in ("", "new", "cur", "tmp"):
                d = self.maildir / sub
                d.mkdir(parents=True, exist_ok=True)
                os.chown(d, owner.pw_uid, owner.pw_gid)
                d.chmod(0o700)
            blocked = searchable_by(self.maildir, owner.pw_uid, owner.pw_gid)
            if blocked is not None:
                raise PostfixError(f"{blocked} is not searchable by {_MAIL_OWNER}: no delivery")
        main = "".join(f"{k} = {v}\n" for k, v in self.main_cf.items())
        (self.config_dir / "main.cf").write_text(
            "# Written by tests/peers/postfix.py for a private test instance.\n" + main
        )
        (self.config_dir / "master.cf").write_text(self._master_cf())

    # ---------------------------------------------------------------- lifecycle

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MAIL_CONFIG"] = str(self.config_dir)
        return env

    def _run(self, *argv: str, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=self._env(), timeout=timeout
        )
        if check and proc.returncode != 0:
            raise PostfixError(
                f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
                f"\n--- maillog tail ---\n{self.maillog_tail()}"
            )
        return proc.stdout + proc.stderr

    def postfix(self, *args: str, check: bool = True) -> str:
        """Run ``postfix -c CONFIG_DIR ARGS...`` and return its output."""
        return self._run(POSTFIX_BIN, "-c", str(self.config_dir), *args, check=check)

    def postconf(self, name: str) -> str:
        """The effective value of one parameter of this instance (``postconf -c DIR -h``)."""
        return self._run(POSTCONF_BIN, "-c", str(self.config_dir), "-h", name).strip()

    def start(self, timeout: float = 30.0) -> None:
        """Write the config, start ``master`` and wait until smtpd accepts connections."""
        if self.is_running():
            raise PostfixError(f"a Postfix master already runs for {self.config_dir}")
        self.write_config()
        # `start` runs `postfix check` first, which creates the queue directories and owners.
        self.postfix("start")
        self._master_pid = self._read_master_pid()
        if not wait_for_port(self.smtpd_port, timeout):
            tail = self.maillog_tail()
            self.stop()
            raise PostfixError(
                f"Postfix smtpd did not accept connections on 127.0.0.1:{self.smtpd_port}"
                f" within {timeout:.0f}s\n--- maillog tail ---\n{tail}"
            )

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self) -> bool:
        """Whether this instance's master process is alive."""
        pid = self._master_pid or self._read_master_pid()
        return pid is not None and alive(pid)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop master and every process of its group; safe to call twice or before `start`."""
        pid = self._master_pid or self._read_master_pid()
        if pid is None:
            return
        if alive(pid):
            # `postfix stop` sends SIGTERM, waits 5s, then SIGKILLs master's process group.
            self.postfix("stop", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (alive(pid) or group_members(pid)):
            time.sleep(0.05)
        # master calls setsid(), so its group id is its pid and holds all its children.
        for member in group_members(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        self._master_pid = None

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- queue

    def flush(self) -> None:
        """Ask the queue manager to retry all deferred mail now (``postqueue -f``)."""
        self._run(POSTQUEUE_BIN, "-c", str(self.config_dir), "-f")

    def queue(self) -> list[dict[str, Any]]:
        """Every message in the queue, as ``postqueue -j`` describes it (one dict per message).

        showq scans one queue directory after another, so a message that qmgr moves meanwhile
        (``incoming`` → ``active`` → ``deferred``) can be listed twice or missed. Duplicates are
        dropped here; for an exact listing of a busy queue, `wait_for_settled` first.
        """
        out = self._run(POSTQUEUE_BIN, "-c", str(self.config_dir), "-j")
        by_id: dict[str, dict[str, Any]] = {}
        for line in out.splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                by_id[str(entry["queue_id"])] = entry
        return list(by_id.values())

    def queue_ids(self) -> list[str]:
        """The queue ids of every message in the queue (any of incoming/active/deferred/hold)."""
        return [str(m["queue_id"]) for m in self.queue()]

    def queue_is_empty(self) -> bool:
        return not self.queue()

    def queue_counts(self) -> dict[str, int]:
        """Queue files per queue (maildrop, incoming, active, deferred, hold); cheap for big queues.

        A file can be caught mid-rename, so the total may be off by one while mail moves.
        """
        counts = {}
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            counts[sub] = sum(len(files) for _d, _s, files in os.walk(self.queue_dir / sub))
        return counts

    def queue_count(self) -> int:
        """How many messages the queue holds (by `queue_counts`)."""
        return sum(self.queue_counts().values())

    def wait_for_settled(self, timeout: float = 60.0) -> bool:
        """Wait until nothing is in maildrop, incoming or active (all delivered or deferred)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.queue_counts()
            if c["maildrop"] == c["incoming"] == c["active"] == 0:
                return True
            time.sleep(0.1)
        return False

    def wait_for_queue(self, count: int, timeout: float = 30.0) -> int:
        """Poll until the queue holds exactly `count` messages; return the last count seen."""
        deadline = time.monotonic() + timeout
        seen = self.queue_count()
        while seen != count and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = self.queue_count()
        return seen

    def delete_queue(self) -> None:
        """Delete every queued message (``postsuper -d ALL``)."""
        self._run(POSTSUPER_BIN, "-c", str(self.config_dir), "-d", "ALL")

    # ---------------------------------------------------------------- observation

    def maillog(self) -> str:
        """The whole log this instance has written (``maillog_file``)."""
        try:
            return self.maillog_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def maillog_tail(self, lines: int = 40) -> str:
        return "\n".join(self.maillog().splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User+system CPU of master, its live children and the children it has reaped."""
        pid = self._master_pid or self._read_master_pid()
        if pid is None:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for member in group_members(pid):
            fields = stat_fields(member)
            if fields is None:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
            if member == pid:
                total += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped children
        return total / ticks


_FAST_RETRY = {
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "5s",
    "smtp_connect_timeout": "5s",
}


class SmtpSink:
    """``smtp-sink`` on 127.0.0.1:`port`, dumping each message into `dump_dir` (one file each).

    smtp-sink drops root for the ``postfix`` user, which must be able to reach `dump_dir`; each
    message becomes ``dump_dir/msg.<hex>`` (read them with `messages`).
    """

    def __init__(self, dump_dir: Path, port: int, backlog: int = 100) -> None:
        self.dump_dir = Path(dump_dir)
        self.port = port
        self.backlog = backlog
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        owner = pwd.getpwnam(_MAIL_OWNER)
        os.chown(self.dump_dir, owner.pw_uid, owner.pw_gid)
        # -u: the user to run as (smtp-sink refuses to keep root); -d: one file per message.
        self._proc = subprocess.Popen(
            [
                SMTP_SINK_BIN,
                "-u",
                _MAIL_OWNER,
                "-d",
                f"{self.dump_dir}/msg.",
                f"127.0.0.1:{self.port}",
                str(self.backlog),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_for_port(self.port, timeout):
            self.stop()
            raise PostfixError(f"smtp-sink did not listen on 127.0.0.1:{self.port}")

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dump_dir.rglob("*")) if p.is_file()]

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "INSTALL_HINT",
    "PostfixError",
    "PostfixInstance",
    "SmtpSink",
    "free_port",
    "maildir_messages",
    "postfix_installed",
    "searchable_by",
    "wait_for_port",
]
