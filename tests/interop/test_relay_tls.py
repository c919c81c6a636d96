"""
STARTTLS towards real Postfix primaries, one domain per TLS policy.

The primaries' certificates come from a throwaway CA that Strata trusts through ``tls.ca_file``;
each primary adds ``(using TLSv1.x with cipher ...)`` to its Received header when the session was
encrypted (``smtpd_tls_received_header``), which is how the tests see whether TLS was used.

- A primary with TLS: ``opportunistic`` and ``verify`` (the certificate names 127.0.0.1) deliver
  over TLS; ``verify`` towards a name the certificate lacks (localhost) delivers nothing.
- A primary without TLS: ``opportunistic`` delivers in plaintext, ``required`` delivers nothing.
- A legacy primary whose TLS only goes up to 1.1 (the handshake fails): ``opportunistic``
  connects again without TLS and delivers; ``required`` delivers nothing.
"""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest

from tests.peers.fixtures import PostfixFactory
from tests.peers.postfix import PostfixInstance, maildir_messages
from tests.peers.tlsca import TestCA

pytestmark = [pytest.mark.interop]

TLS_HEADER = b"(using TLSv1."


def primary_with(
    postfix_factory: PostfixFactory, domains: list[str], tls: dict[str, str]
) -> PostfixInstance:
    settings = {"smtpd_tls_received_header": "yes", "smtpd_tls_loglevel": "1", **tls}
    return postfix_factory.primary(domains, main_cf=settings)


def tls_settings(ca: TestCA, **extra: str) -> dict[str, str]:
    server = ca.issue("primary", dns=["primary.test"], ips=["127.0.0.1"])
    return {
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": str(server.certificate),
        "smtpd_tls_key_file": str(server.key),
        **extra,
    }


def send(strata: Any, *recipients: str) -> None:
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        for rcpt in recipients:
            body = f"From: a@sender.test\r\nTo: {rcpt}\r\nSubject: tls to {rcpt}\r\n\r\nhi\r\n"
            client.sendmail("a@sender.test", [rcpt], body)


def settle(strata: Any, expected: dict[str, str], timeout: float = 30.0) -> dict[str, str]:
    """Flush until every recipient's entry is in its expected state (or time runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        strata.cli("queue", "flush")
        time.sleep(1.0)
        states = {e["recipient"]: e["state"] for e in strata.queue()}
        if states == expected or time.monotonic() > deadline:
            return states


def delivered_to(primary: PostfixInstance) -> dict[str, bytes]:
    """Each delivered message by its To: address."""
    assert primary.maildir is not None
    out = {}
    for path in maildir_messages(primary.maildir):
        raw = path.read_bytes()
        to = next(line for line in raw.split(b"\n") if line.startswith(b"To: "))
        out[to[4:].decode()] = raw
    return out


def received_by_primary(raw: bytes) -> bytes:
    """The primary's own Received header (the first one), unfolded."""
    headers = raw.split(b"\n\n", 1)[0].replace(b"\n\t", b" ").replace(b"\n ", b" ")
    return next(line for line in headers.split(b"\n") if line.startswith(b"Received: "))


def events_text(strata: Any, domain: str) -> str:
    events = json.loads(strata.cli("events", "--json", "--domain", domain).stdout)
    return json.dumps(events["events"])


def strata_trusting(strata_factory: Any, ca: TestCA) -> Any:
    return strata_factory(
        extra_config=f'[tls]\nca_file = "{ca.ca_file}"\n[relay]\ninterval = 300\n'
        "[monitor]\nprobe_interval = 3600\n"
    )


def relay_through(
    strata: Any, primary: PostfixInstance, domains: dict[str, tuple[str, str, str]]
) -> dict[str, bytes]:
    """
    Protect each domain with (relay host, TLS policy), start Strata, send one message to
    ``u@`` each domain and flush until every entry is in its expected state (the third item);
    what the primary got, by recipient.
    """
    for domain, (host, policy, _) in domains.items():
        strata.cli("domain", "add", domain, "--relay", f"{host}:{primary.smtpd_port}",
                   "--tls-policy", policy)  # fmt: skip
    strata.start()
    send(strata, *(f"u@{domain}" for domain in domains))
    expected = {f"u@{domain}": state for domain, (_, _, state) in domains.items()}
    assert settle(strata, expected) == expected
    delivered = delivered_to(primary)
    assert sorted(delivered) == sorted(r for r, state in expected.items() if state == "delivered")
    return delivered


def test_policies_towards_a_primary_with_tls(
    tmp_path: Path, strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    ca = TestCA(tmp_path / "ca")
    domains = ["opportunistic.test", "verify.test", "mismatch.test"]
    primary = primary_with(postfix_factory, domains, tls_settings(ca))
    strata = strata_trusting(strata_factory, ca)
    delivered = relay_through(strata, primary, {
        "opportunistic.test": ("127.0.0.1", "opportunistic", "delivered"),
        "verify.test": ("127.0.0.1", "verify", "delivered"),  # the certificate names the IP
        "mismatch.test": ("localhost", "verify", "queued"),  # ... but not "localhost"
    })  # fmt: skip
    for raw in delivered.values():
        assert TLS_HEADER in received_by_primary(raw)
    # The certificate does not name "localhost": nothing was sent, and the admin can see why.
    assert "TLS failed" in events_text(strata, "mismatch.test")


def test_policies_towards_a_primary_without_tls(
    strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    domains = ["plain.test", "required.test"]
    primary = primary_with(postfix_factory, domains, {"smtpd_tls_security_level": "none"})
    strata = strata_factory(
        extra_config="[relay]\ninterval = 300\n[monitor]\nprobe_interval = 3600\n"
    )
    delivered = relay_through(strata, primary, {
        "plain.test": ("127.0.0.1", "opportunistic", "delivered"),
        "required.test": ("127.0.0.1", "required", "queued"),
    })  # fmt: skip
    assert TLS_HEADER not in received_by_primary(delivered["u@plain.test"])
    assert "TLS required but unavailable" in events_text(strata, "required.test")


def test_opportunistic_tls_falls_back_to_plaintext_when_the_handshake_fails(
    tmp_path: Path, strata_factory: Any, postfix_factory: PostfixFactory
) -> None:
    ca = TestCA(tmp_path / "ca")
    # A legacy primary: TLS 1.0 and 1.1 only, which our client refuses, so every handshake fails.
    legacy = tls_settings(
        ca, smtpd_tls_protocols="<=TLSv1.1", smtpd_tls_mandatory_protocols="<=TLSv1.1"
    )
    domains = ["legacy.test", "strict.test"]
    primary = primary_with(postfix_factory, domains, legacy)
    strata = strata_trusting(strata_factory, ca)
    delivered = relay_through(strata, primary, {
        "legacy.test": ("127.0.0.1", "opportunistic", "delivered"),
        "strict.test": ("127.0.0.1", "required", "queued"),
    })  # fmt: skip
    assert TLS_HEADER not in received_by_primary(delivered["u@legacy.test"])
    assert "SSL_accept error" in primary.maillog()  # the handshake really was tried
    assert "TLS failed" in events_text(strata, "strict.test")
    assert "connecting again without it" in strata.log_text()
