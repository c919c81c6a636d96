"""
SEARCH and SORT over a mailbox's messages, as pure functions (RFC 3501 §6.4.4, RFC 5256, RFC 4731,
RFC 7162 §3.1.5).

The caller hands each message as a L{Candidate}: its sequence number, its L{MailMessage} and, only
when L{plan} says the key tree needs them, its header block or its raw bytes in a L{Content}.  So
``SEARCH FLAGGED`` never reads a header and ``SEARCH SUBJECT x`` never reads a body (DESIGN.md
decision 9, "Parse once": the header block is the indexed range, the body only for BODY/TEXT).

Strings compare case-insensitively by Unicode casefold (RFC 3501 §6.4.4: "case-insensitive
substring"); header values are matched after RFC 2047 decoding, and 8-bit raw headers are read as
UTF-8, else Latin-1.  The address keys (FROM, TO, CC, BCC) also match the addresses as parsed, with
comments and white space gone, as Dovecot does.  SORT collates its strings with i;unicode-casemap
(RFC 5256 §7, RFC 5051; L{ascii_casemap}).
"""

from __future__ import annotations

import datetime
import email
import email.errors
import email.header
import email.message
import email.utils
import enum
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from strata_twisted.model import MailMessage
from strata_twisted.proto.imap_parser import SearchKey, SequenceSet, SortCriterion
from strata_twisted.proto.imap_response import compact_sequence_set
from strata_twisted.proto.mime import MISSING_HOST, MISSING_MAILBOX, Address, header_fields

# The address-list parser the ENVELOPE is built with (RFC 3501 §7.4.2 groups included), so that
# SEARCH and SORT read an address header exactly as FETCH ENVELOPE shows it.
from strata_twisted.proto.mime import _address_list as address_list

# -- what to load ---------------------------------------------------------------------------------


class Need(enum.IntEnum):
    """What a message must have loaded beyond its L{MailMessage}, in increasing cost."""

    NOTHING = 0
    HEADER = 1  # the header block (the indexed header range)
    BODY = 2  # the whole raw message


_HEADER_KEYS: Final = frozenset({"FROM", "TO", "CC", "BCC", "SUBJECT", "HEADER"})
_HEADER_KEYS_DATES: Final = frozenset({"SENTBEFORE", "SENTON", "SENTSINCE"})
_BODY_KEYS: Final = frozenset({"BODY", "TEXT"})
_SORT_HEADER_KEYS: Final = frozenset(
    {"CC", "DATE", "FROM", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)


def plan(key: SearchKey) -> Need:
    """The most any message needs loaded to evaluate C{key}."""
    if key.name in _BODY_KEYS:
        return Need.BODY
    if key.name in _HEADER_KEYS or key.name in _HEADER_KEYS_DATES:
        return Need.HEADER
    return max((plan(k) for k in key.keys), default=Need.NOTHING)


def plan_sort(criteria: Iterable[SortCriterion]) -> Need:
    """What the SORT criteria themselves need (combine with L{plan} of the search key)."""
    if any(c.key in _SORT_HEADER_KEYS for c in criteria):
        return Need.HEADER
    return Need.NOTHING


# -- message content ------------------------------------------------------------------------------

_Loader = bytes | Callable[[], bytes] | None
_END_OF_HEADER: Final = re.compile(rb"\r?\n\r?\n")


def _header_block(raw: bytes) -> bytes:
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    match = _END_OF_HEADER.search(raw)
    return raw if match is None else raw[: match.end()]


CACHE_SIZE: Final = 1024
"""Header blocks (and header values) whose parsed fields (decoded text) are kept between commands.
A searched message's L{Content} (its fields and decoded values) is kept by the IMAP sessions'
shared cache (core/imap_shared.py), which forgets expunged messages; these serve the rest.
Kept small: every new message fills them, and memory must be flat while mail comes and goes."""

CACHED_LENGTH: Final = 4096
"""Longest text whose sort key, base subject or parsed addresses are cached: longer ones are rare,
and 4096 of them at up to 1 MiB each (a header's size) would not be a bounded cache."""

_T = TypeVar("_T")
_K = TypeVar("_K", str, bytes)


def _cached_if_short(function: Callable[[_K], _T]) -> Callable[[_K], _T]:
    """C{function} with an LRU cache of L{CACHE_SIZE} entries, for arguments of at most
    L{CACHED_LENGTH} characters or octets."""
    cached = functools.lru_cache(maxsize=CACHE_SIZE)(function)

    @functools.wraps(function)
    def call(argument: _K) -> _T:
        return cached(argument) if len(argument) <= CACHED_LENGTH else function(argument)

    return call


@functools.lru_cache(maxsize=CACHE_SIZE)
def _fields(block: bytes) -> tuple[tuple[str, bytes], ...]:
    """(lower-cased name, raw value unfolded) in order; junk lines are skipped (RFC 5322 §2.2.3)."""
    return tuple((name.decode("ascii", "replace"), value) for name, value in header_fields(block))


def _text(raw: bytes) -> str:
    """8-bit header bytes as text: UTF-8 when valid, else Latin-1 (which never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_ENCODED_WORD: Final = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS: Final = re.compile(r"(=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)[ \t]+(?==\?)")


def _charset_decode(data: bytes, charset: str | None) -> str:
    codec = (charset or "us-ascii").split("*", 1)[0]  # RFC 2231 §5 language suffix
    if codec.lower() in ("us-ascii", "ascii"):
        return _text(data)
    try:
        return data.decode(codec, "replace")
    except LookupError:
        return _text(data)


@functools.lru_cache(maxsize=CACHE_SIZE)
def decode_header_value(raw: bytes) -> str:
    """
    A raw header value as text: RFC 2047 encoded words decoded (with C{email.header}), the
    whitespace between adjacent encoded words dropped (§6.2), 8-bit bytes read as UTF-8 or Latin-1.
    The last L{CACHE_SIZE} answers are kept.
    """
    text = _BETWEEN_WORDS.sub(r"\1", _text(raw))

    def word(match: re.Match[str]) -> str:
        try:
            decoded = email.header.decode_header(match.group(0))
        except (ValueError, LookupError, email.errors.HeaderParseError):
            return match.group(0)  # a malformed word stays as written
        return "".join(
            part if isinstance(part, str) else _charset_decode(part, charset)
            for part, charset in decoded
        )

    return _ENCODED_WORD.sub(word, text)


def _body_text(raw: bytes) -> str:
    """
    The decoded text of every text/* part (base64 and quoted-printable undone, charsets applied),
    including those inside message/rfc822 parts, joined by newlines.  Never raises.
    """
    message = email.message_from_bytes(raw)
    out: list[str] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            out.append(_charset_decode(payload, part.get_content_charset()))
    return "\n".join(out)


def _mailbox_text(address: Address) -> bytes:
    """``name <adl:mailbox@host>``, or what there is of it; Strata's placeholders left out."""
    local = None if address.mailbox in (None, MISSING_MAILBOX) else address.mailbox
    host = None if address.host == MISSING_HOST else address.host
    angle = b""
    if local is not None:
        route = address.adl + b":" if address.adl else b""
        angle = b"<" + route + local + (b"@" + host if host else b"") + b">"
    return b" ".join(part for part in (address.name or b"", angle) if part)


@_cached_if_short
def address_text(raw: bytes) -> str:
    """
    An address header's value as its parsed addresses, decoded: ``Name <local@domain>`` joined
    by ``, ``, a group as ``name: member, member;``.  Comments and folding white space are gone,
    a comment that names an address (``a@b (Name)``) is its display name, and an encoded word is
    decoded.  Dovecot matches SEARCH FROM/TO/CC/BCC against this form of the header
    (C{message_address_write} in lib-mail), so ``<user (c)@ (c) domain.org>`` is found by
    ``user@domain.org`` (dovecot/imaptest, search-addresses).
    """
    items: list[bytes] = []
    group: list[bytes] | None = None  # the members of the group being read
    for address in address_list(raw):
        if address.host is None and group is None and address.mailbox is not None:
            group = []  # RFC 3501 §7.4.2: a group's start, its name as the mailbox
            items.append(address.mailbox + b":")
        elif address.host is None and address.mailbox is None:  # the group's end
            if group is not None:
                items[-1] += (b" " + b", ".join(group) if group else b"") + b";"
            group = None
        else:
            (items if group is None else group).append(_mailbox_text(address))
    return decode_header_value(b", ".join(items))


class Content:
    """
    A message's header block and raw bytes, each given as bytes or as a loader called at most
    once, when a key first needs it.  Without C{header}, the header block is cut from C{raw}.
    Parsed fields and decoded text are cached, so a message is parsed once per command.
    """

    def __init__(self, *, header: _Loader = None, raw: _Loader = None) -> None:
        self._header_loader = header
        self._raw_loader = raw
        self._header: bytes | None = None
        self._raw: bytes | None = None
        self._fields: tuple[tuple[str, bytes], ...] | None = None
        self._decoded: dict[str, list[str]] = {}
        self._folded: dict[str, list[str]] = {}
        self._addresses: dict[str, list[str]] = {}
        self._body: str | None = None

    @staticmethod
    def _load(loader: _Loader, what: str) -> bytes:
        if loader is None:
            raise ValueError(f"the search needs the message {what}, and none was provided")
        return loader if isinstance(loader, bytes) else loader()

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self._load(self._raw_loader, "body")
        return self._raw

    def header(self) -> bytes:
        if self._header is None:
            if self._header_loader is None and self._raw_loader is not None:
                self._header = _header_block(self.raw())
            else:
                self._header = self._load(self._header_loader, "header")
        return self._header

    def fields(self) -> tuple[tuple[str, bytes], ...]:
        if self._fields is None:
            self._fields = _fields(bytes(self.header()))
        return self._fields

    def raw_values(self, name: str) -> list[bytes]:
        """Every value of the field C{name} (any case), raw."""
        name = name.lower()
        return [value for key, value in self.fields() if key == name]

    def values(self, name: str) -> list[str]:
        """Every value of the field C{name}, decoded."""
        name = name.lower()
        if name not in self._decoded:
            self._decoded[name] = [decode_header_value(v) for v in self.raw_values(name)]
        return self._decoded[name]

    def folded(self, name: str) -> list[str]:
        """Every value of the field C{name}, decoded, white space squashed and casefolded."""
        name = name.lower()
        folded = self._folded.get(name)
        if folded is None:
            folded = self._folded[name] = [_squash_fold(v) for v in self.values(name)]
        return folded

    def addresses(self, name: str) -> list[str]:
        """
        Every value of the address field C{name} as L{address_text} writes it, white space
        squashed and casefolded: what FROM, TO, CC and BCC also match against.
        """
        name = name.lower()
        found = self._addresses.get(name)
        if found is None:
            found = self._addresses[name] = [
                _squash_fold(address_text(bytes(v))) for v in self.raw_values(name)
            ]
        return found

    def first(self, name: str) -> str | None:
        values = self.values(name)
        return values[0] if values else None

    def body_text(self) -> str:
        if self._body is None:
            self._body = _body_text(self.raw())
        return self._body

    def header_text(self) -> str:
        return "\n".join(f"{name}: {decode_header_value(value)}" for name, value in self.fields())


_NO_CONTENT: Final = Content()


# -- the matcher ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One message offered to a search: sequence number, metadata, content as L{plan} asked."""

    seq: int
    message: MailMessage
    content: Content = field(default=_NO_CONTENT)


@dataclass(frozen=True)
class Mailbox:
    """
    The mailbox-wide values a search needs: the largest sequence number and UID (what ``*``
    stands for, RFC 3501 §9) and the timezone BEFORE/ON/SINCE read INTERNALDATE in.
    """

    largest_seq: int
    largest_uid: int
    tz: datetime.tzinfo = datetime.UTC


def _fold(text: str) -> str:
    return text.casefold()


_WSP: Final = re.compile(r"[ \t\r\n]+")


def _squash_fold(text: str) -> str:
    return _fold(_WSP.sub(" ", text))


def _contains(haystacks: Iterable[str], needle: str, *, squash: bool = False) -> bool:
    """
    Case-insensitive substring.  With C{squash} (header values), runs of white space count as
    one space on both sides, so a folded ``Subject`` matches what the user sees on one line.
    """
    folded = _fold(_WSP.sub(" ", needle) if squash else needle)
    return any(folded in _fold(_WSP.sub(" ", h) if squash else h) for h in haystacks)


def sent_date(content: Content) -> datetime.datetime | None:
    """The Date header as a datetime, or None when absent or unparseable."""
    value = content.first("date")
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed


def _internal_day(message: MailMessage, tz: datetime.tzinfo) -> datetime.date:
    return datetime.datetime.fromtimestamp(message.internal_date, tz).date()


def _compare_day(name: str, day: datetime.date, value: datetime.date) -> bool:
    # RFC 3501 §6.4.4: BEFORE is "earlier than", ON "within", SINCE "within or later than".
    if name.endswith("BEFORE"):
        return day < value
    if name.endswith("ON"):
        return day == value
    return day >= value


_FLAG_KEYS: Final[dict[str, tuple[str, bool]]] = {
    "ANSWERED": ("\\Answered", True),
    "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True),
    "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True),
    "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True),
    "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True),
    "UNSEEN": ("\\Seen", False),
}


def _has_flag(message: MailMessage, flag: str) -> bool:
    # Flags and keywords are case-insensitive (RFC 3501 §2.3.2).
    folded = flag.casefold()
    return any(f.casefold() == folded for f in message.flags)


def matches(key: SearchKey, candidate: Candidate, mailbox: Mailbox) -> bool:
    """Whether C{candidate} satisfies C{key} (RFC 3501 §6.4.4)."""
    name, value = key.name, key.value
    message = candidate.message
    if name == "AND":
        return all(matches(k, candidate, mailbox) for k in key.keys)
    if name == "OR":
        return any(matches(k, candidate, mailbox) for k in key.keys)
    if name == "NOT":
        return not matches(key.keys[0], candidate, mailbox)
    if name == "ALL":
        return True
    # RFC 3501 §6.4.4: \Recent is the session's (the candidates carry it among their flags,
    # core/imap_session.py); NEW is RECENT UNSEEN, OLD is NOT RECENT.
    if name == "RECENT":
        return _has_flag(message, "\\Recent")
    if name == "OLD":
        return not _has_flag(message, "\\Recent")
    if name == "NEW":
        return _has_flag(message, "\\Recent") and not _has_flag(message, "\\Seen")
    if name in _FLAG_KEYS:
        flag, wanted = _FLAG_KEYS[name]
        return _has_flag(message, flag) is wanted
    if name in ("KEYWORD", "UNKEYWORD"):
        return _has_flag(message, str(value)) is (name == "KEYWORD")
    if name in ("LARGER", "SMALLER"):
        assert isinstance(value, int)
        return message.size > value if name == "LARGER" else message.size < value
    if name == "MODSEQ":
        assert isinstance(value, int)
        return message.modseq >= value  # RFC 7162 §3.1.5: "equal to or greater than"
    if name == "SEQUENCE-SET":
        assert isinstance(value, SequenceSet)
        return value.contains(candidate.seq, mailbox.largest_seq)
    if name == "UID":
        assert isinstance(value, SequenceSet)
        return value.contains(message.uid, mailbox.largest_uid)
    if name in ("BEFORE", "ON", "SINCE"):
        assert isinstance(value, datetime.date)
        return _compare_day(name, _internal_day(message, mailbox.tz), value)
    content = candidate.content
    if name in _HEADER_KEYS_DATES:
        assert isinstance(value, datetime.date)
        sent = sent_date(content)
        # The date as written, its time and timezone disregarded (RFC 3501 §6.4.4).
        return sent is not None and _compare_day(name, sent.date(), value)
    needle = str(value)
    if name == "SUBJECT":
        folded = _squash_fold(needle)
        return any(folded in value for value in content.folded(name))
    if name in ("FROM", "TO", "CC", "BCC"):
        # RFC 3501 §6.4.4: the string is looked for in the envelope's field, i.e. the addresses
        # as parsed (address_text): comments are not part of it, as in Dovecot.
        folded = _squash_fold(needle)
        return any(folded in value for value in content.addresses(name))
    if name == "HEADER":
        assert key.field is not None
        raw = content.raw_values(key.field)
        if not needle:
            return bool(raw)  # RFC 3501: an empty string matches every message with the field
        decoded = content.values(key.field)
        return _contains(decoded, needle, squash=True) or _contains(map(_text, raw), needle)
    if name == "BODY":
        return _contains([content.body_text()], needle)
    if name == "TEXT":
        return _contains([content.header_text(), content.body_text()], needle)
    raise ValueError(f"unknown search key {name}")


def search(
    key: SearchKey, candidates: Iterable[Candidate], mailbox: Mailbox, *, uid: bool = False
) -> list[int]:
    """The sequence numbers (or UIDs) of the matching candidates, ascending."""
    found = [c for c in candidates if matches(key, c, mailbox)]
    return sorted(c.message.uid if uid else c.seq for c in found)


# -- SORT (RFC 5256) ------------------------------------------------------------------------------


_ASCII_UPPER: Final = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


@_cached_if_short
def ascii_casemap(text: str) -> str:
    """
    C{text} as the i;ascii-casemap collation compares it (RFC 4790 §9.2): a-z become A-Z, every
    other character stays.  RFC 5256 makes it SORT's and THREAD's comparator unless the server
    offers I18NLEVEL (RFC 5255 §4: then i;unicode-casemap), which Strata does not.  Python
    compares str by code point, the order of their UTF-8 octets: the octet comparison the
    collation asks for.
    """
    return text.translate(_ASCII_UPPER)


# RFC 5256 §5: subj-blob = "[" *BLOBCHAR "]" *WSP; subj-refwd = ("re" / ("fw" ["d"])) *WSP
# [subj-blob] ":"; subj-fwd-hdr = "[fwd:".  Step 1 has already made every WSP one space.  Matching
# is ASCII case-insensitive only, so no Unicode look-alike passes for "re".
_CASELESS: Final = re.IGNORECASE | re.ASCII
_BLOB_RUN: Final = re.compile(r"(?:\[[^\[\]]*\] *)*")
_REFWD: Final = re.compile(r"(?:re|fwd?) *(?:\[[^\[\]]*\] *)?:", _CASELESS)
_FWD_TRAILER: Final = re.compile(r"\(fwd\)", _CASELESS)
_FWD_HEADER: Final = re.compile(r"\[fwd:", _CASELESS)


@_cached_if_short
def _base_subject(subject: str) -> tuple[str, bool]:
    """
    The RFC 5256 §2.1 base subject and whether extracting it removed a reply or forward marker.

    The text is cut by moving two indices, never by copying or by an unanchored regex search, so
    the cost stays linear in the subject's length however it is built (a header may be 1 MiB).
    """
    text = _WSP.sub(" ", subject)  # step 1: tabs, continuations and runs of them to one space
    start, end = 0, len(text)
    reply = False
    while True:
        while end > start:  # step 2: subj-trailer, "(fwd)" or WSP, as long as any is left
            if text[end - 1] == " ":
                end -= 1
            elif end - start >= 5 and _FWD_TRAILER.match(text, end - 5, end):
                end -= 5
                reply = True
            else:
                break
        while start < end:  # steps 3 and 4, repeated until neither matches (step 5)
            if text[start] == " ":  # step 3: a subj-leader that is WSP
                start += 1
                continue
            run = _BLOB_RUN.match(text, start, end)
            assert run is not None  # the pattern matches the empty string
            refwd = _REFWD.match(text, run.end(), end)
            if refwd is not None:  # step 3: *subj-blob subj-refwd
                start = refwd.end()
                reply = True
                continue
            if run.end() == start:
                break
            # Step 4 takes one subj-blob at a time while something is left after it, and step 3
            # cannot match again inside the run (no refwd follows it), so the whole run goes,
            # but its last blob stays when nothing follows the run.
            if run.end() < end:
                start = run.end()
                continue
            last = text.rfind("[", start, run.end())
            if last == start:
                break
            start = last
        # Step 6: "[fwd:" subject "]" is unwrapped, and the rules apply again from step 2.
        if end - start >= 6 and _FWD_HEADER.match(text, start, end) and text[end - 1] == "]":
            start, end = start + 5, end - 1
            reply = True
            continue
        return text[start:end], reply


def base_subject(subject: str) -> str:
    """
    RFC 5256 §2.1 base subject of an already decoded subject (step 1's decoding is
    L{decode_header_value}), as written: compare base subjects by their L{ascii_casemap}.
    """
    return _base_subject(subject)[0]


def is_reply_or_forward(subject: str) -> bool:
    """
    RFC 5256 §3 (REFERENCES): a subject is a reply or forward when extracting its base subject
    removed a subj-refwd (``Re:``, ``Fwd:``), a ``(fwd)`` trailer, or ``[fwd: ...]``.
    """
    return _base_subject(subject)[1]


def sort_date(candidate: Candidate) -> float:
    """
    RFC 5256 §2.2 sent date as a timestamp: the Date header normalized to UTC (no valid zone:
    taken as UTC), or the INTERNALDATE when there is no Date header or it cannot be parsed.
    """
    sent = sent_date(candidate.content)
    if sent is None:
        return candidate.message.internal_date
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=datetime.UTC)
    try:
        return sent.timestamp()
    except (OverflowError, ValueError):
        return candidate.message.internal_date


def _unquote(local: bytes) -> bytes:
    """An addr-spec local part without its quoted-string quoting: ``"a b"`` is ``a b``."""
    if b'"' not in local:
        return local
    out = bytearray()
    quoted = escaped = False
    for octet in local:
        if escaped:
            out.append(octet)
            escaped = False
        elif quoted and octet == 0x5C:
            escaped = True
        elif octet == 0x22:
            quoted = not quoted
        else:
            out.append(octet)
    return bytes(out)


def _first_address(content: Content, name: str) -> Address | None:
    """
    The first address of the first C{name} field, as the ENVELOPE has it: a group's first
    address is its start, whose mailbox is the group name (RFC 3501 §7.4.2).
    """
    raw = content.raw_values(name)
    addresses = address_list(bytes(raw[0])) if raw else ()
    return addresses[0] if addresses else None


def _addr_mailbox(content: Content, name: str) -> str:
    """
    RFC 5256 §3 FROM, TO and CC: the [IMAP] addr-mailbox of the first address, the empty string
    when there is none.  For a group (``undisclosed-recipients:;``, ``team: a@x, b@y;``) that is
    the group name, the addr-mailbox of the group's start in the ENVELOPE (RFC 3501 §7.4.2), as
    Dovecot sorts it (and dovecot/imaptest's sort-addresses expects).  The value is the mailbox as
    sent, its quoting removed: ``"a b"@x`` sorts as ``a b``.
    """
    first = _first_address(content, name)
    if first is None or first.mailbox is None:
        return ""
    return _text(_unquote(first.mailbox))


def _display_name(content: Content, name: str) -> str:
    """
    RFC 5957 §7 DISPLAYFROM, DISPLAYTO: the first address's display name, RFC 2047 decoded; when
    it has none, its addr-spec (a group: its name); the empty string when there is no address.
    """
    first = _first_address(content, name)
    if first is None:
        return ""
    if first.name:
        decoded = decode_header_value(first.name).strip()
        if decoded:
            return decoded
    mailbox = _text(_unquote(first.mailbox or b""))
    if first.host is None or first.host == MISSING_HOST or first.mailbox == MISSING_MAILBOX:
        return mailbox
    return f"{mailbox}@{_text(first.host)}"


_STRING_SORT_KEYS: Final = frozenset({"SUBJECT", "FROM", "TO", "CC", "DISPLAYFROM", "DISPLAYTO"})


def _sort_key(criterion: str, candidate: Candidate) -> tuple[float, str]:
    """A comparable key: numeric criteria use the float, textual ones the string."""
    if criterion in _STRING_SORT_KEYS:
        # RFC 5256 §3 and §7: strings collate by i;unicode-casemap; a missing header is the
        # empty string, which collates before every other.
        return 0.0, ascii_casemap(_sort_text(criterion, candidate.content))
    return _sort_number(criterion, candidate), ""


def _sort_text(criterion: str, content: Content) -> str:
    if criterion == "SUBJECT":
        return base_subject(content.first("subject") or "")
    if criterion.startswith("DISPLAY"):
        return _display_name(content, criterion[len("DISPLAY") :])
    return _addr_mailbox(content, criterion)


def _sort_number(criterion: str, candidate: Candidate) -> float:
    message = candidate.message
    if criterion == "ARRIVAL":
        return message.internal_date
    if criterion == "SIZE":
        return message.size
    if criterion == "DATE":
        return sort_date(candidate)
    raise ValueError(f"unknown sort key {criterion}")


def sort(
    criteria: Sequence[SortCriterion],
    key: SearchKey,
    candidates: Iterable[Candidate],
    mailbox: Mailbox,
    *,
    uid: bool = False,
) -> list[int]:
    """
    The matching candidates' sequence numbers (or UIDs) in SORT order: each criterion in turn,
    REVERSE flipping only its own, ties broken by ascending sequence number (RFC 5256 §3).
    """
    found = sorted((c for c in candidates if matches(key, c, mailbox)), key=lambda c: c.seq)
    # Python's sort is stable, also with reverse=True, so sorting by the last criterion first
    # and by the first last leaves ties in the order of the criteria after them, then of seq.
    for criterion in reversed(criteria):
        keys = {c.seq: _sort_key(criterion.key, c) for c in found}
        found.sort(key=lambda c: keys[c.seq], reverse=criterion.reverse)
    return [c.message.uid if uid else c.seq for c in found]


# -- results (RFC 3501 SEARCH, RFC 4731 ESEARCH) ---------------------------------------------------


def sequence_set(numbers: Iterable[int]) -> str:
    """Numbers as a compact sequence set, ``1:3,7``; empty for none."""
    values = list(numbers)
    return compact_sequence_set(values) if values else ""


def search_response(numbers: Iterable[int]) -> str:
    """The untagged ``SEARCH`` data, ``SEARCH 2 5 9`` (RFC 3501 §7.2.5)."""
    return " ".join(["SEARCH", *(str(n) for n in numbers)])


def esearch_items(numbers: Sequence[int], options: Sequence[str]) -> list[tuple[str, int | str]]:
    """
    The ESEARCH return data (RFC 4731 §3.1) in the order MIN, MAX, ALL, COUNT, each only when
    asked (an empty option list means ALL).  MIN, MAX and ALL are left out when nothing matched.
    """
    wanted = {o.upper() for o in options} or {"ALL"}
    out: list[tuple[str, int | str]] = []
    if numbers and "MIN" in wanted:
        out.append(("MIN", min(numbers)))
    if numbers and "MAX" in wanted:
        out.append(("MAX", max(numbers)))
    if numbers and "ALL" in wanted:
        out.append(("ALL", sequence_set(numbers)))
    if "COUNT" in wanted:
        out.append(("COUNT", len(numbers)))
    return out
