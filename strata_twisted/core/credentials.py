# -*- test-case-name: tests.test_core_credentials -*-
"""
Synced credentials: Dovecot passwd-file lines in, password hashes kept, logins verified.

A protected domain's users arrive as Dovecot passwd-file lines (``user@domain:{SCHEME}hash:…``)
or through the API.  L{parse_passwd_file} turns such a file into ``(address, PasswordHash)``
pairs for one domain, or raises L{PasswdFileError} listing every bad line by number.  A
L{PasswordHash} can only exist in a form L{verify} understands: an unknown or malformed scheme
fails when the file is imported, never when the user logs in.

Supported schemes (DESIGN decision 8): SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT (``$2a$``, ``$2b$``,
``$2y$``), ARGON2I, ARGON2ID, SSHA512 (base64 or hex) and Dovecot's PBKDF2, plus ``{CRYPT}`` and
bare crypt strings (``$6$…``, ``$5$…``, ``$2y$…``, ``$argon2id$…``) identified by their prefix.
Plaintext schemes (``{PLAIN}``, ``{CLEARTEXT}``, …) are refused: Strata never stores a password.

L{verify}, L{dummy_verify} and L{check_password} are deliberately slow (bcrypt and argon2 cost
tens of milliseconds): callers run them in a thread pool (``deferToThreadPool``), never on the
reactor thread.  L{VerificationCache} is cheap (one HMAC) and is meant for the reactor thread:
Roundcube logs in on every web request, so a successful verification is remembered for a while,
keyed by a keyed hash so that no plaintext password is ever kept.

This module is pure: no threads, no Twisted, no I/O, no clock (the caller passes ``now``).  It
must never keep or log a plaintext password, and its errors never echo a password field.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError
from passlib.exc import PasswordValueError  # type: ignore[import-untyped]
from passlib.hash import sha256_crypt, sha512_crypt  # type: ignore[import-untyped]

from strata_twisted.errors import InvalidDomainName, StrataError
from strata_twisted.model import normalize_domain

__all__ = [
    "MAX_PASSWORD_BYTES",
    "SCHEMES",
    "CredentialError",
    "LineError",
    "PasswdFileError",
    "PasswordHash",
    "VerificationCache",
    "check_password",
    "dummy_verify",
    "hash_password",
    "parse_passwd_file",
    "verify",
]

SCHEMES: Final = (
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "BLF-CRYPT",
    "ARGON2I",
    "ARGON2ID",
    "SSHA512",
    "PBKDF2",
)
"""The canonical scheme names a L{PasswordHash} may carry."""

MAX_PASSWORD_BYTES: Final = 4096
"""Longer passwords (as UTF-8) never verify; libpass refuses them too, and no one types them."""

# Cost ceilings.  A hash dearer than this would hold a thread-pool worker for seconds per login
# (and Roundcube logs in on every page), so it is refused at import with a clear message.
MAX_SHA_CRYPT_ROUNDS: Final = 1_000_000
MAX_BCRYPT_COST: Final = 15
MAX_ARGON2_MEMORY_KIB: Final = 256 * 1024
MAX_ARGON2_TIME_COST: Final = 16
MAX_PBKDF2_ROUNDS: Final = 2_000_000

# Dovecot calls these plaintext (CLEAR and PLAIN-TRUNC are aliases or variants of PLAIN).
_PLAINTEXT_SCHEMES: Final = frozenset({"PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC"})
# Schemes whose value is a crypt(3) string; Dovecot verifies them with crypt(), which goes by the
# string's own prefix, so {SHA512-CRYPT}$2y$… works there and works here.
_CRYPT_FAMILY: Final = frozenset({"CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT"})
_ARGON2_FAMILY: Final = frozenset({"ARGON2I", "ARGON2ID"})
# Dovecot password-scheme.c: ".b64"/".base64" or ".hex" after the scheme name picks the encoding.
_ARGON2_TYPES: Final = {"ARGON2I": argon2.Type.I, "ARGON2ID": argon2.Type.ID}
_ENCODINGS: Final = {"B64": "base64", "BASE64": "base64", "HEX": "hex"}
_SCHEME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,31}\Z")

# bcrypt: "$2b$" cost "$" 22 salt characters and 31 checksum characters in bcrypt's base64
# alphabet.  The salt's last character carries 2 unused bits, so it must be one of ".Oeu"; the
# bcrypt library refuses any other ("Invalid salt"), and we want that refusal at import.
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}\Z")
# Dovecot password-scheme-pbkdf2.c: "$1$" salt "$" rounds "$" 40 hex digits of PBKDF2-HMAC-SHA1.
# The salt is used as the literal characters, not decoded.
_PBKDF2 = re.compile(r"\$1\$([^$]*)\$(\d{1,10})\$([0-9a-fA-F]{40})\Z")
_PBKDF2_KEY_BYTES: Final = 20
# The PHC string format libsodium (Dovecot) and argon2-cffi write: version 19, unpadded base64 salt
# and hash.  argon2.extract_parameters alone does not check the salt and hash characters.
_ARGON2 = re.compile(
    r"\$argon2(?:i|id)\$v=19\$m=\d{1,10},t=\d{1,10},p=\d{1,3}\$"
    r"[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}\Z"
)
_SHA512_BYTES: Final = 64
# RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
_MAX_LOCAL_PART: Final = 64
_BAD_LOCAL = re.compile(r"[\s\x00-\x1f\x7f@]")


class CredentialError(StrataError, ValueError):
    """A password hash Strata cannot keep or verify.  The message never contains the hash."""


@dataclass(frozen=True)
class LineError:
    """What is wrong with one line of a passwd-file (1-based ``line``)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class PasswdFileError(CredentialError):
    """A passwd-file with bad lines; ``errors`` lists each one.  Nothing of the file is used."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = tuple(errors)
        shown = "; ".join(str(e) for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"{len(self.errors)} bad line(s): {shown}{more}")


@dataclass(frozen=True)
class PasswordHash:
    """
    A verified-to-be-usable password hash: its canonical ``scheme`` (one of L{SCHEMES}) and the
    hash ``value`` without the ``{SCHEME}`` prefix.

    Construction validates, so every instance can be verified: a malformed hash, an unsupported
    scheme or an excessive cost raises L{CredentialError} here, at import time.  The value is kept
    out of C{repr} so that a hash never lands in a log by accident.  L{text} is the form to store
    (``{SCHEME}value``); Dovecot reads it back unchanged.
    """

    scheme: str
    value: str = field(repr=False)

    def __post_init__(self) -> None:
        _validate(self.scheme, self.value)

    @property
    def text(self) -> str:
        """The stored form, ``{SCHEME}value``, as Dovecot writes it."""
        return f"{{{self.scheme}}}{self.value}"

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """
        Parse a Dovecot password field: ``{SCHEME}hash``, ``{SCHEME.ENCODING}hash`` or a bare
        crypt string.  Raise L{CredentialError} (without echoing the field) when it is unusable.
        """
        if not text:
            raise CredentialError("empty password field (a user needs a password hash)")
        if text.startswith("{"):
            end = text.find("}")
            if end < 0:
                raise CredentialError("unterminated {SCHEME} prefix")
            return cls._from_scheme(text[1:end], text[end + 1 :])
        if text.startswith("$"):
            return cls(_identify_crypt(text), text)
        raise CredentialError(
            "not a recognised password hash; plaintext passwords are refused "
            "(hash it with 'doveadm pw -s SHA512-CRYPT')"
        )

    @classmethod
    def _from_scheme(cls, name: str, value: str) -> PasswordHash:
        shown = f"{{{name}}}" if _SCHEME_NAME.match(name) else "in {…}"
        base, dot, suffix = name.upper().partition(".")
        if base in _PLAINTEXT_SCHEMES:
            raise CredentialError(
                f"plaintext scheme {shown} refused: Strata stores only password hashes "
                "(convert with 'doveadm pw -s SHA512-CRYPT')"
            )
        encoding = _ENCODINGS.get(suffix) if dot else None
        if dot and encoding is None:
            raise CredentialError(f"unknown encoding suffix in scheme {shown} (use .b64 or .hex)")
        if base == "SSHA512":
            return cls("SSHA512", _canonical_ssha512(value, encoding or "base64"))
        if encoding is not None:
            raise CredentialError(f"scheme {shown}: an encoding suffix only applies to SSHA512")
        if base in _CRYPT_FAMILY:
            return cls(_identify_crypt(value), value)
        if base in _ARGON2_FAMILY:
            scheme = _identify_crypt(value)
            if scheme not in _ARGON2_FAMILY:
                raise CredentialError(f"scheme {shown} holds something that is not an argon2 hash")
            return cls(scheme, value)
        if base == "PBKDF2":
            return cls("PBKDF2", value)
        raise CredentialError(
            f"unsupported password scheme {shown}; supported: {', '.join(SCHEMES)} and CRYPT"
        )


def _identify_crypt(value: str) -> str:
    """The scheme of a crypt(3)-style string, by its prefix."""
    if value.startswith("$6$"):
        return "SHA512-CRYPT"
    if value.startswith("$5$"):
        return "SHA256-CRYPT"
    if value.startswith(("$2a$", "$2b$", "$2y$")):
        return "BLF-CRYPT"
    if value.startswith("$argon2id$"):
        return "ARGON2ID"
    if value.startswith("$argon2i$"):
        return "ARGON2I"
    if value.startswith("$1$"):
        raise CredentialError("MD5-CRYPT ($1$) is too weak and not supported; rehash the user")
    raise CredentialError(
        "unsupported crypt format (expected $6$, $5$, $2a$/$2b$/$2y$, $argon2i$ or $argon2id$)"
    )


def _canonical_ssha512(value: str, encoding: str) -> str:
    """Decode an SSHA512 value (base64 or hex) and return it as canonical base64."""
    try:
        if encoding == "hex":
            raw = bytes.fromhex(value)
        else:
            raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError, binascii.Error):
        raise CredentialError(f"malformed SSHA512 hash (not valid {encoding})") from None
    return base64.b64encode(raw).decode("ascii")


def _validate(scheme: str, value: str) -> None:
    """Raise L{CredentialError} unless L{verify} can check ``value`` under ``scheme``."""
    if scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
        handler = sha512_crypt if scheme == "SHA512-CRYPT" else sha256_crypt
        prefix = "$6$" if scheme == "SHA512-CRYPT" else "$5$"
        try:
            if not value.startswith(prefix):
                raise ValueError
            parsed = handler.from_string(value)
            if not parsed.checksum:
                # "$6$salt" is a crypt *config* string (no hash): passlib parses it, and verify()
                # would then raise at login instead of refusing here.
                raise ValueError
            rounds = int(parsed.rounds)
        except ValueError:
            raise CredentialError(f"malformed {scheme} hash") from None
        if rounds > MAX_SHA_CRYPT_ROUNDS:
            raise CredentialError(f"{scheme} rounds above {MAX_SHA_CRYPT_ROUNDS} are refused")
    elif scheme == "BLF-CRYPT":
        match = _BCRYPT.match(value)
        if match is None:
            raise CredentialError("malformed BLF-CRYPT hash")
        cost = int(match.group(1))
        if not 4 <= cost <= MAX_BCRYPT_COST:
            raise CredentialError(f"BLF-CRYPT cost must be 4 to {MAX_BCRYPT_COST}")
    elif scheme in _ARGON2_FAMILY:
        try:
            if not _ARGON2.match(value):
                raise ValueError
            for part in value.rsplit("$", 2)[1:]:
                base64.b64decode(part + "=" * (-len(part) % 4), validate=True)
            params = argon2.extract_parameters(value)
        except (InvalidHashError, ValueError, binascii.Error):
            raise CredentialError(f"malformed {scheme} hash") from None
        if params.type is not _ARGON2_TYPES[scheme]:
            raise CredentialError(f"{scheme} scheme holds a different argon2 variant")
        # RFC 9106 §3.1: p >= 1, t >= 1 and m >= 8 * p KiB; libargon2 refuses anything less.
        if (
            params.parallelism < 1
            or params.time_cost < 1
            or params.memory_cost < 8 * params.parallelism
        ):
            raise CredentialError(f"{scheme} parameters below the Argon2 minimums")
        if params.memory_cost > MAX_ARGON2_MEMORY_KIB or params.time_cost > MAX_ARGON2_TIME_COST:
            raise CredentialError(
                f"{scheme} cost above m={MAX_ARGON2_MEMORY_KIB},t={MAX_ARGON2_TIME_COST} is refused"
            )
    elif scheme == "SSHA512":
        try:
            raw = base64.b64decode(value.encode("ascii"), validate=True)
        except (ValueError, binascii.Error):
            raise CredentialError("malformed SSHA512 hash (not valid base64)") from None
        # Dovecot ssha512_verify: the digest comes first, then a salt of at least one byte.
        if len(raw) <= _SHA512_BYTES:
            raise CredentialError("malformed SSHA512 hash (too short to hold a salt)")
    elif scheme == "PBKDF2":
        pbkdf2 = _PBKDF2.match(value)
        if pbkdf2 is None:
            raise CredentialError("malformed PBKDF2 hash (expected $1$salt$rounds$40 hex digits)")
        if not 1 <= int(pbkdf2.group(2)) <= MAX_PBKDF2_ROUNDS:
            raise CredentialError(f"PBKDF2 rounds must be 1 to {MAX_PBKDF2_ROUNDS}")
    else:
        shown = scheme if _SCHEME_NAME.match(scheme) else "?"
        raise CredentialError(f"unsupported password scheme {shown}")


def _password_bytes(password: str | bytes) -> bytes | None:
    """The password as bytes (UTF-8), or None when it can never match any stored hash."""
    if isinstance(password, str):
        try:
            password = password.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return None
    # Empty passwords never log in.  NUL cannot occur in a C string, so Dovecot never hashed one.
    if not password or b"\0" in password or len(password) > MAX_PASSWORD_BYTES:
        return None
    return password


def verify(stored: PasswordHash, password: str | bytes) -> bool:
    """
    Whether ``password`` (a str is taken as UTF-8) matches ``stored``, compared in constant time.

    CPU-heavy by design: run it in a thread pool, never on the reactor thread.  Never raises for
    a L{PasswordHash} (construction validated it).  An empty password, one with NUL or one longer
    than L{MAX_PASSWORD_BYTES} never matches.  BLF-CRYPT only reads the first 72 bytes of a
    password, like every bcrypt (and Dovecot's); longer passwords are cut there.
    """
    secret = _password_bytes(password)
    if secret is None:
        return False
    return _check(stored, secret)


def _check(stored: PasswordHash, secret: bytes) -> bool:
    scheme, value = stored.scheme, stored.value
    if scheme == "SHA512-CRYPT" or scheme == "SHA256-CRYPT":
        handler = sha512_crypt if scheme == "SHA512-CRYPT" else sha256_crypt
        try:
            # libpass recomputes the hash and compares with its constant-time consteq.
            return bool(handler.verify(secret, value))
        except PasswordValueError:
            return False
    if scheme == "BLF-CRYPT":
        # bcrypt >= 5 raises on passwords over 72 bytes instead of truncating; crypt_blowfish
        # (Dovecot) truncates, so we do too, or long passwords Dovecot accepts would fail here.
        return bcrypt.checkpw(secret[:72], value.encode("ascii"))
    if scheme in _ARGON2_FAMILY:
        try:
            return argon2.low_level.verify_secret(
                value.encode("ascii"), secret, _ARGON2_TYPES[scheme]
            )
        except VerificationError:
            return False
    if scheme == "SSHA512":
        raw = base64.b64decode(value)
        digest, salt = raw[:_SHA512_BYTES], raw[_SHA512_BYTES:]
        return hmac.compare_digest(hashlib.sha512(secret + salt).digest(), digest)
    match = _PBKDF2.match(value)
    assert match is not None, "validated at construction"
    salt_text, rounds, key_hex = match.groups()
    key = hashlib.pbkdf2_hmac(
        "sha1", secret, salt_text.encode("utf-8"), int(rounds), _PBKDF2_KEY_BYTES
    )
    return hmac.compare_digest(key, bytes.fromhex(key_hex))


def _cost_key(stored: PasswordHash) -> tuple[object, ...]:
    """What decides how long verifying ``stored`` takes (its scheme and cost parameters)."""
    scheme, value = stored.scheme, stored.value
    if scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
        handler = sha512_crypt if scheme == "SHA512-CRYPT" else sha256_crypt
        return (scheme, int(handler.from_string(value).rounds))
    if scheme == "BLF-CRYPT":
        return (scheme, int(value[4:6]))
    if scheme in _ARGON2_FAMILY:
        p = argon2.extract_parameters(value)
        return (scheme, p.time_cost, p.memory_cost, p.parallelism, p.hash_len, p.salt_len)
    if scheme == "SSHA512":
        return (scheme, len(base64.b64decode(value)) - _SHA512_BYTES)
    match = _PBKDF2.match(value)
    assert match is not None
    return (scheme, int(match.group(2)), len(match.group(1)))


@functools.lru_cache(maxsize=64)
def _dummy_for(cost: tuple[object, ...]) -> PasswordHash:
    """A hash of a random, forgotten secret with the scheme and cost described by ``cost``."""
    return _make_hash(secrets.token_urlsafe(24).encode("ascii"), cost)


def dummy_verify(password: str | bytes, like: PasswordHash | None = None) -> bool:
    """
    Spend what verifying ``password`` against a hash like ``like`` would cost; return False.

    For an unknown user: the client then cannot tell "no such user" from "wrong password", by
    answer or by time.  Pass as ``like`` a hash typical of the domain (same scheme and cost as
    its users'); without it, SHA512-CRYPT at Dovecot's default 5000 rounds.  The first call for
    a new cost also builds the dummy hash once (cached per process).  Run it in a thread pool.
    """
    dummy = _dummy_for(_cost_key(like) if like is not None else _DEFAULT_COST["SHA512-CRYPT"])
    verify(dummy, password)
    return False


def check_password(
    stored: PasswordHash | None, password: str | bytes, *, like: PasswordHash | None = None
) -> bool:
    """
    Verify a login: ``stored`` is the user's hash, or None for an unknown user, who costs the
    same (see L{dummy_verify}) and fails.  Run it in a thread pool.
    """
    if stored is None:
        return dummy_verify(password, like)
    return verify(stored, password)


# Dovecot's default costs (doveadm pw): 5000 SHA-crypt rounds, bcrypt cost 10 (Dovecot 2.3 uses
# 5; 10 is today's usual minimum), ARGON2I t=4 m=32 MiB, ARGON2ID t=3 m=64 MiB (p=1, 32-byte hash,
# 16-byte salt), an 8-byte SSHA512 salt, 5000 PBKDF2 rounds with a 16-character salt.
_DEFAULT_COST: Final[dict[str, tuple[object, ...]]] = {
    "SHA512-CRYPT": ("SHA512-CRYPT", 5000),
    "SHA256-CRYPT": ("SHA256-CRYPT", 5000),
    "BLF-CRYPT": ("BLF-CRYPT", 10),
    "ARGON2I": ("ARGON2I", 4, 32768, 1, 32, 16),
    "ARGON2ID": ("ARGON2ID", 3, 65536, 1, 32, 16),
    "SSHA512": ("SSHA512", 8),
    "PBKDF2": ("PBKDF2", 5000, 16),
}


def hash_password(password: str | bytes, scheme: str = "SHA512-CRYPT") -> PasswordHash:
    """
    Hash ``password`` (a str as UTF-8) with ``scheme`` (one of L{SCHEMES}) at Dovecot's default
    cost, for ``strata user add|passwd``.  CPU-heavy: run it in a thread pool.
    """
    if scheme not in _DEFAULT_COST:
        raise CredentialError(f"cannot hash with scheme {scheme!r}; choose one of {SCHEMES}")
    secret = _password_bytes(password)
    if secret is None:
        raise CredentialError(f"a password must be 1 to {MAX_PASSWORD_BYTES} bytes, without NUL")
    return _make_hash(secret, _DEFAULT_COST[scheme])


def _make_hash(secret: bytes, cost: tuple[object, ...]) -> PasswordHash:
    """Hash ``secret`` with the scheme and cost parameters ``cost`` (as L{_cost_key} gives)."""
    scheme, params = cost[0], [int(p) for p in cost[1:] if isinstance(p, int)]
    if scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
        handler = sha512_crypt if scheme == "SHA512-CRYPT" else sha256_crypt
        return PasswordHash(scheme, handler.using(rounds=params[0]).hash(secret))
    if scheme == "BLF-CRYPT":
        salt = bcrypt.gensalt(rounds=params[0], prefix=b"2b")
        return PasswordHash(scheme, bcrypt.hashpw(secret[:72], salt).decode("ascii"))
    if scheme == "ARGON2I" or scheme == "ARGON2ID":
        t, m, p, hash_len, salt_len = params
        encoded = argon2.low_level.hash_secret(
            secret, secrets.token_bytes(salt_len), t, m, p, hash_len, _ARGON2_TYPES[scheme]
        )
        return PasswordHash(scheme, encoded.decode("ascii"))
    if scheme == "SSHA512":
        salt = secrets.token_bytes(max(params[0], 1))
        raw = hashlib.sha512(secret + salt).digest() + salt
        return PasswordHash(scheme, base64.b64encode(raw).decode("ascii"))
    rounds, salt_len = params
    salt_text = "".join(secrets.choice(_SALT_CHARS) for _ in range(salt_len))
    key = hashlib.pbkdf2_hmac("sha1", secret, salt_text.encode(), rounds, _PBKDF2_KEY_BYTES)
    return PasswordHash("PBKDF2", f"$1${salt_text}${rounds}${key.hex()}")


_SALT_CHARS: Final = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def parse_passwd_file(text: str | bytes, domain: str) -> list[tuple[str, PasswordHash]]:
    """
    Parse a Dovecot passwd-file for ``domain``: ``user:password:uid:gid:gecos:home:shell:extra``,
    of which only the user and password fields matter here (the rest is ignored).

    Return ``(address, hash)`` pairs in file order.  Addresses keep their local part's case and
    get the domain's canonical ASCII form; a bare user name (a per-domain file, as with Dovecot's
    ``username_format=%n``) belongs to ``domain``.  Blank lines and lines starting with ``#`` are
    skipped.  Raise L{PasswdFileError} listing every bad line (a user outside ``domain``, a
    duplicate, a plaintext or unknown scheme, a malformed hash, invalid UTF-8), or
    L{InvalidDomainName} when ``domain`` is not a domain name.  Messages never echo a password
    field.
    """
    want = normalize_domain(domain)
    users: list[tuple[str, PasswordHash]] = []
    seen: dict[str, int] = {}
    errors: list[LineError] = []
    for number, decoded in enumerate(_lines(text), start=1):
        if decoded is None:
            errors.append(LineError(number, "not valid UTF-8"))
            continue
        line = decoded
        if number == 1:
            line = line.removeprefix("\ufeff")
        line = line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        try:
            address, stored = _parse_line(line, want)
        except CredentialError as e:
            errors.append(LineError(number, str(e)))
            continue
        folded = address.lower()
        if folded in seen:
            errors.append(LineError(number, f"{address} already appears on line {seen[folded]}"))
            continue
        seen[folded] = number
        users.append((address, stored))
    if errors:
        raise PasswdFileError(errors)
    return users


def _lines(text: str | bytes) -> list[str | None]:
    """Split at LF only (not at the other characters str.splitlines knows); None: bad UTF-8."""
    if isinstance(text, str):
        return list(text.split("\n"))
    lines: list[str | None] = []
    for raw in text.split(b"\n"):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(None)
    return lines


def _parse_line(line: str, domain: str) -> tuple[str, PasswordHash]:
    user, sep, rest = line.partition(":")
    if not sep:
        raise CredentialError("expected user:password")
    address = _address(user, domain)
    password_field = rest.split(":", 1)[0]
    try:
        return address, PasswordHash.parse(password_field)
    except CredentialError as e:
        raise CredentialError(f"{address}: {e}") from None


def _address(user: str, domain: str) -> str:
    """The canonical address for a passwd-file user field, or L{CredentialError}."""
    local, at, user_domain = user.rpartition("@")
    if not at:
        local = user_domain
    if not local or len(local.encode("utf-8", "surrogatepass")) > _MAX_LOCAL_PART:
        raise CredentialError("invalid user name (empty, or a local part over 64 octets)")
    if _BAD_LOCAL.search(local):
        raise CredentialError("invalid user name (spaces, control characters or @)")
    if at:
        try:
            canonical = normalize_domain(user_domain)
        except InvalidDomainName:
            raise CredentialError("invalid domain in user name") from None
        if canonical != domain:
            raise CredentialError(f"{local}@{canonical} is outside {domain}")
    return f"{local}@{domain}"


class VerificationCache:
    """
    Remembers successful verifications for ``ttl`` seconds, so that Roundcube's login on every
    web request does not cost a bcrypt or argon2 run each time.

    Entries are keyed by address and hold an HMAC, under a per-process random key, of the stored
    hash and the password: the plaintext is never kept, and a changed stored hash (a new sync,
    ``strata user passwd``) no longer matches and drops the entry.  At most ``max_entries``
    addresses are kept (least recently used go first).  Time comes from the caller (``now``, in
    seconds, e.g. C{IReactorTime.seconds()}); a clock that goes backwards expires entries rather
    than extending them.  Cheap (one HMAC per call) and not thread-safe: use it from the reactor
    thread, and L{remember} only after L{verify} said yes.
    """

    def __init__(self, ttl: float = 300.0, max_entries: int = 10_000, *, key: bytes = b"") -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._key = key or secrets.token_bytes(32)
        # address -> (tag of the stored hash, tag of hash + password, when remembered)
        self._entries: OrderedDict[str, tuple[bytes, bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _tag(self, *parts: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in parts:  # length-prefixed, so that no two part lists give the same input
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()

    def check(self, address: str, stored: PasswordHash, password: str | bytes, now: float) -> bool:
        """Whether ``password`` verified against ``stored`` for ``address`` in the last ``ttl``."""
        entry = self._entries.get(address)
        if entry is None:
            return False
        hash_tag, tag, since = entry
        stored_tag = self._tag(b"hash", stored.text.encode("utf-8"))
        if not hmac.compare_digest(hash_tag, stored_tag) or not since <= now < since + self.ttl:
            del self._entries[address]  # the stored hash changed, or the entry expired
            return False
        secret = _password_bytes(password)
        if secret is None:
            return False
        if not hmac.compare_digest(tag, self._tag(b"login", stored.text.encode("utf-8"), secret)):
            return False  # a wrong password leaves the right one's entry alone
        self._entries.move_to_end(address)
        return True

    def remember(
        self, address: str, stored: PasswordHash, password: str | bytes, now: float
    ) -> None:
        """Record that ``password`` verified against ``stored`` for ``address`` at ``now``."""
        secret = _password_bytes(password)
        if secret is None:
            return
        text = stored.text.encode("utf-8")
        self._entries[address] = (self._tag(b"hash", text), self._tag(b"login", text, secret), now)
        self._entries.move_to_end(address)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, address: str) -> None:
        """Drop ``address``'s entry (user removed or disabled)."""
        self._entries.pop(address, None)

    def clear(self) -> None:
        """Drop every entry (a domain's user list was replaced)."""
        self._entries.clear()
