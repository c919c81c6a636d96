"""
DKIM keys and signing for outbound mail (issue #5 point 4): every key we make signs mail that
dkimpy verifies against the TXT record we tell the admin to publish; keys sit on disk readable by
the owner only; a signature of the domain already present means "do not sign again".
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from strata_twisted.core.dkim import (
    DkimError,
    DkimKey,
    DkimKeyExists,
    DkimKeyring,
    InvalidSelector,
    already_signed,
    check_selector,
    dns_record,
    generate_key,
    load_key,
    record_name,
    sign,
    txt_strings,
    zone_line,
)

MESSAGE = (
    "From: Ana <ana@example.test>\r\n"
    "To: Bo <bo@elsewhere.test>\r\n"
    "Cc: cy@elsewhere.test\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    "Date: Sun, 22 Nov 2026 20:00:00 +0000\r\n"
    "Message-ID: <out-1@example.test>\r\n"
    "In-Reply-To: <in-1@elsewhere.test>\r\n"
    "References: <in-0@elsewhere.test>\r\n"
    " <in-1@elsewhere.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "X-Mailer: Roundcube\r\n"
    "\r\n"
    "Grüße,   with  runs of spaces  \r\n"
    "\r\n"
    "Ana\r\n"
).encode()

# One key per algorithm for the whole module: RSA generation is slow.
KEYS = {
    "rsa": generate_key("rsa", selector="s2026-11"),
    "ed25519": generate_key("ed25519", selector="ed1"),
}


def dns_for(key: DkimKey, domain: str = "example.test"):
    """A resolver that knows one record: the one ``zone_line`` tells the admin to publish."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        if name.decode() != record_name(key, domain):
            return None
        line = zone_line(key, domain)
        # What a DNS server returns for the zone line: its strings joined (RFC 6376 §3.6.2.2).
        return "".join(line.split(" IN TXT ", 1)[1].strip('"').split('" "')).encode()

    return dnsfunc


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_signature_verifies_against_the_published_record(algorithm: str) -> None:
    key = KEYS[algorithm]
    signed = sign(MESSAGE, key, "example.test") + MESSAGE
    assert dkim.verify(signed, dnsfunc=dns_for(key))
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    assert header.startswith("DKIM-Signature: v=1; ")
    assert f"a={algorithm}-sha256;" in header and "c=relaxed/relaxed;" in header
    assert "d=example.test;" in header and f"s={key.selector};" in header


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_the_usual_headers_are_signed_and_from_is_oversigned(algorithm: str) -> None:
    signature = sign(MESSAGE, KEYS[algorithm], "example.test").decode()
    unfolded = "".join(signature.split("\r\n"))
    h = unfolded.split(" h=", 1)[1].split(";", 1)[0]
    names = [name.strip() for name in h.split(":")]
    assert names == [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "from",
    ]
    assert signature.endswith("\r\n") and "x-mailer" not in names


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"Ana\r\n", b"Eve\r\n"),
        lambda m: m.replace(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", b"Subject: Pay now"),
        lambda m: m.replace(b"MIME-Version", b"From: boss@example.test\r\nMIME-Version"),
        lambda m: m.replace(b"To: Bo <bo@", b"To: Eve <eve@"),
        lambda m: m.replace(b"\r\n <in-1@", b"\r\n <in-2@"),
    ],
    ids=["body", "subject", "added-from", "to", "folded-references"],
)
def test_tampering_breaks_the_signature(algorithm: str, tamper) -> None:
    key = KEYS[algorithm]
    signed = sign(MESSAGE, key, "example.test") + MESSAGE
    assert dkim.verify(signed, dnsfunc=dns_for(key))
    changed = tamper(signed)
    assert changed != signed
    assert not dkim.verify(changed, dnsfunc=dns_for(key))


def test_relaxed_canonicalization_survives_whitespace_changes_in_transit() -> None:
    key = KEYS["rsa"]
    signed = sign(MESSAGE, key, "example.test") + MESSAGE
    rewrapped = signed.replace(b"Subject: ", b"Subject:   ").replace(b"spaces  \r\n", b"spaces\r\n")
    assert rewrapped != signed
    assert dkim.verify(rewrapped, dnsfunc=dns_for(key))


def test_the_wrong_published_key_does_not_verify() -> None:
    signed = sign(MESSAGE, KEYS["rsa"], "example.test") + MESSAGE
    other = generate_key("rsa", 1024, selector="s2026-11")
    assert not dkim.verify(signed, dnsfunc=dns_for(other))


def test_a_message_without_from_is_not_signed() -> None:
    with pytest.raises(DkimError, match="no From"):
        sign(b"To: bo@elsewhere.test\r\n\r\nbody\r\n", KEYS["rsa"], "example.test")


def test_a_key_without_selector_cannot_sign() -> None:
    with pytest.raises(DkimError, match="no selector"):
        sign(MESSAGE, generate_key("ed25519"), "example.test")


def test_records_carry_the_public_key_in_the_documented_form() -> None:
    rsa_key, ed_key = KEYS["rsa"], KEYS["ed25519"]
    record = dns_record(rsa_key)
    assert record.startswith("v=DKIM1; k=rsa; p=")
    public = serialization.load_der_public_key(base64.b64decode(record.split("p=")[1]))
    assert public.key_size == 2048  # type: ignore[union-attr]
    record = dns_record(ed_key)
    assert record.startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(record.split("p=")[1])) == 32
    # dkimpy's Ed25519 private key form: the base64 of the raw 32-byte seed.
    assert len(base64.b64decode(ed_key.private)) == 32
    assert rsa_key.private.startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_keys_round_trip_through_their_stored_form() -> None:
    for key in KEYS.values():
        assert load_key(key.private, key.selector) == key
    with pytest.raises(DkimError, match="unreadable"):
        load_key(b"not a key")
    with pytest.raises(DkimError, match="32-byte"):
        load_key(base64.b64encode(b"short"))


@pytest.mark.parametrize("bits", [1024, 4096])
def test_long_rsa_records_are_split_into_255_octet_strings(bits: int) -> None:
    key = generate_key("rsa", bits, selector="big")
    record = dns_record(key)
    strings = txt_strings(record)
    assert "".join(strings) == record
    assert all(len(s.encode()) <= 255 for s in strings)
    assert all(len(s.encode()) == 255 for s in strings[:-1])
    assert len(strings) == (1 if bits == 1024 else 3)
    line = zone_line(key, "Bücher.Example")
    assert line.startswith('big._domainkey.xn--bcher-kva.example. IN TXT "v=DKIM1; k=rsa; p=')
    assert line.endswith('"') and line.count('" "') == len(strings) - 1
    signed = sign(MESSAGE, key, "Bücher.Example") + MESSAGE
    assert b"d=xn--bcher-kva.example;" in signed
    assert dkim.verify(signed, dnsfunc=dns_for(key, "bücher.example"))


def test_a_short_record_is_one_string() -> None:
    assert txt_strings("v=DKIM1; k=ed25519; p=abc") == ["v=DKIM1; k=ed25519; p=abc"]
    assert txt_strings("x" * 255) == ["x" * 255]
    assert txt_strings("x" * 256) == ["x" * 255, "x"]


@pytest.mark.parametrize("bits", [512, 8192])
def test_rsa_key_sizes_outside_the_rfc_range_are_refused(bits: int) -> None:
    with pytest.raises(DkimError, match="1024 to 4096"):
        generate_key("rsa", bits)


def test_already_signed_looks_for_a_signature_of_that_domain() -> None:
    key = KEYS["ed25519"]
    signed = sign(MESSAGE, key, "example.test") + MESSAGE
    assert already_signed(signed, "example.test")
    assert already_signed(signed, "EXAMPLE.test.")
    assert not already_signed(signed, "other.test")
    assert not already_signed(MESSAGE, "example.test")
    # Relayed inbound mail signed by its author's domain: a signature of another domain is not
    # ours, and a DKIM-Signature in the body is no header at all.
    third_party = sign(MESSAGE, key, "elsewhere.test") + MESSAGE
    assert not already_signed(third_party, "example.test")
    assert already_signed(third_party, "elsewhere.test")
    in_body = MESSAGE + b"DKIM-Signature: v=1; d=example.test; s=x\r\n"
    assert not already_signed(in_body, "example.test")
    folded = "DKIM-Signature: v=1; s=x;\r\n\td =\r\n Bücher.Example ;\r\n".encode() + MESSAGE
    assert already_signed(folded, "xn--bcher-kva.example")


def test_already_signed_never_raises_on_garbage() -> None:
    for message in (b"", b"\r\n\r\n", b"DKIM-Signature: d=\r\n\r\n", b"DKIM-Signature: d=[1]\r\n"):
        assert not already_signed(message, "example.test")
    assert not already_signed(MESSAGE, "not a domain")


# -- the keyring --------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_keyring_stores_keys_owner_only_and_activates_the_new_one(tmp_path: Path) -> None:
    ring = DkimKeyring(tmp_path)
    assert ring.active("example.test") is None and ring.list() == []
    key = ring.generate("Example.TEST", "S2026-11", "rsa")
    assert key.selector == "s2026-11"
    directory = tmp_path / "dkim" / "example.test"
    assert _mode(tmp_path / "dkim") == 0o700 and _mode(directory) == 0o700
    assert _mode(directory / "s2026-11.key") == 0o600
    assert _mode(directory / "active.json") == 0o600
    assert json.loads((directory / "active.json").read_text()) == {
        "selector": "s2026-11",
        "algorithm": "rsa",
    }
    assert ring.active("example.test.") == key
    second = ring.generate("example.test", "ed1", "ed25519")
    assert ring.active("example.test") == second
    assert sorted(p.name for p in directory.iterdir()) == ["active.json", "ed1.key", "s2026-11.key"]
    assert [(i.domain, i.selector, i.algorithm, i.active) for i in ring.list()] == [
        ("example.test", "ed1", "ed25519", True),
        ("example.test", "s2026-11", "rsa", False),
    ]


def test_the_keyring_tightens_a_loose_directory(tmp_path: Path) -> None:
    (tmp_path / "dkim").mkdir(mode=0o755)
    (tmp_path / "dkim").chmod(0o755)
    DkimKeyring(tmp_path).generate("example.test", "a", "ed25519")
    assert _mode(tmp_path / "dkim") == 0o700


def test_an_existing_selector_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    ring = DkimKeyring(tmp_path)
    first = ring.generate("example.test", "s1", "ed25519")
    ring.generate("example.test", "s2", "ed25519")
    with pytest.raises(DkimKeyExists, match="selector s1"):
        ring.generate("example.test", "S1", "rsa")
    # Refused means nothing changed: the key and the active selector are as they were.
    assert ring.active("example.test").selector == "s2"  # type: ignore[union-attr]
    path = tmp_path / "dkim" / "example.test" / "s1.key"
    assert load_key(path.read_bytes(), "s1") == first
    replaced = ring.generate("example.test", "s1", "rsa", replace=True)
    assert replaced != first and ring.active("example.test") == replaced
    assert _mode(path) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_unicode_and_ascii_domain_names_share_one_directory(tmp_path: Path) -> None:
    ring = DkimKeyring(tmp_path)
    key = ring.generate("bücher.example", "s1", "ed25519")
    assert ring.active("XN--BCHER-KVA.example") == key
    assert (tmp_path / "dkim" / "xn--bcher-kva.example" / "s1.key").exists()


@pytest.mark.parametrize(
    "selector", ["../x", "a/b", "", ".a", "a..b", "-a", "a_b", "a" * 64, "a b", "a.key/..", "é"]
)
def test_selectors_that_are_not_dns_names_are_refused(tmp_path: Path, selector: str) -> None:
    with pytest.raises(InvalidSelector):
        DkimKeyring(tmp_path).generate("example.test", selector, "ed25519")
    assert not list(tmp_path.rglob("*.key"))


def test_valid_selectors_are_lowercased() -> None:
    assert check_selector("S2026-11") == "s2026-11"
    assert check_selector("mail.2026") == "mail.2026"


def test_a_broken_keyring_is_an_error_not_unsigned_mail(tmp_path: Path) -> None:
    ring = DkimKeyring(tmp_path)
    ring.generate("example.test", "s1", "ed25519")
    directory = tmp_path / "dkim" / "example.test"
    (directory / "s1.key").write_bytes(b"garbage")
    with pytest.raises(DkimError, match="unreadable"):
        ring.active("example.test")
    (directory / "active.json").write_text('{"selector": "gone"}')
    with pytest.raises(DkimError, match="cannot read"):
        ring.active("example.test")
    (directory / "active.json").write_text("{")
    with pytest.raises(DkimError, match="cannot read"):
        ring.active("example.test")
