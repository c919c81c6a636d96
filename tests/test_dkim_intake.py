"""
DKIM survives intake (non-negotiable 2): a message signed with dkimpy before it reaches Strata,
sent over SMTP with dot-stuffing, 8-bit text and long lines, is stored so that the signature still
verifies — our Received header is prepended above the signed headers and changes nothing they cover.
"""

from __future__ import annotations

import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from strata_twisted.testing import result_of
from tests.test_server_smtp import Harness, replies

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
PUBLIC_DER = KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
TXT = b"v=DKIM1; k=rsa; p=" + base64.b64encode(PUBLIC_DER)


def dns(name: bytes, timeout: int = 5) -> bytes:
    assert name == b"sel._domainkey.sender.test."
    return TXT


MESSAGE = (
    "From: Ana <ana@sender.test>\r\n"
    "To: u@example.test\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    "Message-ID: <dkim-1@sender.test>\r\n"
    "Date: Sun, 22 Nov 2026 20:00:00 +0000\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Grüße — 8-bit body\r\n"
    ".a line that starts with a dot\r\n"
    ".\r\n"
    "..\r\n" + "long " * 190 + "\r\n"
    "\r\n"
    "last line\r\n"
).encode()


def dot_stuff(message: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency, as a sending MTA applies it."""
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


@pytest.mark.parametrize("canon", [(b"simple", b"simple"), (b"relaxed", b"relaxed")])
def test_a_dkim_signature_still_verifies_after_intake(canon: tuple[bytes, bytes]) -> None:
    signature = dkim.sign(
        MESSAGE, b"sel", b"sender.test", PRIVATE_PEM, canonicalize=canon,
        include_headers=[b"from", b"to", b"subject", b"message-id", b"date"],
    )  # fmt: skip
    signed = signature + MESSAGE
    assert dkim.verify(signed, dnsfunc=dns)

    h = Harness()
    proto, transport = h.connect()
    proto.dataReceived(
        b"EHLO mta.sender.test\r\nMAIL FROM:<ana@sender.test> BODY=8BITMIME\r\n"
        b"RCPT TO:<u@example.test>\r\nDATA\r\n" + dot_stuff(signed) + b".\r\nQUIT\r\n"
    )
    assert replies(transport)[5].startswith(b"250 2.0.0 Ok: queued as")
    (entry,) = result_of(h.store.list_entries())
    stored = result_of(h.store.read_body(entry.message_id))
    assert stored.startswith(b"Received: ")
    assert stored.endswith(signed)
    assert dkim.verify(stored, dnsfunc=dns)
    h.stop()
