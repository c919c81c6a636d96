"""
"Same answers as Dovecot" (issue 4): the same IMAP command scripts run against ``twistd -n
strata`` and a real Dovecot holding the same messages, and their answers are compared.

The messages are the corpus in ``tests/imap_corpus`` (real-world messages from permissively
licensed test suites, and crafted ones: 8-bit headers, a Content-Type ending in ";", no
Content-Type, nested multiparts with a message/rfc822, broken boundaries) plus a message with a
50 MiB attachment generated at test time.  They reach Strata the way mail does, through SMTP
intake (which prepends its ``Received:`` header and turns bare LF into CRLF); then the bytes
Strata stored, read back with ``BODY.PEEK[]``, are written into Dovecot's Maildir with the same
INTERNALDATE, in the same order.  So both servers hold the very same octets under the same UIDs.

Answers are compared as parsed values (`tests.peers.imapscript.parse_response`), after
normalising only what may legitimately differ; every normalisation below says why, citing the
RFC.  What remains are either bugs (fixed in ``proto/mime.py`` and ``core/imap_fetch.py``, each
with a unit test named after it) or, for a few malformed messages, two defensible readings of
MIME that RFC 2045/2046/5322 leave open: those are listed one by one in `KNOWN`, with the reason,
and a listed difference that goes away fails the test too, so the list cannot go stale.  The
syntax of ENVELOPE, BODY and BODYSTRUCTURE is compared as well, with the content left out
(`skeleton`): a space between two parts of a multipart is invisible in parsed values.

SEARCH and SORT scripts run on the corpus (with the same flags set on both sides); STORE,
COPY/MOVE/EXPUNGE/UID EXPUNGE with their UIDPLUS codes, APPEND and IDLE run on small mailboxes
of their own.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import fnmatch
import hashlib
import re
import smtplib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers.dovecot import (
    INSTALL_HINT,
    DovecotInstance,
    dovecot_factory_context,
    dovecot_installed,
    sha512_crypt,
)
from tests.peers.imapscript import Atom, IMAPScript, Literal, Reply, Value, parse_response
from tests.peers.net import free_port, wait_for_port
from tests.peers.strata import StrataProcess

pytestmark = [pytest.mark.interop, pytest.mark.slow]

CORPUS = Path(__file__).parents[1] / "imap_corpus"
DOMAIN = "example.test"
PASSWORD = "diff-pw!"  # noqa: S105 - a test user's
CORPUS_USER = f"corpus@{DOMAIN}"  # holds the whole corpus; only read (PEEK) and flagged once
SCRATCH_USERS = [f"u{i}@{DOMAIN}" for i in range(1, 7)]  # one per mutating script
BIG_NAME = "generated-50mib-attachment.eml"
BIG_ATTACHMENT = 50 * 1024 * 1024  # octets of base64 text in the attachment part

# -- the corpus -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One corpus message: its name, the octets sent to intake, and what intake must store."""

    name: str
    sent: bytes

    @property
    def wire(self) -> bytes:
        """
        The message as an MTA sends it over SMTP (RFC 5321 §2.3.8: lines end in CRLF): bare LF
        as CRLF, and a last line completed.  Intake must store exactly this behind its
        Received: header.  (Sent with bare LF as they are, intake would turn them into CRLF the
        same way; but smtplib ends a message that does not end in CRLF with one more line.)
        """
        data = re.sub(rb"(?<!\r)\n", b"\r\n", self.sent)
        return data if data.endswith(b"\r\n") else data + b"\r\n"


def _big_message() -> bytes:
    """A text part and a 50 MiB base64 attachment (deterministic, so failures can be rerun)."""
    line = base64.b64encode(hashlib.sha512(b"strata").digest())[:76] + b"\r\n"
    attachment = line * (BIG_ATTACHMENT // len(line))
    return (
        b"From: Big Sender <big@example.org>\r\nTo: corpus@example.test\r\n"
        b"Subject: a 50 MiB attachment\r\nDate: Tue, 10 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <big-50mib@example.org>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="big-boundary"\r\n\r\n'
        b"--big-boundary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"The attachment follows.\r\n"
        b"--big-boundary\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
        b'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="big.bin"'
        b"\r\n\r\n" + attachment + b"--big-boundary--\r\n"
    )


def corpus() -> list[Message]:
    """The kept corpus (real, then crafted, each by name), then the generated 50 MiB message."""
    files = sorted((CORPUS / "real").glob("*.eml")) + sorted((CORPUS / "crafted").glob("*.eml"))
    assert len(files) > 40, f"the IMAP corpus is missing under {CORPUS}"
    return [Message(f.name, f.read_bytes()) for f in files] + [Message(BIG_NAME, _big_message())]


# -- the two servers ------------------------------------------------------------------------------


@dataclass
class Side:
    """One server under comparison: a name for messages, and how to reach its IMAP port."""

    name: str
    port: int

    def connect(self, user: str, mailbox: str | None = "INBOX") -> IMAPScript:
        client = IMAPScript("127.0.0.1", self.port, timeout=300)
        client.login(user, PASSWORD)
        if mailbox is not None:
            reply = client.run("SELECT ", mailbox)
            assert reply.ok, (self.name, reply.tagged)
        return client


@dataclass
class Servers:
    strata: Side
    dovecot: Side
    strata_process: StrataProcess
    dovecot_instance: DovecotInstance
    messages: list[Message]
    smtp_port: int

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.strata, self.dovecot

    def deliver(self, user: str, messages: Sequence[Message]) -> None:
        """
        Send `messages` through Strata's intake to `user`, in order, over one SMTP session; then
        copy what Strata stored into the user's Dovecot INBOX, same octets, same INTERNALDATE.
        """
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=300) as smtp:
            smtp.ehlo("client.test")
            for message in messages:
                options = ["BODY=8BITMIME"] if any(b > 0x7F for b in message.wire) else []
                smtp.sendmail("sender@outside.test", [user], message.wire, options)
        client = self.strata.connect(user)
        try:
            count = len(messages)
            reply = client.run("UID FETCH 1:* (UID INTERNALDATE BODY.PEEK[])")
            assert reply.ok, reply.tagged
            fetched = [_items(raw) for raw in reply.untagged if _is_fetch(raw)]
        finally:
            client.logout()
        assert len(fetched) == count, f"Strata holds {len(fetched)} of {count} messages for {user}"
        for message, items in zip(messages, fetched, strict=True):
            stored = items["BODY[]"]
            assert isinstance(stored, bytes)
            # Intake prepends exactly one Received: field and changes nothing else.  (A NUL is
            # served as 0x80: RFC 3501 §9 allows no NUL in a literal.  Dovecot gets the NULs.)
            assert stored.startswith(b"Received: "), (message.name, stored[:100])
            assert stored.endswith(message.wire.replace(b"\x00", b"\x80")), message.name
            stored = stored[: len(stored) - len(message.wire)] + message.wire
            self.dovecot_instance.deliver(
                user, stored, internal_date=internal_date(items["INTERNALDATE"])
            )

    def prime(self, user: str) -> None:
        """
        Open the INBOX once on each side, so that no message is \\Recent in later sessions:
        Strata never sets \\Recent (IMAP4rev2, RFC 9051, dropped it), Dovecot gives it to the
        first session that sees a new message (RFC 3501 §2.3.2).
        """
        for side in self.sides:
            side.connect(user).logout()


def internal_date(value: Value) -> float:
    """An INTERNALDATE string ("17-Jul-1996 02:44:25 -0700") as a POSIX time."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    return datetime.datetime.strptime(text, "%d-%b-%Y %H:%M:%S %z").timestamp()


def _is_fetch(raw: bytes) -> bool:
    return re.match(rb"\* \d+ FETCH ", raw) is not None


def _items(raw: bytes) -> dict[str, Value]:
    values = parse_response(raw)
    pairs = values[3]
    assert isinstance(pairs, list), raw[:200]
    return {str(pairs[i]).upper(): pairs[i + 1] for i in range(0, len(pairs) - 1, 2)}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Strata (twistd) and Dovecot, each with the corpus in CORPUS_USER's INBOX."""
    if not dovecot_installed():  # a missing peer is a failure, never a skip (DESIGN, Testing)
        pytest.fail(f"Dovecot is required for this test: {INSTALL_HINT}", pytrace=False)
    root = tmp_path_factory.mktemp("diff")
    imap_port = free_port()
    strata = StrataProcess(
        root / "strata",
        # 50 MiB of base64 and its headers are more than the default 50 MiB message limit.
        extra_config=f"max_message_size = {BIG_ATTACHMENT + 1024 * 1024}\n"
        f'[imap]\nlisten = ["127.0.0.1:{imap_port}"]\n',
    )
    users = [CORPUS_USER, *SCRATCH_USERS]
    strata.cli(
        "domain", "add", DOMAIN, "--relay", "127.0.0.1:1", "--mode", "both", "--no-monitor",
        "--portal", "always",
    )  # fmt: skip
    passwd = root / "users.passwd"
    passwd.write_text("".join(f"{user}:{sha512_crypt(PASSWORD)}\n" for user in users))
    strata.cli("user", "import", DOMAIN, str(passwd))
    with dovecot_factory_context() as factory:
        try:
            strata.start()
            assert wait_for_port(imap_port, 30), strata.log_text()[-3000:]
            dovecot = factory.start({user: PASSWORD for user in users})
            pair = Servers(
                Side("strata", imap_port),
                Side("dovecot", dovecot.port),
                strata,
                dovecot,
                corpus(),
                strata.port,
            )
            pair.deliver(CORPUS_USER, pair.messages)
            pair.prime(CORPUS_USER)
            _flag_corpus(pair)
            yield pair
        finally:
            print(f"--- strata log tail ---\n{strata.log_text()[-3000:]}")
            strata.stop()


def _flag_corpus(pair: Servers) -> None:
    """Give the corpus the same varied flags on both sides, for SEARCH (same STOREs on each)."""
    count = len(pair.messages)
    stores = {
        "\\Seen": [n for n in range(1, count + 1) if n % 2],
        "\\Flagged": [n for n in range(1, count + 1) if n % 3 == 0],
        "\\Answered": [n for n in range(1, count + 1) if n % 5 == 0],
        "$Label1": [n for n in range(1, count + 1) if n % 7 == 0],
    }
    for side in pair.sides:
        client = side.connect(CORPUS_USER)
        try:
            for flag, numbers in stores.items():
                reply = client.run(f"STORE {','.join(map(str, numbers))} +FLAGS.SILENT ({flag})")
                assert reply.ok, (side.name, reply.tagged)
        finally:
            client.logout()


# -- normalisation --------------------------------------------------------------------------------

_WSP = re.compile(rb"[ \t\r\n]+")
_CONTINUATION = re.compile(rb"^(?P<base>.+?)\*(?P<n>[0-9]+)(?P<ext>\*?)$")


def _space(value: Value) -> Value:
    """
    An ENVELOPE string with each run of white space as one space, trimmed.  RFC 5322 §2.2.3:
    unfolding removes only the CRLF and keeps the WSP, which Strata serves as sent; Dovecot
    turns a fold's TAB into a space and collapses runs (imap-envelope.c).  Folding white space
    carries no meaning in these fields (RFC 5322 §3.2.2).
    """
    if isinstance(value, bytes):
        return _WSP.sub(b" ", value).strip(b" ")
    if isinstance(value, list):
        return [_space(v) for v in value]
    return value


def normalize_envelope(value: Value) -> Value:
    return _space(value)


def _params(value: Value) -> Value:
    """
    A body parameter list with RFC 2231 continuations joined (``title*0*``, ``title*1*`` →
    ``title*``, values concatenated, not decoded) and sorted by name.  RFC 2231 §3: the
    continuations are one parameter; Dovecot joins them, Strata serves them as sent.  RFC 2045
    §5.1 gives the order of parameters no meaning; Dovecot lists plain ones before extended ones.
    """
    if not isinstance(value, list):
        return value
    pairs = [(value[i], value[i + 1]) for i in range(0, len(value) - 1, 2)]
    merged: list[tuple[Value, Value]] = []
    parts: dict[bytes, list[tuple[int, bool, bytes]]] = {}
    for name, val in pairs:
        match = _CONTINUATION.match(name) if isinstance(name, bytes) else None
        if match is None or not isinstance(val, bytes):
            merged.append((name, val))
            continue
        base = match.group("base").lower()
        if base not in parts:
            parts[base] = []
            merged.append((base, None))  # a placeholder, filled below
        parts[base].append((int(match.group("n")), bool(match.group("ext")), val))
    out: list[tuple[Value, Value]] = []
    for name, val in merged:
        if isinstance(name, bytes) and name in parts and val is None:
            segments = sorted(parts[name])
            extended = any(ext for _, ext, _ in segments)
            out.append((name + (b"*" if extended else b""), b"".join(s for _, _, s in segments)))
        else:
            out.append((name.lower() if isinstance(name, bytes) else name, val))
    out.sort(key=lambda pair: pair[0] if isinstance(pair[0], bytes) else b"")
    return [item for pair in out for item in pair]


def _lower(value: Value) -> Value:
    return value.lower() if isinstance(value, bytes) else value


def _disposition(value: Value) -> Value:
    if isinstance(value, list) and len(value) == 2:
        return [_lower(value[0]), _params(value[1])]
    return value


def normalize_body(value: Value) -> Value:
    """
    BODY / BODYSTRUCTURE with media types lower-cased (RFC 2045 §5.1: "type, subtype, and
    parameter names are not case sensitive"; Dovecot repeats them as written, Strata lower-cases)
    and parameter lists as `_params` has them; an encapsulated message's envelope as
    `normalize_envelope` has it.
    """
    if not isinstance(value, list) or not value:
        return value
    if isinstance(value[0], list):  # multipart: parts, subtype, [params dsp lang loc]
        count = next((i for i, v in enumerate(value) if not isinstance(v, list)), len(value))
        out = [normalize_body(child) for child in value[:count]]
        rest = list(value[count:])
        if rest:
            rest[0] = _lower(rest[0])
        if len(rest) > 1:
            rest[1] = _params(rest[1])
        if len(rest) > 2:
            rest[2] = _disposition(rest[2])
        return out + rest
    out = list(value)
    out[0], out[1] = _lower(out[0]), _lower(out[1])
    out[2] = _params(out[2])
    out[3], out[4] = _space(out[3]), _space(out[4])  # Content-ID, -Description: as ENVELOPE
    extension = 7  # basic: md5 dsp lang loc follow the size
    if out[0] == b"text":
        extension = 8
    elif (out[0], out[1]) == (b"message", b"rfc822") and len(out) >= 10:
        out[7] = normalize_envelope(out[7])
        out[8] = normalize_body(out[8])
        extension = 10
    if len(out) > extension + 1:
        out[extension + 1] = _disposition(out[extension + 1])
    return out


def align_rfc822_sizes(strata: Value, dovecot: Value) -> Value:
    """
    Dovecot's structure with the size and line count of each message/rfc822 part taken from
    Strata's where Dovecot's are exactly one line (CRLF) more.  RFC 2046 §5.1.1: "the CRLF
    preceding the boundary delimiter line is conceptually attached to the boundary", so the
    part ends before it; Dovecot counts it into a message/rfc822 part (not into a leaf's).
    """
    if not (isinstance(strata, list) and isinstance(dovecot, list)):
        return dovecot
    if len(strata) != len(dovecot):
        return dovecot
    out = [align_rfc822_sizes(a, b) for a, b in zip(strata, dovecot, strict=True)]
    if _is_message(strata) and _is_message(dovecot):
        size_s, size_d, lines_s, lines_d = strata[6], dovecot[6], strata[9], dovecot[9]
        if (
            isinstance(size_s, str) and isinstance(size_d, str)
            and isinstance(lines_s, str) and isinstance(lines_d, str)
            and (int(size_d), int(lines_d)) == (int(size_s) + 2, int(lines_s) + 1)
        ):  # fmt: skip
            out[6], out[9] = size_s, lines_s
    return out


_SECTION_NAME = re.compile(r"^(BODY\[)(.*?)(\](?:<\d+>)?)$")


def item_name(name: str) -> str:
    """
    A FETCH item name upper-cased, HEADER.FIELDS lists too (RFC 3501 §6.4.5: "the field-matching
    is case-insensitive"; Dovecot upper-cases the names it echoes, Strata echoes them as sent).
    """
    return name.upper()


@dataclass(frozen=True)
class Difference:
    message: str
    item: str
    strata: Any
    dovecot: Any

    def __str__(self) -> str:
        def show(value: Any) -> str:
            text = repr(value)
            return text if len(text) < 600 else text[:600] + f"... ({len(text)} chars)"

        strata, dovecot = show(self.strata), show(self.dovecot)
        return f"{self.message} {self.item}:\n  strata:  {strata}\n  dovecot: {dovecot}"


def _is_multipart(part: Value) -> bool:
    return isinstance(part, list) and bool(part) and isinstance(part[0], list)


def _children(part: list[Value]) -> list[Value]:
    count = next((i for i, v in enumerate(part) if not isinstance(v, list)), len(part))
    return part[:count]


def container_at(structure: Value, path: str) -> bool:
    """
    Whether BODYSTRUCTURE says the part numbered `path` ("1.2") holds other parts: a multipart,
    or a message/rfc822 (RFC 3501 §6.4.5 numbering).
    """
    part: Value = structure
    numbers = path.split(".")
    for position, number in enumerate(numbers, 1):
        if not isinstance(part, list):
            return False
        if _is_multipart(part):
            children = _children(part)
            if int(number) > len(children):
                return False
            part = children[int(number) - 1]
        elif number != "1":
            return False
        if position < len(numbers) and _is_message(part):
            assert isinstance(part, list)
            part = part[8]  # the numbers that follow are inside the encapsulated message
    return _is_multipart(part) or _is_message(part)


_PART_BODY = re.compile(r"(?P<path>[0-9]+(?:\.[0-9]+)*)(?:\.TEXT)?")


def compare_fetch(
    message: Message,
    strata: dict[str, Value],
    dovecot: dict[str, Value],
    structure: Value,
) -> list[Difference]:
    """The differences between two FETCH responses for one message, after normalisation."""
    found: list[Difference] = []
    s_items = {item_name(k): v for k, v in strata.items()}
    d_items = {item_name(k): v for k, v in dovecot.items()}
    for name in sorted(set(s_items) | set(d_items)):
        a: Any = s_items.get(name, "<absent>")
        b: Any = d_items.get(name, "<absent>")
        if name == "ENVELOPE":
            a, b = normalize_envelope(a), normalize_envelope(b)
        elif name in ("BODY", "BODYSTRUCTURE"):
            a, b = normalize_body(a), normalize_body(b)
            b = align_rfc822_sizes(a, b)
        elif name == "INTERNALDATE" and isinstance(a, bytes) and isinstance(b, bytes):
            # The same instant; the zone it is written in is the server's choice (RFC 3501
            # §2.3.3).  Dovecot was given Strata's INTERNALDATE as the Maildir file's mtime.
            a, b = internal_date(a), internal_date(b)
        section = _SECTION_NAME.match(name)
        extra = (
            b[len(a) :]
            if isinstance(a, bytes) and isinstance(b, bytes) and b.startswith(a)
            else None
        )
        if section is not None and extra and b"\r\n".startswith(extra):
            spec = section.group(2)
            body = _PART_BODY.fullmatch(spec)
            if body is not None and container_at(structure, body.group("path")):
                # RFC 2046 §5.1.1: "the CRLF preceding the boundary delimiter line is
                # conceptually attached to the boundary", so a part ends before the CRLF of the
                # boundary line that follows it.  Strata ends every part there; Dovecot keeps
                # that CRLF in the body of a part it parses further (a multipart, a
                # message/rfc822), though not in a leaf's (message-parser.c).
                continue
            if "HEADER.FIELDS" in spec and extra == b"\r\n":
                header = s_items.get(f"BODY[{spec.split('HEADER.FIELDS')[0]}HEADER]")
                if (
                    isinstance(header, bytes)
                    and not header.endswith(b"\r\n\r\n")
                    and header != b"\r\n"
                ):
                    # RFC 3501 §6.4.5: the blank line is in every header fetch "except in the
                    # case of a message which has no body and no blank line" (this header has
                    # none).  Dovecot adds one to HEADER.FIELDS, though not to
                    # HEADER.FIELDS.NOT; Strata follows the RFC for both.
                    continue
        if a != b:
            found.append(Difference(message.name, name, a, b))
    return found


# Differences on malformed messages where RFC 2045/2046/5322 leave the reading open and Strata's
# is the more useful one.  Key: (message, FETCH item glob).  A listed difference that disappears
# fails test_known_differences_are_still_real, so this list only ever shrinks with a reason.
_NO_BOUNDARY = (
    "a multipart whose boundary never appears, or that has no boundary parameter: RFC 2046 "
    "§5.1.1 wants one body part at least and says no more.  Strata serves the whole body as one "
    "text part so the text stays readable, and a multipart with no boundary parameter as the "
    "RFC 2045 §5.2 default text/plain (proto/mime.py); Dovecot serves one empty part"
)
_BOUNDARY_LINES = (
    "lines that are not RFC 2046 §5.1.1 delimiters of the declared boundary (text or extra "
    "dashes after it, a boundary an inner multipart reuses, an unquoted boundary holding '='): "
    "Strata takes only exact delimiter lines and reads an unquoted value up to ';' (Outlook's "
    "boundaries); Dovecot matches a boundary as a line prefix and ends a token at '='"
)
_DUPLICATES = (
    "duplicate Subject/Date/address fields, which RFC 5322 §3.6 allows once: Strata takes the "
    "first (as its SEARCH and SORT do), Dovecot the last Subject and Date and all address fields"
)
_BAD_CONTENT_TYPE = (
    "a Content-Type with no valid type/subtype ('text', 'text /plain'): Strata applies RFC 2045 "
    "§5.2's default, text/plain; charset=us-ascii; Dovecot answers an empty type and subtype"
)
_BAD_ADDRESS = (
    "an address RFC 5322 gives no reading of (an encoded-word and a word before an addr-spec "
    "with no angle brackets; specials inside angle brackets; '<Undisclosed Recipients>'): each "
    "server recovers differently"
)
KNOWN: dict[tuple[str, str], str] = {
    ("crafted-boundary-never-found.eml", "BODY*"): _NO_BOUNDARY,
    ("enmime-multipart-without-boundary.eml", "BODY*"): _NO_BOUNDARY,
    ("mikel-multipart-missing-body.eml", "BODY*"): _NO_BOUNDARY,
    ("stalwart-dovecot-malformed-002.eml", "BODY*"): _NO_BOUNDARY,
    ("mikel-illegal-boundary.eml", "BODY*"): _BOUNDARY_LINES,
    ("mikel-binary-encoded-dup-headers.eml", "BODY*"): _BOUNDARY_LINES,
    ("stalwart-dovecot-malformed-005.eml", "BODY*"): _BOUNDARY_LINES,
    ("stalwart-dovecot-malformed-013.eml", "BODY*"): _BOUNDARY_LINES,
    ("enmime-unquoted-tspecials-param.eml", "BODY*"): (
        "an unquoted parameter value holding '(': Strata reads it up to ';' and drops the "
        "comment, Dovecot ends the token at '(' (RFC 2045 §5.1: a token has no tspecials)"
    ),
    ("mikel-cte-with-semicolon.eml", "BODY*"): (
        "'Content-Transfer-Encoding: quoted-printable;': Strata drops the stray ';' so clients "
        "can decode the part; Dovecot answers 7bit (RFC 2045 §6.1 has no parameters here)"
    ),
    ("mimekit-missing-subtype.eml", "BODY*"): _BAD_CONTENT_TYPE,
    ("mimekit-arf-utf8-bom.eml", "BODY*"): _BAD_ADDRESS,
    ("mikel-binary-encoded-dup-headers.eml", "ENVELOPE"): _DUPLICATES,
    ("mikel-quoted-boundary.eml", "ENVELOPE"): _DUPLICATES,
    ("stalwart-dovecot-malformed-019.eml", "ENVELOPE"): _DUPLICATES,
    ("mailcore2-ks-c-5601-lf.eml", "ENVELOPE"): _BAD_ADDRESS,
    ("mikel-multipart-missing-body.eml", "ENVELOPE"): _BAD_ADDRESS,
    ("mikel-rfc2822-obsolete-syntax.eml", "ENVELOPE"): (
        "RFC 5322 Appendix A.6.3's obsolete example: a line '__' between a field and its folded "
        "continuation.  Strata skips the line that is no field and keeps '<mary@example.net>' in "
        "To (as the RFC intends); Dovecot ends To at that line"
    ),
}


def _known(difference: Difference) -> str | None:
    for (message, pattern), reason in KNOWN.items():
        if message == difference.message and fnmatch.fnmatchcase(difference.item, pattern):
            return reason
    return None


# -- the FETCH scripts ----------------------------------------------------------------------------

ITEMS = (
    "UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY BODY.PEEK[] "
    "BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] "
    "BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID Content-Type X-NONE)] "
    "BODY.PEEK[HEADER.FIELDS.NOT (Received Subject)] BODY.PEEK[]<0.100> BODY.PEEK[1]<10.20> "
    "BODY.PEEK[TEXT]<5.50> BODY.PEEK[]<100000000.10>"
)


def part_paths(structure: Value, prefix: str = "") -> list[tuple[str, bool]]:
    """Every part number in a BODYSTRUCTURE, with whether it is a message/rfc822."""
    out: list[tuple[str, bool]] = []
    if not isinstance(structure, list) or not structure:
        return out
    if isinstance(structure[0], list):
        count = next(
            (i for i, v in enumerate(structure) if not isinstance(v, list)), len(structure)
        )
        for n, child in enumerate(structure[:count], 1):
            path = f"{prefix}{n}"
            out.append((path, _is_message(child)))
            out += part_paths(_inner(child), path + ".") if _is_message(child) else []
            if isinstance(child, list) and child and isinstance(child[0], list):
                out += part_paths(child, path + ".")
    return out


def _is_message(part: Value) -> bool:
    return (
        isinstance(part, list)
        and len(part) > 9
        and (_lower(part[0]), _lower(part[1])) == (b"message", b"rfc822")
    )


def _inner(part: Value) -> Value:
    assert isinstance(part, list)
    return part[8]


def _fetch_one(client: IMAPScript, number: int, items: str) -> dict[str, Value]:
    reply = client.run(f"FETCH {number} ({items})")
    assert reply.ok, (number, items, reply.tagged)
    fetched = [_items(raw) for raw in reply.untagged if _is_fetch(raw)]
    assert len(fetched) == 1, (number, items, reply.untagged)
    return fetched[0]


def _fetch_differences(servers: Servers) -> list[Difference]:
    strata = servers.strata.connect(CORPUS_USER, "INBOX")
    dovecot = servers.dovecot.connect(CORPUS_USER, "INBOX")
    found: list[Difference] = []
    try:
        for number, message in enumerate(servers.messages, 1):
            a = _fetch_one(strata, number, ITEMS)
            b = _fetch_one(dovecot, number, ITEMS)
            structure = a.get("BODYSTRUCTURE")
            found += compare_fetch(message, a, b, structure)
            # Every part either side knows of: its body, its MIME header, and for an
            # encapsulated message its HEADER, TEXT and a HEADER.FIELDS.
            paths = dict(part_paths(structure))
            paths.update(part_paths(b.get("BODYSTRUCTURE")))
            groups = []
            for path, is_message in sorted(paths.items()):
                group = [
                    f"BODY.PEEK[{path}]",
                    f"BODY.PEEK[{path}.MIME]",
                    f"BODY.PEEK[{path}]<3.40>",
                ]
                if is_message:
                    group += [
                        f"BODY.PEEK[{path}.HEADER]",
                        f"BODY.PEEK[{path}.TEXT]",
                        f"BODY.PEEK[{path}.HEADER.FIELDS (SUBJECT FROM)]",
                    ]
                groups.append(group)
            while groups:  # a few parts per command; a part's items stay together
                chunk: list[str] = []
                while groups and len(chunk) < 30:
                    chunk += groups.pop(0)
                items = " ".join(chunk)
                found += compare_fetch(
                    message, _fetch_one(strata, number, items), _fetch_one(dovecot, number, items),
                    structure,
                )  # fmt: skip
    finally:
        strata.logout()
        dovecot.logout()
    return found


@pytest.fixture(scope="module")
def fetch_differences(servers: Servers) -> list[Difference]:
    return _fetch_differences(servers)


def _report(differences: list[Difference], what: str, out: Path) -> str:
    """The failure message: the first differences, and where all of them are written."""
    out.write_text("\n".join(str(d) for d in differences) + "\n")
    shown = "\n".join(str(d) for d in differences[:30])
    return f"{len(differences)} {what} differ from Dovecot's (all of them in {out}):\n{shown}"


def test_fetch_answers_match_dovecot(fetch_differences: list[Difference], tmp_path: Path) -> None:
    unexplained = [d for d in fetch_differences if _known(d) is None]
    assert not unexplained, _report(unexplained, "FETCH answers", tmp_path / "fetch-diff.txt")


def test_known_differences_are_still_real(fetch_differences: list[Difference]) -> None:
    seen = {(d.message, pattern) for d in fetch_differences for (m, pattern) in KNOWN
            if m == d.message and fnmatch.fnmatchcase(d.item, pattern)}  # fmt: skip
    stale = sorted(set(KNOWN) - seen)
    assert not stale, f"these KNOWN differences are gone; remove them: {stale}"


def skeleton(raw: bytes) -> bytes:
    """
    A response's syntax with its content left out: each string (quoted or literal) is ``S``,
    NIL stays, any other atom or number is ``A``; parentheses and spaces are kept.  Comparing
    skeletons catches what comparing parsed values cannot: a space where RFC 3501 §9 wants none
    (``body-type-mpart = 1*body SP media-subtype``), a missing or extra field.
    """
    out = bytearray()
    pos = 0
    while pos < len(raw):
        char = raw[pos]
        if char in b"() ":
            out.append(char)
            pos += 1
        elif char == 0x22:
            pos = _skip_quoted(raw, pos)
            out += b"S"
        elif char == 0x7B and (match := re.match(rb"\{(\d+)\+?\}\r\n", raw[pos:])):
            pos += match.end() + int(match.group(1))
            out += b"S"
        else:
            end = pos
            while end < len(raw) and raw[end] not in b"() ":
                end += 1
            out += b"NIL" if raw[pos:end].upper() == b"NIL" else b"A"
            pos = end
    return bytes(out)


def _skip_quoted(raw: bytes, pos: int) -> int:
    pos += 1
    while pos < len(raw) and raw[pos] != 0x22:
        pos += 2 if raw[pos] == 0x5C else 1
    return pos + 1


def test_fetch_syntax_matches_dovecot(servers: Servers) -> None:
    """ENVELOPE, BODY and BODYSTRUCTURE of every message have Dovecot's syntax, octet for octet."""
    clients = [side.connect(CORPUS_USER, "INBOX") for side in servers.sides]
    differences = []
    try:
        for number, message in enumerate(servers.messages, 1):
            for item in ("ENVELOPE", "BODY", "BODYSTRUCTURE"):
                probe = Difference(message.name, item, None, None)
                if _known(probe) is not None:
                    continue  # the values differ already, and for a listed reason
                shapes = []
                for client in clients:
                    reply = client.run(f"FETCH {number} ({item})")
                    assert reply.ok, reply.tagged
                    # A parameter list's length may differ (RFC 2231 continuations, see
                    # _params): any list of strings only is one shape.
                    shapes.append(re.sub(rb"\((?:S )*S\)", b"(S+)", skeleton(reply.untagged[-1])))
                if shapes[0] != shapes[1]:
                    differences.append(Difference(message.name, item, shapes[0], shapes[1]))
    finally:
        for client in clients:
            client.logout()
    assert not differences, "\n".join(str(d) for d in differences[:20])


# -- SEARCH and SORT ------------------------------------------------------------------------------

SEARCHES: list[tuple[str | bytes | Literal, ...]] = [
    ("SEARCH ALL",),
    ("SEARCH SUBJECT report",),
    ('SEARCH SUBJECT "quarterly REPORT"',),
    ("SEARCH FROM example.org",),
    ("SEARCH FROM mikel",),
    ("SEARCH TO alice",),
    ("SEARCH CC li@example.cn",),
    ("SEARCH HEADER Message-ID <sort-03@example.org>",),
    ("SEARCH HEADER X-Priority 2",),
    ('SEARCH HEADER X-Nonexistent ""',),
    ('SEARCH HEADER Content-Type ""',),
    ("SEARCH BODY budget3",),
    ("SEARCH TEXT budget",),
    ("SEARCH TEXT sort-05",),
    ("SEARCH SENTSINCE 1-Jan-2025",),
    ("SEARCH SENTBEFORE 1-Jan-2010",),
    ("SEARCH SENTON 2-Mar-2020",),
    ("SEARCH SINCE 1-Jan-2000",),
    ("SEARCH BEFORE 1-Jan-2000",),
    ("SEARCH LARGER 10000",),
    ("SEARCH SMALLER 500",),
    ("SEARCH SEEN",),
    ("SEARCH UNSEEN FLAGGED",),
    ("SEARCH ANSWERED",),
    ("SEARCH KEYWORD $Label1",),
    ("SEARCH UNKEYWORD $Label1 SEEN",),
    ("SEARCH NOT SEEN",),
    ("SEARCH OR FLAGGED ANSWERED",),
    ("SEARCH OR SUBJECT agenda FROM heidi",),
    ("SEARCH NOT OR SEEN FLAGGED",),
    ("SEARCH 1:10 NOT FLAGGED",),
    ("SEARCH UID 5:20",),
    ("UID SEARCH UID 50:*",),
    ("UID SEARCH 2,4,6:8",),
    ("SEARCH DELETED",),
    ("SEARCH CHARSET UTF-8 SUBJECT ", Literal.of("Grüße")),
    ("SEARCH CHARSET UTF-8 FROM ", Literal.of("José")),
    ("SEARCH CHARSET UTF-8 BODY ", Literal.of("café")),
    ("SEARCH CHARSET UTF-8 TEXT ", Literal.of("naïve")),
]

SORTS: list[str] = [
    "SORT (ARRIVAL) UTF-8 ALL",
    "SORT (SIZE) UTF-8 ALL",
    "SORT (REVERSE SIZE) UTF-8 ALL",
    "SORT (DATE) UTF-8 HEADER Message-ID sort-",
    "SORT (REVERSE DATE) UTF-8 HEADER Message-ID sort-",
    "SORT (SUBJECT) UTF-8 HEADER Message-ID sort-",
    "SORT (SUBJECT DATE) UTF-8 HEADER Message-ID sort-",
    "SORT (FROM) UTF-8 HEADER Message-ID sort-",
    "SORT (REVERSE FROM ARRIVAL) UTF-8 HEADER Message-ID sort-",
    "UID SORT (SIZE) UTF-8 SEEN",
    "SORT (TO SIZE) US-ASCII HEADER Message-ID sort-",
]


def _numbers(reply: Reply, kind: str) -> list[int]:
    """The numbers of the untagged SEARCH or SORT data, in the order sent."""
    out: list[int] = []
    for values in reply.data(kind):
        out += [int(v) for v in values[2:] if isinstance(v, str) and v.isdigit()]
    return out


@pytest.mark.parametrize("command", SEARCHES, ids=lambda c: " ".join(map(str, c))[:60])
def test_search_matches_dovecot(servers: Servers, command: tuple[Any, ...]) -> None:
    answers = []
    for side in servers.sides:
        client = side.connect(CORPUS_USER, "INBOX")
        try:
            reply = client.run(*command)
        finally:
            client.logout()
        assert reply.ok, (side.name, reply.tagged)
        # RFC 3501 §7.2.5 prescribes no order for SEARCH results: compare them as sets.
        answers.append(sorted(_numbers(reply, "SEARCH")))
    strata, dovecot = answers
    if "SENT" in str(command[0]):
        # RFC 3501 §6.4.4: SENTBEFORE/ON/SINCE look at "the [RFC-2822] Date: header"; a message
        # without a readable one has no sent date, and Strata matches it to none.  Dovecot
        # takes such a message as sent on 1-Jan-1970 (date 0).  Only those may differ.
        undated = _undated(servers)
        assert not set(strata) & undated, "Strata matched a message with no readable Date"
        dovecot = [n for n in dovecot if n not in undated]
    assert strata == dovecot, f"strata {strata}\ndovecot {dovecot}"


def _undated(servers: Servers) -> set[int]:
    """The sequence numbers of the corpus messages whose Date header is absent or unreadable."""
    out = set()
    for number, message in enumerate(servers.messages, 1):
        header = message.wire.split(b"\r\n\r\n", 1)[0]
        # The first Date field, unfolded (a header's first line may be junk: a UTF-8 BOM).
        match = re.search(rb"^Date[ \t]*:(.*(?:\r\n[ \t].*)*)", header, re.M | re.I)
        try:
            value = match.group(1).replace(b"\r\n", b"").decode("latin-1") if match else ""
            email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            out.add(number)
    return out


@pytest.mark.parametrize("command", SORTS)
def test_sort_matches_dovecot(servers: Servers, command: str) -> None:
    answers = []
    for side in servers.sides:
        client = side.connect(CORPUS_USER, "INBOX")
        try:
            reply = client.run(command)
        finally:
            client.logout()
        assert reply.ok, (side.name, reply.tagged)
        answers.append(_numbers(reply, "SORT"))
    assert answers[0], "the sort matched nothing: the script tests nothing"
    assert answers[0] == answers[1], f"strata {answers[0]}\ndovecot {answers[1]}"


# -- STORE, COPY, MOVE, EXPUNGE, APPEND (UIDPLUS) and IDLE ----------------------------------------

_CODE = re.compile(rb"^(\S+) (OK|NO|BAD)(?: \[([^\]]*)\])?")


def normalize_tagged(raw: bytes) -> tuple[str, str]:
    """
    (status, response code) of a tagged reply; the text after them is the server's own (RFC
    3501 §7.1: "human-readable text").  A UIDVALIDITY inside COPYUID/APPENDUID is the
    mailbox's, different on each server (RFC 4315 §3): shown as "V".
    """
    match = _CODE.match(raw)
    assert match is not None, raw
    code = (match.group(3) or b"").decode("utf-8", "replace")
    words = code.split()
    if words and words[0] in ("COPYUID", "APPENDUID") and len(words) > 1:
        words[1] = "V"
    if words and words[0] in ("READ-WRITE", "READ-ONLY", "CAPABILITY"):
        words = words[:1]
    return match.group(2).decode(), " ".join(words)


_SKIPPED_UNTAGGED = re.compile(
    rb"^\* (FLAGS |OK \[PERMANENTFLAGS |OK \[HIGHESTMODSEQ |OK \[CLOSED\]|OK Still)"
)


def normalize_untagged(raw: bytes) -> Any:
    """
    One untagged response as a comparable value, or None for those that may differ:

    - ``* FLAGS`` / ``* OK [PERMANENTFLAGS]`` sent when a new keyword appears: RFC 3501 §7.2.6
      lets a server send them, it does not require it;
    - ``* OK [HIGHESTMODSEQ]``, IDLE's ``* OK Still here``: server-specific (RFC 7162 numbers);
    - ``* OK [CLOSED]`` when SELECT leaves a mailbox: RFC 7162 §3.2.11 has QRESYNC servers send
      it; Strata does not offer QRESYNC.

    FETCH items are a dict (their order is free, RFC 3501 §7.4.2) and FLAGS a set (a flag list
    is unordered, RFC 3501 §2.3.2); ``* OK [COPYUID v ...]``
    (RFC 6851 MOVE) and ``* OK [UIDVALIDITY v]`` lose v: each server numbers its own mailboxes.
    """
    if _SKIPPED_UNTAGGED.match(raw):
        return None
    if _is_fetch(raw):
        items = _items(raw)
        items.pop("MODSEQ", None)
        flags = items.get("FLAGS")
        if isinstance(flags, list):
            names = {str(f).upper() for f in flags}
            items["FLAGS"] = [Atom(f) for f in sorted(names)]
        return ("FETCH", parse_response(raw)[1], items)
    if raw.startswith(b"* OK ["):
        _, code = normalize_tagged(b"*" + raw[1:])
        if code.startswith("UIDVALIDITY "):
            code = "UIDVALIDITY V"
        return ("OK", code)
    return parse_response(raw)


def run_script(
    servers: Servers,
    user: str,
    script: Sequence[tuple[Any, ...]],
    mailbox: str = "INBOX",
    *,
    tagged_only: Sequence[int] = (),
) -> list[tuple[str, list[Any], list[Any]]]:
    """
    Run `script` on both sides as `user`; the commands whose normalised answers differ.  For
    the commands at `tagged_only` (indexes) only the tagged replies are compared; SELECT's
    untagged responses are compared in any order (RFC 3501 §6.3.1 sets none).
    """
    answers: list[list[tuple[tuple[str, str], list[Any]]]] = []
    for side in servers.sides:
        client = side.connect(user, mailbox)
        out: list[tuple[tuple[str, str], list[Any]]] = []
        try:
            for index, command in enumerate(script):
                reply = client.run(*command)
                untagged = [u for u in map(normalize_untagged, reply.untagged) if u is not None]
                if index in tagged_only:
                    untagged = []
                elif str(command[0]).upper().startswith(("SELECT", "EXAMINE")):
                    untagged.sort(key=repr)
                out.append((normalize_tagged(reply.tagged), untagged))
        finally:
            client.logout()
        answers.append(out)
    return [
        (" ".join(map(str, command)), [*a], [*b])
        for command, a, b in zip(script, answers[0], answers[1], strict=True)
        if a != b
    ]


def _scratch(servers: Servers, user: str, count: int = 6) -> None:
    """Give `user` the first `count` crafted messages on both sides, none of them \\Recent."""
    crafted = [m for m in servers.messages if m.name.startswith("crafted-")][:count]
    servers.deliver(user, crafted)
    servers.prime(user)


def _show(differences: list[tuple[str, list[Any], list[Any]]]) -> str:
    return "\n".join(f"{c}\n  strata:  {a}\n  dovecot: {b}" for c, a, b in differences)


def test_store_matches_dovecot(servers: Servers) -> None:
    user = SCRATCH_USERS[0]
    _scratch(servers, user)
    script = [
        ("STORE 1 +FLAGS (\\Flagged)",),
        ("STORE 1:2 +FLAGS (\\Seen $Work)",),
        ("STORE 2 -FLAGS (\\Seen)",),
        ("STORE 3 FLAGS (\\Answered \\Draft)",),
        ("STORE 1:3 +FLAGS.SILENT (\\Deleted)",),
        ("STORE 2 -FLAGS.SILENT (\\Deleted)",),
        ("STORE 3 FLAGS.SILENT (\\Seen)",),
        ("UID STORE 4:5 +FLAGS (\\Flagged)",),
        ("STORE 5 FLAGS ()",),
        ("STORE 6 +FLAGS (\\Seen)",),
        ("STORE 6 +FLAGS (\\Seen)",),  # no change: see tagged_only below
        ("FETCH 1:* (UID FLAGS)",),
        ("STORE 7 +FLAGS (\\Seen)",),  # beyond the mailbox: BAD on both
    ]
    # A STORE that changes nothing: Strata answers with the (unchanged) flags, as RFC 3501
    # §6.4.6 reads ("the server returns the updated flags"); Dovecot sends nothing for a message
    # whose flags did not change.  The FETCH that follows compares the flags themselves.
    differences = run_script(servers, user, script, tagged_only=[10])
    assert not differences, _show(differences)


def test_copy_move_expunge_with_uidplus_match_dovecot(servers: Servers) -> None:
    user = SCRATCH_USERS[1]
    _scratch(servers, user)
    script = [
        ("COPY 1:2 Trash",),
        ("COPY 3 Nonexistent",),  # NO [TRYCREATE]
        ("UID COPY 4:5 Trash",),
        ("MOVE 1 Junk",),
        ("UID MOVE 5 Junk",),
        ("FETCH 1:* (UID FLAGS)",),
        ("STORE 1:2 +FLAGS.SILENT (\\Deleted)",),
        ("UID EXPUNGE 3",),  # the UID of message 2: only it goes
        ("FETCH 1:* (UID FLAGS)",),
        ("EXPUNGE",),
        ("FETCH 1:* (UID)",),
        ("APPEND Drafts (\\Draft) ", Literal(b"Subject: draft\r\n\r\nA draft.\r\n")),
        ("STATUS Trash (MESSAGES UIDNEXT UNSEEN)",),
        ("STATUS Junk (MESSAGES UIDNEXT)",),
        ("SELECT Trash",),
        ("FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (Message-ID)])",),
    ]
    differences = run_script(servers, user, script)
    assert not differences, _show(differences)


def test_idle_reports_another_sessions_changes_like_dovecot(servers: Servers) -> None:
    user = SCRATCH_USERS[2]
    _scratch(servers, user, count=3)
    seen: list[list[Any]] = []
    for side in servers.sides:
        idler = side.connect(user)
        other = side.connect(user)
        try:
            tag, reply = idler.idle_start()
            assert other.run("STORE 2 +FLAGS (\\Flagged)").ok
            got = idler.idle_wait(reply, lambda u: any(b"FETCH" in r for r in u), timeout=10)
            assert got, f"{side.name}: no FETCH while idling: {reply.untagged}"
            assert other.run("STORE 1 +FLAGS.SILENT (\\Deleted)").ok
            # Wait for that change too: a server may skip reporting a flag change when the
            # message is expunged before it tells the client (Dovecot does).
            got = idler.idle_wait(reply, lambda u: sum(b"FETCH" in r for r in u) > 1, timeout=10)
            assert got, f"{side.name}: no second FETCH while idling: {reply.untagged}"
            assert other.run("EXPUNGE").ok
            got = idler.idle_wait(reply, lambda u: any(b"EXPUNGE" in r for r in u), timeout=10)
            assert got, f"{side.name}: no EXPUNGE while idling: {reply.untagged}"
            done = idler.idle_done(tag, reply)
            assert done.ok, done.tagged
            updates = [u for u in map(normalize_untagged, done.untagged) if u is not None]
            for update in updates:
                if isinstance(update, tuple) and update[0] == "FETCH":
                    # An unsolicited FETCH may carry more items than the change (RFC 3501
                    # §7.4.2); Strata adds the UID, Dovecot does not.
                    update[2].pop("UID", None)
            seen.append(updates)
        finally:
            idler.logout()
            other.logout()
    assert seen[0] == seen[1], f"strata:  {seen[0]}\ndovecot: {seen[1]}"
