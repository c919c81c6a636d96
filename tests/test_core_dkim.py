"""
DKIM keys and signing for outbound mail (issue #5 point 4): every key we make signs mail that
dkimpy verifies against the TXT record we tell the admin to publish; keys sit on disk readable by
the owner only; a signature of the domain already present means "do not sign again".
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from strata_twisted.core.dkim import (
    BodyHasher,
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
    sign_streamed,
    split_header,
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

# When the tests sign: now, as dkimpy refuses a t= in the future.
SIGNED_AT = time.time()

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
    signed = sign(MESSAGE, key, "example.test", now=SIGNED_AT) + MESSAGE
    assert dkim.verify(signed, dnsfunc=dns_for(key))
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    assert header.startswith("DKIM-Signature: v=1; ")
    assert f"a={algorithm}-sha256;" in header and "c=relaxed/relaxed;" in header
    assert "d=example.test;" in header and f"s={key.selector};" in header


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_the_usual_headers_are_signed_and_from_is_oversigned(algorithm: str) -> None:
    signature = sign(MESSAGE, KEYS[algorithm], "example.test", now=SIGNED_AT).decode()
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
    signed = sign(MESSAGE, key, "example.test", now=SIGNED_AT) + MESSAGE
    assert dkim.verify(signed, dnsfunc=dns_for(key))
    changed = tamper(signed)
    assert changed != signed
    assert not dkim.verify(changed, dnsfunc=dns_for(key))


def test_relaxed_canonicalization_survives_whitespace_changes_in_transit() -> None:
    key = KEYS["rsa"]
    signed = sign(MESSAGE, key, "example.test", now=SIGNED_AT) + MESSAGE
    rewrapped = signed.replace(b"Subject: ", b"Subject:   ").replace(b"spaces  \r\n", b"spaces\r\n")
    assert rewrapped != signed
    assert dkim.verify(rewrapped, dnsfunc=dns_for(key))


def test_the_wrong_published_key_does_not_verify() -> None:
    signed = sign(MESSAGE, KEYS["rsa"], "example.test", now=SIGNED_AT) + MESSAGE
    other = generate_key("rsa", 1024, selector="s2026-11")
    assert not dkim.verify(signed, dnsfunc=dns_for(other))


def test_a_message_without_from_is_not_signed() -> None:
    with pytest.raises(DkimError, match="no From"):
        sign(b"To: bo@elsewhere.test\r\n\r\nbody\r\n", KEYS["rsa"], "example.test", now=SIGNED_AT)


def test_a_key_without_selector_cannot_sign() -> None:
    with pytest.raises(DkimError, match="no selector"):
        sign(MESSAGE, generate_key("ed25519"), "example.test", now=SIGNED_AT)


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
    signed = sign(MESSAGE, key, "Bücher.Example", now=SIGNED_AT) + MESSAGE
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
    signed = sign(MESSAGE, key, "example.test", now=SIGNED_AT) + MESSAGE
    assert already_signed(signed, "example.test")
    assert already_signed(signed, "EXAMPLE.test.")
    assert not already_signed(signed, "other.test")
    assert not already_signed(MESSAGE, "example.test")
    # Relayed inbound mail signed by its author's domain: a signature of another domain is not
    # ours, and a DKIM-Signature in the body is no header at all.
    third_party = sign(MESSAGE, key, "elsewhere.test", now=SIGNED_AT) + MESSAGE
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


# -- streaming: the body hashed range by range, the header signed with that hash -----------------
#
# The oracle is dkimpy, which verifies what we sign: the body it hashes is what its parser
# (dkim.rfc822_parse) leaves after the header, canonicalized by canonicalization.Relaxed.

EMPTY_SHA256 = hashlib.sha256(b"").digest()
CHUNK = 256 * 1024


def dkimpy_body_hash(body: bytes) -> bytes:
    _, parsed = dkim.rfc822_parse(b"From: a@example.test\r\n\r\n" + body)
    return hashlib.sha256(Relaxed.canonicalize_body(parsed)).digest()


def hash_in_pieces(body: bytes, cuts: list[int]) -> bytes:
    hasher = BodyHasher()
    at = 0
    for cut in sorted(cuts):
        hasher.update(body[at:cut])
        at = cut
    hasher.update(body[at:])
    return hasher.digest()


# Pieces that exercise every rule: WSP runs, WSP before CRLF, a bare CR, a bare LF, empty lines.
body_pieces = st.sampled_from(
    [b"a", b"xyz", b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\r\n\r\n", b"\n", b"\r", b"\xc3\xbc"]
)
bodies = st.lists(body_pieces, max_size=40).map(b"".join)


@given(body=bodies, data=st.data())
def test_the_body_hash_is_dkimpys_for_any_body_in_any_pieces(body: bytes, data) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=4), label="cuts")
    assert hash_in_pieces(body, cuts) == dkimpy_body_hash(body)


@given(body=bodies.filter(lambda b: b.count(b"\n") == b.count(b"\r\n")))
def test_a_crlf_body_hashes_as_relaxed_canonicalize_body_says(body: bytes) -> None:
    # The store's bytes are CRLF: then dkimpy's parser changes nothing, and the hash is that of
    # canonicalize_body applied to the body as it is.
    assert hash_in_pieces(body, []) == hashlib.sha256(Relaxed.canonicalize_body(body)).digest()


TRICKY = [
    b"",
    b"\r\n",
    b"\r\n\r\n\r\n",
    b"  \r\n\t\r\n",
    b" ",
    b"a",
    b"a  ",
    b"a \t b\t\r\n",
    b"a\r\n\r\n \r\nb\r\n\r\n\r\n",
    b"a \r\r\n\r\n",
    b"a\r \r\n",
    b"a\rb\r",
    b"a\nb \n\n",
    b"a \n\r\n \n",
    b"\r\n\r\n  ",
    b"line one  with   runs \r\n\r\nline\tthree\r\n\r\n",
]


@pytest.mark.parametrize("body", TRICKY)
def test_every_split_into_up_to_three_pieces_and_byte_by_byte(body: bytes) -> None:
    expected = dkimpy_body_hash(body)
    for i in range(len(body) + 1):
        for j in range(i, len(body) + 1):
            assert hash_in_pieces(body, [i, j]) == expected, (body, i, j)
    hasher = BodyHasher()
    for k in range(len(body)):
        hasher.update(body[k : k + 1])
    assert hasher.digest() == expected


@pytest.mark.parametrize(
    ("body", "canonical"),
    [
        (b"", b""),  # RFC 6376 §3.4.4 (errata 1384): the empty body is empty
        (b"\r\n\r\n", b""),
        (b" \t \r\n", b""),
        (b"a  b \t\r\n", b"a b\r\n"),
        (b"a\r\n\r\n\r\n", b"a\r\n"),
        (b"a\r\n\r\nb", b"a\r\n\r\nb\r\n"),  # the missing CRLF added; inner empty lines kept
        (b"a\nb\n\n", b"a\r\nb\r\n"),  # a bare LF ends a line, as in dkimpy's parser
        (b"a\rb\r\n", b"a\rb\r\n"),  # a bare CR is content
    ],
)
def test_relaxed_body_canonicalization_by_example(body: bytes, canonical: bytes) -> None:
    assert hash_in_pieces(body, [len(body) // 2]) == hashlib.sha256(canonical).digest()


def test_digest_can_be_asked_midway_and_hashing_goes_on() -> None:
    hasher = BodyHasher()
    hasher.update(b"a \r")
    assert hasher.digest() == hashlib.sha256(b"a \r\r\n").digest()  # as if the body ended here
    assert hasher.digest() == hashlib.sha256(b"a \r\r\n").digest()
    hasher.update(b"\nb\r\n\r\n")
    assert hasher.digest() == hashlib.sha256(b"a\r\nb\r\n").digest()


def test_long_wsp_runs_and_many_empty_lines_are_not_kept() -> None:
    # What the hasher holds between chunks stays small however long the run.
    hasher = BodyHasher()
    for _ in range(8):
        hasher.update(b" " * CHUNK)
    assert len(hasher._carry) <= 2
    for _ in range(4):
        hasher.update(b"\r\n" * (CHUNK // 2))
    hasher.update(b"x")
    # 8 chunks of spaces end in a line end (dropped), then 2 * CHUNK - 1 empty lines, then x.
    expected = hashlib.sha256()
    expected.update(b"\r\n" * (2 * CHUNK))
    expected.update(b"x\r\n")
    assert hasher.digest() == expected.digest()


def long_line_body(length: int) -> bytes:
    """A body with lines of ``length`` octets and more: WSP runs, dots, a bare CR, a tab run at
    a line's end, the kind of line a sending MTA no longer folds (issue 11, point 3)."""
    words = (b"word  \t" * (length // 7 + 1))[:length]
    return (
        b"short\r\n" + words + b"\r\n" + b"." + words + b" \t \r\n"
        + words[: length // 2] + b"\r" + words + b"\r\n" + words + b"." + b"\t" * 500 + b"\r\n"
        + b"\r\n\r\n"
    )  # fmt: skip


@pytest.mark.parametrize("length", [16 * 1024, 100 * 1024], ids=["16KiB", "100KiB"])
def test_long_lines_hash_as_dkimpy_does_however_the_body_is_read(length: int) -> None:
    body = long_line_body(length)
    expected = dkimpy_body_hash(body)
    for chunk in (1000, 4096, 65536, CHUNK):
        assert hash_in_pieces(body, list(range(chunk, len(body), chunk))) == expected, chunk


def test_a_long_run_of_blanks_inside_a_line_is_hashed_in_one_pass() -> None:
    """A line of any length may come in now, and a run of blanks not followed by CRLF was
    rescanned from each of its octets (quadratic: a 64 KiB run took 6 s; this one, hours)."""
    body = b"a" + b" " * 2**20 + b"x" + b"\t" * 2**20 + b"\r\n"
    assert hash_in_pieces(body, [5, 2**20 + 7]) == hashlib.sha256(b"a x\r\n").digest()


# split_header: the header section the relay finds in the first range it reads.


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"From: a\r\nTo: b\r\n\r\nbody\r\n", (b"From: a\r\nTo: b\r\n\r\n", 18)),
        (b"From: a\r\n\r\n", (b"From: a\r\n\r\n", 11)),
        (b"From: a\r\n\r\n\r\nbody", (b"From: a\r\n\r\n", 11)),
        (b"From: a\nTo: b\n\nbody", (b"From: a\nTo: b\n\n", 15)),
        (b"From: a\r\n\nbody", (b"From: a\r\n\n", 10)),
        (b"\r\nbody", (b"\r\n", 2)),
        (b"From: a\r\n\r\r\nb", None),  # a line holding a CR is not empty
        (b"From: a\r\n\tfolded\r\n", None),
        (b"From: a\r\n\r", None),  # the range ends inside the empty line
        (b"", None),
    ],
)
def test_split_header_finds_the_empty_line_dkimpy_finds(head: bytes, expected) -> None:
    assert split_header(head) == expected
    if expected is not None:
        header, start = expected
        assert dkim.rfc822_parse(head)[0] == dkim.rfc822_parse(header)[0]
        assert dkim.rfc822_parse(head)[1] == dkim.rfc822_parse(b"\r\n" + head[start:])[1]


def streamed_signature(message: bytes, key: DkimKey, now: float, chunk: int = CHUNK) -> bytes:
    """Sign as the relay does: the header from the first range, the body in ``chunk``s."""
    split = split_header(message[:CHUNK])
    assert split is not None
    header, start = split
    hasher = BodyHasher()
    for at in range(start, len(message), chunk):
        hasher.update(message[at : at + chunk])
    return sign_streamed(header, hasher.digest(), key, "example.test", now)


HEADER = MESSAGE.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
NOW = 1_795_000_000.75


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"x",
        b"".join(b"line %06d with  runs \t \r\n" % i for i in range(12000))[: 300 * 1024]
        + b"\r\n\r\n",
        b"bare\nlines  \n\n",
    ],
    ids=["0B", "1B", "300KiB", "bare-lf"],
)
def test_streamed_signatures_verify_with_dkimpy(algorithm: str, body: bytes) -> None:
    key = KEYS[algorithm]
    message = HEADER + body
    signature = streamed_signature(message, key, NOW)
    assert signature.startswith(b"DKIM-Signature: v=1; ") and signature.endswith(b"\r\n")
    assert dkim.verify(signature + message, dnsfunc=dns_for(key))
    assert not dkim.verify(signature + message + b"more\r\n", dnsfunc=dns_for(key))
    tags = dict(
        part.strip().split("=", 1)
        for part in b"".join(signature.split(b"\r\n")).decode()[len("DKIM-Signature:") :].split(";")
    )
    assert tags["t"] == "1795000000"
    assert tags["c"] == "relaxed/relaxed" and tags["a"] == f"{algorithm}-sha256"


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_sign_streamed_is_dkimpys_own_sign_byte_for_byte(algorithm: str, monkeypatch) -> None:
    # Both algorithms sign deterministically (RSASSA-PKCS1-v1_5, Ed25519), so with dkimpy's
    # clock stopped at the same second the two fields must be the same bytes.
    key = KEYS[algorithm]
    ours = sign(MESSAGE, key, "example.test", now=NOW)
    assert streamed_signature(MESSAGE, key, NOW, chunk=64) == ours
    monkeypatch.setattr(dkim.time, "time", lambda: NOW)
    theirs = dkim.sign(
        MESSAGE,
        key.selector.encode(),
        b"example.test",
        key.private,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=f"{algorithm}-sha256".encode(),
        include_headers=[
            b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to",
            b"references", b"mime-version", b"content-type", b"content-transfer-encoding", b"from",
        ],
    )  # fmt: skip
    assert ours == theirs


def test_sign_streamed_refuses_what_it_cannot_sign() -> None:
    key = KEYS["ed25519"]
    digest = BodyHasher().digest()
    assert digest == EMPTY_SHA256
    with pytest.raises(DkimError, match="no From"):
        sign_streamed(b"To: bo@elsewhere.test\r\n\r\n", digest, key, "example.test", NOW)
    with pytest.raises(DkimError, match="no From"):
        sign_streamed(b"Resent-From: a@example.test\r\n\r\n", digest, key, "example.test", NOW)
    with pytest.raises(DkimError, match="followed by body"):  # a From in the body is no header
        sign_streamed(b"\r\nFrom: a@example.test\r\n", digest, key, "example.test", NOW)
    with pytest.raises(DkimError, match="followed by body"):
        sign_streamed(HEADER + b"body\r\n", digest, key, "example.test", NOW)
    with pytest.raises(DkimError, match="SHA-256"):
        sign_streamed(HEADER, base64.b64encode(digest), key, "example.test", NOW)
    with pytest.raises(DkimError, match="time"):
        sign_streamed(HEADER, digest, key, "example.test", float("nan"))
    with pytest.raises(DkimError, match="no selector"):
        sign_streamed(HEADER, digest, generate_key("ed25519"), "example.test", NOW)


def test_sign_streamed_signs_the_header_it_is_given() -> None:
    key = KEYS["rsa"]
    body = b"Ana\r\n"
    signature = sign_streamed(HEADER, dkimpy_body_hash(body), key, "example.test", NOW)
    assert dkim.verify(signature + HEADER + body, dnsfunc=dns_for(key))
    other = HEADER.replace(b"Subject: ", b"Subject: Re: ")
    assert not dkim.verify(signature + other + body, dnsfunc=dns_for(key))
