"""
Configuration: a TOML file turned into frozen settings with defaults.

With no file at all Strata runs on its embedded default (data in ``./strata-data``, SMTP intake on
127.0.0.1:2525).  ``strata.example.toml`` documents every key; keep it and L{_SCHEMA} in step (a
test
checks that they agree).  Any invalid or unknown key raises L{ConfigError} naming the key, so that
``twistd`` and the CLI refuse to start with a clear message instead of half-starting.  A key that
has been retired (L{_RETIRED}) is still accepted, so that an old file keeps working: it is checked
as before, ignored, and noted in L{Settings.notes}, which ``twistd`` logs at start.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strata_twisted.errors import ConfigError
from strata_twisted.model import RelayTarget, canonical_address, parse_host_port

DEFAULT_CONFIG_NAME = "strata.toml"
DEFAULT_DATA_DIR = "strata-data"


@dataclass(frozen=True)
class ListenAddress:
    """A TCP address to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerSettings:
    """What the server as a whole answers for."""

    # The operator's address, where mail to "<Postmaster>" (RFC 5321 §4.1.1.3: no domain, this
    # server's postmaster) goes; "" holds such mail in the queue until one is set.
    postmaster: str = ""


@dataclass(frozen=True)
class IntakeSettings:
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 2525),)
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    # SMTP command lines (intake and submission); message lines may be of any length.
    max_command_line_length: int = 8192
    idle_timeout: float = 300.0
    data_timeout: float = 600.0
    max_connections_per_ip: int = 50
    max_connections: int = 1000


@dataclass(frozen=True)
class IMAPSettings:
    """The IMAP server for the shadow mailboxes (#4): Roundcube and users' own clients."""

    # Plain IMAP with STARTTLS (143), and implicit TLS (993; none by default).
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 2143),)
    tls_listen: tuple[ListenAddress, ...] = ()
    # Networks (CIDR) besides loopback where LOGIN without TLS is allowed, that may name the end
    # user's address (ID x-originating-ip) and are never slowed as addresses when they do not:
    # where the webmail runs (e.g. a Roundcube container's network).
    trusted_networks: tuple[str, ...] = ()
    max_connections_per_ip: int = 50
    max_connections: int = 1000
    idle_timeout: float = 1800.0  # RFC 3501 §5.4: at least 30 minutes
    max_line_length: int = 64 * 1024
    # The largest APPEND; 0: the intake's max_message_size.
    max_append_size: int = 0
    # The longest a login attempt waits before its password is checked, in seconds: each failure
    # from a user's address doubles that address's wait (1, 2, 4, 8... s) up to this bound, for
    # IMAP and submission alike.  No login is ever refused for failures.  0: no delays.
    login_max_delay: float = 15.0
    # A domain's portal (policy "outage") stays open this long after its outage ends.
    portal_grace: float = 24 * 3600.0
    # Shadow messages older than this many days are purged daily (a domain may override).
    retention_days: int = 30


@dataclass(frozen=True)
class SubmissionSettings:
    """SMTP submission (#5): users send during an outage, from Roundcube or their own client."""

    # STARTTLS (587) and implicit TLS (465).
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 2587),)
    tls_listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 2465),)
    # Networks (CIDR) besides loopback where AUTH is offered without TLS (the webmail's).
    trusted_networks: tuple[str, ...] = ()
    # Messages one user may send per hour; then 450 4.7.1.
    max_per_hour: int = 200
    # The largest message; 0: the intake's max_message_size.
    max_message_size: int = 0
    max_recipients: int = 100
    idle_timeout: float = 300.0
    data_timeout: float = 600.0
    max_connections_per_ip: int = 50
    max_connections: int = 1000


@dataclass(frozen=True)
class OutboundSettings:
    """Delivery of submitted mail to other domains' mail exchangers, or through a smarthost."""

    # STARTTLS towards MX hosts: "opportunistic" (encrypt when offered) or "verify".
    tls: str = "opportunistic"
    # "host[:port]" of a smarthost that takes all outbound mail; "" delivers by MX.
    smarthost: str = ""
    smarthost_tls: str = "verify"  # none, opportunistic, required or verify
    smarthost_user: str = ""
    smarthost_password_file: Path | None = None
    # Retry a deferred message after retry_min seconds, doubling up to retry_max (Postfix's
    # minimal_backoff_time and maximal_backoff_time); it expires at relay.queue_lifetime.
    retry_min: float = 300.0
    retry_max: float = 4000.0
    # Tell the sender once that a message is delayed after this many seconds; 0: never.
    delay_notice: float = 4 * 3600.0

    @property
    def smarthost_target(self) -> RelayTarget | None:
        """The smarthost as host and port (587 when none is given), or None."""
        if not self.smarthost:
            return None
        host, port = parse_host_port(self.smarthost, 587)
        return RelayTarget(host, port)


@dataclass(frozen=True)
class AlertSettings:
    """Outage alerts (#5): email through the outbound path, and per-domain webhooks."""

    # The From: of alert emails, e.g. "Acme IT <alerts@acme-it.example>"; "" gives
    # "Strata <postmaster@HOSTNAME>".
    sender: str = ""
    # Alert when a domain's oldest queued message is older than this; 0: never.
    queue_age: float = 3600.0


@dataclass(frozen=True)
class TLSSettings:
    certificate: Path | None = None
    private_key: Path | None = None
    generate_self_signed: bool = True
    # CA certificates (PEM) a primary's certificate must chain to under the `verify` policy;
    # None: the system's trust store.
    ca_file: Path | None = None


@dataclass(frozen=True)
class RelaySettings:
    interval: float = 300.0
    queue_lifetime: float = 5 * 24 * 3600.0
    batch_size: int = 200
    connect_timeout: float = 30.0
    # MX routing for domains that are not protected (DSNs to senders): the DNS server to ask,
    # "host[:port]", or "" for the system's (/etc/resolv.conf); and the SMTP port of MX hosts.
    resolver: str = ""
    mx_port: int = 25
    # fsync every delivery result before the next message goes (else once per batch).
    sync_each_result: bool = False


@dataclass(frozen=True)
class MonitorSettings:
    """
    Probing each monitored domain's primary (#3); a domain may override the interval and the
    thresholds.  The defaults open the portal within a minute of the primary going silent and
    within 20 s of mail for it arriving at intake (the worst cases: core/monitor.py).
    """

    probe_interval: float = 25.0
    # Between probes while unsure (a failure seen, not yet down; a success seen while down), and
    # the shortest time between two probes that mail arriving at intake asks for.
    retry_interval: float = 4.0
    # The TCP connection must be made within probe_connect_timeout, the whole probe (banner,
    # EHLO) done within probe_timeout: long enough for a primary that greets late on purpose.
    probe_connect_timeout: float = 4.0
    probe_timeout: float = 10.0
    down_after: int = 3
    up_after: int = 2
    # At most one outage alert of a kind (down / up) per domain in this many seconds (#5).
    alert_window: float = 900.0


@dataclass(frozen=True)
class AdminSettings:
    """The admin web listener (#13): the JSON API, /metrics and (#14) the panel."""

    # Loopback by default: put it behind TLS (``tls = true`` or a proxy) before exposing it.
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 8080),)
    # Serve HTTPS with the certificate of [tls] (cookies then get ``Secure``).
    tls: bool = False
    # A browser session ends after this long without a request.
    session_idle: float = 3600.0
    # Failed admin logins delay the next attempts from the same address and for the same
    # account, up to this (never a lockout: the real admin gets in after the delay).
    login_max_delay: float = 15.0


@dataclass(frozen=True)
class LogSettings:
    """How twistd's log is written: ``text`` (twistd's lines) or ``json`` (one object per line,
    with the event's fields, for log shippers)."""

    format: str = "text"


@dataclass(frozen=True)
class StorageSettings:
    backend: str = "sqlite"
    reload_interval: float = 0.5


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    hostname: str = field(default_factory=socket.getfqdn)
    server: ServerSettings = field(default_factory=ServerSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    imap: IMAPSettings = field(default_factory=IMAPSettings)
    submission: SubmissionSettings = field(default_factory=SubmissionSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: Path | None = None
    # Sentences about the file worth an operator's attention (retired keys), logged at start.
    notes: tuple[str, ...] = ()

    @property
    def certificate_path(self) -> Path:
        return self.tls.certificate or self.data_dir / "tls" / "cert.pem"

    @property
    def private_key_path(self) -> Path:
        return self.tls.private_key or self.tls.certificate or self.data_dir / "tls" / "key.pem"


# ---------------------------------------------------------------------------------------------
# Validators: each takes (key, raw value) and returns the typed value or raises ConfigError.

Validator = Callable[[str, Any], Any]


def _int(minimum: int, maximum: int | None = None) -> Validator:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected a whole number, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(key, f"must be {bound}, got {value}")
        return value

    return check


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(key, f"expected a positive number of seconds, got {value!r}")
    return float(value)


def _seconds_or_zero(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(key, f"expected a number of seconds (0 or more), got {value!r}")
    return float(value)


def _max_delay(key: str, value: Any) -> float:
    seconds = _seconds_or_zero(key, value)
    if seconds > 60:
        # IMAP clients give up on a login after a minute or so (Strata's own pre-login timeout
        # is 60 s): a longer wait would only look like an outage to the real user.
        raise ConfigError(key, f"at most 60 seconds, got {value!r}")
    return seconds


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    return value


def _path(key: str, value: Any) -> Path | None:
    text = _string(key, value)
    return Path(text).expanduser() if text else None


def _address_or_empty(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if not text:
        return ""
    try:
        return canonical_address(text)
    except ValueError as e:
        raise ConfigError(key, str(e)) from None


def _hostname(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if any(c.isspace() for c in text):
        raise ConfigError(key, f"a host name has no spaces, got {value!r}")
    return text or socket.getfqdn()


def _listen(key: str, value: Any) -> tuple[ListenAddress, ...]:
    if isinstance(value, list) and not value:
        raise ConfigError(key, 'expected a list of "host:port" strings, e.g. ["0.0.0.0:25"]')
    return _listen_or_none(key, value)


def _listen_or_none(key: str, value: Any) -> tuple[ListenAddress, ...]:
    """Like L{_listen}, but an empty list turns the listener off."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(key, 'expected a list of "host:port" strings, e.g. ["0.0.0.0:993"]')
    out = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(key, f'expected "host:port", got {item!r}')
        try:
            host, port = parse_host_port(item, default_port=None)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
        out.append(ListenAddress(host, port))
    return tuple(out)


def _nameserver(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if text:
        try:
            host, _ = parse_host_port(text, default_port=53)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
        try:
            ipaddress.ip_address(host)
        except ValueError:
            # Who would resolve the resolver's name?  dnspython takes addresses only.
            raise ConfigError(key, f"expected an IP address[:port], got {text!r}") from None
    return text


def _networks(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, 'expected a list of networks, e.g. ["172.18.0.0/16"]')
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_network(_string(key, item).strip(), strict=False)))
        except ValueError:
            raise ConfigError(key, f"expected a network such as 10.0.0.0/8, got {item!r}") from None
    return tuple(out)


def _choice(*choices: str) -> Validator:
    def check(key: str, value: Any) -> str:
        text = _string(key, value)
        if text not in choices:
            raise ConfigError(key, f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return check


def _host_port(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if text:
        try:
            parse_host_port(text, default_port=587)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
    return text


def _backend(key: str, value: Any) -> str:
    text = _string(key, value)
    if text not in ("sqlite", "memory"):
        raise ConfigError(key, f'expected "sqlite" or "memory", got {text!r}')
    return text


_SCHEMA: dict[str, dict[str, Validator]] = {
    "": {"data_dir": _path, "hostname": _hostname},
    "server": {"postmaster": _address_or_empty},
    "intake": {
        "listen": _listen,
        "max_message_size": _int(1024),
        "max_recipients": _int(1, 100_000),
        "max_command_line_length": _int(1000, 1024 * 1024),
        "idle_timeout": _seconds,
        "data_timeout": _seconds,
        "max_connections_per_ip": _int(1),
        "max_connections": _int(1),
    },
    "imap": {
        "listen": _listen_or_none,
        "tls_listen": _listen_or_none,
        "trusted_networks": _networks,
        "max_connections_per_ip": _int(1),
        "max_connections": _int(1),
        "idle_timeout": _seconds,
        "max_line_length": _int(1000, 16 * 1024 * 1024),
        "max_append_size": _int(0),
        "login_max_delay": _max_delay,
        "portal_grace": _seconds_or_zero,
        "retention_days": _int(1),
    },
    "submission": {
        "listen": _listen_or_none,
        "tls_listen": _listen_or_none,
        "trusted_networks": _networks,
        "max_per_hour": _int(1),
        "max_message_size": _int(0),
        "max_recipients": _int(1, 100_000),
        "idle_timeout": _seconds,
        "data_timeout": _seconds,
        "max_connections_per_ip": _int(1),
        "max_connections": _int(1),
    },
    "outbound": {
        "tls": _choice("opportunistic", "verify"),
        "smarthost": _host_port,
        "smarthost_tls": _choice("none", "opportunistic", "required", "verify"),
        "smarthost_user": _string,
        "smarthost_password_file": _path,
        "retry_min": _seconds,
        "retry_max": _seconds,
        "delay_notice": _seconds_or_zero,
    },
    "alerts": {"sender": _string, "queue_age": _seconds_or_zero},
    "tls": {
        "certificate": _path,
        "private_key": _path,
        "generate_self_signed": _bool,
        "ca_file": _path,
    },
    "relay": {
        "interval": _seconds,
        "queue_lifetime": _seconds,
        "batch_size": _int(1, 100_000),
        "connect_timeout": _seconds,
        "resolver": _nameserver,
        "mx_port": _int(1, 65535),
        "sync_each_result": _bool,
    },
    "monitor": {
        "probe_interval": _seconds,
        "retry_interval": _seconds,
        "probe_connect_timeout": _seconds,
        "probe_timeout": _seconds,
        "down_after": _int(1, 1000),
        "up_after": _int(1, 1000),
        "alert_window": _seconds,
    },
    "storage": {"backend": _backend, "reload_interval": _seconds},
    "admin": {
        "listen": _listen_or_none,
        "tls": _bool,
        "session_idle": _seconds,
        "login_max_delay": _max_delay,
    },
    "log": {"format": _choice("text", "json")},
}


# Keys read under an old name: old name -> current name, both dotted.  Each is accepted in place of
# the current one (not beside it), so config files written for an older Strata still load.
_RENAMED: dict[str, str] = {
    # It limited message lines too until long lines became mail (issue 11, point 3).
    "intake.max_line_length": "intake.max_command_line_length",
}


_LOCKOUT_RETIRED = (
    "ignored: failed logins no longer lock anyone out; they delay the guesser's next attempts,"
    " up to imap.login_max_delay (issue 11)"
)

_RETIRED: dict[str, dict[str, tuple[Validator, str]]] = {
    # Strata < issue 11 refused logins after so many failures per address or user in a window.
    "imap": {
        "login_failures_per_ip": (_int(1), _LOCKOUT_RETIRED),
        "login_failures_per_user": (_int(1), _LOCKOUT_RETIRED),
        "login_window": (_seconds, _LOCKOUT_RETIRED),
    },
}
"""Keys that old files may still hold: validated as they were, then ignored with a note."""


def schema_keys() -> list[str]:
    """Every documented key, dotted (``intake.max_recipients``)."""
    return [
        f"{section}.{key}" if section else key for section, keys in _SCHEMA.items() for key in keys
    ]


def parse_config(document: dict[str, Any], source: Path | None = None) -> Settings:
    """Validate a parsed TOML document and build L{Settings}."""
    values: dict[str, dict[str, Any]] = {section: {} for section in _SCHEMA}
    notes: list[str] = []
    for name, value in document.items():
        if isinstance(value, dict):
            if name not in _SCHEMA or name == "":
                raise ConfigError(name, f"unknown section [{name}]")
            for key, item in value.items():
                dotted = f"{name}.{key}"
                retired = _RETIRED.get(name, {}).get(key)
                if retired is not None:
                    check, note = retired
                    check(dotted, item)
                    notes.append(f"{dotted} is {note}")
                    continue
                current = _RENAMED.get(dotted)
                if current is not None:
                    key = current.partition(".")[2]
                    if key in value:
                        raise ConfigError(dotted, f"give only its new name, {current}")
                    notes.append(f"{dotted} is read as {current}, its new name: rename it")
                if key not in _SCHEMA[name]:
                    raise ConfigError(dotted, "unknown key")
                values[name][key] = _SCHEMA[name][key](dotted, item)
        else:
            if name not in _SCHEMA[""]:
                raise ConfigError(name, "unknown key")
            values[""][name] = _SCHEMA[""][name](name, value)
    top = values[""]
    data_dir = top.get("data_dir") or Path(DEFAULT_DATA_DIR)
    settings = Settings(
        data_dir=Path(os.path.abspath(data_dir)),
        hostname=top.get("hostname") or socket.getfqdn(),
        server=ServerSettings(**values["server"]),
        intake=IntakeSettings(**values["intake"]),
        imap=IMAPSettings(**values["imap"]),
        submission=SubmissionSettings(**values["submission"]),
        outbound=OutboundSettings(**values["outbound"]),
        alerts=AlertSettings(**values["alerts"]),
        tls=TLSSettings(**values["tls"]),
        relay=RelaySettings(**values["relay"]),
        monitor=MonitorSettings(**values["monitor"]),
        storage=StorageSettings(**values["storage"]),
        admin=AdminSettings(**values["admin"]),
        log=LogSettings(**values["log"]),
        source=source,
        notes=tuple(notes),
    )
    if settings.outbound.retry_max < settings.outbound.retry_min:
        raise ConfigError("outbound.retry_max", "must not be less than outbound.retry_min")
    if settings.outbound.smarthost_user and not settings.outbound.smarthost_password_file:
        raise ConfigError("outbound.smarthost_password_file", "needed with smarthost_user")
    if settings.tls.private_key and not settings.tls.certificate:
        raise ConfigError("tls.certificate", "tls.private_key is set but tls.certificate is not")
    return settings


def load_config(path: str | Path | None = None) -> Settings:
    """
    Load settings from ``path``; with no path, from ``./strata.toml`` when it exists, otherwise the
    embedded default.  Raises L{ConfigError} naming the offending key.
    """
    if path is None:
        candidate = Path(DEFAULT_CONFIG_NAME)
        if not candidate.exists():
            return parse_config({})
        path = candidate
    path = Path(path)
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("--config", f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("--config", f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError("--config", f"{path}: {e.strerror}") from None
    return parse_config(document, source=path.resolve())
