"""
Real IMAP client libraries against ``twistd -n strata`` (issue 4, "Real IMAP clients"): Python's
``imaplib`` and ``imapclient`` each run a scripted session per extension Strata advertises.

Mail reaches the mailboxes only through SMTP intake (domain in mode ``both``), so every body a
client fetches is compared with what intake stored: the sent bytes behind one ``Received:``
header.  Each test logs in as a user of its own, so the tests share one server and stay
independent.

imapclient has no API for ESEARCH, LIST-EXTENDED return options or LIST-STATUS, and imaplib none
for them either: those sessions use imaplib's ``xatom`` (its documented way to send an extension
command) and read the untagged data with ``response``.  imaplib has no IDLE before Python 3.14:
its IDLE session uses imaplib's ``send`` and ``readline``.
"""

from __future__ import annotations

import base64
import datetime
import imaplib
import re
import ssl
import time
from collections.abc import Iterator
from email.header import Header
from typing import Any

import pytest

from tests.peers.strata_imap import (
    DOMAIN,
    StrataIMAP,
    fetch_bodies,
    parse_fetch,
    split_stored,
    unverified_context,
)

pytestmark = pytest.mark.interop

SPECIAL = {"Drafts": "\\Drafts", "Junk": "\\Junk", "Sent": "\\Sent", "Trash": "\\Trash"}
ALL_MAILBOXES = ["Drafts", "INBOX", "Junk", "Sent", "Trash"]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataIMAP]:
    strata = StrataIMAP(
        tmp_path_factory.mktemp("strata-imap"), users=[f"user{i:02d}" for i in range(60)]
    )
    try:
        yield strata.start()
    finally:
        strata.stop()


@pytest.fixture
def user(server: StrataIMAP) -> tuple[str, str]:
    """A user of this test's own: (address, password)."""
    return server.fresh_user()


@pytest.fixture
def IMAPClient() -> Any:
    """imapclient's client class; a missing imapclient fails the test (CI installs it)."""
    try:
        from imapclient import IMAPClient  # type: ignore[import-untyped]
    except ImportError:
        pytest.fail(
            "imapclient is not installed: pip install -e '.[test]' (.ci/run installs it)",
            pytrace=False,
        )
    return IMAPClient


def imapclient_login(server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]) -> Any:
    client = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=60)
    client.login(*user)
    return client


# -- messages -------------------------------------------------------------------------------------


def message(
    subject: str | bytes,
    body: str | bytes = "Hello.\r\n",
    *,
    sender: str = "Sender <sender@outside.test>",
    to: str = "",
    date: str = "Mon, 02 Nov 2026 10:00:00 +0000",
    message_id: str = "",
    extra: str = "",
    charset: str = "us-ascii",
) -> bytes:
    """A single-part message with CRLF line endings; a str subject with non-ASCII gets RFC 2047."""
    if isinstance(subject, str):
        subject_bytes = (
            Header(subject, "utf-8").encode().encode("ascii")
            if not subject.isascii()
            else subject.encode()
        )
    else:
        subject_bytes = subject  # raw (8-bit) header, sent as it is
    body_bytes = body.encode("utf-8") if isinstance(body, str) else body
    message_id = message_id or f"<{abs(hash((subject, body, date)))}@outside.test>"
    head = (
        f"From: {sender}\r\nTo: {to or 'someone@' + DOMAIN}\r\nDate: {date}\r\n"
        f"Message-ID: {message_id}\r\n{extra}MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset={charset}\r\n"
        f"Content-Transfer-Encoding: {'8bit' if not body_bytes.isascii() else '7bit'}\r\n"
    ).encode()
    return b"Subject: " + subject_bytes + b"\r\n" + head + b"\r\n" + body_bytes


ATTACHMENT = bytes(range(256)) * 8  # 2 KiB of every byte value


def multipart(to: str) -> bytes:
    """A text part and a binary attachment, a UTF-8 subject (RFC 2047) and a display name."""
    b64 = base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n")
    return (
        b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <juergen@outside.test>\r\n"
        b"To: " + to.encode() + b"\r\n"
        b"Cc: Carol <carol@outside.test>\r\n"
        b"Subject: =?utf-8?q?Quartalsbericht_f=C3=BCr_K=C3=B6ln?=\r\n"
        b"Date: Tue, 03 Nov 2026 09:30:00 +0100\r\n"
        b"Message-ID: <report-1@outside.test>\r\n"
        b"In-Reply-To: <question-1@outside.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="=-b1"\r\n'
        b"\r\n"
        b"This is a MIME message.\r\n"
        b"--=-b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln.\r\n"
        b"--=-b1\r\n"
        b'Content-Type: application/octet-stream; name="all-bytes.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="all-bytes.bin"\r\n'
        b"\r\n" + b64 + b"--=-b1--\r\n"
    )


# RFC 2046 §5.1.1: the CRLF before a boundary belongs to the boundary, not to the part.
MULTIPART_TEXT = b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln."
MULTIPART_BODYSTRUCTURE = (
    b'1 (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "8bit" '
    + str(len(MULTIPART_TEXT)).encode()
    + b" 0 NIL NIL NIL NIL)"  # RFC 3501 §9 body-type-mpart = 1*body SP media-subtype: no SP
    b'("application" "octet-stream" ("name" "all-bytes.bin") NIL NIL "base64" '
    + str(len(base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n")) - 2).encode()
    + b' NIL ("attachment" ("filename" "all-bytes.bin")) NIL NIL) '
    b'"mixed" ("boundary" "=-b1") NIL NIL NIL))'
)


def ok(result: tuple[str, list[Any]]) -> list[Any]:
    typ, data = result
    assert typ == "OK", data
    return data


def stored_of(server: StrataIMAP, address: str, sent: bytes) -> tuple[str, bytes]:
    """Deliver `sent` to `address` through intake: (queue id, the sent bytes)."""
    return server.deliver(address, sent), sent


def refresh_capabilities(client: imaplib.IMAP4) -> None:
    """
    imaplib keeps the capabilities it saw before login; Strata lists ENABLE, IDLE and the other
    extensions only once logged in (the list may change at login), so ask again.
    """
    line = ok(client.capability())[-1]
    client.capabilities = tuple(line.decode().upper().split())


def search_utf8(client: imaplib.IMAP4, key: str, text: str) -> list[Any]:
    """SEARCH CHARSET UTF-8 `key` `text`, the text sent as a literal (imaplib's ``literal``)."""
    client.literal = text.encode()  # type: ignore[assignment]  # typeshed says str; bytes work
    return ok(client.search("UTF-8", key))


def uids_of(client: imaplib.IMAP4) -> list[int]:
    data = ok(client.uid("SEARCH", "ALL"))
    return [int(n) for n in data[0].split()]


# -- LOGIN, AUTHENTICATE PLAIN, SASL-IR -----------------------------------------------------------


def test_imaplib_login_and_authenticate_plain(server: StrataIMAP, user: tuple[str, str]) -> None:
    address, password = user
    client = server.imaplib()
    try:
        caps = set(client.capabilities)
        assert {"IMAP4REV1", "SASL-IR", "AUTH=PLAIN", "STARTTLS", "LITERAL+"} <= caps
        assert "LOGINDISABLED" not in caps  # loopback may log in without TLS
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(address, "wrong-password")
        data = ok(client.login(address, password))
        assert b"[CAPABILITY IMAP4rev1" in data[0] and b"IDLE" in data[0]
        assert ok(client.select("INBOX")) == [b"0"]
    finally:
        client.logout()

    # AUTHENTICATE PLAIN with a continuation (imaplib has no SASL-IR).
    client = server.imaplib()
    try:
        credentials = f"\0{address}\0{password}".encode()
        typ, _ = client.authenticate("PLAIN", lambda _challenge: credentials)
        assert typ == "OK"
        assert client.state == "AUTH"
        assert ok(client.select("INBOX")) == [b"0"]
    finally:
        client.logout()

    # SASL-IR (RFC 4959): the initial response on the command line, no continuation.
    client = server.imaplib()
    try:
        initial = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
        typ, data = client.xatom("AUTHENTICATE", "PLAIN", initial)
        assert typ == "OK", data
        assert b"CAPABILITY" in data[0]
        client.state = "AUTH"  # imaplib does not know the xatom logged in
        assert ok(client.select("INBOX")) == [b"0"]
        # A wrong SASL-IR password is refused like a wrong LOGIN.
        other = server.imaplib()
        try:
            bad = base64.b64encode(f"\0{address}\0nope".encode()).decode()
            typ, data = other.xatom("AUTHENTICATE", "PLAIN", bad)
            assert typ == "NO" and b"AUTHENTICATIONFAILED" in data[0], (typ, data)
        finally:
            other.logout()
    finally:
        client.logout()


def test_imapclient_login_and_plain_login(
    server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]
) -> None:
    from imapclient.exceptions import LoginError  # type: ignore[import-untyped]

    address, password = user
    client = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=60)
    try:
        assert b"SASL-IR" in client.capabilities()
        with pytest.raises(LoginError):
            client.login(address, "wrong-password")
        assert b"Logged in" in client.login(address, password)
        caps = set(client.capabilities())
        for extension in (b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"ESEARCH", b"SORT"):
            assert extension in caps
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        client.logout()
    client = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=60)
    try:
        client.plain_login(address, password)
        assert b"READ-ONLY" in client.select_folder("INBOX", readonly=True)
    finally:
        client.logout()


# -- STARTTLS and implicit TLS --------------------------------------------------------------------


def _certificate_der(server: StrataIMAP) -> bytes:
    return ssl.PEM_cert_to_DER_cert(server.certificate.read_text())


def test_imaplib_starttls_and_implicit_tls(server: StrataIMAP, user: tuple[str, str]) -> None:
    address, password = user
    queue_id, sent = stored_of(server, address, message("Over TLS", "Secret body.\r\n"))

    client = server.imaplib()
    try:
        ok(client.starttls(ssl_context=unverified_context()))
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.getpeercert(binary_form=True) == _certificate_der(server)
        assert "STARTTLS" not in client.capabilities  # imaplib asked again after the handshake
        assert "AUTH=PLAIN" in client.capabilities
        ok(client.login(address, password))
        ok(client.select("INBOX"))
        (stored,) = fetch_bodies(client).values()
        split_stored(stored, sent, queue_id)
    finally:
        client.logout()

    client = imaplib.IMAP4_SSL(
        "127.0.0.1", server.imaps_port, ssl_context=unverified_context(), timeout=60
    )
    try:
        sock = client.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.getpeercert(binary_form=True) == _certificate_der(server)
        assert "STARTTLS" not in client.capabilities and "AUTH=PLAIN" in client.capabilities
        ok(client.login(address, password))
        ok(client.select("INBOX"))
        (stored,) = fetch_bodies(client).values()
        split_stored(stored, sent, queue_id)
    finally:
        client.logout()


def test_imapclient_starttls_and_implicit_tls(
    server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]
) -> None:
    address, password = user
    queue_id, sent = stored_of(server, address, message("imapclient over TLS"))
    client = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=60)
    try:
        client.starttls(unverified_context())
        assert client.socket().getpeercert(binary_form=True) == _certificate_der(server)
        client.login(address, password)
        client.select_folder("INBOX")
        (uid,) = client.search()
        data = client.fetch([uid], ["BODY.PEEK[]"])[uid]
        split_stored(data[b"BODY[]"], sent, queue_id)
    finally:
        client.logout()
    client = IMAPClient(
        "127.0.0.1", port=server.imaps_port, ssl=True, ssl_context=unverified_context(), timeout=60
    )
    try:
        assert b"STARTTLS" not in client.capabilities()
        client.login(address, password)
        client.select_folder("INBOX")
        assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == data[b"BODY[]"]
    finally:
        client.logout()


# -- NAMESPACE and ID -----------------------------------------------------------------------------


def test_imaplib_namespace_and_id(server: StrataIMAP, user: tuple[str, str]) -> None:
    client = server.imaplib()
    try:
        # RFC 2971: ID is allowed before login.
        typ, data = client.xatom("ID", '("name" "imaplib" "version" "3.11")')
        assert typ == "OK", data
        (served,) = client.response("ID")[1]
        assert re.match(rb'\("name" "Strata"', served), served
        ok(client.login(*user))
        (namespace,) = ok(client.namespace())
        assert namespace == b'(("" "/")) NIL NIL'
    finally:
        client.logout()


def test_imapclient_namespace_and_id(
    server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]
) -> None:
    client = imapclient_login(server, IMAPClient, user)
    try:
        namespace = client.namespace()
        assert namespace.personal == (("", "/"),)
        assert namespace.other is None and namespace.shared is None
        served = client.id_({"name": "imapclient", "version": "3"})
        fields = dict(zip(served[0][::2], served[0][1::2], strict=True))
        assert fields[b"name"] == b"Strata"
    finally:
        client.logout()


# -- ENABLE CONDSTORE, SELECT (CONDSTORE), CHANGEDSINCE, UNCHANGEDSINCE ---------------------------


def test_imaplib_condstore(server: StrataIMAP, user: tuple[str, str]) -> None:
    address, _ = user
    server.deliver_many([(address, message(f"modseq {n}")) for n in range(3)], connections=1)
    client = server.imaplib(address)
    try:
        refresh_capabilities(client)
        typ, data = client.enable("CONDSTORE")
        assert typ == "OK", data
        assert client.response("ENABLED")[1] == [b"CONDSTORE"]
        ok(client.select("INBOX"))
        (highest,) = client.response("HIGHESTMODSEQ")[1]
        highest_before = int(highest)
        data = ok(client.fetch("1:*", "(UID FLAGS MODSEQ)"))
        modseqs = [int(m) for m in re.findall(rb"MODSEQ \((\d+)\)", b" ".join(data))]
        assert len(modseqs) == 3 and max(modseqs) <= highest_before
        # A STORE raises the message's modseq above every earlier one.
        data = ok(client.store("2", "+FLAGS", "(\\Flagged)"))
        (changed,) = [int(m) for m in re.findall(rb"MODSEQ \((\d+)\)", b" ".join(data))]
        assert changed > highest_before
        # CHANGEDSINCE: only what changed after the modseq given.
        data = ok(client.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {highest_before})"))
        assert len(data) == 1 and data[0].startswith(b"2 (") and b"\\Flagged" in data[0]
        # UNCHANGEDSINCE below the message's modseq: not stored, [MODIFIED 2] (RFC 7162 §3.1.3).
        typ, data = client.store("2", f"(UNCHANGEDSINCE {highest_before}) +FLAGS", "(\\Seen)")
        assert typ == "OK", data
        assert client.response("MODIFIED")[1] == [b"2"]
        assert b"\\Seen" not in ok(client.fetch("2", "(FLAGS)"))[0]
    finally:
        client.logout()

    # SELECT with the CONDSTORE parameter enables it too (RFC 7162 §3.1.8).
    client = server.imaplib(address)
    try:
        typ, data = client.select("INBOX (CONDSTORE)")  # imaplib passes the mailbox verbatim
        assert typ == "OK", data
        assert int(client.response("HIGHESTMODSEQ")[1][0]) == changed
        # Enabled: a STORE's FETCH responses carry MODSEQ (a plain FETCH FLAGS need not).
        data = ok(client.store("3", "+FLAGS", "(\\Answered)"))
        (modseq,) = parse_fetch(data)[3]["MODSEQ"]
        assert int(modseq) > changed, data
    finally:
        client.logout()


def test_condstore_fetch_responses_carry_uid_and_modseq_once_enabled(
    server: StrataIMAP, user: tuple[str, str]
) -> None:
    """
    RFC 7162 §3.1 (the text of RFC 5162 erratum 1807): once a CONDSTORE enabling command was
    issued, the server MUST include both UID and MODSEQ in all subsequent untagged FETCH
    responses, whether caused by a STORE, a FETCH that set \\Seen, or an external agent.
    Strata sends UID for another session's change but not for its own STORE or implicit \\Seen
    (``* 2 FETCH (FLAGS (\\Flagged) MODSEQ (4))``).  Dovecot 2.3 omits it there too.
    """
    address, _ = user
    server.deliver_many([(address, message(f"uid+modseq {n}")) for n in range(2)], 1)
    client = server.imaplib(address)
    other = server.imaplib(address)
    try:
        refresh_capabilities(client)
        ok(client.enable("CONDSTORE"))
        ok(client.select("INBOX"))
        uids = uids_of(client)
        stored = ok(client.store("2", "+FLAGS", "(\\Flagged)"))
        ok(other.select("INBOX"))
        ok(other.store("1", "+FLAGS", "(\\Answered)"))
        ok(client.noop())
        external = client.response("FETCH")[1]
        fetched = ok(client.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])"))  # sets \\Seen
        heads = [x[0] if isinstance(x, tuple) else x for x in fetched]
        expected = {"STORE": (stored[0], uids[1]), "other session": (external[0], uids[0])}
        expected["implicit \\Seen"] = (b" ".join(h for h in heads if h), uids[0])
        for cause, (line, uid) in expected.items():
            assert re.search(rb"\bUID %d\b" % uid, line), (cause, line)
            assert re.search(rb"\bMODSEQ \(\d+\)", line), (cause, line)
    finally:
        client.logout()
        other.logout()


def test_imapclient_condstore(server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]) -> None:
    address, _ = user
    server.deliver_many([(address, message(f"modseq {n}")) for n in range(3)], connections=1)
    client = imapclient_login(server, IMAPClient, user)
    try:
        assert client.enable("CONDSTORE") == [b"CONDSTORE"]
        selected = client.select_folder("INBOX")
        highest = selected[b"HIGHESTMODSEQ"]
        uids = client.search()
        assert len(uids) == 3
        client.add_flags(uids[0], [b"$Important"])
        changed = client.fetch(uids, ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
        assert list(changed) == [uids[0]]
        assert b"$Important" in changed[uids[0]][b"FLAGS"]
        assert changed[uids[0]][b"MODSEQ"][0] > highest
        assert client.folder_status("INBOX", [b"HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"] > highest
    finally:
        client.logout()


# -- LIST, LSUB, LIST-EXTENDED, LIST-STATUS, SPECIAL-USE ------------------------------------------


def _list_lines(lines: list[Any]) -> dict[str, str]:
    """LIST response data (imaplib) → {name: attribute text}."""
    out = {}
    for line in lines:
        match = re.match(rb'\(([^)]*)\) "/" "?([^"]*)"?\Z', line)
        assert match is not None, line
        out[match.group(2).decode()] = match.group(1).decode()
    return out


def test_imaplib_list_lsub_extended_status_special_use(
    server: StrataIMAP, user: tuple[str, str]
) -> None:
    address, _ = user
    server.deliver_many([(address, message(f"status {n}")) for n in range(3)], connections=1)
    client = server.imaplib(address)
    try:
        listed = _list_lines(ok(client.list()))
        assert sorted(listed) == ALL_MAILBOXES
        for name, use in SPECIAL.items():
            assert use in listed[name].split(), listed
        assert sorted(_list_lines(ok(client.lsub()))) == ALL_MAILBOXES  # all subscribed
        ok(client.create("Projects"))
        assert "Projects" in _list_lines(ok(client.list()))
        ok(client.subscribe("Projects"))
        assert "Projects" in _list_lines(ok(client.lsub()))
        ok(client.unsubscribe("Projects"))
        assert "Projects" not in _list_lines(ok(client.lsub()))

        # LIST-EXTENDED (RFC 5258) return options.
        typ, data = client.xatom("LIST", '""', '"*"', "RETURN (SPECIAL-USE SUBSCRIBED)")
        assert typ == "OK", data
        extended = _list_lines(client.response("LIST")[1])
        assert sorted(extended) == [*ALL_MAILBOXES[:3], "Projects", *ALL_MAILBOXES[3:]]
        for name in ALL_MAILBOXES:
            assert "\\Subscribed" in extended[name].split(), extended
        assert "\\Subscribed" not in extended["Projects"].split()
        for name, use in SPECIAL.items():
            assert use in extended[name].split()
        # The SPECIAL-USE selection option (RFC 6154 §5.1): only the special mailboxes.
        typ, data = client.xatom("LIST", "(SPECIAL-USE)", '""', '"*"')
        assert typ == "OK", data
        assert sorted(_list_lines(client.response("LIST")[1])) == sorted(SPECIAL)

        # LIST-STATUS (RFC 5819).
        ok(client.select("INBOX"))
        ok(client.store("1", "+FLAGS", "(\\Seen)"))
        ok(client.unselect())
        typ, data = client.xatom("LIST", '""', '"*"', "RETURN (STATUS (MESSAGES UNSEEN))")
        assert typ == "OK", data
        statuses = {
            m.group(1).decode(): (int(m.group(2)), int(m.group(3)))
            for line in client.response("STATUS")[1]
            if (m := re.match(rb'"?([^" ]+)"? \(MESSAGES (\d+) UNSEEN (\d+)\)', line))
        }
        assert statuses == {
            "INBOX": (3, 2),
            "Drafts": (0, 0),
            "Junk": (0, 0),
            "Sent": (0, 0),
            "Trash": (0, 0),
            "Projects": (0, 0),
        }, client.response("STATUS")
        # The same numbers as STATUS.
        (status,) = ok(client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)"))
        assert re.search(rb"MESSAGES 3 UNSEEN 2 UIDNEXT \d+", status), status
    finally:
        client.logout()


def test_imapclient_list_lsub_special_use_status(
    server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]
) -> None:
    address, _ = user
    server.deliver_many([(address, message(f"status {n}")) for n in range(2)], connections=1)
    client = imapclient_login(server, IMAPClient, user)
    try:
        folders = {name: flags for flags, delimiter, name in client.list_folders()}
        assert sorted(folders) == ALL_MAILBOXES
        assert {name for _, _, name in client.list_sub_folders()} == set(ALL_MAILBOXES)
        assert client.find_special_folder(b"\\Sent") == "Sent"
        assert client.find_special_folder(b"\\Trash") == "Trash"
        assert client.find_special_folder(b"\\Drafts") == "Drafts"
        assert client.find_special_folder(b"\\Junk") == "Junk"
        assert client.list_folders(pattern="%") and client.list_folders(pattern="Tr*")[0][2] == (
            "Trash"
        )
        status = client.folder_status("INBOX", [b"MESSAGES", b"UNSEEN", b"UIDNEXT"])
        assert status[b"MESSAGES"] == 2 and status[b"UNSEEN"] == 2
        assert status[b"UIDNEXT"] > max(client.select_folder("INBOX") and client.search())
    finally:
        client.logout()


# -- FETCH ----------------------------------------------------------------------------------------


def test_imaplib_fetch_envelope_bodystructure_bodies_partial_seen(
    server: StrataIMAP, user: tuple[str, str]
) -> None:
    address, _ = user
    queue_id, sent = stored_of(server, address, multipart(address))
    client = server.imaplib(address)
    try:
        ok(client.select("INBOX"))
        (stored,) = fetch_bodies(client).values()
        split_stored(stored, sent, queue_id)
        (envelope,) = ok(client.fetch("1", "(ENVELOPE)"))
        assert envelope == (
            b'1 (ENVELOPE ("Tue, 03 Nov 2026 09:30:00 +0100" '
            b'"=?utf-8?q?Quartalsbericht_f=C3=BCr_K=C3=B6ln?=" '
            b'(("=?utf-8?q?J=C3=BCrgen_M=C3=BCller?=" NIL "juergen" "outside.test")) '
            b'(("=?utf-8?q?J=C3=BCrgen_M=C3=BCller?=" NIL "juergen" "outside.test")) '
            b'(("=?utf-8?q?J=C3=BCrgen_M=C3=BCller?=" NIL "juergen" "outside.test")) '
            b'((NIL NIL "' + address.split("@")[0].encode() + b'" "example.test")) '
            b'(("Carol" NIL "carol" "outside.test")) NIL '
            b'"<question-1@outside.test>" "<report-1@outside.test>"))'
        )
        (structure,) = ok(client.fetch("1", "(BODYSTRUCTURE)"))
        # Compared without the separator between the parts (pinned in the test below).
        assert structure.replace(b"NIL) (", b"NIL)(") == MULTIPART_BODYSTRUCTURE, structure
        # Sections and partials: the bytes of the stored message.
        items = parse_fetch(
            ok(client.fetch("1", "(BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[]<0.10> BODY.PEEK[1.MIME])"))
        )[1]
        assert items["BODY[1]"] == MULTIPART_TEXT
        assert base64.b64decode(items["BODY[2]"]) == ATTACHMENT
        assert items["BODY[]<0>"] == stored[:10]
        assert items["BODY[1.MIME]"] == (
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        )
        items = parse_fetch(
            ok(client.fetch("1", "(BODY.PEEK[]<100.50> BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
        )[1]
        assert items["BODY[]<100>"] == stored[100:150]
        assert items["BODY[HEADER.FIELDS (SUBJECT)]"] == (
            b"Subject: =?utf-8?q?Quartalsbericht_f=C3=BCr_K=C3=B6ln?=\r\n\r\n"
        )
        # A partial beyond the end is empty; one across the end is cut (RFC 3501 §6.4.5).
        items = parse_fetch(ok(client.fetch("1", f"(BODY.PEEK[]<{len(stored) - 5}.100>)")))[1]
        assert items[f"BODY[]<{len(stored) - 5}>"] == stored[-5:]
        items = parse_fetch(ok(client.fetch("1", f"(BODY.PEEK[]<{len(stored) + 10}.10>)")))[1]
        assert items[f"BODY[]<{len(stored) + 10}>"] == b""
        items = parse_fetch(ok(client.fetch("1", "(RFC822.SIZE FLAGS)")))[1]
        assert items["RFC822.SIZE"] == str(len(stored))
        # PEEK left \Seen alone; BODY[] sets it (RFC 3501 §6.4.5) and says so in the response.
        assert "\\Seen" not in items["FLAGS"]
        items = parse_fetch(ok(client.fetch("1", "(BODY[])")))[1]
        assert items["BODY[]"] == stored
        assert "\\Seen" in items["FLAGS"], items.keys()
        assert "\\Seen" in parse_fetch(ok(client.fetch("1", "(FLAGS)")))[1]["FLAGS"]
    finally:
        client.logout()


def test_bodystructure_has_no_space_between_the_parts_of_a_multipart(
    server: StrataIMAP, user: tuple[str, str]
) -> None:
    """
    RFC 3501 §9 (and RFC 9051): body-type-mpart = 1*body SP media-subtype, so the parts follow
    each other with no separator: ``(("text" ...)("application" ...) "mixed" ...)``, as Dovecot
    writes it.  Strata wrote ``...NIL) ("application"...``.
    """
    address, _ = user
    server.deliver(address, multipart(address))
    client = server.imaplib(address)
    try:
        ok(client.select("INBOX"))
        assert ok(client.fetch("1", "(BODYSTRUCTURE)")) == [MULTIPART_BODYSTRUCTURE]
        (body,) = ok(client.fetch("1", "(BODY)"))
        assert b"NIL) (" not in body and b')("application" "octet-stream"' in body, body
    finally:
        client.logout()


def test_imapclient_fetch_envelope_bodystructure_bodies_partial_seen(
    server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]
) -> None:
    address, _ = user
    queue_id, sent = stored_of(server, address, multipart(address))
    client = imapclient_login(server, IMAPClient, user)
    try:
        client.select_folder("INBOX")
        (uid,) = client.search()
        data = client.fetch(
            [uid],
            ["ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[]", "BODY.PEEK[]<0.10>", "RFC822.SIZE"],
        )[uid]
        stored = data[b"BODY[]"]
        split_stored(stored, sent, queue_id)
        assert data[b"BODY[]<0>"] == stored[:10]
        assert data[b"RFC822.SIZE"] == len(stored)
        envelope = data[b"ENVELOPE"]
        assert envelope.date.astimezone(datetime.UTC) == datetime.datetime(
            2026, 11, 3, 8, 30, tzinfo=datetime.UTC
        )
        assert envelope.subject == b"=?utf-8?q?Quartalsbericht_f=C3=BCr_K=C3=B6ln?="
        assert envelope.from_[0].mailbox == b"juergen" and envelope.from_[0].host == (
            b"outside.test"
        )
        assert envelope.cc[0].name == b"Carol"
        assert envelope.message_id == b"<report-1@outside.test>"
        assert envelope.in_reply_to == b"<question-1@outside.test>"
        structure = data[b"BODYSTRUCTURE"]
        assert structure.is_multipart
        text, attachment = structure[0]
        assert text[:2] == (b"text", b"plain") and attachment[:2] == (
            b"application",
            b"octet-stream",
        )
        assert structure[1] == b"mixed"
        assert b"\\Seen" not in client.get_flags([uid])[uid]
        assert client.fetch([uid], ["BODY[]"])[uid][b"BODY[]"] == stored
        assert b"\\Seen" in client.get_flags([uid])[uid]
        # imapclient asks for BINARY-free sections only; BODY.PEEK[2] decodes to the attachment.
        part = client.fetch([uid], ["BODY.PEEK[2]"])[uid][b"BODY[2]"]
        assert base64.b64decode(part) == ATTACHMENT
    finally:
        client.logout()


# -- STORE ----------------------------------------------------------------------------------------


def test_imaplib_store(server: StrataIMAP, user: tuple[str, str]) -> None:
    address, _ = user
    server.deliver_many([(address, message(f"flags {n}")) for n in range(2)], connections=1)
    client = server.imaplib(address)
    try:
        ok(client.select("INBOX"))
        stored = parse_fetch(ok(client.store("1", "+FLAGS", "(\\Flagged $Label1)")))
        # \\Recent: this is the first session to select INBOX since the mail came (RFC 3501
        # §2.3.2).
        assert set(stored[1]["FLAGS"]) == {"\\Flagged", "$Label1", "\\Recent"}
        ok(client.store("1", "-FLAGS", "(\\Flagged)"))
        ok(client.store("2", "FLAGS", "(\\Answered \\Draft)"))
        data = ok(client.store("1:2", "+FLAGS.SILENT", "(\\Seen)"))
        assert data == [None], data  # .SILENT: no FETCH responses
        flags = {
            n: set(i["FLAGS"]) for n, i in parse_fetch(ok(client.fetch("1:2", "FLAGS"))).items()
        }
        recent = "\\Recent"  # the server's, untouched by STORE (RFC 3501 §2.3.2)
        assert flags == {
            1: {"$Label1", "\\Seen", recent},
            2: {"\\Answered", "\\Draft", "\\Seen", recent},
        }
        # The new keyword is announced in FLAGS and PERMANENTFLAGS at the next SELECT.
        ok(client.select("INBOX"))
        assert b"$Label1" in client.response("FLAGS")[1][0]
    finally:
        client.logout()


def test_imapclient_store(server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]) -> None:
    address, _ = user
    server.deliver_many([(address, message(f"flags {n}")) for n in range(2)], connections=1)
    client = imapclient_login(server, IMAPClient, user)
    try:
        client.select_folder("INBOX")
        first, second = client.search()
        assert set(client.add_flags([first], [b"\\Flagged", b"Work"])[first]) == {
            b"\\Recent",  # the first session to select INBOX since the mail came
            b"\\Flagged",
            b"Work",
        }
        client.remove_flags([first], [b"\\Flagged"])
        client.set_flags([second], [b"\\Answered"])
        # \\Recent stays: the server's, untouched by STORE (RFC 3501 §2.3.2).
        assert client.get_flags([first, second]) == {
            first: (b"\\Recent", b"Work"),
            second: (b"\\Answered", b"\\Recent"),
        }
        assert client.search(["KEYWORD", "Work"]) == [first]
        assert client.search(["ANSWERED"]) == [second]
    finally:
        client.logout()


# -- SEARCH (CHARSET UTF-8), ESEARCH, SORT --------------------------------------------------------


def _search_corpus(address: str) -> list[bytes]:
    return [
        message(
            "Grüße aus Köln",
            "Ein Text mit Umlauten: äöü.\r\n",
            sender="Jürgen <juergen@outside.test>",
            date="Wed, 04 Nov 2026 08:00:00 +0000",
            charset="utf-8",
        ),
        # A raw 8-bit UTF-8 subject (no RFC 2047), as some mailers send.
        message(
            "Привет из Москвы".encode(),
            "Body with a needle in it.\r\n",
            sender="Ivan <ivan@outside.test>",
            date="Mon, 02 Nov 2026 08:00:00 +0000",
        ),
        message(
            "Re: banana split",
            "x" * 3000 + "\r\n",
            sender="Alice <alice@outside.test>",
            date="Tue, 03 Nov 2026 08:00:00 +0000",
        ),
        message(
            "apple pie",
            "short\r\n",
            sender="Bob <bob@outside.test>",
            date="Thu, 05 Nov 2026 08:00:00 +0000",
        ),
    ]


def test_imaplib_search_esearch_sort(server: StrataIMAP, user: tuple[str, str]) -> None:
    address, _ = user
    server.deliver_many([(address, m) for m in _search_corpus(address)], connections=1)
    client = server.imaplib(address)
    try:
        ok(client.select("INBOX"))
        assert ok(client.search(None, "ALL")) == [b"1 2 3 4"]
        assert ok(client.search(None, "SUBJECT", '"banana"')) == [b"3"]
        assert ok(client.search(None, "BODY", "needle")) == [b"2"]
        assert ok(client.search(None, "FROM", "bob@outside.test")) == [b"4"]
        assert ok(client.search(None, "LARGER", "2000")) == [b"3"]
        assert ok(client.search(None, "SENTBEFORE", "03-Nov-2026")) == [b"2"]
        assert ok(client.search(None, "OR", "SUBJECT", "apple", "SUBJECT", "banana")) == [b"3 4"]
        # CHARSET UTF-8 with the non-ASCII string as a literal: an RFC 2047 subject ...
        assert search_utf8(client, "SUBJECT", "Köln") == [b"1"]
        # ... a raw 8-bit subject, a UTF-8 body, a raw 8-bit display name.
        assert search_utf8(client, "SUBJECT", "Москвы") == [b"2"]
        assert search_utf8(client, "TEXT", "äöü") == [b"1"]
        assert search_utf8(client, "FROM", "Jürgen") == [b"1"]
        ok(client.store("2", "+FLAGS", "(\\Seen)"))
        assert ok(client.search(None, "UNSEEN")) == [b"1 3 4"]
        assert ok(client.uid("SEARCH", "SEEN")) == [str(uids_of(client)[1]).encode()]

        # ESEARCH (RFC 4731).
        typ, data = client.xatom("SEARCH", "RETURN", "(MIN MAX COUNT ALL)", "UNSEEN")
        assert typ == "OK", data
        (esearch,) = client.response("ESEARCH")[1]
        assert re.fullmatch(rb'\(TAG "[^"]+"\) MIN 1 MAX 4 COUNT 3 ALL 1,3:4', esearch), esearch
        uids = uids_of(client)
        typ, data = client.uid("SEARCH", "RETURN", "(COUNT MAX)", "ALL")
        assert typ == "OK", data
        (esearch,) = client.response("ESEARCH")[1]
        assert re.fullmatch(rb'\(TAG "[^"]+"\) UID (MAX|COUNT) \d+ (MAX|COUNT) \d+', esearch)
        assert b"COUNT 4" in esearch and f"MAX {uids[-1]}".encode() in esearch
        typ, data = client.xatom("SEARCH", "RETURN", "()", "SUBJECT", "nothing-matches")
        assert typ == "OK", data
        (esearch,) = client.response("ESEARCH")[1]
        assert re.fullmatch(rb'\(TAG "[^"]+"\)', esearch), esearch

        # SORT (RFC 5256): base subjects apple, banana, Grüße, Привет.
        assert ok(client.sort("(SUBJECT)", "UTF-8", "ALL")) == [b"4 3 1 2"]
        assert ok(client.sort("(DATE)", "UTF-8", "ALL")) == [b"2 3 1 4"]
        assert ok(client.sort("(REVERSE ARRIVAL)", "UTF-8", "ALL")) == [b"4 3 2 1"]
        assert ok(client.sort("(FROM)", "UTF-8", "ALL")) == [b"3 4 2 1"]
        assert ok(client.sort("(SIZE)", "UTF-8", "UNSEEN"))[0].split()[-1] == b"3"
        typ, data = client.uid("SORT", "(REVERSE DATE)", "UTF-8", "ALL")
        assert typ == "OK", data
        assert data == [" ".join(str(uids[i]) for i in (3, 0, 2, 1)).encode()]
    finally:
        client.logout()


def test_imapclient_search_sort(server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]) -> None:
    address, _ = user
    server.deliver_many([(address, m) for m in _search_corpus(address)], connections=1)
    client = imapclient_login(server, IMAPClient, user)
    try:
        client.select_folder("INBOX")
        uids = client.search()
        assert len(uids) == 4
        # imapclient sends non-ASCII criteria as literals after CHARSET UTF-8.
        assert client.search(["SUBJECT", "Grüße"], charset="UTF-8") == [uids[0]]
        assert client.search(["SUBJECT", "Привет"], charset="UTF-8") == [uids[1]]
        assert client.search(["TEXT", "needle"]) == [uids[1]]
        assert client.search(["NOT", "SUBJECT", "pie"]) == uids[:3]
        assert client.search(["SINCE", datetime.date(2026, 11, 1)]) == uids  # INTERNALDATE: now
        assert client.sort(["SUBJECT"]) == [uids[i] for i in (3, 2, 0, 1)]
        assert client.sort(["REVERSE SIZE"])[0] == uids[2]
        assert client.sort(["DATE"], ["UNSEEN"]) == [uids[i] for i in (1, 2, 0, 3)]
    finally:
        client.logout()


# -- UIDPLUS: APPENDUID, COPYUID, UID EXPUNGE; MOVE; UNSELECT -------------------------------------


def test_imaplib_uidplus_move_unselect(server: StrataIMAP, user: tuple[str, str]) -> None:
    address, _ = user
    ids = server.deliver_many([(address, message(f"uidplus {n}")) for n in range(3)], 1)
    client = server.imaplib(address)
    try:
        ok(client.select("INBOX"))
        (validity,) = client.response("UIDVALIDITY")[1]
        uids = uids_of(client)
        stored = fetch_bodies(client)
        for uid, queue_id in zip(uids, ids, strict=True):
            assert f" id {queue_id}".encode() in stored[uid][:300]

        # APPENDUID (RFC 4315 §3).
        appended = message("appended by imaplib", "Appended body.\r\n")
        typ, data = client.append("INBOX", "(\\Seen)", None, appended)
        assert typ == "OK", data
        match = re.match(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
        assert match is not None, data
        assert match.group(1) == validity and int(match.group(2)) > uids[-1]
        new_uid = int(match.group(2))
        assert fetch_bodies(client, str(new_uid)) == {new_uid: appended}

        # COPYUID.
        typ, data = client.uid("COPY", f"{uids[0]}:{uids[1]}", "Trash")
        assert typ == "OK", data
        # imaplib keeps a tagged response's code as untagged data named after it.
        (copyuid,) = client.response("COPYUID")[1]
        match = re.fullmatch(rb"(\d+) (\S+) (\S+)", copyuid)
        assert match is not None, copyuid
        assert match.group(2) == f"{uids[0]}:{uids[1]}".encode()
        ok(client.select("Trash"))
        (trash_validity,) = client.response("UIDVALIDITY")[1]
        assert match.group(1) == trash_validity
        copies = fetch_bodies(client)
        assert sorted(copies.values()) == sorted([stored[uids[0]], stored[uids[1]]])
        assert match.group(3) in (b"1:2", b"1,2"), data

        # MOVE (RFC 6851): the COPYUID comes untagged, then EXPUNGE.
        ok(client.select("INBOX"))
        typ, data = client.uid("MOVE", str(uids[2]), "Junk")
        assert typ == "OK", data
        assert client.response("EXPUNGE")[1] == [b"3"]
        assert uids_of(client) == [uids[0], uids[1], new_uid]
        typ, data = client.uid("MOVE", str(uids[0]), '"No such folder"')
        assert typ == "NO" and b"[TRYCREATE]" in data[0], (typ, data)
        ok(client.select("Junk"))
        assert list(fetch_bodies(client).values()) == [stored[uids[2]]]

        # UID EXPUNGE: only the UIDs named go, though both are \Deleted.
        ok(client.select("INBOX"))
        ok(client.uid("STORE", f"{uids[0]}:{uids[1]}", "+FLAGS.SILENT", "(\\Deleted)"))
        typ, data = client.uid("EXPUNGE", str(uids[1]))
        assert typ == "OK", data
        assert uids_of(client) == [uids[0], new_uid]

        # UNSELECT leaves \Deleted mail in place; CLOSE expunges it.
        ok(client.unselect())
        assert client.state == "AUTH"
        ok(client.select("INBOX"))
        assert uids_of(client) == [uids[0], new_uid]
        ok(client.close())
        ok(client.select("INBOX"))
        assert uids_of(client) == [new_uid]
    finally:
        client.logout()


def test_imapclient_uidplus_move_unselect(
    server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]
) -> None:
    address, _ = user
    server.deliver_many([(address, message(f"uidplus {n}")) for n in range(3)], 1)
    client = imapclient_login(server, IMAPClient, user)
    try:
        validity = client.select_folder("INBOX")[b"UIDVALIDITY"]
        uids = client.search()
        when = datetime.datetime(2026, 10, 1, 12, 0, 0, tzinfo=datetime.UTC)
        appended = message("appended by imapclient")
        response = client.append("INBOX", appended, flags=[b"\\Draft"], msg_time=when)
        match = re.match(rb"\[APPENDUID (\d+) (\d+)\]", response)
        assert match is not None and int(match.group(1)) == validity, response
        new_uid = int(match.group(2))
        data = client.fetch([new_uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[new_uid]
        # \\Recent: this session selected the mailbox and is the first to see the new message.
        assert data[b"BODY[]"] == appended and data[b"FLAGS"] == (b"\\Draft", b"\\Recent")
        assert data[b"INTERNALDATE"].astimezone(datetime.UTC) == when

        client.copy([uids[0]], "Sent")
        # imapclient drops the tagged text of UID COPY; imaplib underneath kept its code.
        (copyuid,) = client._imap.response("COPYUID")[1]
        assert re.fullmatch(rb"\d+ " + str(uids[0]).encode() + rb" \d+", copyuid), copyuid
        client.move([uids[1]], "Trash")
        assert client.search() == [uids[0], uids[2], new_uid]
        client.add_flags([uids[0], uids[2]], [b"\\Deleted"])
        client.uid_expunge([uids[2]])
        assert client.search() == [uids[0], new_uid]
        client.unselect_folder()
        client.select_folder("INBOX")
        assert client.search(["DELETED"]) == [uids[0]]
        client.close_folder()
        client.select_folder("Trash")
        assert len(client.search()) == 1
    finally:
        client.logout()


# -- IDLE -----------------------------------------------------------------------------------------


def test_imapclient_idle_sees_intake_delivery_and_other_sessions_flags(
    server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]
) -> None:
    address, _ = user
    server.deliver(address, message("before idle"))
    idler = imapclient_login(server, IMAPClient, user)
    other = imapclient_login(server, IMAPClient, user)
    try:
        assert idler.select_folder("INBOX")[b"EXISTS"] == 1
        idler.idle()
        started = time.monotonic()
        queue_id = server.deliver(address, message("during idle"))
        responses = _idle_until(idler, lambda r: (2, b"EXISTS") in r)
        assert (2, b"EXISTS") in responses, responses
        arrived = time.monotonic() - started
        # Another session flags the first message: the idler hears FETCH FLAGS.
        other.select_folder("INBOX")
        first, second = other.search()
        other.add_flags([first], [b"\\Flagged"])
        responses = _idle_until(idler, lambda r: any(x[1:2] == (b"FETCH",) for x in r))
        fetches = [r for r in responses if r[1:2] == (b"FETCH",)]
        assert (
            fetches
            and fetches[0][0] == 1
            and b"\\Flagged"
            in dict(zip(fetches[0][2][::2], fetches[0][2][1::2], strict=True))[b"FLAGS"]
        ), responses
        text, _ = idler.idle_done()
        assert arrived < 10, arrived
        # The message announced is the one intake stored.
        assert (
            f" id {queue_id}".encode()
            in idler.fetch([second], ["BODY.PEEK[]"])[second][b"BODY[]"][:300]
        )
    finally:
        idler.logout()
        other.logout()


def _idle_until(client: Any, done: Any, timeout: float = 15.0) -> list[Any]:
    responses: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(responses):
        responses += client.idle_check(timeout=1)
    return responses


def test_imaplib_idle_by_hand(server: StrataIMAP, user: tuple[str, str]) -> None:
    """imaplib (before 3.14) has no IDLE: the RFC 2177 exchange through its send/readline."""
    address, _ = user
    client = server.imaplib(address)
    try:
        ok(client.select("INBOX"))
        client.send(b"I1 IDLE\r\n")
        assert client.readline().startswith(b"+ ")
        server.deliver(address, message("idle by hand"))
        client.sock.settimeout(15)
        untagged = [client.readline()]
        while untagged[-1] != b"* 1 EXISTS\r\n":
            assert untagged[-1].startswith(b"* "), untagged
            untagged.append(client.readline())
        client.send(b"DONE\r\n")
        line = client.readline()
        while line.startswith(b"* "):
            line = client.readline()
        assert line.startswith(b"I1 OK"), line
        client.sock.settimeout(60)
        ok(client.noop())
    finally:
        client.logout()


# -- APPEND, CREATE, RENAME, DELETE ---------------------------------------------------------------


def test_imaplib_append_create_rename_delete(server: StrataIMAP, user: tuple[str, str]) -> None:
    address, _ = user
    client = server.imaplib(address)
    try:
        ok(client.create("Projects"))
        ok(client.create("Projects/2026"))
        listed = _list_lines(ok(client.list()))
        assert "\\HasChildren" in listed["Projects"].split()
        assert "\\HasNoChildren" in listed["Projects/2026"].split()
        typ, data = client.create("Projects")
        assert typ == "NO", data
        # APPEND with flags, an internal date, 8-bit content and a NUL-free binary-ish body.
        body = message("Quarterly plan", "Plan f\u00fcr 2026\r\n.dot line\r\n", charset="utf-8")
        when = imaplib.Time2Internaldate(datetime.datetime(2026, 1, 15, 8, 30, tzinfo=datetime.UTC))
        typ, data = client.append("Projects/2026", "(\\Flagged $Plan)", when, body)
        assert typ == "OK" and b"APPENDUID" in data[0], data
        typ, data = client.append("No/Such/Folder", None, None, body)
        assert typ == "NO" and b"[TRYCREATE]" in data[0], (typ, data)
        # RENAME moves the children and the mail with it.
        ok(client.rename("Projects", "Archive"))
        names = _list_lines(ok(client.list()))
        assert "Archive/2026" in names and not any(n.startswith("Projects") for n in names)
        ok(client.select("Archive/2026"))
        assert list(fetch_bodies(client).values()) == [body]
        (flags_date,) = ok(client.fetch("1", "(FLAGS INTERNALDATE)"))
        assert b'INTERNALDATE "15-Jan-2026 08:30:00 +0000"' in flags_date, flags_date
        # \\Recent: the first session to select the mailbox since the APPEND.
        flags = set(parse_fetch([flags_date])[1]["FLAGS"])
        assert flags == {"\\Flagged", "$Plan", "\\Recent"}
        ok(client.unselect())
        typ, data = client.delete("INBOX")
        assert typ == "NO", data
        ok(client.delete("Archive/2026"))
        ok(client.delete("Archive"))
        assert sorted(_list_lines(ok(client.list()))) == ALL_MAILBOXES
    finally:
        client.logout()


def test_imapclient_append_create_rename_delete(
    server: StrataIMAP, IMAPClient: Any, user: tuple[str, str]
) -> None:
    client = imapclient_login(server, IMAPClient, user)
    try:
        # Non-ASCII names travel in modified UTF-7 (RFC 3501 §5.1.3); imapclient encodes them.
        client.create_folder("Entwürfe/Köln")
        assert client.folder_exists("Entwürfe/Köln") and client.folder_exists("Entwürfe")
        client.folder_encode = False
        raw = {name for _, _, name in client.list_folders()}
        client.folder_encode = True
        assert b"Entw&APw-rfe/K&APY-ln" in raw or "Entw&APw-rfe/K&APY-ln" in raw, raw
        appended = message("in a UTF-7 folder", "body\r\n")
        client.append("Entwürfe/Köln", appended)
        client.rename_folder("Entwürfe", "Ärchiv")
        assert client.folder_exists("Ärchiv/Köln") and not client.folder_exists("Entwürfe")
        client.select_folder("Ärchiv/Köln")
        (uid,) = client.search()
        assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == appended
        client.close_folder()
        client.delete_folder("Ärchiv/Köln")
        client.delete_folder("Ärchiv")
        assert sorted(name for _, _, name in client.list_folders()) == ALL_MAILBOXES
    finally:
        client.logout()


def test_internaldate_is_the_arrival_time(server: StrataIMAP, user: tuple[str, str]) -> None:
    """INTERNALDATE of delivered mail is when intake took it, not the Date header (RFC 3501)."""
    address, _ = user
    before = time.time()
    server.deliver(address, message("arrival", date="Sat, 01 Jan 2000 00:00:00 +0000"))
    client = server.imaplib(address)
    try:
        ok(client.select("INBOX"))
        (line,) = ok(client.fetch("1", "(INTERNALDATE)"))
        stamp = imaplib.Internaldate2tuple(line)
        assert stamp is not None, line
        arrived = time.mktime(stamp)
        assert before - 5 <= arrived <= time.time() + 5, (line, before)
    finally:
        client.logout()
