"""
The relay's DKIM signer: outbound mail is signed for its From: domain with the active key, the
body read from the store in ranges, once; the signature verifies with dkimpy against the record
`strata dkim generate` prints.
"""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest
from twisted.internet.task import Clock

from strata_twisted.core.dkim import DkimKeyring, record_name, sign, zone_line
from strata_twisted.core.relay import PREFETCH, RelayedMessage
from strata_twisted.core.signing import DkimSigner, from_domain
from strata_twisted.executor import SyncExecutor
from strata_twisted.model import Delivery, QueueEntry
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of, store_message

T0 = 1_700_000_000.0  # in the past: dkimpy refuses t= in the future


def message_bytes(sender: str, body: bytes) -> bytes:
    return (
        b"Received: from client.test ([127.0.0.1])\r\n\tby strata.test (Strata) with ESMTPSA id X;"
        b" Fri, 15 Jan 2027 08:00:00 +0000\r\n"
        + f"From: Alice <{sender}>\r\nTo: bob@elsewhere.test\r\nSubject: Hello\r\n".encode()
        + b"Message-ID: <m1@example.test>\r\nDate: Fri, 15 Jan 2027 08:00:00 +0000\r\n\r\n"
        + body
    )


class Setup:
    def __init__(self, tmp_path: Path, algorithm: str = "ed25519") -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore(self.clock)
        self.keyring = DkimKeyring(tmp_path)
        self.key = self.keyring.generate("example.test", "s1", algorithm)  # type: ignore[arg-type]
        self.signer = DkimSigner(
            self.clock, self.store, self.keyring, SyncExecutor(), SyncExecutor()
        )
        self._n = 0

    def relayed(self, data: bytes) -> RelayedMessage:
        self._n += 1
        queue_id = f"Q{self._n}"
        delivery = Delivery("bob@elsewhere.test", "elsewhere.test", outbound=True)
        stored = result_of(store_message(self.store, queue_id, data, [delivery]))
        entries: list[QueueEntry] = result_of(self.store.entries_for_message(queue_id))
        head = result_of(self.store.read_body_range(queue_id, 0, PREFETCH))
        return RelayedMessage(stored, tuple(entries), head)

    def dns(self, name: bytes, timeout: int = 5) -> bytes | None:
        if name.decode() != record_name(self.key, "example.test"):
            return None
        line = zone_line(self.key, "example.test")
        return "".join(line.split(" IN TXT ", 1)[1].strip('"').split('" "')).encode()


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize("size", [0, 10, 700 * 1024])
def test_outbound_mail_is_signed_and_verifies(tmp_path: Path, algorithm: str, size: int) -> None:
    s = Setup(tmp_path, algorithm)
    body = (b"Line with  spaces \t \r\n" * (size // 22 + 1))[:size] if size else b""
    data = message_bytes("alice@example.test", body)
    prefix = result_of(s.signer.signature(s.relayed(data)))
    assert prefix.startswith(b"DKIM-Signature: v=1; ") and prefix.endswith(b"\r\n")
    assert b" t=1700000000;" in prefix.replace(b"\r\n", b"")
    assert dkim.verify(prefix + data, dnsfunc=s.dns)
    assert not dkim.verify(prefix + data + b"tampered\r\n", dnsfunc=s.dns)


@pytest.mark.parametrize("canonical_line", [False, True], ids=["long-lines", "with-blanks"])
def test_outbound_mail_with_long_lines_is_signed_and_verifies(
    tmp_path: Path, canonical_line: bool
) -> None:
    """Issue 11, point 3: submission takes lines of any length; the signature over a body with
    lines of 16 KiB to 300 KiB, read from the store in ranges that cut them, still verifies."""
    s = Setup(tmp_path, "rsa")
    filler = b"word  \t" if canonical_line else b"x"
    lines = [(filler * (n // len(filler) + 1))[:n] for n in (16 * 1024, 100 * 1024, 300 * 1024)]
    body = b"".join(b"." + line + b" \r\n" for line in lines) + b"\r\n"
    data = message_bytes("alice@example.test", body)
    prefix = result_of(s.signer.signature(s.relayed(data)))
    assert prefix.startswith(b"DKIM-Signature: v=1; ")
    assert dkim.verify(prefix + data, dnsfunc=s.dns)
    middle = len(data) // 2  # inside the longest line
    assert not dkim.verify(prefix + data[:middle] + b"!" + data[middle + 1 :], dnsfunc=s.dns)


def test_a_domain_without_a_key_is_not_signed(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    relayed = s.relayed(message_bytes("carol@other.test", b"hi\r\n"))
    assert result_of(s.signer.signature(relayed)) == b""


def test_mail_already_signed_for_the_domain_is_not_signed_again(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    data = message_bytes("alice@example.test", b"hi\r\n")
    header, _, body = data.partition(b"\r\n\r\n")
    signed = sign(data, s.key, "example.test", now=T0) + data
    assert result_of(s.signer.signature(s.relayed(signed))) == b""
    assert header and body  # the fixture has both parts


def test_a_message_whose_header_does_not_fit_the_read_ahead_goes_unsigned(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    huge = b"X-Filler: " + b"a" * (PREFETCH + 10) + b"\r\n"
    data = huge + message_bytes("alice@example.test", b"hi\r\n")
    assert result_of(s.signer.signature(s.relayed(data))) == b""


def test_keys_are_reread_after_their_ttl(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    data = message_bytes("alice@example.test", b"hi\r\n")
    first = result_of(s.signer.signature(s.relayed(data)))
    assert b"s=s1;" in first
    s.key = s.keyring.generate("example.test", "s2", "ed25519")
    assert b"s=s1;" in result_of(s.signer.signature(s.relayed(data)))  # cached
    s.clock.advance(61)
    second = result_of(s.signer.signature(s.relayed(data)))
    assert b"s=s2;" in second
    assert dkim.verify(second + data, dnsfunc=s.dns)


def test_from_domain() -> None:
    assert from_domain(b"From: A <a@Example.TEST>\r\n\r\n") == "example.test"
    assert from_domain(b"Subject: x\r\n\r\n") is None
