"""
Ten mail clients on one mailbox, each checking everything the IMAP server tells it (issue 12).

A phone, a laptop and the webmail open on the same INBOX during an outage: each of them appends,
fetches, flags, copies, moves and expunges while the others do too.  `run_workload` runs that
against any IMAP server (Strata, or Dovecot to prove the checks themselves) and returns
`Findings`: what went wrong, by invariant, with the command, the response and the session.

How it works:

- The coordinator empties INBOX and ``Archive`` (the COPY/MOVE target), puts ``prefill``
  messages into INBOX with APPEND, then starts ``clients`` processes (processes, so the clients'
  parsing is not held back by one interpreter), each with one IMAP session on INBOX, and one
  more session, the *janitor*, on Archive: it reads every message copied or moved there, body
  and all, then expunges them, so Archive stays small.
- Each session is a `Session`: a raw socket client (`tests.peers.imapscript`) that keeps what a
  real client keeps, the selected mailbox's sequence number -> UID map with each message's
  flags and last MODSEQ, updated from every untagged EXISTS, EXPUNGE and FETCH in the order they
  came (RFC 3501 §7.3.1, §7.4.1, §7.4.2; CONDSTORE, RFC 7162 §3.1.4).  After any command that
  left messages whose UID it does not know (new EXISTS), it asks for them by sequence number.
- The commands (`Client.step`, seeded): APPEND, UID FETCH and FETCH of FLAGS, ENVELOPE and body
  sections, FETCH ... (CHANGEDSINCE), STORE and UID STORE with and without UNCHANGEDSINCE,
  COPY/MOVE and their UID forms, EXPUNGE and UID EXPUNGE, SEARCH and UID SEARCH, IDLE, NOOP,
  STATUS of the other mailbox.  Every command is legal when it is sent: sequence numbers come
  from the session's own view, a UID may name a message expunged meanwhile (RFC 3501 §6.4.8:
  ignored, OK), the target mailbox exists.
- Every message is generated from its Message-ID (`generate`), so any session can tell the exact
  octets any other one appended, and every section a FETCH returns is compared byte for byte.
- When the time is up, every session stops writing; then each sends NOOP and reports its view,
  and a fresh session EXAMINEs each mailbox: the views must match it.

The invariants, by `Findings` category:

``answers``
    0 NO or BAD to a legal command.  The one exception: a COPY or MOVE (by UID or not) naming a
    message that another session expunged, which this session has not been told of yet, may fail
    with ``NO [EXPUNGEISSUED]`` (RFC 2180 §4.4 lets a server refuse to copy an expunged message,
    RFC 9051 §7.1 names the code; Dovecot does it); then one of the messages it named must really
    be gone at the end.  These are counted apart, as "NO [EXPUNGEISSUED] (allowed)".
``protocol``
    EXPUNGE while answering FETCH, STORE or SEARCH by sequence number (RFC 3501 §7.4.1), an
    EXISTS that shrinks the mailbox (§7.3.1), a FETCH or EXPUNGE of a sequence number the
    session does not have, a UID that changes under a sequence number or does not ascend
    (§2.3.1.1), a SEARCH result beyond the session's messages, a STATUS UIDNEXT that goes down.
``modseq``
    The MODSEQ one session sees for a UID never decreases (RFC 7162 §3.1: a change gives a
    message a higher mod-sequence); the final MODSEQ of a message is at least what any session
    saw.  HIGHESTMODSEQ (of SELECT, and of STATUS for the other mailbox) never decreases either
    and is at least every MODSEQ seen: RFC 7162 §3.1 calls it the highest mod-sequence of the
    messages in the mailbox, and an expunge gives the mailbox a new one in Dovecot and in
    Strata's storage (``interfaces.py``), which QRESYNC (§3.2) needs anyway.
``bodies``
    Every section FETCHed is byte-identical to that part of what was appended; NIL only with
    ``OK [EXPUNGEISSUED]`` for a message really expunged (RFC 9051 §7.1); one UID is one message.
``final_view``
    After everyone stopped writing and NOOP, each session's UIDs and flags (less \\Recent,
    which is per session, RFC 3501 §2.3.2) equal a fresh EXAMINE's.
``keywords``
    A keyword appears in a FETCH only after a FLAGS response announced it (RFC 3501 §7.2.6; what
    issue 12 asks, as Dovecot does).
``recent``
    A message is \\Recent in at most one session, and a message that survives was \\Recent in
    exactly one (RFC 3501 §2.3.2).
``fatal``
    A session died (connection closed, timeout) or the checker itself failed.

Blocking sockets with timeouts, loopback only; for tests and the benchmark.
"""

from __future__ import annotations

import base64
import functools
import multiprocessing
import queue
import random
import re
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.peers.imapscript import (
    Atom,
    IMAPScript,
    IMAPScriptError,
    Literal,
    Reply,
    Value,
    parse_response,
)

__all__ = [
    "CATEGORIES",
    "JANITOR",
    "MIXED",
    "READER",
    "WRITER",
    "Findings",
    "Generated",
    "Report",
    "WorkloadConfig",
    "WorkloadResult",
    "generate",
    "run_workload",
    "vm_rss_kib",
]

INBOX = "INBOX"
ARCHIVE = "Archive"
MAX_EXAMPLES = 12  # kept per category and session; the counts are complete

CATEGORIES: Mapping[str, str] = {
    "answers": "NO/BAD answers to legal commands",
    "protocol": "responses a client cannot follow (RFC 3501 §7.4.1, §7.3.1, §2.3.1.1)",
    "modseq": "MODSEQ or HIGHESTMODSEQ going backwards (RFC 7162 §3.1)",
    "bodies": "FETCHed sections that are not the octets appended",
    "final_view": "a session's final view differs from a fresh EXAMINE",
    "keywords": "keywords in FETCH FLAGS before a FLAGS response announced them",
    "recent": "\\Recent in more than one session, or in none (RFC 3501 §2.3.2)",
    "fatal": "a session died, or the checker failed",
}
NOTES = "notes"
"""Worth knowing, not a failure: e.g. a FETCH by number that left out an expunged message."""

# -- the messages ---------------------------------------------------------------------------------

_WORDS = (
    "continuity outage primary relay queue mailbox shadow durable webmail failover backup "
    "report invoice meeting agenda minutes budget forecast schedule delivery phone laptop"
).split()
_ID = re.compile(r"\A<[A-Za-z0-9.\-]+@concurrency\.test>\Z")
KEYWORDS = ("$Work", "$Later", "$Todo", "$Label1")
SYSTEM_FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "\\Draft")


@dataclass(frozen=True)
class Generated:
    """
    One test message and its sections as RFC 3501 §6.4.5 defines them: ``HEADER`` ends with the
    blank line, ``TEXT`` is the rest; a multipart's ``1`` and ``2`` are its parts' contents
    without their MIME headers (``1.MIME``) and without the CRLF before the next boundary, which
    belongs to the boundary (RFC 2046 §5.1.1).
    """

    message_id: str
    raw: bytes
    subject: bytes
    sections: Mapping[str, bytes]


@functools.lru_cache(maxsize=8192)
def generate(message_id: str) -> Generated:
    """The message whose Message-ID is `message_id` (with its angle brackets); deterministic."""
    rng = random.Random(message_id)
    subject = " ".join(rng.choices(_WORDS, k=rng.randint(2, 6))).encode()
    boundary = f"=_part_{rng.getrandbits(48):012x}".encode()
    mid = message_id.encode()
    header = (
        b"From: Concurrency Test <sender@outside.test>\r\nTo: user@example.test\r\n"
        b"Subject: " + subject + b"\r\nDate: Mon, 01 Jun 2026 10:00:00 +0000\r\n"
        b"Message-ID: " + mid + b"\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
    )
    lines = (" ".join(rng.choices(_WORDS, k=rng.randint(3, 12))) for _ in range(rng.randint(1, 40)))
    text = "\r\n".join(lines).encode()
    blob = base64.b64encode(rng.randbytes(rng.randint(60, 4000)))
    attachment = b"\r\n".join(blob[i : i + 76] for i in range(0, len(blob), 76))
    mime1 = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    mime2 = (
        b'Content-Type: application/octet-stream; name="data.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    body = (
        b"This is a multi-part message in MIME format.\r\n"
        + (b"--" + boundary + b"\r\n" + mime1 + text + b"\r\n")
        + (b"--" + boundary + b"\r\n" + mime2 + attachment + b"\r\n")
        + (b"--" + boundary + b"--\r\n")
    )
    raw = header + body
    sections = {
        "": raw,
        "HEADER": header,
        "TEXT": body,
        "1": text,
        "1.MIME": mime1,
        "2": attachment,
        "HEADER.FIELDS (MESSAGE-ID)": b"Message-ID: " + mid + b"\r\n\r\n",
    }
    return Generated(message_id, raw, subject, sections)


# -- small parsers --------------------------------------------------------------------------------

_CODE = re.compile(rb"\A\S+ (?:OK|NO|BAD|BYE|PREAUTH) \[([^\]]*)\]", re.IGNORECASE)
_SECTION = re.compile(r"\ABODY\[(?P<section>[^\]]*)\](?:<(?P<origin>\d+)>)?\Z")
_MESSAGE_ID_FIELD = re.compile(rb"\AMessage-ID: (<[^>\r\n]+>)\r\n\r\n\Z", re.IGNORECASE)
_MESSAGE_ID_IN_HEADER = re.compile(rb"(?im)^Message-ID: (<[^>\r\n]+>)\r$")


def response_code(line: bytes) -> tuple[str, str]:
    """(code, its arguments) of a status response such as ``s1 OK [APPENDUID 7 12] ...``."""
    match = _CODE.match(line)
    if match is None:
        return "", ""
    name, _, args = match.group(1).decode("utf-8", "replace").partition(" ")
    return name.upper(), args


def number_set(text: str) -> set[int]:
    """A sequence set without ``*`` (``1:3,7``) as numbers."""
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition(":")
        a, b = int(low), int(high or low)
        out.update(range(min(a, b), max(a, b) + 1))
    return out


def compress(numbers: Iterable[int]) -> str:
    """Numbers as a short sequence set: ``1:3,7``."""
    ordered = sorted(set(numbers))
    runs: list[str] = []
    start = prev = ordered[0]
    for n in ordered[1:] + [0]:
        if n == prev + 1:
            prev = n
            continue
        runs.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    return ",".join(runs)


def _key(item: Value) -> str:
    """A FETCH item name as one comparable string: upper case, no quotes, single spaces."""
    return " ".join(str(item).upper().replace('"', "").split())


def _short(data: bytes | str, limit: int = 300) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def _canon(flags: Iterable[str]) -> tuple[str, ...]:
    """Flags compared as IMAP does (case-insensitively), without the per-session \\Recent."""
    return tuple(sorted({f.lower() for f in flags} - {"\\recent"}))


# -- what one session found -----------------------------------------------------------------------


@dataclass
class Report:
    """Everything one session found and kept; plain data, so it crosses process boundaries."""

    who: str
    mailbox: str
    commands: Counter[str] = field(default_factory=Counter)
    loop_commands: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    problems: dict[str, list[str]] = field(default_factory=dict)
    problem_counts: Counter[str] = field(default_factory=Counter)
    final_view: list[tuple[int | None, tuple[str, ...]]] | None = None
    modseqs: dict[int, int] = field(default_factory=dict)
    max_modseq: int = 0
    highestmodseq: int = 0
    message_ids: dict[int, str] = field(default_factory=dict)
    recent: set[int] = field(default_factory=set)
    must_be_gone: list[tuple[str, str, list[int]]] = field(default_factory=list)

    def add(self, category: str, text: str) -> None:
        self.problem_counts[category] += 1
        kept = self.problems.setdefault(category, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(f"[{self.who}] {text}")


@dataclass
class _Slot:
    """One message of the selected mailbox as the session knows it."""

    uid: int | None = None
    flags: tuple[str, ...] | None = None


@dataclass
class _Answer:
    """What one command's untagged responses told, for the checks made at its tagged line."""

    kind: str
    uid: bool
    partial: tuple[int, int] | None
    no_expunge: bool
    nil_uids: list[int | None] = field(default_factory=list)
    fetched: set[int] = field(default_factory=set)  # message numbers FETCH data came for
    flags_shown: set[int] = field(default_factory=set)  # UIDs whose FLAGS the answer showed


class SessionDied(Exception):
    """The connection is gone; the session cannot go on."""


class Session:
    """
    One IMAP session on one mailbox, keeping the view a client keeps and checking every response
    against it.  `command` sends one command and absorbs its answer; `sync` learns the UIDs of
    messages announced by EXISTS.
    """

    def __init__(self, port: int, user: str, password: str, mailbox: str, who: str) -> None:
        self.port = port
        self.user = user
        self.password = password
        self.mailbox = mailbox
        self.report = Report(who, mailbox)
        self.view: list[_Slot] = []
        self.announced: set[str] | None = None
        self.expunged: list[int] = []  # UIDs this session saw expunged, latest last
        self.my_deleted: set[int] = set()
        self.modseq_where: dict[int, str] = {}  # UID -> where its highest MODSEQ was seen
        self.status_seen: dict[tuple[str, str], int] = {}
        self.counting = False
        self.started = time.monotonic()
        self.client: IMAPScript | None = None
        self.last_answer = _Answer("", False, None, False)
        self._tracking: Reply | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def open(self, *, examine: bool = False, enable_first: bool = False) -> None:
        """LOGIN, CONDSTORE on (ENABLE, or a SELECT parameter), SELECT/EXAMINE, learn the UIDs."""
        try:
            self.client = IMAPScript("127.0.0.1", self.port, timeout=120)
        except OSError as error:
            raise SessionDied(f"cannot connect: {error}") from error
        self.command("LOGIN", "LOGIN ", Literal.of(self.user), " ", Literal.of(self.password))
        verb = "EXAMINE" if examine else "SELECT"
        if enable_first:
            self.command("ENABLE", "ENABLE CONDSTORE")
            self.command(verb, f"{verb} {self.mailbox}")
        else:
            self.command(verb, f"{verb} {self.mailbox} (CONDSTORE)")
        self.sync()

    def finish(self) -> None:
        """NOOP (everyone has stopped writing), learn what is left, keep the final view."""
        self.command("NOOP", "NOOP")
        self.sync()
        self.keep_view()

    def keep_view(self) -> None:
        self.report.final_view = [(s.uid, _canon(s.flags or ())) for s in self.view]

    def close(self) -> None:
        if self.client is not None:
            self.client.logout()
            self.client = None

    # -- commands -----------------------------------------------------------------------------

    def command(
        self,
        kind: str,
        *pieces: str | bytes | Literal,
        uid: bool = False,
        partial: tuple[int, int] | None = None,
        targets: Sequence[int] = (),
    ) -> Reply:
        """
        Send one command (`kind` is its verb, `uid` whether it is a UID command), absorb every
        response in order, and check the tagged one.  `targets`: the UIDs a COPY/MOVE names that
        the session still has, in case it fails for an expunged one.
        """
        assert self.client is not None
        try:
            reply = self.client.run(*pieces)
        except (IMAPScriptError, OSError) as error:
            raise SessionDied(f"{_command_text(pieces)}: {error}") from error
        label = f"UID {kind}" if uid else kind
        self.report.commands[label] += 1
        if self.counting:
            self.report.loop_commands += 1
        self.absorb(reply, kind, uid=uid, partial=partial, targets=targets)
        return reply

    def idle(self, seconds: float) -> Reply:
        """IDLE (RFC 2177) for `seconds`, taking whatever comes, then DONE."""
        assert self.client is not None
        try:
            tag, reply = self.client.idle_start()
            self.client.idle_wait(reply, lambda _untagged: False, timeout=seconds)
            reply = self.client.idle_done(tag, reply)
        except (IMAPScriptError, OSError) as error:
            raise SessionDied(f"IDLE: {error}") from error
        self.report.commands["IDLE"] += 1
        if self.counting:
            self.report.loop_commands += 1
        self.absorb(reply, "IDLE", uid=False, partial=None, targets=())
        return reply

    def sync(self) -> None:
        """
        FETCH the UIDs, flags and MODSEQs of the messages this session knows only by number.  A
        server may leave out a message expunged meanwhile, and cannot say EXPUNGE during that
        FETCH (RFC 3501 §7.4.1): then a NOOP lets it, and the FETCH is tried again.  Messages
        announced meanwhile join in; only one that stays unknown through four rounds is wrong.
        """
        first = [slot for slot in self.view if slot.uid is None]
        for round_ in range(8):
            unknown = [n for n, slot in enumerate(self.view, 1) if slot.uid is None]
            if not unknown:
                return
            self.command("FETCH", f"FETCH {unknown[0]}:{unknown[-1]} (UID FLAGS MODSEQ)")
            if any(slot.uid is None for slot in self.view):
                self.command("NOOP", "NOOP")
            stuck = [
                n
                for n, slot in enumerate(self.view, 1)
                if slot.uid is None and any(slot is old for old in first)
            ]
            if stuck and round_ >= 3:
                self.report.add(
                    "protocol",
                    f"messages {compress(stuck)}: no UID after four FETCH (UID ...) and NOOP",
                )
                return

    # -- absorbing answers --------------------------------------------------------------------

    def absorb(
        self,
        reply: Reply,
        kind: str,
        *,
        uid: bool,
        partial: tuple[int, int] | None,
        targets: Sequence[int],
    ) -> None:
        # RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH (UID ones may).
        answer = _Answer(kind, uid, partial, not uid and kind in ("FETCH", "STORE", "SEARCH"))
        self._tracking = reply
        for raw in reply.untagged:
            try:
                self._untagged(raw, answer)
            except (ValueError, IndexError, TypeError, AssertionError) as error:
                self.problem("protocol", f"cannot read {_short(raw)!r}: {error!r}")
        status = reply.status
        code, args = response_code(reply.tagged)
        if kind == "FETCH" and not uid and status == "OK" and code != "EXPUNGEISSUED":
            # Not a rule of RFC 3501, so only a note: Dovecot answers every message it was
            # asked for, or says OK [EXPUNGEISSUED] (RFC 9051 §7.1); issue 12 asks the same.
            words = reply.command.split(b" ", 2)
            if len(words) == 3 and b"*" not in words[1] and b"CHANGEDSINCE" not in words[2]:
                missing = number_set(words[1].decode()) - answer.fetched
                if missing:
                    self.problem(
                        "notes",
                        f"no data for messages {compress(missing)}, and no [EXPUNGEISSUED]",
                    )
        allowed = status == "NO" and code == "EXPUNGEISSUED" and kind in ("COPY", "MOVE")
        self.report.answers["NO [EXPUNGEISSUED] (allowed)" if allowed else status or "?"] += 1
        if status != "OK":
            if allowed and not targets:
                # Every message it named was already gone for this session: UIDs that do not
                # exist are ignored (RFC 3501 §6.4.8), nothing was refused for an expunge.
                self.problem("answers", "NO [EXPUNGEISSUED], naming only messages known gone")
            elif allowed:
                context = f"{_short(reply.command)} -> {_short(reply.tagged)}"
                self.report.must_be_gone.append(("answers", context, list(targets)))
            elif kind != "LOGOUT":
                self.problem("answers", "answered " + status)
        if answer.nil_uids:
            context = f"{_short(reply.command)} -> NIL sections, tagged {_short(reply.tagged)}"
            if code != "EXPUNGEISSUED":
                self.problem("bodies", "NIL for a body section without EXPUNGEISSUED")
            else:
                known = [u for u in answer.nil_uids if u is not None]
                for u in known:
                    self.report.must_be_gone.append(("bodies", context, [u]))
        if code == "HIGHESTMODSEQ":
            self._highestmodseq(int(args.split()[0]))
        self.last_answer = answer
        self._tracking = None

    def _where(self, raw: bytes) -> str:
        """Which command's answer carried `raw`, when, for a later finding to point back to."""
        reply = self._tracking
        command = _short(reply.command, 100) if reply is not None else "?"
        return f"{time.monotonic() - self.started:.1f}s {command!r}: {_short(raw, 120)!r}"

    def problem(self, category: str, text: str) -> None:
        """A finding about the command being absorbed: its text, answer and elapsed time."""
        reply = self._tracking
        at = f"{time.monotonic() - self.started:6.1f}s"
        where = f"{at} {_short(reply.command, 160)!r}" if reply is not None else at
        tagged = f" -> {_short(reply.tagged, 200)!r}" if reply is not None else ""
        self.report.add(category, f"{where}{tagged}: {text}")

    def _untagged(self, raw: bytes, answer: _Answer) -> None:
        values = parse_response(raw)
        if len(values) < 2 or values[0] != "*":
            self.problem("protocol", f"not an untagged response: {_short(raw)!r}")
            return
        first = values[1]
        if isinstance(first, Atom) and first.isdigit() and len(values) >= 3:
            number, word = int(first), str(values[2]).upper()
            if word == "EXISTS":
                self._exists(number)
            elif word == "EXPUNGE":
                self._expunge(number, answer, raw)
            elif word == "FETCH":
                items = values[3] if len(values) > 3 else None
                if not isinstance(items, list) or len(items) % 2:
                    self.problem("protocol", f"unreadable FETCH: {_short(raw)!r}")
                    return
                pairs = {_key(items[i]): items[i + 1] for i in range(0, len(items), 2)}
                self._fetch(number, pairs, answer, raw)
            elif word != "RECENT":
                self.problem("protocol", f"unexpected response {_short(raw)!r}")
            return
        word = str(first).upper()
        if word == "FLAGS" and len(values) > 2 and isinstance(values[2], list):
            self.announced = {str(f).lower() for f in values[2]}
        elif word in ("OK", "NO", "BAD", "BYE"):
            if word in ("NO", "BAD"):
                self.problem("answers", f"untagged {_short(raw)!r}")
            elif word == "BYE" and answer.kind != "LOGOUT":
                self.problem("fatal", f"BYE: {_short(raw)!r}")
            code, args = response_code(b"* " + raw[2:])
            if code == "HIGHESTMODSEQ":
                self._highestmodseq(int(args.split()[0]))
        elif word == "SEARCH":
            self._search(values[2:], answer, raw)
        elif word == "STATUS":
            self._status(values, raw)
        elif word == "VANISHED":
            self.problem("protocol", f"VANISHED without QRESYNC enabled: {_short(raw)!r}")
        elif word not in ("ENABLED", "CAPABILITY", "LIST", "ID", "NAMESPACE"):
            self.problem("protocol", f"unexpected response {_short(raw)!r}")

    def _exists(self, count: int) -> None:
        if count < len(self.view):
            # RFC 3501 §7.3.1 / §7.4.1: only EXPUNGE may reduce the number of messages.
            self.problem("protocol", f"* {count} EXISTS with {len(self.view)} messages known")
            return
        self.view.extend(_Slot() for _ in range(count - len(self.view)))

    def _expunge(self, number: int, answer: _Answer, raw: bytes) -> None:
        if answer.no_expunge:
            self.problem("protocol", f"{_short(raw)!r} while answering {answer.kind} by number")
        if not 1 <= number <= len(self.view):
            self.problem("protocol", f"{_short(raw)!r} with {len(self.view)} messages known")
            return
        slot = self.view.pop(number - 1)
        if slot.uid is not None:
            self.expunged = [*self.expunged[-40:], slot.uid]
            self.my_deleted.discard(slot.uid)

    def _fetch(self, number: int, items: dict[str, Value], answer: _Answer, raw: bytes) -> None:
        if not 1 <= number <= len(self.view):
            self.problem("protocol", f"{_short(raw)!r} with {len(self.view)} messages known")
            return
        answer.fetched.add(number)
        slot = self.view[number - 1]
        if "UID" in items:
            uid = int(str(items["UID"]))
            if slot.uid is None:
                self._learn_uid(number, uid, raw)
            elif slot.uid != uid:
                self.problem(
                    "protocol", f"message {number} is UID {slot.uid} here: {_short(raw)!r}"
                )
                return
        uid_known = slot.uid
        modseq: int | None = None
        if "MODSEQ" in items:
            value = items["MODSEQ"]
            assert isinstance(value, list) and value, value
            modseq = int(str(value[0]))
            self.report.max_modseq = max(self.report.max_modseq, modseq)
            if uid_known is not None:
                last = self.report.modseqs.get(uid_known, 0)
                if modseq < last:
                    self.problem(
                        "modseq",
                        f"UID {uid_known}: {_short(raw)!r} after MODSEQ {last} in "
                        f"{self.modseq_where.get(uid_known, '?')}",
                    )
                else:
                    self.report.modseqs[uid_known] = modseq
                    self.modseq_where[uid_known] = self._where(raw)
        if "FLAGS" in items:
            value = items["FLAGS"]
            assert isinstance(value, list), value
            flags = tuple(str(f) for f in value)
            self._check_keywords(flags, raw)
            if uid_known is not None and "\\recent" in {f.lower() for f in flags}:
                self.report.recent.add(uid_known)
            slot.flags = flags
            if uid_known is not None:
                answer.flags_shown.add(uid_known)
        self._check_sections(uid_known, items, answer, raw)

    def _learn_uid(self, number: int, uid: int, raw: bytes) -> None:
        """A UID for a message known only by number: it must lie between its neighbours'."""
        slot = self.view[number - 1]
        before = next((s.uid for s in reversed(self.view[: number - 1]) if s.uid), 0)
        after = next((s.uid for s in self.view[number:] if s.uid), None)
        if uid <= before or (after is not None and uid >= after):
            self.problem(
                "protocol",
                f"UID {uid} for message {number} between UIDs {before} and {after}: "
                f"{_short(raw)!r}",
            )
        slot.uid = uid

    def _check_keywords(self, flags: Sequence[str], raw: bytes) -> None:
        if self.announced is None:
            return
        for flag in flags:
            if not flag.startswith("\\") and flag.lower() not in self.announced:
                self.problem("keywords", f"{flag} not in the last FLAGS: {_short(raw, 200)!r}")

    def _check_sections(
        self, uid: int | None, items: dict[str, Value], answer: _Answer, raw: bytes
    ) -> None:
        """
        Body sections and ENVELOPE against what was appended.  NIL (or an ENVELOPE of NILs, as
        Dovecot sends for a message expunged meanwhile) is checked at the tagged line: it needs
        ``OK [EXPUNGEISSUED]``, and the message must be gone at the end.
        """
        bodies = {k: v for k, v in items.items() if k.startswith("BODY[")}
        envelope = items.get("ENVELOPE")
        envelope_nil = "ENVELOPE" in items and (
            not isinstance(envelope, list) or all(v is None for v in envelope)
        )
        if any(v is None for v in bodies.values()) or envelope_nil:
            answer.nil_uids.append(uid)
        present = {k: v for k, v in bodies.items() if v is not None}
        if envelope_nil or not isinstance(envelope, list):
            envelope = None
        if not present and envelope is None:
            return
        found: str | None = None
        field_value = present.get("BODY[HEADER.FIELDS (MESSAGE-ID)]")
        if isinstance(field_value, bytes):
            match = _MESSAGE_ID_FIELD.match(field_value)
            found = match.group(1).decode() if match else None
        for key in ("BODY[]", "BODY[HEADER]"):
            value = present.get(key)
            if found is None and isinstance(value, bytes):
                match = _MESSAGE_ID_IN_HEADER.search(value)
                found = match.group(1).decode() if match else None
        if found is None and envelope is not None and len(envelope) == 10:
            if isinstance(envelope[9], bytes):
                found = envelope[9].decode("utf-8", "replace")
        message_id = self.report.message_ids.get(uid) if uid is not None else None
        if found is not None and message_id is not None and found != message_id:
            self.problem("bodies", f"UID {uid} was {message_id}, now {found}: {_short(raw)!r}")
            return
        message_id = message_id or found
        if message_id is None or not _ID.match(message_id):
            self.problem("bodies", f"cannot tell which message this is: {_short(raw)!r}")
            return
        if uid is not None:
            self.report.message_ids[uid] = message_id
        expected = generate(message_id)
        for key, value in present.items():
            section = _SECTION.match(key)
            if section is None or section.group("section") not in expected.sections:
                self.problem("protocol", f"a section never asked for: {key}")
                continue
            want = expected.sections[section.group("section")]
            if section.group("origin") is not None:
                origin = int(section.group("origin"))
                length = answer.partial[1] if answer.partial else len(want)
                want = want[origin : origin + length]
            if not isinstance(value, bytes) or value != want:
                got = value if isinstance(value, bytes) else repr(value).encode()
                self.problem("bodies", f"UID {uid} {key}: {_difference(got, want)}")
        if envelope is not None:
            if len(envelope) != 10:
                self.problem("bodies", f"UID {uid}: ENVELOPE of {len(envelope)} fields")
            elif envelope[1] != expected.subject or envelope[9] != message_id.encode():
                self.problem(
                    "bodies",
                    f"UID {uid} ENVELOPE subject/message-id {envelope[1]!r}/{envelope[9]!r}, "
                    f"appended {expected.subject!r}/{message_id}",
                )

    def _highestmodseq(self, value: int) -> None:
        if value < self.report.highestmodseq:
            self.problem("modseq", f"HIGHESTMODSEQ {value} after {self.report.highestmodseq}")
        if value < self.report.max_modseq:
            self.problem("modseq", f"HIGHESTMODSEQ {value} below MODSEQ {self.report.max_modseq}")
        self.report.highestmodseq = max(self.report.highestmodseq, value)

    def _search(self, values: Sequence[Value], answer: _Answer, raw: bytes) -> None:
        numbers = [int(v) for v in values if isinstance(v, Atom) and v.isdigit()]
        if not answer.uid and any(n < 1 or n > len(self.view) for n in numbers):
            self.problem(
                "protocol",
                f"SEARCH names messages beyond the {len(self.view)} known: {_short(raw)!r}",
            )

    def _status(self, values: Sequence[Value], raw: bytes) -> None:
        if len(values) < 4 or not isinstance(values[3], list):
            self.problem("protocol", f"unreadable STATUS {_short(raw)!r}")
            return
        name = values[2].decode() if isinstance(values[2], bytes) else str(values[2])
        pairs = values[3]
        for key, value in zip(pairs[::2], pairs[1::2], strict=True):
            item = str(key).upper()
            if item not in ("UIDNEXT", "HIGHESTMODSEQ"):
                continue
            number = int(str(value))
            last = self.status_seen.get((name, item), 0)
            if number < last:
                category = "modseq" if item == "HIGHESTMODSEQ" else "protocol"
                self.problem(category, f"STATUS {name} {item} {number} after {last}")
            self.status_seen[(name, item)] = max(last, number)

    # -- what the session knows ---------------------------------------------------------------

    def known_uids(self) -> list[int]:
        return [s.uid for s in self.view if s.uid is not None]

    def seq_of(self, uid: int) -> int | None:
        for number, slot in enumerate(self.view, 1):
            if slot.uid == uid:
                return number
        return None


def _difference(got: bytes, want: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if at is None:
        at = min(len(got), len(want))
    return (
        f"{len(got)} octets, appended {len(want)}; first difference at {at}: "
        f"got {got[at : at + 40]!r}, want {want[at : at + 40]!r}"
    )


def _command_text(pieces: Sequence[str | bytes | Literal]) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, Literal):
            out.append(f"{{{len(piece.data)}}}")
        else:
            out.append(piece.decode() if isinstance(piece, bytes) else piece)
    return "".join(out)


# -- the workload ---------------------------------------------------------------------------------

MIXED: Mapping[str, float] = {
    "append": 10,
    "uid_fetch_body": 14,
    "fetch_flags_envelope": 7,
    "fetch_body_seq": 4,
    "fetch_changedsince": 3,
    "uid_store": 10,
    "uid_store_unchangedsince": 6,
    "store_seq": 4,
    "store_seq_unchangedsince": 2,
    "mark_deleted": 7,
    "expunge": 3,
    "uid_expunge": 4,
    "uid_copy": 4,
    "copy_seq": 2,
    "uid_move": 4,
    "move_seq": 2,
    "search": 3,
    "uid_search": 3,
    "idle": 3,
    "noop": 4,
    "status": 2,
}
"""Every kind of command, in the proportions of a busy client (the acceptance test's mix)."""

READER: Mapping[str, float] = {
    "uid_fetch_body": 30,
    "fetch_flags_envelope": 15,
    "fetch_body_seq": 10,
    "fetch_changedsince": 5,
    "search": 5,
    "uid_search": 5,
    "noop": 5,
    "idle": 2,
}
"""A client reading: what the benchmark's readers do while the writers expunge."""

WRITER: Mapping[str, float] = {
    "append": 20,
    "mark_deleted": 15,
    "expunge": 8,
    "uid_expunge": 8,
    "uid_move": 10,
    "move_seq": 4,
    "uid_copy": 5,
    "copy_seq": 3,
    "uid_store": 5,
}
"""A client appending, deleting, expunging and moving: the benchmark's writers."""

JANITOR: Mapping[str, float] = {"sweep": 1}
"""The Archive session: read everything copied or moved there, then expunge it."""

_REMOVING = ("mark_deleted", "expunge", "uid_expunge", "uid_move", "move_seq")
_FLAG_CHOICES = (*SYSTEM_FLAGS[:3], *KEYWORDS)


class Client:
    """One session's commands: `step` picks one (seeded), sends it, then learns new UIDs."""

    def __init__(
        self,
        session: Session,
        rng: random.Random,
        weights: Mapping[str, float],
        *,
        run_tag: str,
        other_mailbox: str,
        size: tuple[int, int],
    ) -> None:
        self.s = session
        self.rng = rng
        self.weights = weights
        self.run_tag = run_tag
        self.other = other_mailbox
        self.size = size
        self.appended = 0

    def step(self) -> None:
        count = len(self.s.view)
        names = list(self.weights)
        weights = []
        for name in names:
            weight = self.weights[name]
            # Keep the mailbox between the bounds, so its size (and the server's memory) stays put.
            if count < self.size[0]:
                weight *= 4 if name == "append" else 0.25 if name in _REMOVING else 1
            elif count > self.size[1]:
                weight *= 0.25 if name == "append" else 4 if name in _REMOVING else 1
            weights.append(weight)
        name = self.rng.choices(names, weights)[0]
        if count == 0 and name not in ("append", "idle", "noop", "status", "sweep"):
            name = "append" if "append" in self.weights else "noop"
        getattr(self, name)()
        self.s.sync()

    # -- choosing targets ---------------------------------------------------------------------

    def uids(self, most: int = 3, *, gone: float = 0.2) -> list[int]:
        """Some known UIDs; sometimes one this session saw expunged (legal: RFC 3501 §6.4.8)."""
        known = self.s.known_uids()
        picked = self.rng.sample(known, min(len(known), self.rng.randint(1, most)))
        if self.s.expunged and self.rng.random() < gone:
            picked.append(self.rng.choice(self.s.expunged))
        return picked or [1]

    def seq_range(self, most: int = 10) -> tuple[int, int]:
        count = len(self.s.view)
        first = self.rng.randint(1, count)
        return first, min(count, first + self.rng.randint(0, most - 1))

    def flag_change(self) -> str:
        sign = self.rng.choice(["+", "+", "-"])
        flags = self.rng.sample(_FLAG_CHOICES, self.rng.randint(1, 2))
        return f"{sign}FLAGS ({' '.join(flags)})"

    def body_items(self) -> tuple[str, tuple[int, int] | None]:
        """FETCH items for some sections, always with the Message-ID field to tell the message."""
        choices = [
            "BODY.PEEK[]",
            "BODY.PEEK[HEADER]",
            "BODY.PEEK[TEXT]",
            "BODY.PEEK[1]",
            "BODY.PEEK[1.MIME]",
            "BODY.PEEK[2]",
            "ENVELOPE",
            "PARTIAL",
        ]
        picked = self.rng.sample(choices, self.rng.randint(1, 3))
        partial = None
        if "PARTIAL" in picked:
            partial = (self.rng.randint(0, 2000), self.rng.randint(1, 1500))
            picked[picked.index("PARTIAL")] = f"BODY.PEEK[]<{partial[0]}.{partial[1]}>"
        items = " ".join(["UID", "FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]", *picked])
        return f"({items})", partial

    # -- the commands -------------------------------------------------------------------------

    def append(self) -> None:
        self.appended += 1
        message_id = f"<{self.run_tag}.{self.s.report.who}.{self.appended}@concurrency.test>"
        message = generate(message_id)
        flags = self.rng.choice(["", "", "(\\Seen) ", "($Work) ", "(\\Flagged $Later) "])
        reply = self.s.command("APPEND", f"APPEND {self.s.mailbox} {flags}", Literal(message.raw))
        code, args = response_code(reply.tagged)
        if code == "APPENDUID":
            uid = int(args.split()[1])
            known = self.s.report.message_ids.setdefault(uid, message_id)
            if known != message_id:
                self.s.report.add("bodies", f"APPENDUID {uid} for {message_id}, was {known}")

    def uid_fetch_body(self) -> None:
        items, partial = self.body_items()
        uids = compress(self.uids())
        self.s.command("FETCH", f"UID FETCH {uids} {items}", uid=True, partial=partial)

    def fetch_flags_envelope(self) -> None:
        first, last = self.seq_range(20)
        items = self.rng.choice(["(FLAGS)", "(UID FLAGS)", "(UID FLAGS ENVELOPE)", "(ENVELOPE)"])
        self.s.command("FETCH", f"FETCH {first}:{last} {items}")

    def fetch_body_seq(self) -> None:
        items, partial = self.body_items()
        first, last = self.seq_range(2)
        self.s.command("FETCH", f"FETCH {first}:{last} {items}", partial=partial)

    def fetch_changedsince(self) -> None:
        since = max(0, self.s.report.max_modseq - self.rng.randint(0, 30))
        if self.rng.random() < 0.5:
            self.s.command("FETCH", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since})", uid=True)
        else:
            self.s.command("FETCH", f"FETCH 1:* (UID FLAGS) (CHANGEDSINCE {since})")

    def uid_store(self) -> None:
        uids = compress(self.uids())
        if self.rng.random() < 0.15:
            flags = " ".join(self.rng.sample(_FLAG_CHOICES, self.rng.randint(0, 2)))
            self.s.command("STORE", f"UID STORE {uids} FLAGS ({flags})", uid=True)
        else:
            self.s.command("STORE", f"UID STORE {uids} {self.flag_change()}", uid=True)

    def uid_store_unchangedsince(self) -> None:
        uid = self.rng.choice(self.s.known_uids())
        since = self.s.report.modseqs.get(uid, 1) - self.rng.choice([0, 0, 0, 1])
        change = self.flag_change()
        self.s.command(
            "STORE", f"UID STORE {uid} (UNCHANGEDSINCE {max(since, 0)}) {change}", uid=True
        )

    def store_seq(self) -> None:
        first, last = self.seq_range(3)
        self.s.command("STORE", f"STORE {first}:{last} {self.flag_change()}")

    def store_seq_unchangedsince(self) -> None:
        number = self.rng.randint(1, len(self.s.view))
        uid = self.s.view[number - 1].uid
        since = self.s.report.modseqs.get(uid, 1) if uid is not None else 1
        change = self.flag_change()
        self.s.command("STORE", f"STORE {number} (UNCHANGEDSINCE {since}) {change}")

    def mark_deleted(self) -> None:
        """
        UID STORE +FLAGS.SILENT (\\Deleted): the server need not echo the flags (RFC 3501
        §6.4.6), so the session adds \\Deleted itself, after the answer, unless the answer showed
        the message's flags anyway: then those are what the server says it has now (Dovecot
        shows them when another session changed the message too, Strata always does), and what
        a client keeps.
        """
        uids = self.uids(2, gone=0.1)
        reply = self.s.command(
            "STORE", f"UID STORE {compress(uids)} +FLAGS.SILENT (\\Deleted)", uid=True
        )
        if not reply.ok:
            return
        answer = self.s.last_answer
        for uid in uids:
            number = self.s.seq_of(uid)
            if number is None:
                continue
            if uid in answer.flags_shown:
                continue
            slot = self.s.view[number - 1]
            if slot.flags is not None and "\\deleted" not in {f.lower() for f in slot.flags}:
                slot.flags = (*slot.flags, "\\Deleted")
            self.s.my_deleted.add(uid)

    def expunge(self) -> None:
        self.s.command("EXPUNGE", "EXPUNGE")

    def uid_expunge(self) -> None:
        mine = sorted(self.s.my_deleted) or self.uids(2)
        self.s.command("EXPUNGE", f"UID EXPUNGE {compress(mine)}", uid=True)

    def _transfer(self, verb: str, *, uid: bool) -> None:
        """
        COPY or MOVE to the other mailbox.  `targets` are the named messages this session still
        has: if the server refuses with NO [EXPUNGEISSUED], one of them must really be gone.
        """
        if uid:
            uids = self.uids(2)
            present = set(self.s.known_uids())
            named = [u for u in uids if u in present]
            command = f"UID {verb} {compress(uids)} {self.other}"
            self.s.command(verb, command, uid=True, targets=named)
            return
        first, last = self.seq_range(2)
        named = [u for s in self.s.view[first - 1 : last] if (u := s.uid) is not None]
        self.s.command(verb, f"{verb} {first}:{last} {self.other}", targets=named)

    def uid_copy(self) -> None:
        self._transfer("COPY", uid=True)

    def copy_seq(self) -> None:
        self._transfer("COPY", uid=False)

    def uid_move(self) -> None:
        self._transfer("MOVE", uid=True)

    def move_seq(self) -> None:
        self._transfer("MOVE", uid=False)

    def _criteria(self) -> str:
        return self.rng.choice(
            [
                "UNSEEN",
                "FLAGGED",
                "DELETED",
                f"KEYWORD {self.rng.choice(KEYWORDS)}",
                f"SUBJECT {self.rng.choice(_WORDS)}",
                f"MODSEQ {max(1, self.s.report.max_modseq - 20)}",
                "ALL",
            ]
        )

    def search(self) -> None:
        self.s.command("SEARCH", f"SEARCH {self._criteria()}")

    def uid_search(self) -> None:
        self.s.command("SEARCH", f"UID SEARCH {self._criteria()}", uid=True)

    def idle(self) -> None:
        self.s.idle(self.rng.uniform(0.2, 1.0))

    def noop(self) -> None:
        self.s.command("NOOP", "NOOP")

    def status(self) -> None:
        self.s.command("STATUS", f"STATUS {self.other} (MESSAGES UIDNEXT HIGHESTMODSEQ)")

    def sweep(self) -> None:
        """Read every message in the mailbox, body and all, then expunge them; then IDLE a bit."""
        uids = self.s.known_uids()
        if uids:
            every = compress(uids)
            items = "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] BODY.PEEK[])"
            self.s.command("FETCH", f"UID FETCH {every} {items}", uid=True)
            self.s.command("STORE", f"UID STORE {every} +FLAGS (\\Deleted)", uid=True)
            self.s.command("EXPUNGE", f"UID EXPUNGE {every}", uid=True)
        self.s.idle(self.rng.uniform(0.5, 1.0))


# -- running it -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadConfig:
    """
    One run: `clients` sessions on INBOX (their weights cycle through `roles`) plus a janitor on
    Archive, for `seconds` after all have selected.  `run_tag` makes the Message-IDs unique
    across runs on the same server.
    """

    port: int
    user: str
    password: str
    clients: int = 10
    seconds: float = 60.0
    seed: int = 12
    prefill: int = 150
    size: tuple[int, int] = (80, 220)
    roles: tuple[Mapping[str, float], ...] = (MIXED,)
    run_tag: str = "r0"


@dataclass
class WorkloadResult:
    reports: list[Report]
    snapshots: dict[str, Report]
    seconds: float
    commands: int
    findings: Findings

    @property
    def commands_per_s(self) -> float:
        return self.commands / self.seconds if self.seconds else 0.0


def prepare(config: WorkloadConfig) -> None:
    """Archive exists, both mailboxes are empty, INBOX holds `prefill` fresh messages."""
    client = IMAPScript("127.0.0.1", config.port, timeout=120)
    try:
        client.login(config.user, config.password)
        created = client.run(f"CREATE {ARCHIVE}")
        assert created.ok or "ALREADYEXISTS" in created.tagged.decode(), created.tagged
        for mailbox in (INBOX, ARCHIVE):
            for command in (
                f"SELECT {mailbox}",
                "UID STORE 1:* +FLAGS.SILENT (\\Deleted)",
                "EXPUNGE",
                "UNSELECT",
            ):
                reply = client.run(command)
                assert reply.ok, (command, reply.tagged)
        for n in range(config.prefill):
            message = generate(f"<{config.run_tag}.prefill.{n}@concurrency.test>")
            reply = client.run(f"APPEND {INBOX} ", Literal(message.raw))
            assert reply.ok, reply.tagged
    finally:
        client.logout()


def _client_main(
    config: WorkloadConfig,
    index: int,
    mailbox: str,
    weights: Mapping[str, float],
    start: Any,
    stopped: Any,
    out: Any,
) -> None:
    """One client process: open, wait for all, work until the time is up, wait, report."""
    who = "janitor" if mailbox == ARCHIVE else f"c{index:02d}"
    rng = random.Random(f"{config.seed}.{config.run_tag}.{who}")
    session = Session(config.port, config.user, config.password, mailbox, who)
    alive = True
    try:
        session.open(enable_first=rng.random() < 0.5)
    except SessionDied as error:
        session.report.add("fatal", f"could not open {mailbox}: {error}")
        alive = False
    other = ARCHIVE if mailbox == INBOX else INBOX
    client = Client(
        session, rng, weights, run_tag=config.run_tag, other_mailbox=other, size=config.size
    )
    try:
        start.wait(timeout=300)
    except Exception as error:  # noqa: BLE001 - report it, whatever broke the barrier
        session.report.add("fatal", f"the start barrier broke: {error!r}")
        alive = False
    deadline = time.monotonic() + config.seconds
    session.counting = True
    while alive and time.monotonic() < deadline:
        try:
            client.step()
        except SessionDied as error:
            session.report.add("fatal", f"session died: {error}")
            alive = False
        except Exception:  # noqa: BLE001 - a checker bug must show, not hang the barrier
            session.report.add("fatal", f"checker failed:\n{traceback.format_exc()}")
            alive = False
    session.counting = False
    try:
        stopped.wait(timeout=config.seconds + 600)
    except Exception as error:  # noqa: BLE001
        session.report.add("fatal", f"the stop barrier broke: {error!r}")
    if alive:
        try:
            session.finish()
            session.close()
        except SessionDied as error:
            session.report.add("fatal", f"session died at the end: {error}")
        except Exception:  # noqa: BLE001
            session.report.add("fatal", f"checker failed:\n{traceback.format_exc()}")
    out.put(session.report)


def snapshot(config: WorkloadConfig, mailbox: str) -> Report:
    """A fresh session's EXAMINE of `mailbox`: UIDs, flags, MODSEQs, and every body checked."""
    session = Session(config.port, config.user, config.password, mailbox, f"fresh {mailbox}")
    try:
        session.open(examine=True)
        if session.view:
            items = "(UID FLAGS MODSEQ BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] BODY.PEEK[])"
            session.command("FETCH", f"UID FETCH 1:* {items}", uid=True)
        session.keep_view()
        session.close()
    except SessionDied as error:
        session.report.add("fatal", f"the fresh session died: {error}")
    return session.report


def run_workload(
    config: WorkloadConfig,
    *,
    checkpoints: Sequence[tuple[float, Callable[[], None]]] = (),
    on_stopped: Callable[[], None] | None = None,
) -> WorkloadResult:
    """
    Prepare the mailboxes, run the clients and the janitor, compare their final views with fresh
    sessions.  `checkpoints`: (seconds after the start, function) called while the clients work
    (the test reads the server's RSS there); `on_stopped`: called once every client has stopped
    writing, before the final checks.
    """
    prepare(config)
    ctx = multiprocessing.get_context("fork")
    parties = config.clients + 2  # the clients, the janitor, and us
    start, stopped = ctx.Barrier(parties), ctx.Barrier(parties)
    out = ctx.Queue()
    processes = [
        ctx.Process(
            target=_client_main,
            args=(config, n + 1, INBOX, config.roles[n % len(config.roles)], start, stopped, out),
        )
        for n in range(config.clients)
    ]
    processes.append(
        ctx.Process(target=_client_main, args=(config, 0, ARCHIVE, JANITOR, start, stopped, out))
    )
    for process in processes:
        process.start()
    reports: list[Report] = []
    elapsed = 0.0
    try:
        start.wait(timeout=300)
        began = time.monotonic()
        for at, call in sorted(checkpoints, key=lambda c: c[0]):
            time.sleep(max(0.0, began + at - time.monotonic()))
            call()
        stopped.wait(timeout=config.seconds + 600)
        elapsed = time.monotonic() - began
        if on_stopped is not None:
            on_stopped()
        for _ in processes:
            reports.append(out.get(timeout=600))
    except (queue.Empty, threading.BrokenBarrierError) as error:
        raise RuntimeError(f"the clients did not finish: {error!r}") from error
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join(10)
    reports.sort(key=lambda r: r.who)
    snapshots = {mailbox: snapshot(config, mailbox) for mailbox in (INBOX, ARCHIVE)}
    commands = sum(r.loop_commands for r in reports)
    findings = Findings.evaluate(reports, snapshots)
    return WorkloadResult(reports, snapshots, elapsed, commands, findings)


# -- the verdict ----------------------------------------------------------------------------------


@dataclass
class Findings:
    """Every problem found, by category, with examples; plus the answers and commands counted."""

    counts: Counter[str]
    examples: dict[str, list[str]]
    answers: Counter[str]
    commands: Counter[str]

    @classmethod
    def evaluate(cls, reports: Sequence[Report], snapshots: Mapping[str, Report]) -> Findings:
        counts: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        answers: Counter[str] = Counter()
        commands: Counter[str] = Counter()

        def add(category: str, text: str) -> None:
            counts[category] += 1
            kept = examples.setdefault(category, [])
            if len(kept) < 3 * MAX_EXAMPLES:
                kept.append(text)

        for report in [*reports, *snapshots.values()]:
            answers.update(report.answers)
            commands.update(report.commands)
            for category, number in report.problem_counts.items():
                counts[category] += number
                kept = examples.setdefault(category, [])
                kept.extend(report.problems.get(category, [])[: 3 * MAX_EXAMPLES - len(kept)])
        for mailbox, fresh in snapshots.items():
            sessions = [r for r in reports if r.mailbox == mailbox]
            _compare_views(fresh, sessions, add)
            _compare_modseqs(fresh, sessions, add)
            _compare_message_ids(fresh, sessions, add)
            _check_gone(fresh, sessions, add)
            _check_recent(fresh, sessions, add)
        fresh_inbox = snapshots.get(INBOX)
        if fresh_inbox is not None:
            seen: dict[str, int] = {}
            for uid, message_id in sorted(fresh_inbox.message_ids.items()):
                if message_id in seen:
                    add("bodies", f"INBOX holds {message_id} twice: UIDs {seen[message_id]}, {uid}")
                seen[message_id] = uid
        return cls(counts, examples, answers, commands)

    @property
    def ok(self) -> bool:
        return not self.failing()

    def failing(self) -> list[str]:
        return [c for c in CATEGORIES if self.counts.get(c)]

    def summary(self) -> str:
        lines = [
            "answers: " + ", ".join(f"{k} {v}" for k, v in sorted(self.answers.items())),
            "commands: " + ", ".join(f"{k} {v}" for k, v in self.commands.most_common()),
        ]
        for category, description in [*CATEGORIES.items(), (NOTES, "not failures")]:
            number = self.counts.get(category, 0)
            lines.append(f"{category}: {number} ({description})")
            lines.extend(f"    {text}" for text in self.examples.get(category, []))
        return "\n".join(lines)


_Add = Callable[[str, str], None]


def _compare_views(fresh: Report, sessions: Sequence[Report], add: _Add) -> None:
    want = fresh.final_view
    if want is None:
        return
    for report in sessions:
        got = report.final_view
        if got is None:
            continue  # the session died; "fatal" says so
        if got == want:
            continue
        differences = []
        for number, (mine, theirs) in enumerate(zip(got, want, strict=False), 1):
            if mine != theirs:
                differences.append(f"message {number}: session {mine}, fresh {theirs}")
        if len(got) != len(want):
            differences.append(f"{len(got)} messages, fresh EXAMINE {len(want)}")
        extra = sorted({u for u, _ in got} - {u for u, _ in want}, key=lambda u: u or 0)
        missing = sorted({u for u, _ in want} - {u for u, _ in got}, key=lambda u: u or 0)
        add(
            "final_view",
            f"[{report.who}] {report.mailbox}: {len(differences)} differences; UIDs only here "
            f"{extra[:10]}, only in the fresh view {missing[:10]}; " + "; ".join(differences[:4]),
        )


def _compare_modseqs(fresh: Report, sessions: Sequence[Report], add: _Add) -> None:
    final = fresh.modseqs
    present = {uid for uid, _ in fresh.final_view or ()}
    for report in sessions:
        lower = [
            (uid, seen, final[uid])
            for uid, seen in report.modseqs.items()
            if uid in present and uid in final and final[uid] < seen
        ]
        if lower:
            uid, seen, now = lower[0]
            add(
                "modseq",
                f"[{report.who}] {len(lower)} UIDs now have a lower MODSEQ than it saw, e.g. "
                f"UID {uid}: saw {seen}, fresh session {now}",
            )
        if report.max_modseq > fresh.highestmodseq:
            add(
                "modseq",
                f"[{report.who}] saw MODSEQ {report.max_modseq}, fresh HIGHESTMODSEQ "
                f"{fresh.highestmodseq}",
            )


def _compare_message_ids(fresh: Report, sessions: Sequence[Report], add: _Add) -> None:
    owners: dict[int, tuple[str, str]] = {u: (m, fresh.who) for u, m in fresh.message_ids.items()}
    for report in sessions:
        for uid, message_id in report.message_ids.items():
            first = owners.setdefault(uid, (message_id, report.who))
            if first[0] != message_id:
                add(
                    "bodies",
                    f"{report.mailbox} UID {uid} is {message_id} for {report.who}, "
                    f"{first[0]} for {first[1]}",
                )


def _check_gone(fresh: Report, sessions: Sequence[Report], add: _Add) -> None:
    present = {uid for uid, _ in fresh.final_view or ()}
    for report in sessions:
        for category, context, uids in report.must_be_gone:
            if uids and all(uid in present for uid in uids):
                add(
                    category,
                    f"[{report.who}] {context}: but UIDs {uids} are still in {report.mailbox}",
                )


def _check_recent(fresh: Report, sessions: Sequence[Report], add: _Add) -> None:
    holders: dict[int, list[str]] = {}
    for report in [*sessions, fresh]:
        for uid in report.recent:
            holders.setdefault(uid, []).append(report.who)
    for uid, who in sorted(holders.items()):
        if len(who) > 1:
            add("recent", f"{fresh.mailbox} UID {uid} is \\Recent in {len(who)} sessions: {who}")
    alive = [r for r in sessions if r.final_view is not None]
    if not alive:
        return
    never = [uid for uid, _ in fresh.final_view or () if uid is not None and uid not in holders]
    if never:
        add(
            "recent",
            f"{len(never)} of {len(fresh.final_view or ())} messages in {fresh.mailbox} were "
            f"\\Recent in no session, e.g. UIDs {never[:8]}",
        )


def vm_rss_kib(pid: int) -> int:
    """The resident set size of process `pid` (``VmRSS`` in /proc/PID/status), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")
