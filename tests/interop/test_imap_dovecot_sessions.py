"""
Issue 12's acceptance cases against Dovecot: sessions sharing one mailbox (a phone, a laptop and
the webmail on one INBOX), and the protocol gaps the issue lists, each as one story run the same
way against ``twistd -n strata`` and a real Dovecot.

A story is a script of steps: a command in one of several sessions of one user (A, B, C...,
each its own connection, opened at its first command), or new mail arriving.  Both servers run
it from an empty account and their answers are compared step by step, after normalising only
what may legitimately differ; every rule is in `SessionView` and says why, citing the RFC.  A
failing story names the steps that differ and shows both servers' raw answers to them; the two
whole transcripts are written into the test's tmp_path (``<story>-strata.txt``, ``-dovecot``).

Each story has its own user, so they never meet, and the two servers are this module's own:
small accounts with a few messages (the corpus comparison is test_imap_dovecot_diff.py).
Messages arrive by APPEND with one INTERNALDATE, the same octets on both sides, except in the
\\Recent story, where new mail comes the way it does in production: through Strata's SMTP
intake, and as a Maildir file for Dovecot.

Where Dovecot's own answer is questionable it is not held up as the model; each such place is
said where it is met:

- A session whose mailbox was deleted and created again before its next command is served
  the deleted messages by Dovecot, then ``* NO Internal error`` or a BYE, depending on timing
  (its Maildir index of the new folder looks corrupt to it).  Those are the ghosts issue 12 is
  about; Strata must answer as Dovecot does when no new mailbox took the name: BYE (RFC 2180
  §3.3).
- Dovecot advertises I18NLEVEL=1 (RFC 5255 §4), so it sorts subjects with i;unicode-casemap
  ("émile" next to "Emma"); Strata does not, so RFC 5256's i;ascii-casemap applies to it and
  non-ASCII octets sort after ASCII, by value.  That part is checked against the collation.
- COPY of a message another session expunged: Dovecot answers NO [EXPUNGEISSUED] (RFC 2180
  §4.4.1 allows it); issue 12 wants Strata to copy the rest and answer OK, so COPY is left out.
- With LIST (SUBSCRIBED ...) RETURN (CHILDREN), Dovecot calls a mailbox \\HasChildren whose
  only child was deleted and is still subscribed; that case is left out of the script.
- A FETCH of a message another session expunged sets \\Seen on it in Dovecot (its answer
  says FLAGS (\\Deleted \\Seen)); what is gone is not compared (see `SessionView`).
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
from tests.peers.imapscript import IMAPScript, Literal, Reply, Value, parse_response
from tests.peers.net import free_port, wait_for_port
from tests.peers.strata import StrataProcess

pytestmark = [pytest.mark.interop, pytest.mark.slow]

DOMAIN = "example.test"
PASSWORD = "sessions-pw!"  # noqa: S105 - a test user's
STORIES = (
    "recreate", "ghost", "expunge", "recent", "lsub", "listext", "sort", "from", "thread", "move",
    "caps",
)  # fmt: skip
INTERNALDATE = "02-Mar-2026 10:00:00 +0000"


def user(story: str) -> str:
    return f"{story}@{DOMAIN}"


def message(*fields: tuple[str, str], body: str = "A small message.") -> bytes:
    """A message with `fields` (From, To and Date filled in when absent), CRLF line ends."""
    names = {name.lower() for name, _ in fields}
    header = list(fields)
    for name, value in (
        ("From", "Sender <sender@outside.test>"),
        ("To", "someone@example.test"),
        ("Date", "Mon, 02 Mar 2026 10:00:00 +0000"),
    ):
        if name.lower() not in names:
            header.append((name, value))
    text = "".join(f"{name}: {value}\r\n" for name, value in header) + "\r\n" + body + "\r\n"
    return text.encode("utf-8")


# -- stories --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """
    One command in session `session`.  `gone`: the sequence numbers of messages another session
    has expunged and this one has not been told of yet, among those the command is about
    (`SessionView` explains what may differ for them).
    """

    session: str
    pieces: tuple[str | Literal, ...]
    gone: frozenset[int] = frozenset()
    quiet: bool = False  # run for its effect; its answer is not compared (see `prime`)

    @property
    def text(self) -> str:
        return "".join(f"{{{len(p.data)}}}" if isinstance(p, Literal) else p for p in self.pieces)


@dataclass(frozen=True)
class Deliver:
    """New mail for the story's user: SMTP intake for Strata, a Maildir file for Dovecot."""

    raw: bytes

    @property
    def text(self) -> str:
        subject = re.search(rb"^Subject: (.*)$", self.raw, re.MULTILINE)
        return f"(new mail: {subject.group(1).decode().strip() if subject else '?'})"


Step = Command | Deliver


def cmd(
    session: str, *pieces: str | Literal, gone: Sequence[int] = (), quiet: bool = False
) -> Command:
    return Command(session, tuple(pieces), frozenset(gone), quiet)


def append(session: str, mailbox: str, raw: bytes) -> Command:
    """APPEND with a fixed INTERNALDATE, so both servers hold the same message."""
    return cmd(session, f'APPEND {mailbox} "{INTERNALDATE}" ', Literal(raw))


def prime(mailbox: str) -> list[Step]:
    """
    Session P opens `mailbox` once and closes it, so that no message in it is \\Recent for the
    story's sessions (RFC 3501 §2.3.2: only the first session to see a new message sees it as
    recent).  \\Recent is the "recent" story's subject, and only its: the others stay clear
    of it, so each fails for its own reason.  P's answers are not compared.
    """
    return [cmd("P", f"SELECT {mailbox}", quiet=True), cmd("P", "CLOSE", quiet=True)]


# -- the two servers ------------------------------------------------------------------------------


@dataclass
class Side:
    """One server under comparison: its name, its IMAP port, and how new mail reaches it."""

    name: str
    port: int
    deliver: Callable[[str, bytes], None]

    def connect(self, address: str) -> IMAPScript:
        client = IMAPScript("127.0.0.1", self.port, timeout=30)
        client.login(address, PASSWORD)
        return client


@dataclass
class Pair:
    strata: Side
    dovecot: Side

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.strata, self.dovecot


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """Strata (twistd, IMAP on) and Dovecot, each with one empty account per story."""
    if not dovecot_installed():  # a missing peer is a failure, never a skip (DESIGN, Testing)
        pytest.fail(f"Dovecot is required for this test: {INSTALL_HINT}", pytrace=False)
    addresses = [user(story) for story in STORIES]
    with dovecot_factory_context() as factory:
        root = factory.base / "strata"
        imap_port = free_port()
        strata = StrataProcess(root, extra_config=f'[imap]\nlisten = ["127.0.0.1:{imap_port}"]\n')
        strata.cli(
            "domain", "add", DOMAIN, "--relay", "127.0.0.1:1", "--mode", "both", "--no-monitor",
            "--portal", "always",
        )  # fmt: skip
        passwd = root / "users.passwd"
        passwd.write_text("".join(f"{a}:{sha512_crypt(PASSWORD)}\n" for a in addresses))
        strata.cli("user", "import", DOMAIN, str(passwd))
        try:
            strata.start()
            assert wait_for_port(imap_port, 30), strata.log_text()[-3000:]
            dovecot = factory.start({address: PASSWORD for address in addresses})

            def through_intake(address: str, raw: bytes) -> None:
                with smtplib.SMTP("127.0.0.1", strata.port, timeout=60) as smtp:
                    smtp.sendmail("sender@outside.test", [address], raw)

            yield Pair(
                Side("strata", imap_port, through_intake),
                Side("dovecot", dovecot.port, _maildir(dovecot)),
            )
        finally:
            print(f"--- strata log tail ---\n{strata.log_text()[-3000:]}")
            strata.stop()


def _maildir(dovecot: DovecotInstance) -> Callable[[str, bytes], None]:
    def deliver(address: str, raw: bytes) -> None:
        dovecot.deliver(address, raw)

    return deliver


# -- normalisation --------------------------------------------------------------------------------

_CODE = re.compile(rb"^\S+ (OK|NO|BAD|BYE|PREAUTH)(?: \[([^\]]*)\])?", re.IGNORECASE)
_VIEW_UPDATES = ("EXISTS", "EXPUNGE", "RECENT")

# RFC 5530 §3 codes refine a NO or BAD for a human or a smarter client; a server may answer
# NO without them (Strata says NO [NONEXISTENT] where Dovecot says NO), and CLIENTBUG may ride
# on any OK.  What the status itself says is compared.
_REFINING_CODES = frozenset(
    "UNAVAILABLE AUTHENTICATIONFAILED AUTHORIZATIONFAILED EXPIRED PRIVACYREQUIRED CONTACTADMIN "
    "NOPERM INUSE EXPUNGEISSUED CORRUPTION SERVERBUG CLIENTBUG CANNOT LIMIT OVERQUOTA "
    "ALREADYEXISTS NONEXISTENT".split()
)
# RFC 6154 §2: the special-use attributes "MAY" be returned by LIST; Dovecot returns them to a
# plain LIST but not to LIST (SUBSCRIBED).  Compared only where RETURN (SPECIAL-USE) asks.
_SPECIAL_USE = frozenset(r"\all \archive \drafts \flagged \junk \sent \trash".split())
# RFC 5258 §4: "a server MAY provide [\HasChildren, \HasNoChildren] even if the [CHILDREN
# return] option is not specified".  Compared only where RETURN (CHILDREN) asks.
_CHILDREN = frozenset((r"\haschildren", r"\hasnochildren"))
# RFC 3501 §7.2.2: \Marked and \Unmarked are given "if the server can determine" them.
_MARKS = frozenset((r"\marked", r"\unmarked"))
EITHER = "EXPUNGEISSUED or nothing missing"


def plain(value: Value) -> Any:
    """
    A parsed value with atoms and strings alike as str (RFC 3501 §4.3: a quoted string and a
    literal are the same string, and an astring, like a mailbox name, may be an atom).
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, list):
        return [plain(v) for v in value]
    return None if value is None else str(value)


class UidValidities:
    """
    Each server numbers its own mailboxes (RFC 3501 §2.3.1.1): a UIDVALIDITY value is shown as
    the mailbox name and the how-manieth value it had, so "a new UIDVALIDITY after DELETE and
    CREATE" compares as ``proj#1`` → ``proj#2`` on both sides.
    """

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, str]] = {}

    def label(self, mailbox: str, value: str) -> str:
        name = "INBOX" if mailbox.upper() == "INBOX" else mailbox
        values = self._seen.setdefault(name, {})
        return values.setdefault(value, f"{name}#{len(values) + 1}")


def _uid_set(text: str) -> list[int]:
    """A uid-set ("1,4:5") as the UIDs in its order: RFC 4315 §3 pairs them by position."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        first, last = int(low), int(high or low)
        step = 1 if last >= first else -1
        out += range(first, last + step, step)
    return out


def _words(step: Command) -> list[str]:
    return step.text.split()


def _verb(step: Command) -> tuple[bool, str]:
    """(whether it is a UID command, the command name)."""
    words = [w.upper() for w in _words(step)]
    if words[0] == "UID" and len(words) > 1:
        return True, words[1]
    return False, words[0]


def _target(step: Command) -> str:
    """The mailbox a command names last (SELECT x, APPEND x ..., COPY set x, STATUS x (...))."""
    uid, verb = _verb(step)
    words = _words(step)[1 if not uid else 2 :]
    if verb in ("COPY", "MOVE"):
        return words[-1]
    return words[0] if words else ""


@dataclass
class SessionView:
    """
    What one session was told about its selected mailbox, and how its answers are normalised.

    What is compared, and what is not (only what may legitimately differ is left out):

    - The tagged reply: its status and response code; the text after them is the server's own
      (RFC 3501 §7.1).  RFC 5530 codes that only refine a NO or BAD are dropped (see
      ``_REFINING_CODES``); READ-WRITE and READ-ONLY are kept, CAPABILITY loses its list.
    - Untagged OK without a code: "information-only" (RFC 3501 §7.1.1), dropped; the text of
      NO, BAD and BYE likewise.  ``OK [HIGHESTMODSEQ]``, ``OK [NOMODSEQ]``: server-specific
      numbers, sent by Strata to every SELECT and by Dovecot only once CONDSTORE is enabled
      (RFC 7162 §3.1.2); ``OK [CLOSED]``: a QRESYNC response (RFC 7162 §3.2.11) Dovecot sends
      on every re-SELECT, and Strata does not offer QRESYNC.  CAPABILITY data: each server has
      its own list (RFC 3501 §7.2.1); the "caps" story compares what the stories need.
    - UIDVALIDITY values: see `UidValidities`.
    - EXISTS, EXPUNGE and RECENT outside SELECT/EXAMINE: a run of them is compared as what it
      does to the session's view: which messages went (by their numbers before the run) and how
      many are left.  RFC 3501 §7.4.1 lets a server send the EXPUNGEs of one set in any order
      ("* 3 EXPUNGE * 2 EXPUNGE" or "* 2 EXPUNGE * 2 EXPUNGE"), with or without an EXISTS
      after them, and the EXISTS for new messages may come before or after.  A RECENT is
      compared where new messages arrived and none went, as the new count (an unchanged count
      need not be repeated, RFC 3501 §7.3.2); next to EXPUNGEs the RFC gives it no rule
      (Dovecot sends "* 3 RECENT" after another session's expunge, and none after a MOVE into
      the selected mailbox even though the moved message is \\Recent for it).
    - SELECT and EXAMINE data in any order (RFC 3501 §6.3.1 sets none); LIST and LSUB
      responses in any order (§6.3.8, §6.3.9 set none); SEARCH numbers as a set (§7.2.5).
    - FETCH items as a dict (RFC 3501 §7.4.2 sets no order), FLAGS as a set (§2.3.2), without
      MODSEQ (each server's own numbers) and without a UID nobody asked for (RFC 3501 §7.4.2
      allows unsolicited data; Strata adds the UID to flag changes of other sessions).
    - Mailbox attributes: case-insensitive; \\NonExistent implies \\Noselect (RFC 5258 §3.4);
      see ``_SPECIAL_USE``, ``_CHILDREN`` and ``_MARKS`` for what is compared only when asked.
      LSUB's attributes "may not reflect the actual attribute status" (RFC 5258 §3.1), except
      \\Noselect, which LSUB gives a meaning of its own (RFC 3501 §6.3.9): only it is compared.
    - Messages another session expunged and this one was not told of yet (`Command.gone`):
      RFC 2180 §4.1 lets a server keep serving them (§4.1.1; Dovecot answers FLAGS from its
      index), answer NIL for them (§4.1.3; Dovecot does for bodies) or leave them out (Strata
      does), and §4.3 lets SEARCH match them or not: FETCH responses and SEARCH/SORT numbers
      for them are dropped.  ``OK [EXPUNGEISSUED]`` (RFC 5530 §3: "the client may want to
      issue NOOP soon") is advice, compared as "EXPUNGEISSUED or nothing missing": a FETCH
      that left out a message it was asked for must say EXPUNGEISSUED (RFC 9051 §7.1), one
      that answered for all may; a STORE, SEARCH or SORT answer is complete either way.
    """

    uidvalidities: UidValidities
    count: int = 0
    recent: int = 0
    closed: bool = False
    log: list[str] = field(default_factory=list)

    # -- one reply ---------------------------------------------------------------------------------

    def normalize(self, step: Command, reply: Reply) -> tuple[Any, list[Any]]:
        uid, verb = _verb(step)
        select = verb in ("SELECT", "EXAMINE")
        gone = set(step.gone)
        answered: set[int] = set()
        out: list[Any] = []
        run: list[tuple[str, int]] = []
        for raw in reply.untagged:
            values = parse_response(raw)
            numbered = len(values) > 2 and str(values[1]).isdigit()
            number = int(str(values[1])) if numbered else 0
            word = str(values[2]).upper() if numbered else ""
            if word in _VIEW_UPDATES:
                if select:
                    out.append((word, number))
                    self._select_data(word, number)
                else:
                    run.append((word, number))
                continue
            if run:
                out += self._view_update(run)
                if any(kind == "EXPUNGE" for kind, _ in run):
                    gone.clear()  # later numbers are after the EXPUNGE: no longer the gone ones
                run = []
            if word == "FETCH":
                if number in gone:
                    answered.add(number)
                    continue
                out.append(self._fetch(step, uid, values))
                continue
            item = self._untagged(step, raw, values, gone)
            if item is not None:
                out.append(item)
        if run:
            out += self._view_update(run)
        if select or verb in ("LIST", "LSUB"):
            out.sort(key=repr)
        return self._tagged(step, reply, verb, answered), out

    def _tagged(self, step: Command, reply: Reply, verb: str, answered: set[int]) -> Any:
        if reply.closed:
            self.closed = True
            return ("closed",)
        match = _CODE.match(reply.tagged)
        assert match is not None, reply.tagged
        status = match.group(1).decode().upper()
        code = self._code(step, (match.group(2) or b"").decode("utf-8", "replace"))
        if step.gone and code in ("", "EXPUNGEISSUED"):
            # See the class docstring: EXPUNGEISSUED is advice, but a FETCH that left a message
            # out without it has not said why.
            if code or verb != "FETCH" or step.gone <= answered:
                code = EITHER
        elif code.split(" ")[0] in _REFINING_CODES and (status != "OK" or code == "CLIENTBUG"):
            code = ""
        if verb in ("SELECT", "EXAMINE") and status != "OK":
            self.count = self.recent = 0
        return (status, code)

    def _code(self, step: Command, code: str) -> str:
        words = code.split()
        if not words:
            return ""
        name = words[0].upper()
        if name in ("READ-WRITE", "READ-ONLY", "CAPABILITY"):
            return name
        if name in ("COPYUID", "APPENDUID") and len(words) > 2:
            label = self.uidvalidities.label(_target(step), words[1])
            sets = [str(_uid_set(w)) for w in words[2:]]
            return " ".join([name, label, *sets])
        if name == "UIDVALIDITY" and len(words) == 2:
            return f"UIDVALIDITY {self.uidvalidities.label(_target(step), words[1])}"
        if name == "PERMANENTFLAGS":
            flags = re.findall(r"[^\s()]+", code[len(name) :])
            return "PERMANENTFLAGS " + " ".join(sorted(f.upper() for f in flags))
        return " ".join([name, *words[1:]])

    # -- untagged data -----------------------------------------------------------------------------

    def _select_data(self, word: str, number: int) -> None:
        if word == "EXISTS":
            self.count = number
        elif word == "RECENT":
            self.recent = number

    def _view_update(self, run: list[tuple[str, int]]) -> list[Any]:
        """A run of EXISTS/EXPUNGE/RECENT as (messages gone, messages left, recent); see above."""
        removed: list[int] = []  # positions before the run
        count = self.count
        recent: int | None = None
        for kind, number in run:
            if kind == "EXPUNGE":
                original = number
                for earlier in sorted(removed):
                    if earlier <= original:
                        original += 1
                removed.append(original)
                count -= 1
            elif kind == "EXISTS":
                count = number
            else:
                recent = number
        grew = any(kind == "EXISTS" for kind, _ in run) and not removed
        new_recent = (recent if recent is not None else self.recent) if grew else self.recent
        changed = removed or count != self.count or new_recent != self.recent
        self.count, self.recent = count, new_recent
        if not changed:
            return []
        return [("VIEW", "gone", sorted(removed), "left", count, "recent", new_recent)]

    def _fetch(self, step: Command, uid: bool, values: list[Value]) -> Any:
        pairs = values[3] if len(values) > 3 and isinstance(values[3], list) else []
        items = {str(pairs[i]).upper(): plain(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)}
        items.pop("MODSEQ", None)
        asked = uid or re.search(r"\bUID\b", step.text.upper().split(" ", 2)[-1]) is not None
        if not asked or _verb(step)[1] not in ("FETCH", "STORE"):
            items.pop("UID", None)
        flags = items.get("FLAGS")
        if isinstance(flags, list):
            items["FLAGS"] = sorted(str(f).upper() for f in flags)
        return ("FETCH", int(str(values[1])), dict(sorted(items.items())))

    def _untagged(self, step: Command, raw: bytes, values: list[Value], gone: set[int]) -> Any:
        word = str(values[1]).upper() if len(values) > 1 else ""
        if word in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
            match = _CODE.match(raw)
            code = self._code(step, (match.group(2) or b"").decode()) if match else ""
            if word != "OK":
                return (word,)
            if not code or code.split(" ")[0] in ("HIGHESTMODSEQ", "NOMODSEQ", "CLOSED"):
                return None
            return ("OK", code)
        if word == "CAPABILITY":
            return None
        if word in ("SEARCH", "SORT"):
            numbers = [int(str(v)) for v in values[2:] if str(v).isdigit()]
            numbers = [n for n in numbers if n not in gone]
            return (word, sorted(numbers) if word == "SEARCH" else numbers)
        if word == "FLAGS" and isinstance(values[2], list):
            return ("FLAGS", sorted(str(f).upper() for f in values[2]))
        if word in ("LIST", "LSUB"):
            return self._listing(step, word, values)
        if word == "STATUS":
            return self._status(values)
        return tuple(plain(values[1:]))

    def _listing(self, step: Command, word: str, values: list[Value]) -> Any:
        attributes = {str(a).lower() for a in values[2]} if isinstance(values[2], list) else set()
        if r"\nonexistent" in attributes:
            attributes.add(r"\noselect")
        returns = step.text.upper().partition(" RETURN ")[2]
        if word == "LSUB":
            attributes &= {r"\noselect"}
        else:
            attributes -= _MARKS
            if "CHILDREN" not in returns:
                attributes -= _CHILDREN
            if "SPECIAL-USE" not in returns:
                attributes -= _SPECIAL_USE
        name = plain(values[4]) if len(values) > 4 else None
        if isinstance(name, str) and name.upper() == "INBOX":
            name = "INBOX"  # RFC 3501 §5.1: INBOX in any case is INBOX
        extended = plain(values[5:])
        return (word, sorted(attributes), plain(values[3]), name, extended)

    def _status(self, values: list[Value]) -> Any:
        name = plain(values[2])
        pairs = values[3] if len(values) > 3 and isinstance(values[3], list) else []
        items = {str(pairs[i]).upper(): str(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)}
        items.pop("HIGHESTMODSEQ", None)
        if "UIDVALIDITY" in items:
            items["UIDVALIDITY"] = self.uidvalidities.label(str(name), items["UIDVALIDITY"])
        return ("STATUS", "INBOX" if str(name).upper() == "INBOX" else name, items)


# -- running a story ------------------------------------------------------------------------------


@dataclass
class Answer:
    """One step as one server answered it: the raw reply and its normalised value."""

    step: Step
    reply: Reply | None
    value: Any

    def show(self) -> str:
        if self.reply is None:
            return "    (delivered)"
        lines = [*self.reply.untagged, self.reply.tagged or b"(connection closed)"]
        if self.reply.closed and self.reply.tagged:
            lines.append(b"(connection closed)")
        shown = []
        for line in lines:
            text = line.decode("utf-8", "replace")
            shown.append("    " + (text if len(text) < 400 else text[:400] + " ..."))
        return "\n".join(shown)


def play(side: Side, story: str, script: Sequence[Step]) -> list[Answer]:
    """Run `script` for the story's user on one server; every step's answer."""
    address = user(story)
    uidvalidities = UidValidities()
    sessions: dict[str, tuple[IMAPScript, SessionView]] = {}
    answers: list[Answer] = []
    try:
        for step in script:
            if isinstance(step, Deliver):
                side.deliver(address, step.raw)
                answers.append(Answer(step, None, ("delivered",)))
                continue
            if step.session not in sessions:
                sessions[step.session] = (side.connect(address), SessionView(uidvalidities))
            client, view = sessions[step.session]
            if view.closed:
                reply = Reply(command=step.text.encode(), closed=True)
            else:
                reply = client.run(*step.pieces, allow_close=True)
            value = view.normalize(step, reply)
            answers.append(Answer(step, reply, ("not compared",) if step.quiet else value))
    finally:
        for client, view in sessions.values():
            if view.closed:
                client.close()
            else:
                client.logout()
    return answers


def transcript(answers: Sequence[Answer]) -> str:
    out = []
    for number, answer in enumerate(answers, 1):
        session = answer.step.session if isinstance(answer.step, Command) else "-"
        out.append(f"{number:3} {session}> {answer.step.text}\n{answer.show()}")
    return "\n".join(out) + "\n"


def run_story(
    pair: Pair,
    story: str,
    script: Sequence[Step],
    out: Path,
    *,
    like: dict[int, int] | None = None,
) -> tuple[list[Answer], list[Answer]]:
    """
    Run `script` on both servers and fail, showing both answers, where they differ.  `like`
    maps a step to another whose Dovecot answer it must match instead of its own (for the
    steps where Dovecot's own answer is not the model; each use says why).
    """
    strata, dovecot = (play(side, story, script) for side in pair.sides)
    (out / f"{story}-strata.txt").write_text(transcript(strata))
    (out / f"{story}-dovecot.txt").write_text(transcript(dovecot))
    differences = []
    for index, a in enumerate(strata):
        instead = (like or {}).get(index, index)
        model = dovecot[instead]
        if a.value != model.value:
            note = "" if instead == index else f" (its answer to step {instead + 1})"
            differences.append(
                f"step {index + 1}, {a.step.text!r} in session "
                f"{a.step.session if isinstance(a.step, Command) else '-'}:\n"
                f"  strata:\n{a.show()}\n  dovecot{note}:\n{model.show()}\n"
                f"  normalised strata:  {a.value!r}\n  normalised dovecot: {model.value!r}"
            )
    assert not differences, (
        f"{len(differences)} of {len(script)} steps differ from Dovecot (transcripts in {out}):\n"
        + "\n".join(differences)
    )
    return strata, dovecot


def _value(answers: Sequence[Answer], command: str, session: str = "A") -> Any:
    """The normalised answer to the last `command` in `session`."""
    for answer in reversed(answers):
        if isinstance(answer.step, Command):
            if (answer.step.session, answer.step.text) == (session, command):
                return answer.value
    raise AssertionError(f"no step {command!r} in session {session}")


# -- 1. DELETE, CREATE and SELECT again -----------------------------------------------------------


def _proj(n: int) -> bytes:
    return message(("Subject", f"proj {n}"), ("Message-ID", f"<proj-{n}@outside.test>"))


def test_delete_create_reselect_matches_dovecot(pair: Pair, tmp_path: Path) -> None:
    """
    Issue 12's ghosts: a folder deleted and created again is empty, under a new UIDVALIDITY,
    on the same connection.  Session B had the old folder selected when it went: RFC 2180 §3.3
    lets the server end it with BYE, and both do.
    """
    script: list[Step] = [
        cmd("A", "CREATE proj"),
        *(append("A", "proj", _proj(n)) for n in (1, 2, 3)),
        *prime("proj"),
        cmd("B", "SELECT proj"),
        cmd("B", "FETCH 1:* (UID)"),
        cmd("A", "STATUS proj (MESSAGES UIDNEXT UIDVALIDITY)"),
        cmd("A", "DELETE proj"),
        cmd("B", "NOOP"),
        cmd("B", "FETCH 1 (FLAGS)"),
        cmd("A", "STATUS proj (MESSAGES)"),
        cmd("A", "SELECT proj"),
        cmd("A", "CREATE proj"),
        *(append("A", "proj", _proj(n)) for n in (4, 5)),
        cmd("A", "STATUS proj (MESSAGES UIDNEXT UIDVALIDITY)"),
        *prime("proj"),
        cmd("A", "SELECT proj"),
        cmd("A", "UID SEARCH ALL"),
        cmd("A", "SEARCH ALL"),
        cmd("A", "FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (Subject Message-ID)])"),
        cmd("A", "UID FETCH 1:* (UID RFC822.SIZE)"),
        cmd("A", "FETCH 2 (BODY[TEXT])"),
        cmd("A", "FETCH 3 (FLAGS)"),
        cmd("A", "UID FETCH 3 (FLAGS)"),
        cmd("A", "NOOP"),
    ]
    strata, _ = run_story(pair, "recreate", script, tmp_path)
    # The comparison holds the labels; this is what they must say (a test that cannot pass by
    # both servers being wrong the same way).
    assert ("OK", "UIDVALIDITY proj#2") in _value(strata, "SELECT proj")[1]


def test_session_on_a_deleted_and_recreated_mailbox_ends_like_dovecots(
    pair: Pair, tmp_path: Path
) -> None:
    """
    Session C has ``proj`` selected; another session deletes it and creates it again before C's
    next command.  Dovecot's answer to C depends on timing: seen are ``* NO Internal error
    occurred`` to NOOP with the deleted messages still served to FETCH (its log: "duplicate
    transaction log sequence" in the new folder's index), or a FETCH answered from the deleted
    folder and then ``* BYE FETCH failed: Mailbox was deleted under us`` ("indexid changed").
    Either way C is shown ghosts, the bug of issue 12.  The model for Strata is Dovecot's answer
    when the folder was only deleted (session B): BYE, and the connection ends (RFC 2180 §3.3).
    The new folder is empty for everyone else.
    """
    script: list[Step] = [
        cmd("A", "CREATE proj"),
        *(append("A", "proj", _proj(n)) for n in (1, 2, 3)),
        *prime("proj"),
        cmd("B", "SELECT proj"),
        cmd("C", "SELECT proj"),
        cmd("A", "DELETE proj"),
        cmd("B", "NOOP"),  # step 10: deleted, not yet created again
        cmd("B", "FETCH 1 (FLAGS)"),  # step 11
        cmd("A", "CREATE proj"),
        *(append("A", "proj", _proj(n)) for n in (4, 5)),
        cmd("C", "NOOP"),  # step 15: deleted and created again
        cmd("C", "FETCH 1 (FLAGS)"),  # step 16
        *prime("proj"),
        cmd("E", "EXAMINE proj"),
        cmd("E", "FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])"),
    ]
    run_story(pair, "ghost", script, tmp_path, like={14: 9, 15: 10})


# -- 2. another session expunges during a FETCH ---------------------------------------------------


def test_expunge_by_another_session_matches_dovecot(pair: Pair, tmp_path: Path) -> None:
    """
    B expunges messages 2 and 3 while A has them; A's commands never fail for it, and A hears
    of the expunge at its next UID command or NOOP (RFC 3501 §7.4.1: not during FETCH, STORE
    or SEARCH).
    """
    gone = (2, 3)
    script: list[Step] = [
        *(
            append("A", "INBOX", message(("Subject", f"m{n}"), body=f"body of m{n}"))
            for n in range(1, 6)
        ),
        *prime("INBOX"),
        cmd("A", "SELECT INBOX"),
        cmd("B", "SELECT INBOX"),
        cmd("B", "STORE 2:3 +FLAGS.SILENT (\\Deleted)"),
        cmd("B", "EXPUNGE"),
        cmd("A", "FETCH 1:* (FLAGS)", gone=gone),
        cmd("A", "FETCH 2 (BODY[TEXT])", gone=[2]),
        cmd("A", "FETCH 1:4 (BODY.PEEK[HEADER.FIELDS (Subject)])", gone=gone),
        cmd("A", "FETCH 4 (BODY.PEEK[TEXT] RFC822.SIZE)"),
        cmd("A", "FETCH 3 (RFC822.SIZE ENVELOPE)", gone=[3]),
        cmd("A", "SEARCH ALL", gone=gone),
        cmd("A", "SEARCH SUBJECT m2", gone=gone),
        cmd("A", "SEARCH BODY body", gone=gone),
        cmd("A", "STORE 1:4 +FLAGS (\\Flagged)", gone=gone),
        cmd("A", "STORE 3 +FLAGS.SILENT (\\Answered)", gone=[3]),
        cmd("A", "FETCH 5 (FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])"),
        cmd("A", "UID FETCH 1:* (FLAGS)", gone=gone),
        cmd("A", "NOOP"),
        cmd("A", "FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])"),
        cmd("A", "UID FETCH 2:3 (BODY.PEEK[])"),
        cmd("B", "NOOP"),
        cmd("B", "FETCH 1:* (UID FLAGS)"),
    ]
    run_story(pair, "expunge", script, tmp_path)


# -- 3. \Recent -----------------------------------------------------------------------------------


def _new(n: int) -> bytes:
    return message(("Subject", f"new {n}"), ("Message-ID", f"<new-{n}@outside.test>"))


def test_recent_matches_dovecot(pair: Pair, tmp_path: Path) -> None:
    """
    \\Recent as RFC 3501 §2.3.2 has it: new mail is recent for exactly one read-write session,
    the first that is told of it; a read-only session (EXAMINE) sees it as recent without taking
    it (§6.3.2); STATUS counts the recent messages no session has taken; SEARCH RECENT, NEW and
    OLD follow the session's own view (§6.4.4).  The mail arrives through Strata's intake.
    """
    script: list[Step] = [
        Deliver(_new(1)),
        Deliver(_new(2)),
        cmd("A", "STATUS INBOX (MESSAGES RECENT UNSEEN)"),
        cmd("C", "EXAMINE INBOX"),
        cmd("C", "FETCH 1:* (FLAGS)"),
        cmd("C", "SEARCH RECENT"),
        cmd("A", "SELECT INBOX"),
        cmd("A", "FETCH 1:* (FLAGS)"),
        cmd("A", "SEARCH RECENT"),
        cmd("A", "SEARCH NEW"),
        cmd("A", "SEARCH OLD"),
        cmd("A", "FETCH 1 (BODY[TEXT])"),
        cmd("A", "SEARCH NEW"),
        cmd("A", "SEARCH RECENT SEEN"),
        cmd("B", "STATUS INBOX (MESSAGES RECENT UNSEEN)"),
        cmd("B", "SELECT INBOX"),
        cmd("B", "FETCH 1:* (FLAGS)"),
        cmd("B", "SEARCH RECENT"),
        cmd("B", "SEARCH OLD"),
        cmd("B", "SEARCH NEW"),
        cmd("C", "NOOP"),
        cmd("C", "FETCH 1:* (FLAGS)"),
        Deliver(_new(3)),
        cmd("B", "NOOP"),
        cmd("A", "NOOP"),
        cmd("C", "NOOP"),
        cmd("B", "FETCH 3 (FLAGS)"),
        cmd("A", "FETCH 3 (FLAGS)"),
        cmd("C", "FETCH 3 (FLAGS)"),
        cmd("B", "SEARCH RECENT"),
        cmd("A", "SEARCH RECENT"),
        cmd("A", "SEARCH NOT RECENT"),
        cmd("D", "STATUS INBOX (MESSAGES RECENT)"),
        cmd("B", "CLOSE"),
        cmd("B", "STATUS INBOX (RECENT)"),
        cmd("B", "EXAMINE INBOX"),
        cmd("A", "LOGOUT"),
        cmd("D", "SELECT INBOX"),
        cmd("D", "SEARCH RECENT"),
    ]
    run_story(pair, "recent", script, tmp_path)


# -- 4. LSUB and subscriptions --------------------------------------------------------------------


def test_lsub_and_subscriptions_match_dovecot(pair: Pair, tmp_path: Path) -> None:
    """
    LSUB with "%" shows an unsubscribed parent of a subscribed mailbox with \\Noselect (RFC 3501
    §6.3.9), and DELETE keeps the subscription (§6.3.4: "the server MUST NOT unilaterally remove
    an existing mailbox name from the subscription list"), so the name comes back subscribed
    when it is created again.  The parents are created one by one: Dovecot's Maildir++ makes
    none for ``CREATE a/b`` (§6.3.3 leaves that to the server), which is not this story.
    Strata subscribes INBOX for every user, Dovecot's configuration only the special-use ones:
    the script subscribes INBOX first.
    """
    script: list[Step] = [
        cmd("A", "SUBSCRIBE INBOX"),
        cmd("A", "CREATE a"),
        cmd("A", "CREATE a/b"),
        cmd("A", "CREATE a/b/c"),
        cmd("A", "SUBSCRIBE a/b"),
        cmd("A", "CREATE x"),
        cmd("A", "CREATE x/y"),
        cmd("A", "SUBSCRIBE x/y"),
        cmd("A", 'LSUB "" %'),
        cmd("A", 'LSUB "" *'),
        cmd("A", 'LSUB "" a/%'),
        cmd("A", 'LSUB "" %/%'),
        cmd("A", 'LSUB "" a'),
        cmd("A", 'LIST "" *'),
        cmd("A", "DELETE x/y"),
        cmd("A", 'LSUB "" *'),
        cmd("A", 'LSUB "" %'),
        cmd("A", 'LSUB "" x/%'),
        cmd("A", 'LIST (SUBSCRIBED) "" *'),
        cmd("A", 'LIST "" x/*'),
        cmd("A", "STATUS x/y (MESSAGES)"),
        cmd("A", "CREATE x/y"),
        cmd("A", 'LIST (SUBSCRIBED) "" x/*'),
        cmd("A", 'LSUB "" x/*'),
        cmd("A", "UNSUBSCRIBE x/y"),
        cmd("A", 'LSUB "" *'),
        cmd("A", 'LSUB "" %'),
        cmd("A", "UNSUBSCRIBE a/b"),
        cmd("A", 'LSUB "" %'),
    ]
    run_story(pair, "lsub", script, tmp_path)


# -- 5. LIST-EXTENDED -----------------------------------------------------------------------------


def test_list_extended_matches_dovecot(pair: Pair, tmp_path: Path) -> None:
    """
    RFC 5258's selection options SUBSCRIBED and RECURSIVEMATCH (with CHILDINFO for a parent
    that is returned only for its subscribed children, §3.5) and the return options CHILDREN
    and SUBSCRIBED; an unknown option and RECURSIVEMATCH alone are refused with BAD (§3.1).
    """
    script: list[Step] = [
        cmd("A", "SUBSCRIBE INBOX"),  # see the LSUB story
        cmd("A", "CREATE a"),
        cmd("A", "CREATE a/b"),
        cmd("A", "CREATE a/b/c"),
        cmd("A", "CREATE p"),
        cmd("A", "CREATE p/q"),
        cmd("A", "CREATE z"),
        cmd("A", "CREATE z/w"),
        cmd("A", "CREATE gone"),
        cmd("A", "SUBSCRIBE a/b/c"),
        cmd("A", "SUBSCRIBE p"),
        cmd("A", "SUBSCRIBE z/w"),
        cmd("A", "SUBSCRIBE gone"),
        cmd("A", "DELETE z/w"),
        cmd("A", "DELETE gone"),
        cmd("A", 'LIST (SUBSCRIBED) "" %'),
        cmd("A", 'LIST (SUBSCRIBED) "" *'),
        cmd("A", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" %'),
        cmd("A", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" a/%'),
        cmd("A", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" *'),
        # Not z: Dovecot calls it \\HasChildren for a deleted, still subscribed child (RFC 5258
        # §4 speaks of children "accessible to the currently authenticated user").
        cmd("A", 'LIST (RECURSIVEMATCH SUBSCRIBED) "" (a p) RETURN (CHILDREN)'),
        cmd("A", 'LIST "" % RETURN (CHILDREN)'),
        cmd("A", 'LIST "" * RETURN (SUBSCRIBED)'),
        cmd("A", 'LIST "" % RETURN (SUBSCRIBED CHILDREN)'),
        cmd("A", 'LIST (SUBSCRIBED) "" * RETURN (CHILDREN)'),
        cmd("A", 'LIST "" (a p) RETURN (CHILDREN)'),
        cmd("A", 'LIST () "" %'),
        cmd("A", 'LIST (BOGUS) "" %'),
        cmd("A", 'LIST (SUBSCRIBED BOGUS) "" %'),
        cmd("A", 'LIST (RECURSIVEMATCH) "" %'),
        cmd("A", 'LIST (REMOTE RECURSIVEMATCH) "" %'),
        cmd("A", 'LIST "" % RETURN (BOGUS)'),
    ]
    run_story(pair, "listext", script, tmp_path)


# -- 6. SORT by SUBJECT and by CC -----------------------------------------------------------------

# Subjects that i;ascii-casemap and i;unicode-casemap order alike: ASCII (by case, by the
# characters between 'Z' and 'a', with RFC 5256 §2.1 prefixes and blobs), and non-ASCII that
# neither maps (symbols), one of them in an RFC 2047 encoded-word.
SHARED_SUBJECTS = [
    "xa", "x_2", "X[1", "x^3", "X`4", "XB", "x\\5", "apple", "Apple", "APPLE", "Re: apple",
    "[list] apple", "Fwd: Apple (fwd)", "zeta", "=?UTF-8?B?4oKsIDEwMA==?=", "→ arrow", "",
]  # fmt: skip
# Subjects the two collations order differently (see the module docstring).
CASEMAP_SUBJECTS = ["ωmega", "Ωmega", "=?UTF-8?B?w6ltaWxl?=", "Emma", "Éclair", "zeta", "éa"]
CCS = [
    "undisclosed-recipients:;",
    "team: a@x.test, b@y.test;",
    "Zed <zed@x.test>",
    "abe@x.test",
    "Bob <bob@x.test>, aaron@x.test",
    None,
    '"Quoted" <MIX@x.test>',
    "nobody:;, carl@x.test",
    "yolanda@x.test",
    "ABE@x.test",
    "_under@x.test",
    "alpha@x.test",
    "",
]


def test_sort_by_subject_and_cc_matches_dovecot(pair: Pair, tmp_path: Path) -> None:
    """
    SORT (RFC 5256 §3) compares base subjects (§2.1) and the first Cc address's mailbox with
    i;ascii-casemap (RFC 4790 §9.2: only a-z fold, to A-Z, so "[", "\\", "]", "^", "_" and "`"
    sort after the letters); ties go by sequence number.  For a group, the first Cc "address"
    is the group's start (RFC 3501 §7.4.2 gives it the group name as its mailbox).
    """
    script: list[Step] = [
        cmd("A", "CREATE subjects"),
        cmd("A", "CREATE cc"),
        *(append("A", "subjects", message(("Subject", s))) for s in SHARED_SUBJECTS),
        *(
            append(
                "A", "cc", message(("Subject", f"cc {n}"), *([("Cc", c)] if c is not None else []))
            )
            for n, c in enumerate(CCS, 1)
        ),
        *prime("subjects"),
        cmd("A", "SELECT subjects"),
        cmd("A", "SORT (SUBJECT) UTF-8 ALL"),
        cmd("A", "SORT (REVERSE SUBJECT) UTF-8 ALL"),
        cmd("A", "SORT (SUBJECT ARRIVAL) US-ASCII ALL"),
        cmd("A", "UID SORT (SUBJECT) UTF-8 ALL"),
        cmd("A", "SORT (SUBJECT) UTF-8 SUBJECT apple"),
        *prime("cc"),
        cmd("A", "SELECT cc"),
        cmd("A", "SORT (CC) UTF-8 ALL"),
        cmd("A", "SORT (REVERSE CC) UTF-8 ALL"),
        cmd("A", "SORT (CC SUBJECT) UTF-8 ALL"),
    ]
    run_story(pair, "sort", script, tmp_path)


def ascii_casemap(text: str) -> bytes:
    """RFC 4790 §9.2's i;ascii-casemap key: the UTF-8 octets with a-z mapped to A-Z."""
    return bytes(b - 32 if 0x61 <= b <= 0x7A else b for b in text.encode("utf-8"))


def test_sort_of_non_ascii_subjects_follows_ascii_casemap(pair: Pair) -> None:
    """
    Non-ASCII subjects sort by i;ascii-casemap, RFC 5256's collation: after every ASCII letter,
    by octet value, no case folding (Strata does not advertise I18NLEVEL).  Dovecot advertises
    I18NLEVEL=1 and sorts with i;unicode-casemap (RFC 5255 §4, RFC 5051): its order is shown,
    and must differ, or this test no longer needs to stand apart from the others.
    """
    decoded = ["ωmega", "Ωmega", "émile", "Emma", "Éclair", "zeta", "éa"]
    expected = [n for _, n in sorted((ascii_casemap(s), n) for n, s in enumerate(decoded, 1))]
    orders = {}
    for side in pair.sides:
        client = side.connect(user("sort"))
        try:
            assert client.run("CREATE casemap").ok
            for subject in CASEMAP_SUBJECTS:
                raw = message(("Subject", subject))
                assert client.run(f'APPEND casemap "{INTERNALDATE}" ', Literal(raw)).ok
            assert client.run("EXAMINE casemap").ok
            reply = client.run("SORT (SUBJECT) UTF-8 ALL")
        finally:
            client.logout()
        assert reply.ok, (side.name, reply.tagged)
        orders[side.name] = [int(str(v)) for v in parse_response(reply.untagged[-1])[2:]]
    assert orders["strata"] == expected, (
        f"strata {orders['strata']}, i;ascii-casemap {expected} (subjects {decoded}); "
        f"dovecot (i;unicode-casemap) {orders['dovecot']}"
    )
    assert orders["dovecot"] != expected, (
        f"Dovecot now sorts {decoded} by i;ascii-casemap ({expected}): compare with it directly"
    )


# -- 7. SEARCH FROM with comments -----------------------------------------------------------------

FROMS = [
    "<user-from (comment)@ (comment) domain.org>",
    "Plain <plain@domain.org>",
    "user-from@other.org (user-from@domain.org)",
    '"user-from@domain.org" <someone@else.org>',
    "=?UTF-8?Q?J=C3=B6rg?= <joerg@domain.org>",
    "(leading comment) USER-FROM@Domain.Org",
]


def test_search_from_with_comments_matches_dovecot(pair: Pair, tmp_path: Path) -> None:
    """
    SEARCH FROM matches "the envelope structure's FROM field" (RFC 3501 §6.4.4): the address
    without its comments (RFC 5322 §3.2.2 CFWS), so ``<user-from (comment)@ (comment)
    domain.org>`` is user-from@domain.org, and "comment" is not in it.  SEARCH HEADER matches
    the field as written.
    """
    script: list[Step] = [
        *(
            append("A", "INBOX", message(("From", f), ("Subject", f"from {n}")))
            for n, f in enumerate(FROMS, 1)
        ),
        *prime("INBOX"),
        cmd("A", "SELECT INBOX"),
        cmd("A", "FETCH 1:* (ENVELOPE)"),
        cmd("A", "SEARCH FROM user-from@domain.org"),
        cmd("A", "SEARCH FROM USER-FROM@DOMAIN.ORG"),
        cmd("A", "SEARCH FROM domain.org"),
        cmd("A", "SEARCH FROM user-from"),
        cmd("A", "SEARCH FROM comment"),
        cmd("A", 'SEARCH FROM "(comment)"'),
        cmd("A", "SEARCH FROM plain"),
        cmd("A", "SEARCH FROM other.org"),
        cmd("A", "SEARCH NOT FROM domain.org"),
        cmd("A", "SEARCH OR FROM user-from@domain.org FROM other.org"),
        cmd("A", "SEARCH CHARSET UTF-8 FROM ", Literal.of("Jörg")),
        cmd("A", "UID SEARCH FROM user-from@domain.org"),
        cmd("A", "SEARCH HEADER From comment"),
        cmd("A", "SEARCH HEADER From user-from@domain.org"),
    ]
    run_story(pair, "from", script, tmp_path)


# -- 8. THREAD ------------------------------------------------------------------------------------


def _reply(mid: str | None, subject: str, day: int, *fields: tuple[str, str]) -> bytes:
    ids = [("Message-ID", f"<{mid}@t.test>")] if mid is not None else []
    return message(
        *ids, ("Subject", subject), ("Date", f"{day:02d} Mar 2026 10:00:00 +0000"), *fields
    )


THREAD_SET = [
    _reply("root", "Plans", 1),
    _reply("r1", "Re: Plans", 3, ("In-Reply-To", "<root@t.test>")),
    _reply("r2", "Re: Re: Plans", 2, ("References", "<root@t.test> <r1@t.test>")),
    _reply("orphan", "Re: Lost", 4, ("References", "<missing@t.test>")),
    _reply("sibling", "Re: Lost", 5, ("References", "<missing@t.test>")),
    _reply("lunch", "Lunch", 6),
    _reply("lunch-re", "Re: Lunch", 7),
    _reply("lunch-fwd", "Fwd: lunch", 8),
    _reply("early", "Early", 1),
    _reply(None, "No id", 9),
    # References wins over In-Reply-To (RFC 5256 §4 REFERENCES step 1.A)
    _reply("r3", "Re: Plans", 10, ("In-Reply-To", "<r2@t.test>"), ("References", "<root@t.test>")),
    _reply("gap", "Re: Plans", 11, ("References", "<root@t.test> <lost-middle@t.test>")),
]


def test_thread_matches_dovecot(pair: Pair, tmp_path: Path) -> None:
    """
    THREAD=REFERENCES and THREAD=ORDEREDSUBJECT (RFC 5256 §4): replies by In-Reply-To and by
    References, two replies to a message that is not there (a dummy parent), a reply whose
    References skip a missing middle, threads joined by base subject ("Re:", "Fwd:"), and
    children sorted by date even when a reply is dated before its parent.
    """
    script: list[Step] = [
        cmd("A", "CREATE threads"),
        *(append("A", "threads", raw) for raw in THREAD_SET),
        *prime("threads"),
        cmd("A", "SELECT threads"),
        cmd("A", "THREAD REFERENCES UTF-8 ALL"),
        cmd("A", "THREAD ORDEREDSUBJECT UTF-8 ALL"),
        cmd("A", "UID THREAD REFERENCES UTF-8 ALL"),
        cmd("A", "THREAD REFERENCES UTF-8 SUBJECT plans"),
        cmd("A", "THREAD ORDEREDSUBJECT US-ASCII NOT SUBJECT plans"),
        cmd("A", "THREAD BOGUS UTF-8 ALL"),
    ]
    run_story(pair, "thread", script, tmp_path)


# -- 9. MOVE within the selected mailbox ----------------------------------------------------------


def test_move_into_the_selected_mailbox_matches_dovecot(pair: Pair, tmp_path: Path) -> None:
    """
    UID MOVE 1 INBOX with INBOX selected: RFC 6851 forbids nothing here and Dovecot answers OK,
    with COPYUID, the EXPUNGE of the old message and the EXISTS of the new one; the other
    session sees both at its NOOP.  A UID that is not there is no error (RFC 3501 §6.4.8).
    """
    script: list[Step] = [
        *(append("A", "INBOX", message(("Subject", f"move {n}"))) for n in (1, 2, 3)),
        *prime("INBOX"),
        cmd("B", "SELECT INBOX"),
        cmd("A", "SELECT INBOX"),
        cmd("A", "UID MOVE 1 INBOX"),
        cmd("A", "FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])"),
        cmd("A", "MOVE 1 INBOX"),
        cmd("A", "UID FETCH 1:* (UID)"),
        cmd("A", "UID MOVE 99 INBOX"),
        cmd("B", "NOOP"),
        cmd("B", "FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])"),
        cmd("A", "UID SEARCH ALL"),
        cmd("C", "STATUS INBOX (MESSAGES UIDNEXT)"),
    ]
    run_story(pair, "move", script, tmp_path)


# -- what the stories need ------------------------------------------------------------------------

NEEDED = ("MOVE", "UIDPLUS", "LIST-EXTENDED", "SORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT")


def test_both_advertise_what_the_stories_use(pair: Pair) -> None:
    """
    Each server lists capabilities of its own (RFC 3501 §7.2.1), so the lists are not compared
    whole; but a client (Roundcube's Threads view) uses THREAD only when it is advertised.
    """
    listed = {}
    for side in pair.sides:
        client = side.connect(user("caps"))
        try:
            reply = client.run("CAPABILITY")
        finally:
            client.logout()
        words = {str(w).upper() for values in reply.data("CAPABILITY") for w in values[2:]}
        listed[side.name] = {c for c in NEEDED if c in words}
    assert listed["dovecot"] == set(NEEDED), listed["dovecot"]
    assert listed["strata"] == listed["dovecot"], f"Strata lacks {set(NEEDED) - listed['strata']}"
