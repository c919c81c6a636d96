"""
``mbsync`` (Debian's isync) mirrors a Strata mailbox of 1,000 messages to a local maildir (issue
4, "Real IMAP clients"): every maildir file holds the bytes intake stored, and a second run
transfers nothing.

The messages vary in size (a few hundred octets to 400 KiB, so both the in-database and the
file-backed body stores serve them), in structure (plain, multipart with base64 attachments) and
in content (8-bit UTF-8 bodies, lines that start with a dot or with "From ").  They go in through
SMTP intake over four parallel sessions, the way a spam filter's failover route delivers.

Byte identity is checked twice: what Strata serves over IMAP (``BODY.PEEK[]``) is the sent
message behind intake's ``Received:`` header, and every maildir file is that, with the two
changes mbsync itself always makes when it writes a maildir: CRLF line ends become LF (maildir is
a Unix format), and one ``X-TUID:`` header, mbsync's own transaction id, is inserted at the end
of the header block.  Undoing exactly those two must give the stored bytes back.

The test runs once over STARTTLS (SASL PLAIN, trusting exactly Strata's self-signed certificate,
as a user would set it up) and once over plaintext LOGIN (allowed on loopback).  mbsync runs on
a pseudo-terminal: only then does it print its progress counters
(``N: +added/total *flagged/total #deleted/total`` for the near side), which is how the second
run shows it propagated nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pty
import random
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.strata_imap import DOMAIN, StrataIMAP, fetch_bodies, split_stored

pytestmark = [pytest.mark.interop, pytest.mark.slow]

COUNT = 1000
USER = "mirror"

# mbsync's counters line, e.g. "C: 1/1  B: 1/1  F: +0/0 *0/0 #0/0  N: +1000/1000 *0/0 #0/0".
_COUNTERS = re.compile(
    rb"F: \+(\d+)/(\d+) \*(\d+)/(\d+) #(\d+)/(\d+)\s+N: \+(\d+)/(\d+) \*(\d+)/(\d+) #(\d+)/(\d+)"
)
_TUID = re.compile(rb"^X-TUID: [A-Za-z0-9+/]{12}\n", re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^Message-ID: (<[^>]+>)", re.MULTILINE | re.IGNORECASE)


# -- the mailbox ----------------------------------------------------------------------------------

_WORDS = (
    "continuity outage primary relay queue mailbox shadow durable webmail failover backup "
    "report invoice meeting agenda minutes budget forecast schedule delivery"
).split()
_UTF8 = ["Grüße aus Köln", "Ελληνικά κείμενα", "Привет, мир", "日本語のテキスト", "naïve café"]


def _text(rng: random.Random, size: int, *, eight_bit: bool) -> bytes:
    """CRLF text of about `size` octets, with dot lines and "From " lines among the rest."""
    lines: list[bytes] = []
    total = 0
    while total < size:
        roll = rng.random()
        if roll < 0.03:
            line = b"." + rng.choice(_WORDS).encode()  # dot-stuffed on the wire
        elif roll < 0.05:
            line = b"."
        elif roll < 0.07:
            line = b"From " + rng.choice(_WORDS).encode()
        elif eight_bit and roll < 0.3:
            line = rng.choice(_UTF8).encode()
        else:
            line = " ".join(rng.choices(_WORDS, k=rng.randint(1, 14))).encode()
        lines.append(line)
        total += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


def build_message(n: int, rng: random.Random) -> bytes:
    """Message `n`: its size, shape and content vary with n and the seeded generator."""
    if n % 50 == 7:
        size = rng.randint(260 * 1024, 400 * 1024)  # beyond the 256 KiB in-database bodies
    elif n % 10 == 3:
        size = rng.randint(20 * 1024, 120 * 1024)
    else:
        size = rng.randint(100, 6 * 1024)
    eight_bit = n % 9 == 0
    subject = f"Message {n:04d} " + " ".join(rng.choices(_WORDS, k=3))
    head = (
        f"From: Sender {n % 17} <sender{n % 17}@outside.test>\r\n"
        f"To: {USER}@{DOMAIN}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Mon, 02 Nov 2026 {n // 60 % 24:02d}:{n % 60:02d}:00 +0000\r\n"
        f"Message-ID: <mirror-{n:04d}@outside.test>\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode()
    if n % 4 == 1:
        attachment = base64.encodebytes(rng.randbytes(max(size // 2, 64)))
        attachment = attachment.replace(b"\n", b"\r\n")
        body = (
            b"--mirror-boundary\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: " + (b"8bit" if eight_bit else b"7bit") + b"\r\n\r\n"
            + _text(rng, size // 3, eight_bit=eight_bit)
            + b"--mirror-boundary\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="data.bin"\r\n\r\n'
            + attachment
            + b"--mirror-boundary--\r\n"
        )  # fmt: skip
        return head + b'Content-Type: multipart/mixed; boundary="mirror-boundary"\r\n\r\n' + body
    encoding = b"8bit" if eight_bit else b"7bit"
    return (
        head
        + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
        + encoding
        + b"\r\n\r\n"
        + _text(rng, size, eight_bit=eight_bit)
    )


# -- mbsync ---------------------------------------------------------------------------------------


def mbsync_config(root: Path, server: StrataIMAP, maildir: Path, security: str) -> Path:
    """
    An mbsyncrc pulling the user's INBOX into `maildir`.  `security`: "STARTTLS" (trusting
    exactly Strata's self-signed certificate, SASL PLAIN) or "None" (plaintext LOGIN, which
    Strata allows on loopback).
    """
    address = f"{USER}@{DOMAIN}"
    config = root / "mbsyncrc"
    tls = (
        f"SSLType STARTTLS\nCertificateFile {server.certificate}\nAuthMechs PLAIN\n"
        if security == "STARTTLS"
        else "SSLType None\nAuthMechs LOGIN\n"
    )
    config.write_text(
        f"IMAPAccount strata\n"
        f"Host 127.0.0.1\nPort {server.imap_port}\n"
        f"User {address}\nPass {server.users[address]}\n"
        f"{tls}\n"
        f"IMAPStore far\nAccount strata\n\n"
        f"MaildirStore near\nPath {maildir}/\nInbox {maildir}/INBOX\nSubFolders Verbatim\n\n"
        f"Channel mirror\nFar :far:\nNear :near:\nPatterns INBOX\n"
        f"Create Near\nSync Pull\nSyncState *\n"
    )
    return config


def run_mbsync(config: Path, timeout: float = 120.0) -> tuple[int, bytes]:
    """Run ``mbsync -V`` on a pseudo-terminal; (exit status, everything it printed)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        ["mbsync", "-V", "-c", str(config), "mirror"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
        process.wait(max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return process.returncode, bytes(output)


def messages_of(output: bytes) -> str:
    """mbsync's output without its progress counters: what it said, for assertion messages."""
    text = _COUNTERS.sub(b"", output).decode("utf-8", "replace")
    return re.sub(r"C: \d+/\d+\s+B: \d+/\d+\s*\r?", "", text)[-4000:]


def final_counters(output: bytes) -> tuple[int, ...]:
    """The last progress counters mbsync printed: F's and N's six numbers each."""
    found = _COUNTERS.findall(output)
    assert found, f"no progress counters in mbsync's output:\n{output[-3000:]!r}"
    return tuple(int(x) for x in found[-1])


def maildir_messages(maildir: Path) -> dict[int, Path]:
    """The INBOX maildir's message files by the IMAP UID mbsync put in their names (,U=n)."""
    out: dict[int, Path] = {}
    for sub in ("new", "cur"):
        for path in (maildir / "INBOX" / sub).iterdir():
            match = re.search(r",U=(\d+)", path.name)
            assert match is not None, path.name
            assert int(match.group(1)) not in out, path.name
            out[int(match.group(1))] = path
    return out


def snapshot(files: dict[int, Path]) -> dict[str, tuple[int, int, str]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in files.values()
    }


# -- the test -------------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StrataIMAP]:
    strata = StrataIMAP(tmp_path / "strata", users=[USER])
    try:
        yield strata.start()
    finally:
        strata.stop()


@pytest.mark.parametrize("security", ["STARTTLS", "None"])
def test_mbsync_mirrors_1000_messages_byte_for_byte_and_then_has_nothing_to_do(
    server: StrataIMAP, tmp_path: Path, security: str
) -> None:
    if shutil.which("mbsync") is None:
        pytest.fail("mbsync is not installed: apt-get install -y isync (.ci/run does)")
    started = time.monotonic()
    rng = random.Random(4)  # reproducible test data
    messages = [build_message(n, rng) for n in range(COUNT)]
    assert sum(any(b > 0x7F for b in m) for m in messages) >= 50  # some 8-bit bodies
    address = f"{USER}@{DOMAIN}"
    ids = server.deliver_many([(address, m) for m in messages], connections=4)
    sent_by_id = {}
    for message, queue_id in zip(messages, ids, strict=True):
        match = _MESSAGE_ID.search(message)
        assert match is not None
        sent_by_id[match.group(1)] = (message, queue_id)
    intake_done = time.monotonic()

    # What Strata serves is what intake stored: the sent bytes behind one Received: header.
    client = server.imaplib(address)
    try:
        typ, exists = client.select("INBOX", readonly=True)
        assert typ == "OK" and exists == [str(COUNT).encode()], exists
        stored = fetch_bodies(client)
    finally:
        client.logout()
    assert len(stored) == COUNT
    for body in stored.values():
        match = _MESSAGE_ID.search(body)
        assert match is not None, body[:300]
        sent, queue_id = sent_by_id.pop(match.group(1))
        split_stored(body, sent, queue_id)
    assert not sent_by_id

    maildir = tmp_path / "maildir"
    maildir.mkdir()
    config = mbsync_config(tmp_path, server, maildir, security)
    status, output = run_mbsync(config)
    first_run = time.monotonic()
    assert status == 0, messages_of(output)
    far, near = final_counters(output)[:6], final_counters(output)[6:]
    assert near[:2] == (COUNT, COUNT), output[-500:]  # N: +1000/1000 pulled to the maildir
    assert far[0] == 0 and near[2] == near[4] == 0, output[-500:]

    files = maildir_messages(maildir)
    assert sorted(files) == sorted(stored)
    for uid, path in files.items():
        mirrored = path.read_bytes()
        # mbsync's own two changes, undone: its X-TUID header line, and LF for CRLF.
        head_end = mirrored.index(b"\n\n")
        tuids = _TUID.findall(mirrored[: head_end + 1])
        assert len(tuids) == 1, (path.name, mirrored[:400])
        assert mirrored[: head_end + 1].endswith(tuids[0]), "X-TUID is not the last header field"
        mirrored = mirrored[: head_end + 1 - len(tuids[0])] + mirrored[head_end + 1 :]
        assert mirrored == stored[uid].replace(b"\r\n", b"\n"), path.name

    # mbsync fetched with BODY.PEEK: nothing became \Seen on the server.
    client = server.imaplib(address)
    try:
        assert client.select("INBOX", readonly=True)[0] == "OK"
        typ, unseen = client.search(None, "UNSEEN")
        assert typ == "OK" and len(unseen[0].split()) == COUNT
    finally:
        client.logout()

    # The second run transfers nothing and leaves every file as it was.
    before = snapshot(files)
    status, output = run_mbsync(config)
    assert status == 0, messages_of(output)
    counters = final_counters(output)
    assert counters[0] == counters[6] == 0, output[-500:]  # nothing new either way
    assert counters[2] == counters[8] == 0 and counters[4] == counters[10] == 0
    assert b"far side: 1000 messages" in output and b"near side: 1000 messages" in output
    assert snapshot(maildir_messages(maildir)) == before
    finished = time.monotonic()
    print(
        f"intake {COUNT} messages: {intake_done - started:.1f}s; first mbsync "
        f"{first_run - intake_done:.1f}s (incl. the IMAP byte check); second mbsync "
        f"{finished - first_run:.1f}s"
    )


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_large_bodies_stream_one_after_another_to_a_slow_reader(
    server: StrataIMAP, tls: bool
) -> None:
    """
    What stalled mbsync over TLS, reduced: two bodies too large for the database (streamed from
    their files in 256 KiB reads) fetched one after the other by a client that is slow to read.
    The first stream ends with the transport's buffer full, so the push producer it registered is
    paused when it unregisters; over TLS, Twisted's producer membrane for the second stream never
    passes the transport's resume on to it, and the second FETCH never completes (mbsync gives up
    after its 20 s timeout: "Socket error ... timeout").
    """
    address = f"{USER}@{DOMAIN}"
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 400  # 400 KB
    ids = server.deliver_many([(address, big), (address, big)], connections=1)
    with server.raw(tls=tls, timeout=10) as client:
        assert client.command(b"a", f'LOGIN {address} "{server.users[address]}"'.encode())[
            -1
        ].startswith(b"a OK")
        assert client.command(b"b", b"SELECT INBOX")[-1].startswith(b"b OK")
        for uid, queue_id in zip((1, 2), ids, strict=True):
            client.send(b"f%d UID FETCH %d (BODY.PEEK[])\r\n" % (uid, uid))
            time.sleep(0.5)  # busy elsewhere: Strata's write buffer fills and it must wait
            try:
                lines = client.until_tagged(b"f%d" % uid)
            except TimeoutError:
                pytest.fail(f"FETCH of the large message UID {uid} stalled (tls={tls})")
            assert lines[-1].startswith(b"f%d OK" % uid), lines[-1]
            literal = re.search(rb"BODY\[\] \{(\d+)\}\r\n", lines[0])
            assert literal is not None, lines[0][:200]
            start = literal.end()
            split_stored(lines[0][start : start + int(literal.group(1))], big, queue_id)
