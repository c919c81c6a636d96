# -*- test-case-name: tests.test_core_dkim -*-
"""
DKIM keys and signatures for mail that leaves Strata (issue 5, point 4).

Keys are made here (RSA with ``cryptography``, Ed25519 per RFC 8463) and kept in a keyring on
disk, one directory per domain: ``DATA/dkim/<domain>/<selector>.key`` (mode 0600, directories
0700) and ``active.json`` naming the selector that signs.  The DNS side is text only: the TXT
record to publish (RFC 6376 §3.6.1) and a zone-file line with the value split into strings of at
most 255 octets (RFC 1035 §3.3.14; RFC 6376 §3.6.2.2 says verifiers join them with nothing between).

Signing uses dkimpy: relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4), the usual header set, From
oversigned so that a second From cannot be added below the signature (RFC 6376 §8.15).  Mail is
signed once: relayed inbound mail already carries its author's signature, and
L{already_signed} lets the caller leave mail with a signature of the domain alone.

A message in the store is read in ranges, never whole: L{split_header} finds the header section
in the first range, L{BodyHasher} hashes the body range by range, and L{sign_streamed} signs the
header with that body hash.  L{sign} is the same path for a message already in memory.

This module must never print, log or put in an event a private key.  Its file I/O is plain and
blocking: the server calls L{DkimKeyring.active} from a worker thread, the CLI directly.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, cast

import dkim
import nacl.encoding
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import HASH_ALGORITHMS, UnparsableKeyError, parse_pem_private_key

from strata_twisted.errors import InvalidDomainName, StrataError
from strata_twisted.model import normalize_domain
from strata_twisted.proto.mime import header_fields

if TYPE_CHECKING:
    from hashlib import _Hash as Hasher

Algorithm = Literal["rsa", "ed25519"]
ALGORITHMS: Final[tuple[Algorithm, ...]] = ("rsa", "ed25519")

MIN_RSA_BITS: Final = 1024
"""RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits (and SHOULD use 2048)."""
MAX_RSA_BITS: Final = 4096

SIGNED_HEADERS: Final = (
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
    "reply-to",
)
"""The header fields signed when present (each instance); From is also signed once more."""

_SIGNATURE_ALGORITHMS: Final[dict[Algorithm, bytes]] = {
    "rsa": b"rsa-sha256",
    "ed25519": b"ed25519-sha256",
}
# RFC 6376 §3.1: selector = sub-domain *( "." sub-domain ); sub-domain per RFC 5321 (LDH labels).
# It also names a file here, so nothing else may pass: no "/", no "..", no leading dot.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SELECTOR = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_TXT_CHUNK: Final = 255
# RFC 6376 §3.4.4 relaxed body canonicalization, in dkimpy's order (dkim.rfc822_parse, then
# canonicalization.Relaxed): a line ends in CRLF or a bare LF and is rewritten to end in CRLF;
# WSP before a line end goes; the WSP runs left become one SP.
_LINE_END: Final = re.compile(rb"\r?\n")
# A run is tried at its first octet only (the lookbehind) and never given back (possessive):
# plain [ \t]+\r\n retries every octet of a run not followed by CRLF, quadratic in the run's
# length, and lines of any length come in now (a 64 KiB run of spaces took 6 s).
_WSP_AT_EOL: Final = re.compile(rb"(?<![ \t])[ \t]++\r\n")
_WSP: Final = re.compile(rb"[ \t]+")
_CRLF_BATCH: Final = 65536  # held-back empty lines are hashed this many at a time
# The empty line that ends the header section: at the very start, or after a line end.
_END_OF_HEADER: Final = re.compile(rb"(?:\A|\n)\r?\n")
_ACTIVE: Final = "active.json"


class DkimError(StrataError):
    """A DKIM key cannot be made, stored or read."""


class InvalidSelector(DkimError):
    """The selector is not a DNS name (RFC 6376 §3.1)."""


class DkimKeyExists(DkimError):
    """The domain already has a key with that selector (and ``replace`` was not asked for)."""


@dataclass(frozen=True)
class DkimKey:
    """
    One signing key.  ``private`` is what dkimpy signs with: a PEM RSA private key, or for
    Ed25519 the base64 of the raw 32-byte seed (dkimpy README, RFC 8463 §3).  ``public`` is what
    the TXT record's ``p=`` carries: a DER SubjectPublicKeyInfo (RSA), or the raw 32-byte key.
    """

    algorithm: Algorithm
    private: bytes
    public: bytes
    selector: str = ""

    def __repr__(self) -> str:  # never show the private key, even in a traceback
        return f"DkimKey({self.algorithm!r}, selector={self.selector!r})"


@dataclass(frozen=True)
class DkimKeyInfo:
    """A key in the keyring, as L{DkimKeyring.list} reports it (no key material)."""

    domain: str
    selector: str
    algorithm: Algorithm
    active: bool


def check_selector(selector: str) -> str:
    """The selector in lower case, or L{InvalidSelector}."""
    text = selector.strip().lower()
    if len(text) > 63 or not _SELECTOR.match(text):
        raise InvalidSelector(
            f"{selector!r} is not a valid DKIM selector (letters, digits and hyphens, in labels "
            "separated by dots, at most 63 characters)"
        )
    return text


def generate_key(algorithm: Algorithm, bits: int = 2048, selector: str = "") -> DkimKey:
    """A new key; ``bits`` applies to RSA only."""
    if algorithm == "rsa":
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise DkimError(f"RSA keys have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, not {bits}")
        private_pem = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return load_key(private_pem, selector)
    if algorithm == "ed25519":
        seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return load_key(base64.b64encode(seed) + b"\n", selector)
    raise DkimError(f"unknown DKIM algorithm {algorithm!r} (rsa or ed25519)")


def load_key(data: bytes, selector: str = "") -> DkimKey:
    """A key from its stored form (PEM for RSA, a base64 seed for Ed25519), public half derived."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            private = serialization.load_pem_private_key(data, password=None)
            if not isinstance(private, rsa.RSAPrivateKey):
                raise DkimError("the PEM key is not an RSA key")
            public = private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return DkimKey("rsa", data, public, selector)
        seed = base64.b64decode(data.strip(), validate=True)
        if len(seed) != 32:
            raise DkimError("an Ed25519 key is a base64 32-byte seed")
        raw = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
        public = raw.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return DkimKey("ed25519", base64.b64encode(seed) + b"\n", public, selector)
    except (ValueError, TypeError) as e:  # binascii.Error is a ValueError
        raise DkimError(f"unreadable DKIM key: {type(e).__name__}") from None


def dns_record(key: DkimKey) -> str:
    """The TXT value to publish at ``<selector>._domainkey.<domain>`` (RFC 6376 §3.6.1)."""
    return f"v=DKIM1; k={key.algorithm}; p={base64.b64encode(key.public).decode('ascii')}"


def txt_strings(value: str) -> list[str]:
    """``value`` in character-strings of at most 255 octets (RFC 1035 §3.3.14)."""
    data = value.encode("ascii")
    return [data[i : i + _TXT_CHUNK].decode("ascii") for i in range(0, len(data), _TXT_CHUNK)]


def record_name(key: DkimKey, domain: str) -> str:
    """The owner name of the key's TXT record, fully qualified."""
    return f"{_selector_of(key)}._domainkey.{normalize_domain(domain)}."


def zone_line(key: DkimKey, domain: str) -> str:
    """``S._domainkey.DOMAIN. IN TXT "..." "..."``, ready for a zone file."""
    strings = " ".join(f'"{chunk}"' for chunk in txt_strings(dns_record(key)))
    return f"{record_name(key, domain)} IN TXT {strings}"


def sign(message: bytes, key: DkimKey, domain: str, now: float) -> bytes:
    """
    The ``DKIM-Signature:`` header field, folded and ending in CRLF, to prepend to ``message``
    (which must not change after this: every byte of the body and the signed fields counts).
    ``now`` is the signing time for ``t=``, from the caller's clock.  For a message read in
    ranges, see L{BodyHasher} and L{sign_streamed}.
    """
    split = split_header(message)
    header, body_start = split if split is not None else (message, len(message))
    hasher = BodyHasher()
    hasher.update(message[body_start:])
    return sign_streamed(header, hasher.digest(), key, domain, now)


def split_header(head: bytes) -> tuple[bytes, int] | None:
    """
    The header section of the message that begins with ``head`` (its fields and the empty line
    that ends it, RFC 5322 §2.1) and the offset where the body starts; None when ``head`` holds
    no complete header section.  Lines end in CRLF or, as dkimpy reads them, a bare LF.
    """
    end = _END_OF_HEADER.search(head)
    if end is None:
        return None
    return head[: end.end()], end.end()


def sign_streamed(header: bytes, body_hash: bytes, key: DkimKey, domain: str, now: float) -> bytes:
    """
    The ``DKIM-Signature:`` header field (folded, CRLF-terminated) for the message whose header
    section is ``header`` (up to and including the empty line) and whose relaxed body hash is
    ``body_hash`` (L{BodyHasher.digest}); ``t=`` is ``now``, in seconds since the epoch.
    Same tags, signed fields and oversigned From as L{sign}, which is built on this.
    """
    split = split_header(header)
    if split is not None and split[1] != len(header):
        raise DkimError("the header section is followed by body bytes")
    if len(body_hash) != hashlib.sha256().digest_size:
        raise DkimError("the body hash is not a SHA-256 digest")
    if not math.isfinite(now) or now < 0:
        raise DkimError(f"cannot sign at time {now!r}")
    include = [name for name in _header_names(header) if name in SIGNED_HEADERS]
    if "from" not in include:
        raise DkimError("the message has no From header field (RFC 6376 §5.4 requires it)")
    include.append("from")  # oversign: an added From would break the signature (§8.15)
    included = [name.encode("ascii") for name in include]
    selector = _selector_of(key).encode("ascii")
    domain_a = normalize_domain(domain).encode("ascii")
    algorithm = _SIGNATURE_ALGORITHMS[key.algorithm]
    # The tags and their order are dkimpy's own sign() (dkim.DKIM.sign), with bh= ours.  b= is
    # a placeholder that gen_header replaces; 60 characters make it fold onto its own line.
    fields = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain_a),
        (b"i", b"@" + domain_a),
        (b"q", b"dns/txt"),
        (b"s", selector),
        (b"t", str(int(now)).encode("ascii")),
        (b"h", b" : ".join(included)),
        (b"bh", base64.b64encode(body_hash)),
        (b"b", b"0" * 60),
    ]
    try:
        signer = dkim.DKIM(header, signature_algorithm=algorithm)
        signer.hasher = HASH_ALGORITHMS[algorithm]  # what dkim.DKIM.sign sets before gen_header
        policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        value = signer.gen_header(fields, included, policy, b"DKIM-Signature", _signing_key(key))
    except dkim.DKIMException as e:
        raise DkimError(f"cannot sign: {e}") from None
    return b"DKIM-Signature: " + cast(bytes, value)


class BodyHasher:
    """
    The SHA-256 of a body's relaxed canonical form (RFC 6376 §3.4.4), fed in chunks of any size
    and never holding more than a chunk: WSP runs become one SP, WSP at a line's end goes, the
    empty lines at the end go, a non-empty body ends in CRLF and an empty one hashes as nothing.

    It matches dkimpy byte for byte, because dkimpy verifies what we sign: a bare LF ends a line
    like CRLF (dkimpy's message parser splits lines on CRLF or LF), a CR not before LF is content,
    and a last line without CRLF keeps a trailing WSP run as one SP (dkimpy strips WSP only
    before CRLF, then adds the missing CRLF).  A body that came over SMTP always ends in CRLF.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._carry = b""  # the undecided end of the input so far: [SP][CR], at most 2 bytes
        self._empty_lines = 0  # line ends seen but not hashed: they count only if content follows
        self._started = False  # something other than line ends has been hashed

    def update(self, chunk: bytes) -> None:
        """Feed the next bytes of the body."""
        data = self._carry + chunk
        # What the next bytes can still change stays behind: a CR (it may begin a CRLF) and the
        # WSP run before it (dropped before a line end, one SP before content).
        end = len(data) - 1 if data.endswith(b"\r") else len(data)
        end = len(data[:end].rstrip(b" \t"))
        # The run's length no longer matters, only that there is one: the carry stays small.
        self._carry = _WSP.sub(b" ", data[end:])
        self._empty_lines, self._started = _hash_decided(
            self._hash, data[:end], self._empty_lines, self._started
        )

    def digest(self) -> bytes:
        """The digest of the body fed so far (more may still be fed; nothing is consumed)."""
        h = self._hash.copy()
        _, started = _hash_decided(h, self._carry, self._empty_lines, self._started)
        if started:
            h.update(b"\r\n")  # the body's last line, or the one line end kept of the empty ones
        return h.digest()


def already_signed(message: bytes, domain: str) -> bool:
    """True when the message carries a DKIM-Signature whose ``d=`` is ``domain``."""
    try:
        wanted = normalize_domain(domain)
    except InvalidDomainName:
        return False
    for name, value in _header_fields(message):
        if name != "dkim-signature":
            continue
        tags = _tags(value)
        d = tags.get("d", "")
        try:
            if d and normalize_domain(d) == wanted:
                return True
        except InvalidDomainName:
            continue
    return False


class DkimKeyring:
    """The DKIM keys of every domain, under ``data_dir/dkim``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "dkim"

    def generate(
        self,
        domain: str,
        selector: str,
        algorithm: Algorithm = "rsa",
        *,
        replace: bool = False,
        bits: int = 2048,
    ) -> DkimKey:
        """Make, store and activate a new key.  An existing selector is kept unless ``replace``."""
        name = normalize_domain(domain)
        selector = check_selector(selector)
        path = self._domain_dir(name, create=True) / f"{selector}.key"
        if path.exists() and not replace:
            raise DkimKeyExists(
                f"{name} already has a DKIM key with selector {selector} "
                "(choose another selector, or replace it)"
            )
        key = generate_key(algorithm, bits, selector)
        _write_private(path, key.private, replace)
        active = json.dumps({"selector": selector, "algorithm": key.algorithm}) + "\n"
        _write_private(path.parent / _ACTIVE, active.encode("ascii"), True)
        return key

    def active(self, domain: str) -> DkimKey | None:
        """The key that signs the domain's mail, or None when it has none."""
        directory = self.root / normalize_domain(domain)
        try:
            info = json.loads((directory / _ACTIVE).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise DkimError(f"cannot read {directory / _ACTIVE}: {e}") from None
        if not isinstance(info, dict) or not isinstance(info.get("selector"), str):
            raise DkimError(f"{directory / _ACTIVE} names no selector")
        selector = check_selector(info["selector"])
        key = self._load(directory / f"{selector}.key", selector)
        if info.get("algorithm") not in (None, key.algorithm):
            raise DkimError(
                f"{directory / _ACTIVE} says {info.get('algorithm')!r}, "
                f"but {selector}.key is an {key.algorithm} key"
            )
        return key

    def list(self) -> list[DkimKeyInfo]:
        """Every stored key, by domain and selector."""
        if not self.root.is_dir():
            return []
        found: list[DkimKeyInfo] = []
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
            current = self.active(directory.name)
            for path in sorted(directory.glob("*.key")):
                key = self._load(path, path.stem)
                found.append(
                    DkimKeyInfo(
                        directory.name,
                        path.stem,
                        key.algorithm,
                        current is not None and current.selector == path.stem,
                    )
                )
        return found

    def _domain_dir(self, name: str, create: bool = False) -> Path:
        directory = self.root / name
        if create:
            for d in (self.root, directory):
                d.mkdir(mode=0o700, exist_ok=True)
                d.chmod(0o700)  # mkdir's mode is cut by the umask; an old dir may be looser
        return directory

    def _load(self, path: Path, selector: str) -> DkimKey:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DkimError(f"cannot read {path}: {e.strerror or e}") from None
        return load_key(data, selector)


# -- helpers ------------------------------------------------------------------------------------


def _selector_of(key: DkimKey) -> str:
    if not key.selector:
        raise DkimError("the key has no selector")
    return check_selector(key.selector)


def _signing_key(key: DkimKey) -> object:
    """The private key in the form dkimpy's gen_header signs with (as dkim.DKIM.sign makes it)."""
    if key.algorithm == "rsa":
        try:
            return parse_pem_private_key(key.private)
        except UnparsableKeyError as e:
            raise DkimError(f"unreadable DKIM key: {e}") from None
    try:
        return nacl.signing.SigningKey(key.private.strip(), encoder=nacl.encoding.Base64Encoder)
    except (nacl.exceptions.ValueError, ValueError, TypeError):
        raise DkimError("unreadable DKIM key: not a base64 Ed25519 seed") from None


def _hash_decided(h: Hasher, data: bytes, empty_lines: int, started: bool) -> tuple[int, bool]:
    """
    Hash the relaxed form of ``data``, a piece of the body that later bytes cannot change, and
    return the new count of held-back line ends and whether content has been hashed.  The piece
    ends neither in WSP nor in a CR that could begin a CRLF, so no rule of §3.4.4 spans pieces.
    """
    text = _WSP.sub(b" ", _WSP_AT_EOL.sub(b"\r\n", _LINE_END.sub(b"\r\n", data)))
    end = len(text)
    while text.endswith(b"\r\n", 0, end):  # the piece's own trailing line ends wait
        end -= 2
    if end == 0:
        return empty_lines + len(text) // 2, started
    while empty_lines:  # empty lines with content after them are part of the body
        step = min(empty_lines, _CRLF_BATCH)
        h.update(b"\r\n" * step)
        empty_lines -= step
    h.update(memoryview(text)[:end])
    return (len(text) - end) // 2, True


def _write_private(path: Path, data: bytes, replace: bool) -> None:
    """Write ``data`` to ``path``, mode 0600, durably: a temporary file, fsync, then link it in
    (refusing an existing file unless ``replace``) and fsync the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise DkimKeyExists(f"{path} exists") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _header_fields(message: bytes) -> list[tuple[str, str]]:
    """The header section's fields, unfolded, names in lower case (RFC 5322 §2.2.3)."""
    end = len(message)
    for separator in (b"\r\n\r\n", b"\n\n"):
        at = message.find(separator)
        if at != -1:
            end = min(end, at + len(separator) // 2)
    return [
        (name.decode("ascii", "replace").strip(), value.decode("utf-8", "replace"))
        for name, value in header_fields(message[:end])
    ]


def _header_names(message: bytes) -> list[str]:
    return [name for name, _ in _header_fields(message)]


def _tags(value: str) -> dict[str, str]:
    """A tag-list (RFC 6376 §3.2), leniently: whitespace dropped, the first of a tag kept."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), re.sub(r"\s+", "", tag_value))
    return tags
