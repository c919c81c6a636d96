"""
Tests for synced credentials (L{strata_twisted.core.credentials}): passwd-file parsing, password
verification for every scheme, the unknown-user path and the verification cache.

Most tests use fixed known-answer hashes made by Dovecot's ``doveadm pw`` (2.3, Debian 12), so
they run anywhere.  The tests marked ``doveadm`` make fresh hashes with the real Dovecot and
check Dovecot accepts ours; they FAIL (not skip) when doveadm is missing: install dovecot-core.
"""

from __future__ import annotations

import gc
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strata_twisted.core import credentials
from strata_twisted.core.credentials import (
    MAX_PASSWORD_BYTES,
    SCHEMES,
    CredentialError,
    LineError,
    PasswdFileError,
    PasswordHash,
    VerificationCache,
    check_password,
    dummy_verify,
    hash_password,
    parse_passwd_file,
    verify,
)
from strata_twisted.errors import InvalidDomainName

PASSWORD = "pässword"  # noqa: S105
# doveadm pw -s SCHEME -p 'pässword' (Dovecot 2.3.19).
KNOWN = {
    "SHA512-CRYPT": (
        "{SHA512-CRYPT}$6$ZhO3lHLHWECXCn1y$fYjj14FRM3IBBi7zgd0cYho8IspiJhmOlSuzjJbL1Ew/Vj"
        "BhoatkyhnjGu05bkdb3FW1kGvD/eWuzqQTicQwT0"
    ),
    "SHA512-CRYPT rounds=10000": (
        "{SHA512-CRYPT}$6$rounds=10000$ZAHR4FvU6sPYYbbL$N6W7nlG.GHFpKxMJB3UdK3BAtPMbpDL5."
        "WqI1LAbNbgTOTM1HY4D7pOxCP8bQkmrptMa5OHKGCeSQBamHDUxM."
    ),
    "SHA256-CRYPT": "{SHA256-CRYPT}$5$GftRT1gGiAhPJbSA$FZGsYVHmQE9RIIINUnxJ09gsvPQIbuN90awpyCXkOt0",
    "BLF-CRYPT $2y$": "{BLF-CRYPT}$2y$05$FPD7Wp7Bpcw2rB0l47XQfunk4Ev6NKdVbgVhggDh4wsU5HF0jzAhq",
    # Made by the bcrypt library, checked with doveadm pw -t.
    "BLF-CRYPT $2a$": "{BLF-CRYPT}$2a$04$C.YbGA6p0mR57Of/KXHbSeupZQm.7.AloJezq0XRbMi0XgxMUrVc2",
    "CRYPT $2b$": "{CRYPT}$2b$04$gp7E/n2u2eghQjiu8rXRD.A5pcwJDS/Hd7vYT56/mfzG.pXELowpO",
    "CRYPT (doveadm)": "{CRYPT}$2y$05$Gj.kXFqWyKhdSc2JmY.WkeOQhu.9fMN3fC1eUJSheoBUvyqOqQZwi",
    "ARGON2I": (
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$3XnRLHWEQ7TE3c9vbsi5QA$caUNWF5GdZ83xs0nSI"
        "dA2pXGCxIGeq/8ScE7TH8D/Tg"
    ),
    "ARGON2ID": (
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$mQdwgNC4njO0PqvC61sO5w$MgHftYJ6vC2TlI6j"
        "O0GwJzd2/6vyGW8z76EHHGFjVog"
    ),
    "SSHA512": (
        "{SSHA512}g6TAnVwdR8y3hhYE1Iwo7BELhKntM7s0US76881PynCZpHdjwnqLPssevbPny9sFb90HITy"
        "f/XyCz1ExPkmA33j2DME="
    ),
    "SSHA512.B64": (
        "{SSHA512.B64}rgMZH5YrGBMuE+6bsXYEcj4jyt1JKFCfExkeammyTQcLXoyyO0DvyNiHVmVHoT6CFOz"
        "ZELnI9KsedCfQv0q+q8nQ0Uw="
    ),
    "SSHA512.HEX": (
        "{SSHA512.HEX}a466c3b011a3b91d04652db6f3d79447acf9f4695106f4f14bc677df2b459d57b9d"
        "b9e8c57f11ce653d754ec532894f11245e5153f88901ea1f4e9ca9c6b23e0692b1f73"
    ),
    "PBKDF2": "{PBKDF2}$1$0HH6KsO83m7WyIqJ$5000$8981f427846599ffafbff914080092546d5bf50f",
    "bare $6$": (
        "$6$ZhO3lHLHWECXCn1y$fYjj14FRM3IBBi7zgd0cYho8IspiJhmOlSuzjJbL1Ew/VjBhoatkyhnjGu05"
        "bkdb3FW1kGvD/eWuzqQTicQwT0"
    ),
    "bare $2y$": "$2y$05$FPD7Wp7Bpcw2rB0l47XQfunk4Ev6NKdVbgVhggDh4wsU5HF0jzAhq",
    "bare $argon2id$": (
        "$argon2id$v=19$m=65536,t=3,p=1$mQdwgNC4njO0PqvC61sO5w$MgHftYJ6vC2TlI6jO0GwJzd2/6"
        "vyGW8z76EHHGFjVog"
    ),
}
EXPECTED_SCHEME = {
    "CRYPT $2b$": "BLF-CRYPT",
    "CRYPT (doveadm)": "BLF-CRYPT",
    "SSHA512.B64": "SSHA512",
    "SSHA512.HEX": "SSHA512",
    "bare $6$": "SHA512-CRYPT",
    "bare $2y$": "BLF-CRYPT",
    "bare $argon2id$": "ARGON2ID",
}
# doveadm pw -p '密码🔑 c:olon' (a Unicode password, as UTF-8, with a space and a colon).
UNICODE_PASSWORD = "密码🔑 c:olon"  # noqa: S105
UNICODE_KNOWN = [
    "{SHA512-CRYPT}$6$eSzOOeSHxfaul1CA$5dFRbyQAWKsFCFG7CYCTVFd6S6HiBssbEZQ1ta7TGii5Qj.4JgdwQEtmqTL0"
    "b/1hpXjVOhBSQWm0ZPfGXCOze/",
    "{SSHA512}YlBnxBKYyLEXtbwErNCwu+yKvzhnpd7ppLSZ0h5IhT5t5uuL04exvr9XM+VDmrvGxSKBcGTDykRIpdP+3j9CY9"
    "AUugg=",
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$7EzMlxBYopZneqzfSAECzw$BMSJH3G9VCKQSxC2C5rO5cn7ipRqnZY"
    "5LdGfe03aCj8",
]
# doveadm pw -s BLF-CRYPT -p 'aaaa…' (100 × a): bcrypt reads only the first 72 bytes.
LONG_BCRYPT = "{BLF-CRYPT}$2y$05$MzPu/hkL6EQqKopGAu7P1e4HxYBxxygT10Tmibwy93rS5AHLsBKzy"
# doveadm pw -s SHA512-CRYPT -p '' : a real hash of the empty password.
EMPTY_SHA512 = (
    "{SHA512-CRYPT}$6$prQq.pSAxwI9aIx8$wZGqr4m25Oom/btJ4xcmbwbUKJ8Tp6J6qpb.D.AFb1BrwnMrJeXeiY5YYgEr"
    "suIWF5pN.JEfvTai17TpI.GVf0"
)
SHA512_VALUE = KNOWN["bare $6$"]


def wrong_passwords(password: str) -> list[str]:
    """Near misses: empty, the first character changed, one character more, case changed."""
    first = "X" if password[0] != "X" else "Y"
    misses = ["", first + password[1:], password + "!", password[:-1]]
    if password.upper() != password:
        misses.append(password.upper())
    return [m for m in misses if m != password]


# --- verification against known answers -------------------------------------------------------


@pytest.mark.parametrize("label", sorted(KNOWN))
def test_known_hash_verifies_right_password_only(label: str) -> None:
    stored = PasswordHash.parse(KNOWN[label])
    assert stored.scheme == EXPECTED_SCHEME.get(label, label.split()[0])
    assert verify(stored, PASSWORD)
    assert verify(stored, PASSWORD.encode("utf-8"))  # bytes are the UTF-8 form
    assert not verify(stored, PASSWORD.encode("latin-1"))  # another encoding is another password
    for miss in wrong_passwords(PASSWORD):
        assert not verify(stored, miss), miss


@pytest.mark.parametrize("text", UNICODE_KNOWN)
def test_unicode_password_is_verified_as_utf8(text: str) -> None:
    stored = PasswordHash.parse(text)
    assert verify(stored, UNICODE_PASSWORD)
    assert verify(stored, UNICODE_PASSWORD.encode("utf-8"))
    assert not verify(stored, "密码🔑 c")  # the part before the colon
    assert not verify(stored, "密码🔑 c:olon ")


def test_bcrypt_reads_the_first_72_bytes_like_dovecot() -> None:
    """bcrypt >= 5 raises on long passwords; we cut at 72 bytes as crypt_blowfish does."""
    stored = PasswordHash.parse(LONG_BCRYPT)
    assert verify(stored, "a" * 100)
    assert verify(stored, "a" * 72 + "b" * 28)  # bcrypt's own limit, not ours
    assert not verify(stored, "a" * 71)
    assert not verify(stored, "b" + "a" * 99)


def test_empty_password_never_verifies_even_against_its_own_hash() -> None:
    stored = PasswordHash.parse(EMPTY_SHA512)
    assert not verify(stored, "")
    assert not verify(stored, b"")
    assert not verify(stored, " ")


def test_passwords_with_nul_or_too_long_or_unencodable_never_verify() -> None:
    stored = PasswordHash.parse(KNOWN["SHA512-CRYPT"])
    assert not verify(stored, PASSWORD + "\0")
    assert not verify(stored, "\0" + PASSWORD)
    assert not verify(stored, "x" * (MAX_PASSWORD_BYTES + 1))
    assert not verify(stored, "\ud800")  # a lone surrogate is no UTF-8 at all


@pytest.mark.parametrize("scheme", SCHEMES)
def test_long_password_verifies_in_every_scheme(scheme: str) -> None:
    long_password = "ü" * (MAX_PASSWORD_BYTES // 2)  # exactly the limit in UTF-8
    stored = hash_password(long_password, scheme)
    assert verify(stored, long_password)
    assert not verify(stored, "ä" + long_password[1:])


@settings(max_examples=40, deadline=None)
@given(
    password=st.text(
        st.characters(codec="utf-8", exclude_characters="\0"),  # no surrogates, no NUL
        min_size=1,
        max_size=200,
    )
)
def test_any_password_round_trips_through_cheap_schemes(password: str) -> None:
    """Any non-empty password without NUL verifies against its own hash and no other."""
    for scheme in ("SSHA512", "PBKDF2", "SHA256-CRYPT"):
        stored = hash_password(password, scheme)
        assert verify(stored, password)
        assert not verify(stored, password + "x")
        assert not verify(stored, "x" + password)


# --- parsing one password field ---------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "{PLAIN}secret",
        "{plain}secret",
        "{CLEARTEXT}secret",
        "{CLEAR}secret",
        "{PLAIN-TRUNC}secret",
        "{PLAIN.b64}c2VjcmV0",
        "{CLEARTEXT.HEX}736563726574",
    ],
)
def test_plaintext_schemes_are_refused(field: str) -> None:
    with pytest.raises(CredentialError, match="plaintext scheme .* refused") as caught:
        PasswordHash.parse(field)
    assert "secret" not in str(caught.value)
    assert "c2VjcmV0" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "complaint"),
    [
        ("", "empty password field"),
        ("secret", "plaintext passwords are refused"),
        ("{SHA512-CRYPT", "unterminated"),
        ("{FOO}abc", r"unsupported password scheme \{FOO\}"),
        ("{MD5}abc", r"unsupported password scheme \{MD5\}"),
        ("{SSHA512.rot13}abc", "unknown encoding suffix"),
        ("{SHA512-CRYPT.b64}abc", "only applies to SSHA512"),
        ("$1$abcdefgh$abcdefghijklmnopqrstuv", "MD5-CRYPT"),
        ("$y$j9T$abc$def", "unsupported crypt format"),
        ("{SHA512-CRYPT}$6$abc$short", "malformed SHA512-CRYPT"),
        ("{SHA512-CRYPT}$6$broken", "malformed SHA512-CRYPT"),  # a salt, no hash
        ("$5$rounds=5000$salt", "malformed SHA256-CRYPT"),
        ("{SHA512-CRYPT}$6$rounds=100$abc$" + "a" * 86, "malformed SHA512-CRYPT"),
        ("{SHA512-CRYPT}$6$rounds=2000000$abc$" + "a" * 86, "rounds above"),
        ("{SHA256-CRYPT}$5$abc$" + "a" * 86, "malformed SHA256-CRYPT"),
        ("{BLF-CRYPT}$2y$05$short", "malformed BLF-CRYPT"),
        ("{BLF-CRYPT}$2x$05$FPD7Wp7Bpcw2rB0l47XQfunk4Ev6NKdVbgVhggDh4wsU5HF0jzAhq", "unsupported"),
        # the salt's last character must be one of .Oeu (its 2 unused bits are zero)
        ("{BLF-CRYPT}$2y$05$FPD7Wp7Bpcw2rB0l47XQfPnk4Ev6NKdVbgVhggDh4wsU5HF0jzAhq", "malformed"),
        ("{BLF-CRYPT}$2y$03$FPD7Wp7Bpcw2rB0l47XQfunk4Ev6NKdVbgVhggDh4wsU5HF0jzAhq", "cost must"),
        ("{BLF-CRYPT}$2y$16$FPD7Wp7Bpcw2rB0l47XQfunk4Ev6NKdVbgVhggDh4wsU5HF0jzAhq", "cost must"),
        ("{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$!!!$???", "malformed ARGON2I"),
        ("{ARGON2ID}$6$abc", "not an argon2 hash"),
        (
            "{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$mQdwgNC4njO0PqvC61sO5w$MgHftYJ6vC2TlI6jO0Gw"
            "Jzd2/6vyGW8z76EHHGFjVog",
            "cost above",
        ),
        ("{SSHA512}not*base64", "not valid base64"),
        ("{SSHA512.HEX}xyz", "not valid hex"),
        ("{SSHA512}" + "A" * 86 + "==", "too short"),  # 64 bytes: a digest, no salt
        ("{PBKDF2}$2$salt$5000$8981f427846599ffafbff914080092546d5bf50f", "malformed PBKDF2"),
        ("{PBKDF2}$1$salt$5000$8981f427846599ffafbff914080092546d5bf5", "malformed PBKDF2"),
        ("{PBKDF2}$1$salt$5000$8981f427846599ffafbff914080092546d5bf5zz", "malformed PBKDF2"),
        ("{PBKDF2}$1$salt$0$8981f427846599ffafbff914080092546d5bf50f", "rounds must be"),
        ("{PBKDF2}$1$salt$99999999$8981f427846599ffafbff914080092546d5bf50f", "rounds must be"),
    ],
)
def test_unusable_hashes_are_refused_at_parse_time(field: str, complaint: str) -> None:
    with pytest.raises(CredentialError, match=complaint):
        PasswordHash.parse(field)


def test_crypt_family_goes_by_the_hash_prefix_like_dovecot() -> None:
    """Dovecot verifies {SHA512-CRYPT} with crypt(), which reads the string's own prefix."""
    stored = PasswordHash.parse("{SHA512-CRYPT}" + KNOWN["bare $2y$"])
    assert stored.scheme == "BLF-CRYPT"
    assert verify(stored, PASSWORD)


def test_the_stored_text_parses_back_to_the_same_hash() -> None:
    for text in [*KNOWN.values(), *UNICODE_KNOWN]:
        stored = PasswordHash.parse(text)
        assert PasswordHash.parse(stored.text) == stored
        assert stored.text.startswith("{" + stored.scheme + "}")


def test_ssha512_hex_is_kept_as_base64() -> None:
    stored = PasswordHash.parse(KNOWN["SSHA512.HEX"])
    assert stored.text.startswith("{SSHA512}")
    assert verify(PasswordHash.parse(stored.text), PASSWORD)


def test_constructing_a_hash_validates_it_and_repr_hides_it() -> None:
    with pytest.raises(CredentialError, match="unsupported password scheme PLAIN"):
        PasswordHash("PLAIN", "secret")
    with pytest.raises(CredentialError, match="malformed SHA512-CRYPT"):
        PasswordHash("SHA512-CRYPT", KNOWN["bare $2y$"])
    stored = PasswordHash("SHA512-CRYPT", SHA512_VALUE)
    assert SHA512_VALUE not in repr(stored)
    assert "fYjj14" not in repr(stored)


# --- parsing a passwd-file --------------------------------------------------------------------


def test_passwd_file_gives_addresses_and_hashes_in_order() -> None:
    text = (
        "\ufeff# users of example.com\n"
        "\n"
        f"Alice@Example.COM:{KNOWN['SHA512-CRYPT']}:1000:1000::/home/alice::userdb_quota=1G\r\n"
        "   \n"
        f"bob:{KNOWN['bare $2y$']}\n"
        f"carol@example.com.:{KNOWN['ARGON2ID']}:::::\n"
        f"dave@EXAMPLE.com:{KNOWN['PBKDF2']}"
    )
    users = parse_passwd_file(text, "EXAMPLE.com")
    assert [address for address, _ in users] == [
        "Alice@example.com",  # local part's case kept, domain lower-cased
        "bob@example.com",  # a bare user belongs to the file's domain
        "carol@example.com",
        "dave@example.com",
    ]
    assert [stored.scheme for _, stored in users] == [
        "SHA512-CRYPT",
        "BLF-CRYPT",
        "ARGON2ID",
        "PBKDF2",
    ]
    assert parse_passwd_file(text.encode("utf-8"), "example.com") == users


def test_passwd_file_domains_are_idna() -> None:
    text = (
        f"Jörg@BÜCHER.example:{KNOWN['SHA256-CRYPT']}\nanna@xn--bcher-kva.example:{SHA512_VALUE}\n"
    )
    users = parse_passwd_file(text, "bücher.example")
    assert [a for a, _ in users] == ["Jörg@xn--bcher-kva.example", "anna@xn--bcher-kva.example"]


def test_passwd_file_errors_name_each_bad_line_and_never_the_hash() -> None:
    secret = "hunter2-secret"  # noqa: S105
    text = "\n".join(
        [
            f"ok@example.com:{SHA512_VALUE}",  # 1
            f"p@example.com:{{PLAIN}}{secret}",  # 2
            f"q@other.test:{SHA512_VALUE}",  # 3
            secret,  # 4: no colon at all
            f"r@example.com:{secret}",  # 5
            f"s@example.com:{{SHA512-CRYPT}}$6${secret}$x",  # 6
            f"OK@example.com:{SHA512_VALUE}",  # 7: duplicate of line 1
            f"t u@example.com:{SHA512_VALUE}",  # 8
            f"v@-bad-.example:{SHA512_VALUE}",  # 9
            f"@example.com:{SHA512_VALUE}",  # 10
            "w@example.com:",  # 11
            "# a comment",
            f"{'x' * 65}@example.com:{SHA512_VALUE}",  # 13
        ]
    )
    with pytest.raises(PasswdFileError) as caught:
        parse_passwd_file(text, "example.com")
    errors = caught.value.errors
    assert [e.line for e in errors] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    by_line = {e.line: e.message for e in errors}
    assert "plaintext scheme {PLAIN} refused" in by_line[2]
    assert by_line[3] == "q@other.test is outside example.com"
    assert by_line[4] == "expected user:password"
    assert "plaintext passwords are refused" in by_line[5]
    assert by_line[6] == "s@example.com: malformed SHA512-CRYPT hash"
    assert by_line[7] == "OK@example.com already appears on line 1"
    assert "invalid user name" in by_line[8]
    assert "invalid domain" in by_line[9]
    assert "invalid user name" in by_line[10]
    assert "empty password field" in by_line[11]
    assert "invalid user name" in by_line[13]
    assert str(errors[0]) == f"line 2: {by_line[2]}"
    everything = str(caught.value) + " ".join(str(e) for e in errors)
    assert secret not in everything
    assert SHA512_VALUE[3:20] not in everything
    assert str(caught.value).startswith("11 bad line(s): line 2:")
    assert "(and 6 more)" in str(caught.value)


def test_passwd_file_bad_utf8_is_a_line_error() -> None:
    text = f"a@example.com:{SHA512_VALUE}\n".encode() + b"b\xff@example.com:x\n"
    with pytest.raises(PasswdFileError) as caught:
        parse_passwd_file(text, "example.com")
    assert caught.value.errors == (LineError(2, "not valid UTF-8"),)


def test_passwd_file_for_an_invalid_domain_is_refused() -> None:
    with pytest.raises(InvalidDomainName):
        parse_passwd_file("", "not a domain")


def test_empty_passwd_file_has_no_users() -> None:
    assert parse_passwd_file("# nobody yet\n\n", "example.com") == []


_SECRET_CHARS = st.characters(min_codepoint=0x2460, max_codepoint=0x24FF)  # ①②③…, never in text


@settings(max_examples=300, deadline=None)
@given(
    user=st.sampled_from(["a@example.com", "b", "c@other.test", "", "d e", "x@"]),
    prefix=st.sampled_from(
        ["", "{SHA512-CRYPT}", "{PLAIN}", "$6$", "$2y$10$", "{SSHA512}", "{PBKDF2}$1$", "{FOO"]
    ),
    secret=st.text(_SECRET_CHARS, min_size=1, max_size=30),
    rest=st.text(max_size=30),
)
def test_passwd_file_errors_never_echo_the_password_field(
    user: str, prefix: str, secret: str, rest: str
) -> None:
    line = f"{user}:{prefix}{secret}{rest}"
    try:
        parse_passwd_file(line, "example.com")
    except PasswdFileError as e:
        message = str(e) + " ".join(str(x) for x in e.errors)
        assert not any(c in message for c in secret), message


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_passwd_file_parser_never_raises_anything_else(text: str | bytes) -> None:
    try:
        users = parse_passwd_file(text, "example.com")
    except PasswdFileError as e:
        assert e.errors
        assert all(isinstance(x, LineError) and x.line >= 1 for x in e.errors)
    else:
        assert all(a.endswith("@example.com") for a, _ in users)


# --- unknown users ----------------------------------------------------------------------------


def test_unknown_user_always_fails() -> None:
    like = PasswordHash.parse(KNOWN["SHA512-CRYPT"])
    assert not dummy_verify(PASSWORD)
    assert not dummy_verify(PASSWORD, like)
    assert not check_password(None, PASSWORD, like=like)
    assert check_password(like, PASSWORD)
    assert not check_password(like, "wrong")


@pytest.mark.parametrize("label", ["SHA512-CRYPT rounds=10000", "BLF-CRYPT $2y$", "ARGON2I"])
def test_dummy_hash_has_the_cost_of_the_example(label: str) -> None:
    like = PasswordHash.parse(KNOWN[label])
    key = credentials._cost_key(like)
    dummy = credentials._dummy_for(key)
    assert dummy.scheme == like.scheme
    assert credentials._cost_key(dummy) == key
    assert dummy.value != like.value
    assert not verify(dummy, PASSWORD)


# --- hashing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_hash_password_makes_a_verifiable_hash(scheme: str) -> None:
    stored = hash_password(UNICODE_PASSWORD, scheme)
    assert stored.scheme == scheme
    assert PasswordHash.parse(stored.text) == stored
    assert verify(stored, UNICODE_PASSWORD)
    assert not verify(stored, PASSWORD)
    assert hash_password(UNICODE_PASSWORD, scheme) != stored  # salted


def test_hash_password_refuses_unknown_schemes_and_unusable_passwords() -> None:
    with pytest.raises(CredentialError, match="cannot hash with scheme"):
        hash_password(PASSWORD, "PLAIN")
    with pytest.raises(CredentialError, match="1 to 4096 bytes"):
        hash_password("", "SHA512-CRYPT")
    with pytest.raises(CredentialError, match="without NUL"):
        hash_password("a\0b", "SHA512-CRYPT")


# --- the cache --------------------------------------------------------------------------------

ADDRESS = "alice@example.com"


@pytest.fixture
def stored() -> PasswordHash:
    return PasswordHash.parse(KNOWN["SSHA512"])


def test_cache_remembers_a_success_until_it_expires(stored: PasswordHash) -> None:
    cache = VerificationCache(ttl=60.0)
    assert not cache.check(ADDRESS, stored, PASSWORD, now=1000.0)
    cache.remember(ADDRESS, stored, PASSWORD, now=1000.0)
    assert cache.check(ADDRESS, stored, PASSWORD, now=1000.0)
    assert cache.check(ADDRESS, stored, PASSWORD.encode("utf-8"), now=1059.9)
    assert not cache.check(ADDRESS, stored, PASSWORD, now=1060.0)
    assert len(cache) == 0  # the expired entry is gone


def test_cache_refuses_wrong_passwords_and_other_users(stored: PasswordHash) -> None:
    cache = VerificationCache(ttl=60.0)
    cache.remember(ADDRESS, stored, PASSWORD, now=0.0)
    for miss in wrong_passwords(PASSWORD):
        assert not cache.check(ADDRESS, stored, miss, now=1.0)
    assert not cache.check("bob@example.com", stored, PASSWORD, now=1.0)
    assert cache.check(ADDRESS, stored, PASSWORD, now=2.0)  # wrong tries did not evict it


def test_cache_drops_the_entry_when_the_stored_hash_changes(stored: PasswordHash) -> None:
    cache = VerificationCache()
    cache.remember(ADDRESS, stored, PASSWORD, now=0.0)
    new = PasswordHash.parse(KNOWN["SSHA512.B64"])  # same password, new hash (a re-sync)
    assert not cache.check(ADDRESS, new, PASSWORD, now=1.0)
    assert len(cache) == 0
    assert not cache.check(ADDRESS, stored, PASSWORD, now=1.0)


def test_cache_treats_a_clock_going_backwards_as_expiry(stored: PasswordHash) -> None:
    cache = VerificationCache(ttl=60.0)
    cache.remember(ADDRESS, stored, PASSWORD, now=1000.0)
    assert not cache.check(ADDRESS, stored, PASSWORD, now=999.0)


def test_cache_is_bounded_and_evicts_the_least_recently_used(stored: PasswordHash) -> None:
    cache = VerificationCache(max_entries=3)
    for n in range(3):
        cache.remember(f"u{n}@example.com", stored, PASSWORD, now=0.0)
    assert cache.check("u0@example.com", stored, PASSWORD, now=1.0)  # u0 is now the most recent
    cache.remember("u3@example.com", stored, PASSWORD, now=1.0)
    assert len(cache) == 3
    assert not cache.check("u1@example.com", stored, PASSWORD, now=1.0)
    assert cache.check("u0@example.com", stored, PASSWORD, now=1.0)
    assert cache.check("u3@example.com", stored, PASSWORD, now=1.0)


def test_cache_forget_and_clear(stored: PasswordHash) -> None:
    cache = VerificationCache()
    cache.remember(ADDRESS, stored, PASSWORD, now=0.0)
    cache.remember("bob@example.com", stored, PASSWORD, now=0.0)
    cache.forget(ADDRESS)
    cache.forget("nobody@example.com")
    assert not cache.check(ADDRESS, stored, PASSWORD, now=0.0)
    assert cache.check("bob@example.com", stored, PASSWORD, now=0.0)
    cache.clear()
    assert len(cache) == 0


def test_cache_never_remembers_an_unusable_password(stored: PasswordHash) -> None:
    cache = VerificationCache()
    cache.remember(ADDRESS, stored, "", now=0.0)
    cache.remember(ADDRESS, stored, "a\0b", now=0.0)
    assert len(cache) == 0


def _reachable(root: object) -> list[object]:
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(seen.values())


def test_cache_never_holds_the_password(stored: PasswordHash) -> None:
    password = "correct horse battery staple ü"  # noqa: S105
    cache = VerificationCache()
    cache.remember(ADDRESS, stored, password, now=0.0)
    cache.check(ADDRESS, stored, password, now=1.0)
    raw = password.encode("utf-8")
    for obj in _reachable(cache):
        if isinstance(obj, str):
            assert password not in obj
        elif isinstance(obj, bytes | bytearray):
            assert raw not in obj
            assert password.encode("utf-16-le") not in obj


def test_cache_keys_differ_per_process(stored: PasswordHash) -> None:
    """A per-instance random key: one cache's entries say nothing to another's."""
    one, two = VerificationCache(), VerificationCache()
    one.remember(ADDRESS, stored, PASSWORD, now=0.0)
    two.remember(ADDRESS, stored, PASSWORD, now=0.0)
    assert one._entries[ADDRESS][1] != two._entries[ADDRESS][1]
    assert VerificationCache(key=b"k" * 32)._tag(b"x") == VerificationCache(key=b"k" * 32)._tag(
        b"x"
    )


def test_cache_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="ttl"):
        VerificationCache(ttl=0)
    with pytest.raises(ValueError, match="max_entries"):
        VerificationCache(max_entries=0)


# --- against the real Dovecot -----------------------------------------------------------------

DOVEADM_SCHEMES = [
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "BLF-CRYPT",
    "CRYPT",
    "ARGON2I",
    "ARGON2ID",
    "SSHA512",
    "SSHA512.b64",
    "SSHA512.hex",
    "PBKDF2",
]
DOVEADM_PASSWORDS = [PASSWORD, "x", UNICODE_PASSWORD, "long " * 40]


def doveadm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run doveadm; fail (never skip) when it is missing: the lead's CI installs dovecot-core."""
    path = shutil.which("doveadm")
    assert path is not None, "doveadm not found: apt-get install dovecot-core"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("scheme", DOVEADM_SCHEMES)
def test_hashes_made_by_dovecot_verify(scheme: str) -> None:
    for password in DOVEADM_PASSWORDS:
        made = doveadm("pw", "-s", scheme, "-p", password)
        assert made.returncode == 0, made.stderr
        stored = PasswordHash.parse(made.stdout.strip())
        assert verify(stored, password)
        misses = ["", "X" + password[1:]]
        if len(password.encode()) < 72 or stored.scheme != "BLF-CRYPT":  # bcrypt reads 72 bytes
            misses += [password[:-1], password + "!"]
        for miss in misses:
            assert not verify(stored, miss), (scheme, miss)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_dovecot_accepts_our_hashes(scheme: str) -> None:
    stored = hash_password(UNICODE_PASSWORD, scheme)
    checked = doveadm("pw", "-t", stored.text, "-p", UNICODE_PASSWORD)
    assert checked.returncode == 0, checked.stderr
    assert "(verified)" in checked.stdout
    refused = doveadm("pw", "-t", stored.text, "-p", PASSWORD)
    assert refused.returncode != 0


def test_dovecot_agrees_bcrypt_reads_72_bytes() -> None:
    checked = doveadm("pw", "-t", LONG_BCRYPT, "-p", "a" * 72 + "b" * 28)
    assert checked.returncode == 0, checked.stderr
    assert verify(PasswordHash.parse(LONG_BCRYPT), "a" * 72 + "b" * 28)
