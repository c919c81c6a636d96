"""Postfix with SASL through Dovecot's auth service: the setup that ``bench/submission.py`` and
the smarthost interop test share, and how to read the SASL logins back from Postfix's log.

A private Dovecot (``tests/peers/dovecot.py``) checks the passwords, from its passwd-file of
SHA512-CRYPT hashes; a private Postfix (``tests/peers/postfix.py``) asks it over a UNIX socket
inside Dovecot's ``base_dir`` that the ``postfix`` user may use.  This module only writes
configuration text and parses log lines: it starts nothing, and both peers keep their own
cleanup (their factories stop every process they started).

Traps handled here:

- The socket must belong to the ``postfix`` user (mode ``0660``): smtpd runs as ``mail_owner``
  and cannot open a root-owned socket.  Every directory on the way to it is searchable because
  the Dovecot factory puts instances under a fresh ``0755`` directory in ``/tmp``.
- ``smtpd_sasl_path`` is taken relative to Postfix's ``queue_directory`` unless it is absolute;
  the path given here is always absolute.
- Postfix logs the SASL login on the queue-id line (``client=..., sasl_method=PLAIN,
  sasl_username=...``), and the TLS handshake (with ``smtpd_tls_loglevel = 1``) on a line of its
  own; both carry the smtpd process id, which is how `sasl_logins` ties a login to its TLS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from tests.peers.dovecot import DovecotFactory, DovecotInstance

__all__ = [
    "AUTH_SOCKET",
    "DOVECOT_AUTH_FOR_POSTFIX",
    "SaslLogin",
    "postfix_sasl_settings",
    "sasl_failures",
    "sasl_logins",
    "start_auth_dovecot",
]

AUTH_SOCKET = "auth-postfix"  # inside the Dovecot instance's base_dir

# Dovecot's auth service for Postfix: a socket the postfix user can use, and an authentication
# cache, as Strata caches successful verifications (``core/login.py``).
DOVECOT_AUTH_FOR_POSTFIX = f"""\
service auth {{
  unix_listener {AUTH_SOCKET} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
auth_cache_size = 10M
auth_cache_ttl = 1 hour
"""


def start_auth_dovecot(
    factory: DovecotFactory, users: Mapping[str, str], extra_config: str = ""
) -> DovecotInstance:
    """A started Dovecot whose auth service answers Postfix's SASL for `users` (address →
    password), `extra_config` appended to its configuration; the factory stops it."""
    return factory.start(users, extra_config=DOVECOT_AUTH_FOR_POSTFIX + extra_config)


def postfix_sasl_settings(dovecot: DovecotInstance) -> dict[str, str]:
    """The ``main.cf`` entries that make Postfix's smtpd check SASL logins with `dovecot`.

    Whether AUTH is offered (``smtpd_sasl_auth_enable``), only after TLS, and what a login
    permits stay with the caller: the benchmark sets them per service in ``master.cf``.
    """
    return {
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": str(dovecot.base_dir / AUTH_SOCKET),
    }


@dataclass(frozen=True)
class SaslLogin:
    """One message Postfix accepted from a SASL-authenticated client, as its log tells it."""

    pid: int  # the smtpd process
    queue_id: str
    method: str  # PLAIN, LOGIN...
    username: str
    tls: str  # the TLS line this smtpd logged before the login ("" if none: plaintext)


# postfix-1234/smtpd[5678]: 4Xy...: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=u
_LOGIN = re.compile(
    r"/smtpd\[(?P<pid>\d+)\]: (?P<queue_id>[0-9A-Za-z]+): client=[^,]*,"
    r" sasl_method=(?P<method>[^,\s]+), sasl_username=(?P<username>\S+)"
)
# postfix-1234/smtpd[5678]: Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3
_TLS = re.compile(r"/smtpd\[(?P<pid>\d+)\]: (?P<line>\S+ TLS connection established from .*)")
# postfix-1234/smtpd[5678]: connect from unknown[127.0.0.1] (and "disconnect from ...")
_CONNECT = re.compile(r"/smtpd\[(?P<pid>\d+)\]: (?:dis)?connect from ")
# postfix-1234/smtpd[5678]: warning: unknown[127.0.0.1]: SASL PLAIN authentication failed: ...
_FAILED = re.compile(r"/smtpd\[\d+\]: warning: .*: SASL (\S+) authentication failed")


def sasl_logins(maillog: str) -> list[SaslLogin]:
    """Every SASL-authenticated message in `maillog`, in log order, with the TLS line of the
    smtpd process that accepted it (smtpd handles one connection at a time, so the last TLS line
    of that process before the login is the login's own connection)."""
    tls_by_pid: dict[int, str] = {}
    logins: list[SaslLogin] = []
    for line in maillog.splitlines():
        if m := _CONNECT.search(line):
            # A new or ended connection: what that process said about TLS no longer applies.
            tls_by_pid.pop(int(m.group("pid")), None)
        elif m := _TLS.search(line):
            tls_by_pid[int(m.group("pid"))] = m.group("line")
        elif m := _LOGIN.search(line):
            pid = int(m.group("pid"))
            logins.append(SaslLogin(pid, m.group("queue_id"), m.group("method"),
                                    m.group("username"), tls_by_pid.get(pid, "")))  # fmt: skip
    return logins


def sasl_failures(maillog: str) -> int:
    """How many SASL logins Postfix refused (``SASL ... authentication failed`` warnings)."""
    return sum(1 for line in maillog.splitlines() if _FAILED.search(line))
