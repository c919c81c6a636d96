"""
Tests for the sans-IO IMAP command parser (L{strata_twisted.proto.imap_parser}).

No sockets: every test feeds bytes to a parser and reads back its events.  The driver accepts every
synchronizing literal (as a server that wrote ``+ Ready`` would) unless a test says otherwise.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strata_twisted.proto.imap_parser import (
    MAX_SEARCH_DEPTH,
    NEED_DATA,
    AppendData,
    AppendEnd,
    AppendStart,
    Authenticate,
    AuthenticateCancelled,
    AuthenticateResponse,
    CommandError,
    ContinuationRequired,
    Copy,
    Enable,
    Event,
    Expunge,
    Fetch,
    FetchAttribute,
    Id,
    IdleDone,
    IMAPCommandParser,
    ListMailboxes,
    Login,
    Lsub,
    MailboxCommand,
    ParserLimits,
    Rename,
    Search,
    SearchKey,
    Section,
    Select,
    SequenceSet,
    Simple,
    Sort,
    SortCriterion,
    Status,
    Store,
    Thread,
    decode_mailbox_name,
    encode_mailbox_name,
)

DEFAULT = ParserLimits()
SMALL = ParserLimits(max_line_length=200, max_literal_size=50, max_append_size=300, max_literals=3)


def pump(parser: IMAPCommandParser, events: list[Event], *, accept: bool = True) -> None:
    """Take every event the parser has, answering continuations as a server would."""
    for _ in range(100_000):  # a bound, so that a livelock fails instead of hanging
        event = parser.next_event()
        if event is NEED_DATA:
            if parser.awaiting_continuation:
                if accept:
                    parser.accept_literal()
                    continue
                parser.reject_literal()
                continue
            return
        events.append(event)
    raise AssertionError("the parser never asked for more data")


def merge(events: Iterable[Event]) -> list[Event]:
    """Join adjacent AppendData: where a message is cut into events is not part of the contract."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, AppendData) and merged and isinstance(merged[-1], AppendData):
            merged[-1] = AppendData(event.tag, merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def drive(
    pieces: Iterable[bytes], limits: ParserLimits = DEFAULT, *, accept: bool = True
) -> tuple[list[Event], IMAPCommandParser]:
    parser = IMAPCommandParser(limits)
    events: list[Event] = []
    for piece in pieces:
        parser.receive_data(piece)
        pump(parser, events, accept=accept)
    return merge(events), parser


def parse(data: bytes, limits: ParserLimits = DEFAULT) -> list[Event]:
    return drive([data], limits)[0]


def one(data: bytes, limits: ParserLimits = DEFAULT) -> Event:
    """The single command event ``data`` holds (continuation requests left out)."""
    events = [e for e in parse(data, limits) if not isinstance(e, ContinuationRequired)]
    assert len(events) == 1, events
    return events[0]


def error(data: bytes, limits: ParserLimits = DEFAULT) -> CommandError:
    events = parse(data, limits)
    assert len(events) == 1 and isinstance(events[0], CommandError), events
    return events[0]


# -- commands without arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "IDLE", "NAMESPACE", "UNSELECT"],
)
def test_simple_commands_are_case_insensitive(name: str) -> None:
    assert one(f"a1 {name.lower()}\r\n".encode()) == Simple("a1", name)


def test_simple_command_refuses_arguments() -> None:
    assert error(b"a1 NOOP now\r\n") == CommandError("a1", "unexpected characters after NOOP")


def test_expunge_and_uid_expunge() -> None:
    assert one(b"a EXPUNGE\r\n") == Expunge("a")
    assert one(b"a UID EXPUNGE 3:5,9\r\n") == Expunge("a", SequenceSet(((3, 5), (9, 9))))
    assert error(b"a UID EXPUNGE\r\n").tag == "a"


def test_bare_lf_ends_a_command_and_empty_lines_are_ignored() -> None:
    assert parse(b"\r\n\na NOOP\nb NOOP\r\n") == [Simple("a", "NOOP"), Simple("b", "NOOP")]


@pytest.mark.parametrize(
    ("line", "tag"),
    [
        (b"* NOOP\r\n", None),  # "*" is no tag character
        (b"a+b NOOP\r\n", None),  # nor is "+"
        (b"NOOP\r\n", None),
        (b"a1 FROB\r\n", "a1"),
        (b"a1 UID NOOP\r\n", "a1"),
        (b"a1  NOOP\r\n", "a1"),
        (b"a1 NOOP\x00\r\n", "a1"),
    ],
)
def test_bad_commands_are_errors_that_keep_the_tag_when_it_is_valid(
    line: bytes, tag: str | None
) -> None:
    events = parse(line + b"z NOOP\r\n")
    assert isinstance(events[0], CommandError) and events[0].tag == tag
    assert events[0].status == "BAD"
    assert events[1] == Simple("z", "NOOP")  # the parser carries on


# -- strings, literals, continuations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "user", "password"),
    [
        (b"a LOGIN joe secret\r\n", "joe", "secret"),
        (b'a LOGIN "joe" "se cr\\"et\\\\"\r\n', "joe", 'se cr"et\\'),
        (b"a LOGIN joe] x\r\n", "joe]", "x"),  # "]" is an ASTRING-CHAR
        (b"a LOGIN {3}\r\njoe {6}\r\nsecret\r\n", "joe", "secret"),
        (b"a LOGIN {3+}\r\njoe {8+}\r\nse\r\ncret\r\n", "joe", "se\r\ncret"),
        (b'a LOGIN "" {0}\r\n\r\n', "", ""),
        ('a LOGIN jöe "pässword"\r\n'.encode(), None, "pässword"),
    ],
)
def test_login_strings(line: bytes, user: str | None, password: str) -> None:
    event = one(line)
    if user is None:  # 8-bit in an atom is not allowed
        assert isinstance(event, CommandError)
    else:
        assert event == Login("a", user, password)


@pytest.mark.parametrize(
    "line",
    [
        b'a LOGIN "joe secret\r\n',  # unterminated
        b'a LOGIN "j\\oe" x\r\n',  # only \" and \\ may be escaped
        b"a LOGIN joe\r\n",
        b"a LOGIN (joe) x\r\n",
    ],
)
def test_malformed_strings(line: bytes) -> None:
    assert error(line).tag == "a"


def test_synchronizing_literal_waits_for_the_server() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"a LOGIN {3}\r\njoe {6}\r\nsecret\r\n")
    assert parser.next_event() == ContinuationRequired("a", 3)
    assert parser.awaiting_continuation
    # Nothing of the literal is read until the server says so.
    assert parser.next_event() is NEED_DATA
    assert parser.next_event() is NEED_DATA
    parser.accept_literal()
    assert parser.next_event() == ContinuationRequired("a", 6)
    parser.accept_literal()
    assert parser.next_event() == Login("a", "joe", "secret")
    assert parser.next_event() is NEED_DATA
    with pytest.raises(RuntimeError):
        parser.accept_literal()


def test_rejected_synchronizing_literal_forgets_the_command() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"a LOGIN {3}\r\n")
    assert parser.next_event() == ContinuationRequired("a", 3)
    parser.reject_literal()
    # The client saw "a NO" instead of "+" and goes on with its next command.
    parser.receive_data(b"b NOOP\r\n")
    assert parser.next_event() == Simple("b", "NOOP")


def test_non_synchronizing_literal_needs_no_continuation() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"a LOGIN {3+}\r\njoe x\r\n")
    assert parser.next_event() == Login("a", "joe", "x")


def test_literal_holding_crlf_and_braces_does_not_end_the_command() -> None:
    data = b"a SEARCH SUBJECT {9+}\r\n{2}\r\nb NO\r\n"
    assert one(data) == Search("a", SearchKey("SUBJECT", "{2}\r\nb NO"))


# -- mailboxes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "name"),
    [
        ("INBOX", "INBOX"),
        ("&-", "&"),
        ("Entw&APw-rfe", "Entwürfe"),
        ("&ZeVnLIqe-", "日本語"),
        ("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),
        ("&2D3eAA-", "\U0001f600"),
    ],
)
def test_modified_utf7(encoded: str, name: str) -> None:
    assert decode_mailbox_name(encoded) == name
    assert encode_mailbox_name(name) == encoded


@pytest.mark.parametrize(
    "encoded",
    [
        "a&b",  # a bare "&"
        "&AGE-",  # "a" must be written directly
        "&AOQ-&AOQ-",  # two adjacent runs must be one
        "&AOR-",  # non-zero padding bits
        "&2D0-",  # a lone surrogate
        "ä",  # 8-bit
        "&Jjo!-",
    ],
)
def test_modified_utf7_refuses_non_canonical_forms(encoded: str) -> None:
    with pytest.raises(ValueError):
        decode_mailbox_name(encoded)


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
@settings(max_examples=200)
def test_modified_utf7_round_trips(name: str) -> None:
    encoded = encode_mailbox_name(name)
    assert all(" " <= c <= "~" for c in encoded)
    assert decode_mailbox_name(encoded) == name


@pytest.mark.parametrize("name", ["CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE"])
def test_mailbox_commands(name: str) -> None:
    line = f"t {name} Entw&APw-rfe\r\n".encode()
    assert one(line) == MailboxCommand("t", name, "Entwürfe")


def test_inbox_is_case_insensitive_but_other_names_are_not() -> None:
    assert one(b"t SELECT inBox\r\n") == Select("t", "SELECT", "INBOX")
    assert one(b't EXAMINE "Sent"\r\n') == Select("t", "EXAMINE", "Sent")
    assert one(b"t SELECT INBOX (CONDSTORE)\r\n") == Select("t", "SELECT", "INBOX", True)
    assert error(b"t SELECT INBOX (QRESYNC)\r\n").tag == "t"


def test_invalid_modified_utf7_mailbox_is_refused() -> None:
    assert "UTF-7" in error(b"t CREATE a&b\r\n").text
    assert error('t CREATE "Entwürfe"\r\n'.encode()).tag == "t"


def test_rename_and_status() -> None:
    assert one(b"t RENAME old {3+}\r\nnew\r\n") == Rename("t", "old", "new")
    assert one(b"t STATUS Sent (messages UIDNEXT HIGHESTMODSEQ)\r\n") == Status(
        "t", "Sent", ("MESSAGES", "UIDNEXT", "HIGHESTMODSEQ")
    )
    assert error(b"t STATUS Sent (BOGUS)\r\n").tag == "t"
    assert error(b"t STATUS Sent ()\r\n").tag == "t"


def test_list_basic_and_lsub() -> None:
    assert one(b't LIST "" *\r\n') == ListMailboxes("t", "", ("*",))
    assert one(b"t LIST ~/Mail/ %\r\n") == ListMailboxes("t", "~/Mail/", ("%",))
    assert one(b't LIST "" "INBOX/&AOQ-*"\r\n') == ListMailboxes("t", "", ("INBOX/ä*",))
    assert one(b't LSUB "" Fol%]\r\n') == Lsub("t", "", "Fol%]")


def test_list_extended() -> None:
    line = (
        b't LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Sent*") '
        b"RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UNSEEN))\r\n"
    )
    assert one(line) == ListMailboxes(
        "t",
        "",
        ("INBOX", "Sent*"),
        frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
        frozenset({"CHILDREN", "SPECIAL-USE", "STATUS"}),
        ("MESSAGES", "UNSEEN"),
        extended=True,
    )
    assert one(b't LIST (SPECIAL-USE) "" *\r\n') == ListMailboxes(
        "t", "", ("*",), frozenset({"SPECIAL-USE"}), extended=True
    )
    assert error(b't LIST "" % (CHILDREN)\r\n').tag == "t"


@pytest.mark.parametrize(
    "line",
    [
        b't LIST () "" %\r\n',  # an empty selection list
        b't LIST "" (%)\r\n',  # one pattern, in parentheses
        b't LIST "" % RETURN ()\r\n',  # an empty RETURN list
    ],
)
def test_any_of_the_three_extended_forms_makes_an_extended_list(line: bytes) -> None:
    # RFC 5258 §3: the extended syntax is in use as soon as one of them appears, and the answer
    # differs (no \HasChildren unless asked for, "" is no delimiter request).
    assert one(line) == ListMailboxes("t", "", ("%",), extended=True)
    assert one(b't LIST "" %\r\n') == ListMailboxes("t", "", ("%",), extended=False)


def test_list_options_are_case_insensitive_and_count_once() -> None:
    # RFC 5258 §3: an option given twice acts as if given once.
    assert one(b't LIST (subscribed Remote SUBSCRIBED) "" * return (children Children)\r\n') == (
        ListMailboxes(
            "t",
            "",
            ("*",),
            frozenset({"SUBSCRIBED", "REMOTE"}),
            frozenset({"CHILDREN"}),
            extended=True,
        )
    )


@pytest.mark.parametrize(
    "line",
    [
        b't LIST (BOGUS) "" %\r\n',
        b't LIST (SUBSCRIBED X-VENDOR) "" %\r\n',
        b't LIST "" % RETURN (BOGUS)\r\n',
        b't LIST "" % RETURN (REMOTE)\r\n',  # REMOTE is a selection option only
        b't LIST "" % RETURN (CHILDREN MYRIGHTS)\r\n',  # RFC 8440, not offered
    ],
)
def test_unknown_list_options_are_bad(line: bytes) -> None:
    # RFC 5258 §3: "A server MUST respond to options it does not recognize with a BAD response."
    refused = error(line)
    assert refused.tag == "t"
    assert refused.status == "BAD"
    assert "option" in refused.text


@pytest.mark.parametrize(
    "selection", [b"RECURSIVEMATCH", b"REMOTE RECURSIVEMATCH", b"RECURSIVEMATCH RECURSIVEMATCH"]
)
def test_recursivematch_alone_is_bad(selection: bytes) -> None:
    # RFC 5258 §3.1: "The RECURSIVEMATCH option MUST NOT occur as the only selection option (or
    # only with REMOTE) ... The server MUST return BAD tagged response in such case."
    refused = error(b"t LIST (" + selection + b') "" %\r\n')
    assert refused.status == "BAD"
    assert "RECURSIVEMATCH" in refused.text


@pytest.mark.parametrize("other", [b"SUBSCRIBED", b"SPECIAL-USE"])
def test_recursivematch_with_a_base_option_is_accepted(other: bytes) -> None:
    command = one(b"t LIST (RECURSIVEMATCH " + other + b') "" %\r\n')
    assert isinstance(command, ListMailboxes)
    assert command.selection == {"RECURSIVEMATCH", other.decode()}


# -- FETCH ----------------------------------------------------------------------------------------


F = FetchAttribute


@pytest.mark.parametrize(
    ("items", "attributes"),
    [
        (b"ALL", (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE"), F("ENVELOPE"))),
        (b"fast", (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE"))),
        (b"FULL", (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE"), F("ENVELOPE"), F("BODY"))),
        (b"(UID RFC822.HEADER BODYSTRUCTURE)", (F("UID"), F("RFC822.HEADER"), F("BODYSTRUCTURE"))),
        (b"BODY[]", (F("BODY", Section()),)),
        (b"BODY.PEEK[]<0.1024>", (F("BODY", Section(), (0, 1024), True),)),
        (b"BODY[1.2.MIME]", (F("BODY", Section((1, 2), "MIME")),)),
        (b"BODY[2.TEXT]", (F("BODY", Section((2,), "TEXT")),)),
        (b"body[header]", (F("BODY", Section((), "HEADER")),)),
        (
            b'BODY.PEEK[HEADER.FIELDS.NOT (X-Spam "Received")]',
            (F("BODY", Section((), "HEADER.FIELDS.NOT", ("X-SPAM", "RECEIVED")), peek=True),),
        ),
        (
            b"(FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM)] RFC822)",
            (
                F("FLAGS"),
                F("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM")), peek=True),
                F("RFC822"),
            ),
        ),
    ],
)
def test_fetch_items(items: bytes, attributes: tuple[FetchAttribute, ...]) -> None:
    event = one(b"f FETCH 1:* " + items + b"\r\n")
    assert event == Fetch("f", SequenceSet(((1, None),)), attributes)


@pytest.mark.parametrize(
    "items",
    [
        b"BOGUS",
        b"BODY.PEEK",
        b"BODY[MIME]",  # MIME needs a part
        b"BODY[1.HEADER.1]",
        b"BODY[0]",
        b"BODY[]<0.0>",
        b"BODY[]<0>",
        b"BODY[HEADER.FIELDS]",
        b"(FLAGS",
        b"()",
        b"ALL FAST",
        b"BINARY[1]",
    ],
)
def test_fetch_malformed(items: bytes) -> None:
    assert error(b"f FETCH 1 " + items + b"\r\n").tag == "f"


def test_uid_fetch_adds_uid_and_changedsince_adds_modseq() -> None:
    event = one(b"f UID FETCH 1:5 (FLAGS) (CHANGEDSINCE 12345)\r\n")
    assert event == Fetch(
        "f", SequenceSet(((1, 5),)), (F("FLAGS"), F("UID"), F("MODSEQ")), True, 12345
    )
    assert error(b"f FETCH 1 FLAGS (VANISHED)\r\n").tag == "f"


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        (b"1", ((1, 1),)),
        (b"*", ((None, None),)),
        (b"1:*", ((1, None),)),
        (b"1,3:5,*:7", ((1, 1), (3, 5), (None, 7))),
        (b"4294967295", ((4294967295, 4294967295),)),
    ],
)
def test_sequence_sets(text: bytes, ranges: tuple[tuple[int | None, int | None], ...]) -> None:
    event = one(b"c COPY " + text + b" Trash\r\n")
    assert event == Copy("c", "COPY", SequenceSet(ranges), "Trash")


@pytest.mark.parametrize("text", [b"0", b"1:0", b"1,", b",1", b"4294967296", b"$", b"1:", b"a"])
def test_bad_sequence_sets(text: bytes) -> None:
    assert error(b"c COPY " + text + b" Trash\r\n").tag == "c"


def test_sequence_set_resolution() -> None:
    seq = SequenceSet(((5, 3), (None, None), (7, 8), (559, None)))
    assert seq.resolve(10) == [(3, 5), (7, 8), (10, 10)]
    assert seq.contains(10, 10) and not seq.contains(6, 10) and not seq.contains(11, 10)
    assert SequenceSet(((1, 3), (4, 6))).resolve(5) == [(1, 5)]
    # RFC 3501 §9: "*" names the largest number even below the other end; in an empty mailbox,
    # nothing.
    assert SequenceSet(((1, None),)).resolve(0) == []


def test_copy_and_move() -> None:
    assert one(b"c UID MOVE 7 Trash\r\n") == Copy(
        "c", "MOVE", SequenceSet(((7, 7),)), "Trash", True
    )
    assert one(b"c MOVE 1:2 {5+}\r\nJunk!\r\n") == Copy(
        "c", "MOVE", SequenceSet(((1, 2),)), "Junk!"
    )


# -- STORE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "store"),
    [
        (
            b"s STORE 1 +FLAGS (\\Seen)",
            Store("s", SequenceSet(((1, 1),)), "+", False, ("\\Seen",)),
        ),
        (
            b"s STORE 1:3 -flags.silent \\deleted $Junk",
            Store("s", SequenceSet(((1, 3),)), "-", True, ("\\Deleted", "$Junk")),
        ),
        (b"s STORE 2 FLAGS ()", Store("s", SequenceSet(((2, 2),)), "", False, ())),
        (
            b"s UID STORE 5 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Flagged)",
            Store("s", SequenceSet(((5, 5),)), "+", True, ("\\Flagged",), True, 320162338),
        ),
    ],
)
def test_store(line: bytes, store: Store) -> None:
    assert one(line + b"\r\n") == store


@pytest.mark.parametrize(
    "line",
    [b"s STORE 1 +FLAG (\\Seen)", b"s STORE 1 FLAGS", b"s STORE 1 (FOO 1) FLAGS ()", b"s STORE 1"],
)
def test_store_malformed(line: bytes) -> None:
    assert error(line + b"\r\n").tag == "s"


# -- SEARCH and SORT ------------------------------------------------------------------------------


K = SearchKey


@pytest.mark.parametrize(
    ("criteria", "key"),
    [
        (b"ALL", K("ALL")),
        (b"unseen", K("UNSEEN")),
        (b"1:5,*", K("SEQUENCE-SET", SequenceSet(((1, 5), (None, None))))),
        (b"UID 3:4", K("UID", SequenceSet(((3, 4),)))),
        (b'SUBJECT "hello world"', K("SUBJECT", "hello world")),
        (b"FROM {3+}\r\nJoe", K("FROM", "Joe")),
        (b"SINCE 1-Feb-2024", K("SINCE", datetime.date(2024, 2, 1))),
        (b'SENTBEFORE "29-feb-2024"', K("SENTBEFORE", datetime.date(2024, 2, 29))),
        (b"LARGER 1000", K("LARGER", 1000)),
        (b"KEYWORD $Forwarded", K("KEYWORD", "$Forwarded")),
        (b'HEADER Message-ID "<a@b>"', K("HEADER", "<a@b>", "MESSAGE-ID")),
        (b"NOT DELETED", K("NOT", keys=(K("DELETED"),))),
        (b"OR SEEN FLAGGED", K("OR", keys=(K("SEEN"), K("FLAGGED")))),
        (b"(SEEN)", K("SEEN")),
        (
            b"OR (FROM a TO b) NOT (CC c)",
            K(
                "OR",
                keys=(
                    K("AND", keys=(K("FROM", "a"), K("TO", "b"))),
                    K("NOT", keys=(K("CC", "c"),)),
                ),
            ),
        ),
        (b"SEEN 2", K("AND", keys=(K("SEEN"), K("SEQUENCE-SET", SequenceSet(((2, 2),)))))),
        (b"MODSEQ 620162338", K("MODSEQ", 620162338)),
        (b'MODSEQ "/flags/\\\\draft" all 620162338', K("MODSEQ", 620162338)),
    ],
)
def test_search_keys(criteria: bytes, key: SearchKey) -> None:
    assert one(b"s SEARCH " + criteria + b"\r\n") == Search("s", key)


def nested(levels: int) -> bytes:
    """Criteria nesting C{levels} deep: lists and ORs in turn, none to be merged away."""
    criteria = b"ALL"
    for level in range(levels):
        criteria = b"(SEEN " + criteria + b")" if level % 2 == 0 else b"OR DRAFT " + criteria
    return criteria


def depth(key: SearchKey) -> int:
    """Operators above the deepest key (0 for a key alone)."""
    deepest, pending = 0, [(key, 0)]
    while pending:
        node, level = pending.pop()
        deepest = max(deepest, level)
        pending.extend((k, level + 1) for k in node.keys)
    return deepest


def searched(criteria: bytes) -> SearchKey:
    event = one(b"s SEARCH " + criteria + b"\r\n")
    assert isinstance(event, Search), event
    return event.key


def test_ordinary_nesting_is_read_and_kept_flat() -> None:
    # Issue 12: criteria of ordinary depth got "BAD search criteria nested too deeply" (the cap
    # was 32 levels of "(", NOT and OR).  Dovecot reads any nesting its line length allows; so
    # does this parser now, without recursion.  Chains of AND and of OR are merged (the same
    # search), so long ones stay flat.
    seen, draft = K("SEEN"), K("DRAFT")
    chain = 5000  # the left-nested OR chain a client makes of many alternatives
    assert searched(b"OR " * chain + b"SEEN " * chain + b"SEEN") == K(
        "OR", keys=(seen,) * (chain + 1)
    )
    assert searched(b"OR SEEN " * chain + b"DRAFT") == K("OR", keys=(seen,) * chain + (draft,))
    assert searched(b"(" * chain + b"SEEN" + b")" * chain) == seen
    assert searched(b"((SEEN DRAFT) (SEEN (DRAFT))) SEEN") == K(
        "AND", keys=(seen, draft, seen, draft, seen)
    )


def test_nesting_up_to_the_bound_and_not_beyond() -> None:
    assert MAX_SEARCH_DEPTH == 64
    for criteria in [nested(MAX_SEARCH_DEPTH), b"NOT " * MAX_SEARCH_DEPTH + b"ALL"]:
        assert depth(searched(criteria)) == MAX_SEARCH_DEPTH
    for criteria in [nested(MAX_SEARCH_DEPTH + 1), b"NOT " * (MAX_SEARCH_DEPTH + 1) + b"ALL"]:
        assert error(b"s SEARCH " + criteria + b"\r\n") == CommandError(
            "s", "search criteria nested too deeply"
        )
    # As deep as the line allows, without recursing: refused, and the parser reads on.
    events = parse(b"s SEARCH " + b"NOT (" * 10000 + b"ALL" + b")" * 10000 + b"\r\nn NOOP\r\n")
    assert events == [CommandError("s", "search criteria nested too deeply"), Simple("n", "NOOP")]


def test_search_charset_return_and_uid() -> None:
    line = 's UID SEARCH RETURN (MIN COUNT) CHARSET utf-8 SUBJECT "Grüße"\r\n'.encode()
    assert one(line) == Search("s", K("SUBJECT", "Grüße"), "UTF-8", ("MIN", "COUNT"), True)
    assert one(b"s SEARCH RETURN () ALL\r\n") == Search("s", K("ALL"), None, ())
    # Literals carry the 8-bit search strings Roundcube sends.
    literal = "Grüße".encode()
    line = b"s SEARCH CHARSET UTF-8 TEXT {%d}\r\n" % len(literal) + literal + b"\r\n"
    assert one(line) == Search("s", K("TEXT", "Grüße"), "UTF-8")


def test_search_unknown_charset_is_no_badcharset() -> None:
    assert error(b"s SEARCH CHARSET KOI8-R ALL\r\n") == CommandError(
        "s", "unsupported charset KOI8-R", "NO", "BADCHARSET"
    )


@pytest.mark.parametrize(
    "criteria",
    [
        b"",
        b"BOGUS",
        b"SINCE 30-Feb-2024",
        b"SINCE 1-Foo-2024",
        b"OR SEEN",
        b"(SEEN",
        b"NOT",
        b"RETURN (BOGUS) ALL",
        b"LARGER x",
        b"()",
        b"(SEEN))",
        b"OR SEEN FLAGGED)",
        b"NOT(SEEN)",
    ],
)
def test_search_malformed(criteria: bytes) -> None:
    assert error(b"s SEARCH " + criteria + b"\r\n").tag == "s"


def test_sort() -> None:
    assert one(b"s UID SORT (REVERSE ARRIVAL subject) UTF-8 SINCE 1-Jan-2024\r\n") == Sort(
        "s",
        (SortCriterion("ARRIVAL", True), SortCriterion("SUBJECT")),
        "UTF-8",
        K("SINCE", datetime.date(2024, 1, 1)),
        None,
        True,
    )
    assert one(b"s SORT RETURN (COUNT) (DATE) US-ASCII ALL\r\n") == Sort(
        "s", (SortCriterion("DATE"),), "US-ASCII", K("ALL"), ("COUNT",)
    )
    for bad in [b"s SORT (DATE) ALL", b"s SORT () UTF-8 ALL", b"s SORT (WEIGHT) UTF-8 ALL"]:
        assert error(bad + b"\r\n").tag == "s"


def test_thread() -> None:
    # RFC 5256 §5: ["UID" SP] "THREAD" SP thread-alg SP search-criteria (a charset first).
    assert one(b"t THREAD REFERENCES UTF-8 ALL\r\n") == Thread("t", "REFERENCES", "UTF-8", K("ALL"))
    assert one(b"t UID THREAD orderedsubject us-ascii SINCE 1-Jan-2024 UNSEEN\r\n") == Thread(
        "t",
        "ORDEREDSUBJECT",
        "US-ASCII",
        K("AND", keys=(K("SINCE", datetime.date(2024, 1, 1)), K("UNSEEN"))),
        True,
    )
    literal = "Grüße".encode()
    line = b"t THREAD REFERENCES UTF-8 SUBJECT {%d+}\r\n" % len(literal) + literal + b"\r\n"
    assert one(line) == Thread("t", "REFERENCES", "UTF-8", K("SUBJECT", "Grüße"))


def test_thread_refuses_an_unknown_algorithm_with_bad() -> None:
    assert error(b"t THREAD REFS UTF-8 ALL\r\n") == CommandError(
        "t", "unknown threading algorithm REFS"
    )


def test_thread_charset_is_mandatory_and_checked_as_for_sort() -> None:
    assert error(b"t THREAD REFERENCES KOI8-R ALL\r\n") == CommandError(
        "t", "unsupported charset KOI8-R", "NO", "BADCHARSET"
    )
    # Without a charset, "ALL" is taken for one (and refused as one).
    assert error(b"t THREAD REFERENCES ALL\r\n").code == "BADCHARSET"
    for bad in [b"t THREAD REFERENCES UTF-8", b"t THREAD", b"t THREAD ", b"t THREAD (REFERENCES)"]:
        assert error(bad + b"\r\n").status == "BAD"


# -- the rest of the extensions -------------------------------------------------------------------


def test_enable_and_id() -> None:
    assert one(b"e ENABLE condstore UTF8=ACCEPT\r\n") == Enable("e", ("CONDSTORE", "UTF8=ACCEPT"))
    assert error(b"e ENABLE\r\n").tag == "e"
    assert one(b"i ID NIL\r\n") == Id("i", None)
    assert one(b'i ID ("name" "Roundcube" "version" NIL)\r\n') == Id(
        "i", (("name", "Roundcube"), ("version", None))
    )
    assert one(b"i ID ()\r\n") == Id("i", ())
    too_many = b"i ID (" + b" ".join(b'"k%d" "v"' % n for n in range(31)) + b")\r\n"
    assert error(too_many) == CommandError("i", "ID has more than 30 field-value pairs (RFC 2971)")


PREAUTH = ParserLimits(max_line_length=8192, max_literal_size=8192, max_append_size=0)


def id_command(pairs: int = 30, field: int = 30, value: int = 1024, escaped: bool = False) -> bytes:
    """An ID of C{pairs} quoted pairs of these lengths; C{escaped}: each value octet is ``\\"``."""
    octet = b'\\"' if escaped else b"v"

    def pair(n: int) -> bytes:
        name = (b"f%02d" % n).ljust(field, b"x")
        return b'"' + name + b'" "' + octet * value + b'"'

    return b"i ID (" + b" ".join(pair(n) for n in range(pairs)) + b")\r\n"


def test_a_legal_id_of_30_long_pairs_is_read_before_login() -> None:
    # RFC 2971 §3.3 allows 30 pairs, fields of 30 octets and values of 1024: imaptest's "id" test
    # sends such an ID before login, about 32 KiB on one line, and it was refused as too long.
    for data in [id_command(), id_command(escaped=True)]:
        assert len(data) > PREAUTH.max_line_length
        event = one(data, PREAUTH)
        assert isinstance(event, Id) and event.parameters is not None
        assert len(event.parameters) == 30
        assert {len(v or "") for _, v in event.parameters} == {1024}
    # Every string a literal: 60 literals, more than max_literals.
    literal = b"{1024+}\r\n" + b"v" * 1024
    pairs = b" ".join(
        b"{30+}\r\n" + (b"f%02d" % n).ljust(30, b"x") + b" " + literal for n in range(30)
    )
    event = one(b"i ID (" + pairs + b")\r\n", PREAUTH)
    assert isinstance(event, Id) and event.parameters is not None and len(event.parameters) == 30


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (id_command(field=31), "ID field longer than 30 octets (RFC 2971)"),
        (id_command(value=1025), "ID value longer than 1024 octets (RFC 2971)"),
        (id_command(pairs=31), "ID has more than 30 field-value pairs (RFC 2971)"),
        (id_command(pairs=31, escaped=True), "command line too long"),
    ],
)
def test_an_id_beyond_rfc_2971_is_refused(data: bytes, text: str) -> None:
    assert error(data, PREAUTH) == CommandError("i", text)
    # The parser keeps its place: the next command is read.
    events = parse(data + b"n NOOP\r\n", PREAUTH)
    assert events[-1] == Simple("n", "NOOP")


def test_only_id_gets_the_longer_line() -> None:
    long_login = b"a LOGIN " + b"u" * 9000 + b" p\r\n"
    assert error(long_login, PREAUTH) == CommandError("a", "command line too long")


def test_authenticate_with_and_without_initial_response() -> None:
    assert one(b"a AUTHENTICATE plain\r\n") == Authenticate("a", "PLAIN")
    assert one(b"a AUTHENTICATE PLAIN AHVzZXIAcGFzcw==\r\n") == Authenticate(
        "a", "PLAIN", b"\x00user\x00pass"
    )
    assert one(b"a AUTHENTICATE PLAIN =\r\n") == Authenticate("a", "PLAIN", b"")
    assert error(b"a AUTHENTICATE PLAIN AHVz!\r\n").tag == "a"
    assert error(b"a AUTHENTICATE PLAIN AHV\r\n").tag == "a"  # bad padding


def test_authenticate_exchange() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"a AUTHENTICATE LOGIN\r\ndXNlcg==\r\n\r\n*\r\n!!\r\nb NOOP\r\n")
    assert parser.next_event() == Authenticate("a", "LOGIN")
    parser.expect_authenticate_response()
    assert parser.next_event() == AuthenticateResponse(b"user")
    parser.expect_authenticate_response()
    assert parser.next_event() == AuthenticateResponse(b"")
    parser.expect_authenticate_response()
    assert parser.next_event() == AuthenticateCancelled()
    parser.expect_authenticate_response()
    assert parser.next_event() == AuthenticateResponse(None)
    assert parser.next_event() == Simple("b", "NOOP")


def test_idle_then_done() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"i IDLE\r\ndone\r\nn NOOP\r\n")
    assert parser.next_event() == Simple("i", "IDLE")
    parser.start_idle()
    assert parser.next_event() == IdleDone(True)
    assert parser.next_event() == Simple("n", "NOOP")
    # Anything but DONE ends IDLE too, and is not run as a command.
    parser.receive_data(b"j IDLE\r\nk LOGOUT\r\n")
    assert parser.next_event() == Simple("j", "IDLE")
    parser.start_idle()
    assert parser.next_event() == IdleDone(False)
    assert parser.next_event() is NEED_DATA


def test_idle_cannot_start_in_the_middle_of_a_command() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"a LOGIN {3}\r\n")
    assert isinstance(parser.next_event(), ContinuationRequired)
    with pytest.raises(RuntimeError):
        parser.start_idle()


def test_plaintext_pipelined_after_starttls_is_never_parsed() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"s STARTTLS\r\nx LOGIN joe secret\r\ny DELETE INBOX\r\n")
    assert parser.next_event() == Simple("s", "STARTTLS")
    parser.discard_buffered()
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"z CAPABILITY\r\n")  # the first command inside TLS
    assert parser.next_event() == Simple("z", "CAPABILITY")


# -- APPEND ---------------------------------------------------------------------------------------


MESSAGE = b"From: a@b\r\nSubject: hi\r\n\r\nbody\r\n"


def test_append_streams_the_message() -> None:
    data = (
        b'a APPEND Sent (\\Seen $Forwarded) " 5-Jan-2024 10:11:12 -0330" {%d}\r\n' % len(MESSAGE)
        + MESSAGE
        + b"\r\n"
    )
    events, _ = drive([data[:60], data[60:70], data[70:]])
    assert events == [
        AppendStart(
            "a",
            "Sent",
            ("\\Seen", "$Forwarded"),
            datetime.datetime(
                2024, 1, 5, 10, 11, 12, tzinfo=datetime.timezone(-datetime.timedelta(hours=3.5))
            ),
            len(MESSAGE),
            True,
        ),
        AppendData("a", MESSAGE),
        AppendEnd("a"),
    ]


def test_append_data_arrives_as_it_comes() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"a APPEND INBOX {10+}\r\n01234")
    assert parser.next_event() == AppendStart("a", "INBOX", (), None, 10, False)
    assert parser.in_append
    assert parser.next_event() == AppendData("a", b"01234")
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"56789\r\n")
    assert parser.next_event() == AppendData("a", b"56789")
    assert parser.next_event() == AppendEnd("a")
    assert not parser.in_append


def test_append_with_literal_mailbox_name() -> None:
    events = parse(b"a APPEND {4}\r\nJunk {2}\r\nhi\r\n")
    assert events == [
        ContinuationRequired("a", 4),
        AppendStart("a", "Junk", (), None, 2, True),
        AppendData("a", b"hi"),
        AppendEnd("a"),
    ]


def test_append_refused_before_the_message_is_sent() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"a APPEND Nowhere {5}\r\n")
    assert parser.next_event() == AppendStart("a", "Nowhere", (), None, 5, True)
    parser.reject_literal()  # the server wrote "a NO [TRYCREATE]"
    assert not parser.in_append
    parser.receive_data(b"b NOOP\r\n")
    assert parser.next_event() == Simple("b", "NOOP")


def test_literal_plus_append_refused_midway_is_thrown_away() -> None:
    parser = IMAPCommandParser()
    parser.receive_data(b"a APPEND Nowhere {20+}\r\nb NOOP\r\n012")
    assert isinstance(parser.next_event(), AppendStart)
    parser.reject_literal()
    parser.receive_data(b"3456789abc\r\nc NOOP\r\n")
    # The message's octets look like a command, but they are never read as one.
    assert parser.next_event() == Simple("c", "NOOP")


def test_append_junk_after_the_message_is_an_error() -> None:
    events = parse(b"a APPEND INBOX {2+}\r\nhi {3+}\r\nabc\r\nb NOOP\r\n")
    assert events[:2] == [AppendStart("a", "INBOX", (), None, 2, False), AppendData("a", b"hi")]
    assert isinstance(events[2], CommandError) and events[2].tag == "a"
    assert events[3:] == [Simple("b", "NOOP")]


@pytest.mark.parametrize(
    "line",
    [
        b"a APPEND INBOX (\\Seen {2}\r\n",
        b'a APPEND INBOX "31-Feb-2024 00:00:00 +0000" {2}\r\n',
        b"a APPEND INBOX junk {2}\r\n",
        b"a APPEND INBOX\r\n",
        b'a APPEND INBOX "hello"\r\n',
    ],
)
def test_append_malformed(line: bytes) -> None:
    # Refused before the literal: no continuation is asked for and nothing waits for the octets.
    events, parser = drive([line + b"b NOOP\r\n"], accept=False)
    assert isinstance(events[0], CommandError) and events[0].tag == "a"
    assert events[1:] == [Simple("b", "NOOP")]
    assert not parser.awaiting_continuation


# -- limits ---------------------------------------------------------------------------------------


def test_overlong_line_is_refused_early_and_dropped_to_its_end() -> None:
    parser = IMAPCommandParser(SMALL)
    parser.receive_data(b"a1 SEARCH " + b"x" * 250)
    assert parser.next_event() == CommandError("a1", "command line too long")
    assert parser.next_event() is NEED_DATA
    assert parser.buffered_size <= 40  # refused before its end arrived, and not kept
    parser.receive_data(b"y" * 10_000)
    assert parser.next_event() is NEED_DATA
    assert parser.buffered_size <= 40
    parser.receive_data(b"\r\nb NOOP\r\n")
    assert parser.next_event() == Simple("b", "NOOP")


def test_line_of_exactly_the_limit_is_accepted() -> None:
    limits = ParserLimits(max_line_length=20)
    line = b"a SEARCH SUBJECT " + b"x" * 3
    assert len(line) == 20
    assert drive([line + b"\r\n"], limits)[0] == [Search("a", K("SUBJECT", "xxx"))]
    assert drive([line + b"x\r\n"], limits)[0] == [CommandError("a", "command line too long")]


def test_line_limit_counts_text_around_literals_but_not_literals() -> None:
    limits = ParserLimits(max_line_length=30, max_literal_size=1000)
    ok = b"a LOGIN {100+}\r\n" + b"u" * 100 + b" p\r\n"
    assert isinstance(drive([ok], limits)[0][0], Login)
    long = b"a LOGIN {3+}\r\nabc " + b"p" * 30 + b"\r\nb NOOP\r\n"
    events = drive([long], limits)[0]
    assert events == [CommandError("a", "command line too long"), Simple("b", "NOOP")]


def test_overlong_line_announcing_literal_plus_skips_the_literal() -> None:
    data = b"a SEARCH " + b"x" * 300 + b" {12+}\r\nb DELETE Foo\r\nc NOOP\r\n"
    events, _ = drive([data], SMALL)
    assert events == [CommandError("a", "command line too long"), Simple("c", "NOOP")]


def test_too_large_synchronizing_literal_is_refused_before_it_is_sent() -> None:
    events, parser = drive([b"a LOGIN {51}\r\n"], SMALL)
    assert events == [CommandError("a", "literal too large", code="TOOBIG")]
    assert not parser.awaiting_continuation
    events = drive([b"a LOGIN {51}\r\nb NOOP\r\n"], SMALL)[0]
    assert events[1:] == [Simple("b", "NOOP")]


def test_too_large_literal_plus_is_read_and_thrown_away() -> None:
    data = b"a LOGIN {60+}\r\n" + b"c DELETE INBOX\r\n" * 4 + b" pw\r\nb NOOP\r\n"
    assert len(b"c DELETE INBOX\r\n" * 4) == 64
    data = b"a LOGIN {64+}\r\n" + b"c DELETE INBOX\r\n" * 4 + b" pw\r\nb NOOP\r\n"
    events, _ = drive([data[i : i + 7] for i in range(0, len(data), 7)], SMALL)
    assert events == [
        CommandError("a", "literal too large", code="TOOBIG"),
        Simple("b", "NOOP"),
    ]


def test_append_cap_is_separate_from_the_literal_cap() -> None:
    message = b"m" * 300
    ok = b"a APPEND INBOX {300}\r\n" + message + b"\r\n"
    assert drive([ok], SMALL)[0][-1] == AppendEnd("a")
    big = b"a APPEND INBOX {301}\r\nb NOOP\r\n"
    assert drive([big], SMALL)[0] == [
        CommandError("a", "literal too large", code="TOOBIG"),
        Simple("b", "NOOP"),
    ]


def test_limits_can_change_between_commands() -> None:
    parser = IMAPCommandParser(ParserLimits(max_literal_size=10))
    parser.receive_data(b"a LOGIN {20+}\r\n" + b"u" * 20 + b" p\r\n")
    assert isinstance(parser.next_event(), CommandError)
    parser.limits = ParserLimits(max_literal_size=100)
    parser.receive_data(b"b LOGIN {20+}\r\n" + b"u" * 20 + b" p\r\n")
    assert parser.next_event() == Login("b", "u" * 20, "p")


def test_too_many_literals() -> None:
    data = b"a SEARCH OR TO {1+}\r\na FROM {1+}\r\nb CC {1+}\r\nc BCC {1+}\r\nd\r\nb NOOP\r\n"
    events = drive([data], SMALL)[0]
    assert events == [CommandError("a", "too many literals"), Simple("b", "NOOP")]


def test_huge_literal_size_is_refused_not_overflowed() -> None:
    events = drive([b"a LOGIN {" + b"9" * 5000 + b"}\r\nb NOOP\r\n"])[0]
    assert isinstance(events[0], CommandError)
    assert events[1:] == [Simple("b", "NOOP")]


def test_a_literal_without_a_valid_tag_is_refused() -> None:
    assert drive([b"{5}\r\nb NOOP\r\n"])[0] == [
        CommandError(None, "bad tag"),
        Simple("b", "NOOP"),
    ]


# -- properties -----------------------------------------------------------------------------------


COMMANDS = [
    b"a1 CAPABILITY\r\n",
    b"a2 LOGIN {3}\r\njoe {6+}\r\nsecret\r\n",
    b'a3 LIST (SUBSCRIBED) "" ("*" "%") RETURN (CHILDREN STATUS (MESSAGES))\r\n',
    b"a4 UID FETCH 1:* (FLAGS BODY.PEEK[1.HEADER.FIELDS (SUBJECT)]<0.10>) (CHANGEDSINCE 3)\r\n",
    b"a5 SEARCH RETURN (COUNT) CHARSET UTF-8 OR (FROM {2}\r\nhi) NOT SEEN SINCE 1-Feb-2024\r\n",
    b"a6 UID STORE 1,3:5 (UNCHANGEDSINCE 9) -FLAGS.SILENT (\\Deleted)\r\n",
    b"a7 APPEND INBOX (\\Seen) {12}\r\nHello\r\nWorld\r\n",
    b"a8 APPEND Sent {5+}\r\nabcde\r\n",
    b"a9 UID SORT (REVERSE DATE) UTF-8 ALL\r\n",
    b"b1 BOGUS command\r\n",
    b"b2 LOGIN {99999}\r\n",
    b"b3 LOGIN {70+}\r\n" + b"x" * 70 + b"\r\n",
    b"b4 SEARCH " + b"y" * 300 + b"\r\n",
    b"\r\n",
    b"b5 NOOP\n",
    b"b6 SELECT INBOX (CONDSTORE)\r\n",
    b'b7 ID ("name" "x")\r\n',
]
LIMITS = ParserLimits(max_line_length=120, max_literal_size=64, max_append_size=256, max_literals=4)


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary places."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=8), st.data())
def test_any_split_gives_the_same_events(commands: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(commands)
    whole, _ = drive([stream], LIMITS)
    pieces = data.draw(split(stream))
    assert drive(pieces, LIMITS)[0] == whole
    assert drive([bytes([b]) for b in stream], LIMITS)[0] == whole


@settings(max_examples=300)
@given(st.binary(max_size=600), st.booleans())
def test_garbage_never_raises(garbage: bytes, accept: bool) -> None:
    drive([garbage, b"\r\n"], LIMITS, accept=accept)  # any exception fails the test


GARBAGE_PARTS = st.sampled_from(
    [b"{", b"}", b"{5}", b"{5+}", b"{999+}", b"\r\n", b"\n", b"(", b")", b'"', b"\\", b" ", b"\x00"]
    + [b"a", b"1", b"*", b"APPEND", b"LOGIN", b"SEARCH", b"x" * 50, b"[", b"]", b"\xff"]
)


@settings(max_examples=300)
@given(st.lists(GARBAGE_PARTS | st.sampled_from(COMMANDS), max_size=40), st.data())
def test_structured_garbage_never_raises_and_caps_hold(
    parts: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(parts)
    pieces = data.draw(split(stream))
    parser = IMAPCommandParser(LIMITS)
    events: list[Event] = []
    # What a command may hold: its line, its literals (and their place-holders), and a line end.
    cap = LIMITS.max_line_length + LIMITS.max_literals * (LIMITS.max_literal_size + 1) + 2
    for piece in pieces:
        parser.receive_data(piece)
        pump(parser, events, accept=data.draw(st.booleans()))
        assert parser.buffered_size <= cap
    for event in events:
        if isinstance(event, AppendData):
            assert len(event.data) <= LIMITS.max_append_size
        if isinstance(event, ContinuationRequired):
            assert event.size <= LIMITS.max_literal_size
        if isinstance(event, AppendStart):
            assert event.size <= LIMITS.max_append_size


@settings(max_examples=50)
@given(st.integers(1, 4000), st.integers(1, 4000))
def test_streamed_append_holds_little(size: int, chunk: int) -> None:
    """An APPEND message is passed on as it comes; the parser never holds more than one piece."""
    limits = ParserLimits(max_line_length=100, max_literal_size=10, max_append_size=4000)
    parser = IMAPCommandParser(limits)
    message = bytes(i % 251 for i in range(size))
    head = b"a APPEND INBOX {%d+}\r\n" % size
    stream = head + message + b"\r\n"
    received = bytearray()
    for i in range(0, len(stream), chunk):
        parser.receive_data(stream[i : i + chunk])
        events: list[Event] = []
        pump(parser, events)
        received += b"".join(e.data for e in events if isinstance(e, AppendData))
        # At most part of the command line, or of the final CRLF: never the message.
        assert parser.buffered_size < len(head)
    assert received == message
