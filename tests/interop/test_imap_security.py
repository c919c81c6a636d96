"""
IMAP security against the real server (issue 4, "Security" and "Memory"): plaintext pipelined
behind STARTTLS is never executed, failed logins are slowed down but never refused (issue 11),
no user reaches another user's mail, pre-auth input is capped without wedging the connection,
and a 50 MiB attachment is served without the server holding it in memory.

These talk raw IMAP over sockets (`RawIMAP`): a real client library would never send what an
attacker sends.  Loopback only.

The server's config still carries the lockout keys of old (login_failures_per_*, login_window):
an old file must keep starting.  Spraying from one address cannot be exercised here: every
loopback address (127.0.0.0/8, ::1) is trusted, so never slowed as an address by design (the
webmail host logs in for all its users).  That is tested below; the spraying and spread-guess
rules are covered with a fake clock in ``tests/test_core_throttle.py``, and the issue's
acceptance (200 guesses, then the right password) in ``tests/interop/test_login_throttle.py``.
"""

from __future__ import annotations

import base64
import random
import re
import threading
import time
from collections.abc import Iterator

import pytest

from tests.peers.strata_imap import DOMAIN, StrataIMAP, split_stored

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataIMAP]:
    """alice and bob with mail; failed logins cost at most 1 s; an old file's lockout keys."""
    strata = StrataIMAP(
        tmp_path_factory.mktemp("strata-imap-security"),
        users=["alice", "bob", "carol", "dave", "erin", "frank"],
        imap={
            "login_max_delay": "1",
            "login_failures_per_user": "3",
            "login_window": "4",
            "login_failures_per_ip": "2",
        },
    )
    try:
        yield strata.start()
    finally:
        strata.stop()


def login_line(address: str, password: str) -> bytes:
    return f'LOGIN "{address}" "{password}"'.encode()


def tagged(lines: list[bytes]) -> bytes:
    return lines[-1]


def note(subject: str, marker: str, to: str) -> bytes:
    return (
        f"From: Sender <sender@outside.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{marker}@outside.test>\r\n\r\nThe secret word is {marker}.\r\n"
    ).encode()


# -- STARTTLS: what was pipelined in the clear is never executed ----------------------------------


def test_command_pipelined_behind_starttls_is_never_answered(server: StrataIMAP) -> None:
    with server.raw() as client:
        # One packet: the STARTTLS and a command a man in the middle appended.
        client.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
        assert client.line().startswith(b"a OK"), "STARTTLS refused"
        client.starttls()  # fails if anything else arrived in the clear
        reply = client.command(b"c", b"CAPABILITY")
        assert tagged(reply).startswith(b"c OK")
        assert not any(line.startswith(b"b ") for line in reply), reply
        assert b"STARTTLS" not in reply[0] and b"AUTH=PLAIN" in reply[0]
        assert client.pending(1.0) == b""  # and b is not answered late either


def test_login_pipelined_behind_starttls_does_not_log_in(server: StrataIMAP) -> None:
    address, password = "alice@" + DOMAIN, server.users["alice@" + DOMAIN]
    with server.raw() as client:
        client.send(b"a STARTTLS\r\nb " + login_line(address, password) + b"\r\n")
        assert client.line().startswith(b"a OK")
        client.starttls()
        # Still not authenticated inside TLS: SELECT is refused, LOGIN is still possible.
        reply = client.command(b"c", b"SELECT INBOX")
        assert not any(line.startswith(b"b ") for line in reply), reply
        assert re.match(rb"c (BAD|NO)", tagged(reply)), reply
        reply = client.command(b"d", login_line(address, password))
        assert tagged(reply).startswith(b"d OK"), reply
        assert tagged(client.command(b"e", b"SELECT INBOX")).startswith(b"e OK")


def test_starttls_is_refused_inside_tls(server: StrataIMAP) -> None:
    with server.raw(tls=True) as client:
        assert b"STARTTLS" not in client.greeting
        reply = client.command(b"a", b"STARTTLS")
        assert re.match(rb"a (BAD|NO)", tagged(reply)), reply
        assert tagged(client.command(b"b", b"NOOP")).startswith(b"b OK")


# -- login throttling: delays, never a refusal (issue 11) -----------------------------------------


def _login(server: StrataIMAP, address: str, password: str, source: str = "127.0.0.1") -> bytes:
    """One LOGIN on a fresh connection (a connection is closed after 3 failures of its own)."""
    with server.raw(source=source) as client:
        return tagged(client.command(b"a", login_line(address, password)))


def _timed(attempts: list[tuple[str, str]], server: StrataIMAP) -> tuple[list[bytes], float]:
    """The answers to LOGINs made one after the other, and the seconds they took in all."""
    start = time.monotonic()
    answers = [_login(server, who, password) for who, password in attempts]
    return answers, time.monotonic() - start


def test_an_old_config_with_the_lockout_keys_still_starts_and_says_so(server: StrataIMAP) -> None:
    log = server.strata.log_text()
    for key in ("login_failures_per_user", "login_window", "login_failures_per_ip"):
        assert f"imap.{key} is ignored: failed logins no longer lock anyone out" in log, key


def test_failed_logins_slow_the_guesser_and_the_right_password_still_logs_in(
    server: StrataIMAP,
) -> None:
    address, password = "carol@" + DOMAIN, server.users["carol@" + DOMAIN]
    answers, took = _timed([(address, "guess")] * 3 + [(address, password)], server)
    assert [a.split(b"]")[0] for a in answers[:3]] == [b"a NO [AUTHENTICATIONFAILED"] * 3
    assert answers[3].startswith(b"a OK"), answers[3]  # never NO [UNAVAILABLE] any more
    # Each attempt after a failure waited for it (1 s: login_max_delay here) before its check.
    assert took >= 3.0, took
    # AUTHENTICATE PLAIN is the same door, and the password that just logged in passes at once.
    with server.raw() as client:
        token = base64.b64encode(f"\0{address}\0{password}".encode())
        reply = client.command(b"p", b"AUTHENTICATE PLAIN " + token)
        assert tagged(reply).startswith(b"p OK"), reply


def test_an_unknown_user_is_slowed_like_a_known_one(server: StrataIMAP) -> None:
    """A guesser cannot tell real users from made-up ones by the answers or the delays."""
    for who in ("erin@" + DOMAIN, "nobody@" + DOMAIN):
        answers, took = _timed([(who, "guess")] * 3, server)
        assert [a.split(b"]")[0] for a in answers] == [b"a NO [AUTHENTICATIONFAILED"] * 3
        assert took >= 2.0, (who, took)
        log = server.strata.log_text()
        assert f"login failed for '{who}' from 127.0.0.1: " in log, who


def test_loopback_addresses_are_never_slowed_as_addresses(server: StrataIMAP) -> None:
    """
    Failures spread over many users from 127.0.0.1 and 127.0.0.2 (loopback is trusted: the
    webmail host logs in for everyone) slow none of the other users there.
    """
    for n in range(6):
        for source in ("127.0.0.1", "127.0.0.2"):
            who = f"ghost{n}-{source[-1]}@{DOMAIN}"
            assert b"AUTHENTICATIONFAILED" in _login(server, who, "guess", source)
    frank = "frank@" + DOMAIN
    for source in ("127.0.0.1", "127.0.0.2"):
        assert _login(server, frank, server.users[frank], source).startswith(b"a OK")
    log = server.strata.log_text()
    assert re.search(r"IMAP login frank@example\.test from 127\.0\.0\.1\n", log), log[-2000:]


# -- one user never reaches another's mail --------------------------------------------------------


_OTHER_NAMES = [
    "bob@example.test",
    "bob@example.test/INBOX",
    "bob/INBOX",
    "~bob/INBOX",
    "~bob@example.test/INBOX",
    "../bob@example.test/INBOX",
    "/bob@example.test/INBOX",
    "user/bob/INBOX",
    "user.bob",
    "#user/bob/INBOX",
    "Other Users/bob/INBOX",
    "#shared/bob/INBOX",
    "INBOX/../../bob@example.test/INBOX",
]


def test_a_user_never_selects_fetches_or_searches_another_users_mailbox(
    server: StrataIMAP,
) -> None:
    alice, bob = "alice@" + DOMAIN, "bob@" + DOMAIN
    server.deliver(alice, note("for alice", "alicesecret", alice))
    server.deliver(bob, note("for bob", "bobsecret", bob))
    server.deliver(bob, note("for bob again", "bobsecret2", bob))
    # One message to both: each gets a copy of its own (flags, expunge).
    server.deliver([alice, bob], note("for both", "sharedword", f"{alice}, {bob}"))

    with server.raw() as client:
        assert tagged(client.command(b"l", login_line(alice, server.users[alice]))).startswith(
            b"l OK"
        )
        seen: list[bytes] = []

        def run(tag: bytes, text: bytes) -> list[bytes]:
            reply = client.command(tag, text)
            seen.extend(reply)
            return reply

        names = {
            m.group(1)
            for line in run(b"L1", b'LIST "" "*"')
            if (m := re.match(rb'\* LIST \([^)]*\) "/" "?([^"\r]*)"?\r\n', line))
        }
        assert names == {b"INBOX", b"Drafts", b"Sent", b"Trash", b"Junk"}, names
        for n, (reference, pattern) in enumerate(
            [("", "%"), ("~bob", "*"), ("", "bob*"), ("/", "*"), ("#shared", "*"), ("..", "*")]
        ):
            for line in run(b"L%d" % (n + 2), f'LIST "{reference}" "{pattern}"'.encode()):
                assert not line.startswith(b"* LIST") or b"bob" not in line, line
        assert b"bob" not in b"".join(run(b"N", b"NAMESPACE")), "NAMESPACE names other users"
        for n, name in enumerate(_OTHER_NAMES):
            quoted = b'"' + name.encode() + b'"'
            for command in (b"SELECT ", b"EXAMINE ", b"STATUS "):
                text = command + quoted + (b" (MESSAGES)" if command == b"STATUS " else b"")
                reply = run(b"S%d" % n, text)
                assert re.match(rb"S\d+ NO", tagged(reply)), (name, reply)
        # Alice's own INBOX: only her mail, whatever she asks for.
        assert tagged(run(b"s", b"SELECT INBOX")).startswith(b"s OK")
        fetched = b"".join(run(b"f", b"UID FETCH 1:* (BODY.PEEK[] ENVELOPE)"))
        assert b"alicesecret" in fetched and b"sharedword" in fetched
        assert b"bobsecret" not in fetched
        for n, key in enumerate([b"TEXT bobsecret", b"BODY bobsecret2", b'SUBJECT "for bob"']):
            reply = run(b"q%d" % n, b"UID SEARCH " + key)
            assert reply[0] == b"* SEARCH\r\n", (key, reply)
        reply = run(b"u", b"UID FETCH 1:4294967295 (UID)")
        assert len([line for line in reply if line.startswith(b"* ")]) == 2, reply
        # Her copy of the shared message: flag it, delete it, expunge it.
        shared = run(b"w", b"UID SEARCH BODY sharedword")[0].split()[2:]
        assert len(shared) == 1, shared
        reply = run(b"d", b"UID STORE " + shared[0] + b" +FLAGS (\\Deleted \\Flagged)")
        assert tagged(reply).startswith(b"d OK")
        assert tagged(run(b"x", b"EXPUNGE")).startswith(b"x OK")
        # Copying or appending into another user's name creates nothing of bob's.
        for n, name in enumerate(_OTHER_NAMES[:4]):
            reply = client.command(b"c%d" % n, b'COPY 1:* "' + name.encode() + b'"')
            assert re.match(rb"c\d+ NO", tagged(reply)), (name, reply)
        assert b"bobsecret" not in b"".join(seen)

    with server.raw() as client:
        assert tagged(client.command(b"l", login_line(bob, server.users[bob]))).startswith(b"l OK")
        reply = client.command(b"s", b"SELECT INBOX")
        assert b"* 3 EXISTS\r\n" in reply, reply
        fetched = b"".join(client.command(b"f", b"FETCH 1:* (FLAGS BODY.PEEK[])"))
        assert b"is bobsecret." in fetched and b"is bobsecret2." in fetched
        assert b"is sharedword." in fetched
        assert b"\\Deleted" not in fetched and b"\\Flagged" not in fetched
        assert b"alicesecret" not in fetched


def test_authenticate_plain_cannot_act_as_another_user(server: StrataIMAP) -> None:
    """
    SASL PLAIN carries an authorization identity (RFC 4616 §2): alice's credentials with "bob"
    as the identity to act as must not open bob's mailbox.
    """
    alice, bob = "alice@" + DOMAIN, "bob@" + DOMAIN
    server.deliver(bob, note("authzid", "authzidsecret", bob))
    with server.raw() as client:
        token = base64.b64encode(f"{bob}\0{alice}\0{server.users[alice]}".encode())
        reply = client.command(b"a", b"AUTHENTICATE PLAIN " + token)
        assert tagged(reply).startswith(b"a NO [AUTHORIZATIONFAILED]"), reply  # RFC 5530 §3
        # Naming oneself as the identity is fine, and opens alice's mailbox only.
        token = base64.b64encode(f"{alice}\0{alice}\0{server.users[alice]}".encode())
        assert tagged(client.command(b"b", b"AUTHENTICATE PLAIN " + token)).startswith(b"b OK")
        fetched = b"".join(client.command(b"s", b"EXAMINE INBOX"))
        fetched += b"".join(client.command(b"f", b"FETCH 1:* (BODY.PEEK[])"))
        assert b"authzidsecret" not in fetched


# -- pre-auth input caps --------------------------------------------------------------------------


def test_huge_literal_before_login_is_refused_at_once(server: StrataIMAP) -> None:
    with server.raw() as client:
        # Synchronizing: no "+" continuation, a tagged refusal, and the connection goes on.
        client.send(b"a LOGIN {100000000}\r\n")
        line = client.line()
        assert re.match(rb"a (BAD|NO) \[TOOBIG\]", line), line
        assert tagged(client.command(b"b", b"NOOP")).startswith(b"b OK")
        # A literal within the pre-auth cap still gets its continuation.
        client.send(b"c LOGIN {4}\r\n")
        assert client.line().startswith(b"+ ")
        client.send(b"nope {4}\r\n")
        assert client.line().startswith(b"+ ")
        client.send(b"nope\r\n")
        assert tagged(client.until_tagged(b"c")).startswith(b"c NO [AUTHENTICATIONFAILED]")


def test_oversized_non_synchronizing_literal_before_login_keeps_sync(server: StrataIMAP) -> None:
    """
    LITERAL+ (RFC 7888): the client sends the octets without waiting, so a server refusing them
    must read past them (or close the connection); either way the next command is never taken
    from inside the literal.
    """
    rss_before = server.rss()
    payload = b"b NOOP\r\n" * (3 * 1024 * 1024)  # 24 MiB that look like commands
    with server.raw() as client:
        client.send(b"a LOGIN {%d+}\r\n" % len(payload))
        sender = threading.Thread(target=client.send, args=(payload + b" x\r\n",))
        sender.start()
        line = client.line()
        assert re.match(rb"a (BAD|NO) \[TOOBIG\]", line), line
        sender.join(60)
        reply = client.command(b"c", b"NOOP")
        assert len(reply) == 1 and reply[0].startswith(b"c OK"), reply[:5]  # no "b OK" from it
    assert server.rss() - rss_before < 10 * 1024 * 1024


def test_overlong_lines_before_login_are_refused_without_losing_sync(server: StrataIMAP) -> None:
    with server.raw() as client:
        for size in (9000, 100_000):
            reply = client.command(b"a", b"LOGIN " + b"x" * size + b" y")
            assert re.match(rb"a BAD", tagged(reply)), reply
            assert tagged(client.command(b"b", b"NOOP")).startswith(b"b OK")
    # A line that never ends is not buffered: the server answers before it ends.
    rss_before = server.rss()
    with server.raw() as client:
        client.sock.settimeout(20)
        for _ in range(200):
            client.send(b"x" * 50_000)  # 10 MB, no CRLF
        answer = client.pending(2.0)
        assert answer.startswith(b"* BAD"), answer
        assert server.rss() - rss_before < 10 * 1024 * 1024
        # Once the line ends, the connection is in step again.
        client.send(b"\r\n")
        assert tagged(client.command(b"b", b"NOOP")).startswith(b"b OK")


def test_loginpermitted_on_loopback_no_logindisabled(server: StrataIMAP) -> None:
    for tls in (False, True):
        with server.raw(tls=tls) as client:
            greeting = client.greeting
            capability = client.command(b"a", b"CAPABILITY")[0]
            for caps in (greeting, capability):
                assert b"LOGINDISABLED" not in caps, caps
                assert b"AUTH=PLAIN" in caps, caps
            assert (b"STARTTLS" in capability) is not tls


# -- 50 MiB: served without being held in memory --------------------------------------------------

_MIB = 1024 * 1024


@pytest.fixture
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataIMAP]:
    # A 50 MiB attachment is about 68 MiB in base64: raise intake's 50 MiB default.
    strata = StrataIMAP(
        tmp_path_factory.mktemp("strata-imap-50mib"),
        users=["big"],
        intake={"max_message_size": str(100 * _MIB)},
    )
    try:
        yield strata.start()
    finally:
        strata.stop()


def _big_message(to: str) -> bytes:
    attachment = random.Random(50).randbytes(50 * _MIB)  # test data
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (
        b"From: Sender <sender@outside.test>\r\nTo: " + to.encode() + b"\r\n"
        b"Subject: 50 MiB attachment\r\nMessage-ID: <fifty@outside.test>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="fifty.bin"\r\n\r\n' + encoded + b"--b--\r\n"
    )


@pytest.mark.slow
def test_fetching_a_50_mib_attachment_raises_rss_by_less_than_10_mib(
    big_server: StrataIMAP,
) -> None:
    address = "big@" + DOMAIN
    sent = _big_message(address)
    queue_id = big_server.deliver(address, sent)
    with big_server.raw(timeout=60) as client:
        assert tagged(client.command(b"l", login_line(address, big_server.users[address])))[:4] == (
            b"l OK"
        )
        assert tagged(client.command(b"s", b"SELECT INBOX")).startswith(b"s OK")
        time.sleep(1.0)  # let the login's and SELECT's allocations settle
        baseline = big_server.rss()
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(big_server.rss())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            client.send(b"f FETCH 1 (BODY[])\r\n")
            time.sleep(2.0)  # a client that does not read: Strata must stop, not buffer
            head = client.line()
            match = re.match(rb"\* 1 FETCH \(.*BODY\[\] \{(\d+)\}\r\n", head)
            assert match is not None, head
            size = int(match.group(1))
            body = client.octets_slowly(size)  # 64 KiB every 2 ms: at most ~32 MB/s
            rest = client.until_tagged(b"f")
        finally:
            done.set()
            sampler.join()
    assert tagged(rest).startswith(b"f OK"), rest
    split_stored(body, sent, queue_id)
    peak = max(samples)
    print(
        f"RSS before FETCH {baseline / _MIB:.1f} MiB, peak during {peak / _MIB:.1f} MiB "
        f"(+{(peak - baseline) / _MIB:.2f} MiB) over {len(samples)} samples; body {size} octets"
    )
    assert peak - baseline < 10 * _MIB, (baseline, peak)
