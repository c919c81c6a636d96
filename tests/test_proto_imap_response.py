"""
Tests for the IMAP response encoder (L{strata_twisted.proto.imap_response}).

Exact bytes for each response, the string rules (atom, quoted, literal, NIL), and round trips
through the command parser, which reads strings, lists and sequence sets by the same grammar.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strata_twisted.proto.imap_parser import (
    NEED_DATA,
    Event,
    FetchAttribute,
    IMAPCommandParser,
    Login,
    MailboxCommand,
    ParserLimits,
    Section,
    Store,
)
from strata_twisted.proto.imap_parser import Expunge as ExpungeCommand
from strata_twisted.proto.imap_response import (
    Atom,
    Raw,
    ResponseCode,
    Streamed,
    ThreadNode,
    Value,
    capability_response,
    compact_sequence_set,
    continuation,
    continuation_challenge,
    enabled_response,
    encode_astring,
    encode_mailbox,
    encode_string,
    encode_value,
    esearch_response,
    exists_response,
    expunge_response,
    fetch_item_name,
    fetch_response,
    fetch_response_parts,
    flags_response,
    id_response,
    list_response,
    recent_response,
    search_response,
    sort_response,
    status_data_response,
    status_response,
    thread_response,
)

# -- strings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("hello", b'"hello"'),
        ("", b'""'),
        ('say "hi" \\o/', b'"say \\"hi\\" \\\\o/"'),
        ("Grüße", b"{7}\r\nGr\xc3\xbc\xc3\x9fe"),  # 8-bit: literal
        (b"a\r\nb", b"{4}\r\na\r\nb"),  # CR/LF: literal
        (b"a\x00b", b"{3}\r\na\x00b"),
        (b"tab\there", b"{8}\r\ntab\there"),  # controls: literal
        ("x" * 1024, b'"' + b"x" * 1024 + b'"'),
        ("x" * 1025, b"{1025}\r\n" + b"x" * 1025),  # over-long: literal
    ],
)
def test_encode_string(value: str | bytes, wire: bytes) -> None:
    assert encode_string(value) == wire


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("INBOX", b"INBOX"),
        ("a]b", b"a]b"),
        ("two words", b'"two words"'),
        ("", b'""'),
        ("nil", b'"nil"'),  # never mistaken for NIL
        ("a*", b'"a*"'),
        ("a%", b'"a%"'),
        ("(x)", b'"(x)"'),
        ("{3}", b'"{3}"'),
    ],
)
def test_encode_astring(value: str, wire: bytes) -> None:
    assert encode_astring(value) == wire


def test_encode_mailbox_uses_modified_utf7() -> None:
    assert encode_mailbox("Entwürfe") == b"Entw&APw-rfe"
    assert encode_mailbox("Sent Items") == b'"Sent Items"'
    assert encode_mailbox("R&D") == b"R&-D"


def test_encode_value() -> None:
    value: Value = [None, 7, "a b", Atom("\\Seen"), Raw(b"(NIL NIL)"), (), [b"x\r\n"]]
    assert encode_value(value) == b'(NIL 7 "a b" \\Seen (NIL NIL) () ({3}\r\nx\r\n))'
    with pytest.raises(ValueError):
        encode_value(-1)
    with pytest.raises(TypeError):
        encode_value(True)
    with pytest.raises(ValueError):
        encode_value(Streamed(10))


@pytest.mark.parametrize("text", ["a b", "(x)", "", '"q"', "a\r\n", "%", "x]"])
def test_atom_refuses_what_is_not_an_atom(text: str) -> None:
    with pytest.raises(ValueError):
        Atom(text)


# -- sequence sets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("numbers", "text"),
    [
        ([1, 2, 3, 5], "1:3,5"),
        ([5, 3, 1, 2, 2], "1:3,5"),
        ([7], "7"),
        ([1, 3, 5], "1,3,5"),
        ([10, 11, 12, 20, 21], "10:12,20:21"),
    ],
)
def test_compact_sequence_set(numbers: list[int], text: str) -> None:
    assert compact_sequence_set(numbers) == text


def test_compact_sequence_set_keeping_order() -> None:
    assert compact_sequence_set([5, 6, 1, 2, 9], keep_order=True) == "5:6,1:2,9"
    with pytest.raises(ValueError):
        compact_sequence_set([])
    with pytest.raises(ValueError):
        compact_sequence_set([0, 1])


# -- status responses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "wire"),
    [
        (("a1", "OK", "LOGIN completed"), b"a1 OK LOGIN completed\r\n"),
        ((None, "OK", "Strata ready"), b"* OK Strata ready\r\n"),
        ((None, "BYE", "Logging out"), b"* BYE Logging out\r\n"),
        ((None, "PREAUTH", "Welcome"), b"* PREAUTH Welcome\r\n"),
        (("a2", "BAD", "line1\r\na3 OK forged"), b"a2 BAD line1??a3 OK forged\r\n"),
        (("a4", "NO", "Grüße"), b"a4 NO Gr??e\r\n"),
        (("a5", "OK", ""), b"a5 OK Done\r\n"),
    ],
)
def test_status_response(args: tuple[str | None, str, str], wire: bytes) -> None:
    tag, status, text = args
    assert status_response(tag, status, text) == wire  # type: ignore[arg-type]


def test_status_response_refuses_bad_tags_and_tagged_bye() -> None:
    for tag in ["", "a b", "a+b", "*", "a\r\n"]:
        with pytest.raises(ValueError):
            status_response(tag, "OK", "x")
    with pytest.raises(ValueError):
        status_response("a1", "BYE", "x")


@pytest.mark.parametrize(
    ("code", "wire"),
    [
        (ResponseCode.number("UIDVALIDITY", 3857529045), b"[UIDVALIDITY 3857529045]"),
        (ResponseCode.number("HIGHESTMODSEQ", 715194045007), b"[HIGHESTMODSEQ 715194045007]"),
        (ResponseCode.simple("TRYCREATE"), b"[TRYCREATE]"),
        (ResponseCode.simple("UNAVAILABLE"), b"[UNAVAILABLE]"),
        (ResponseCode.append_uid(38505, 3955), b"[APPENDUID 38505 3955]"),
        (
            ResponseCode.copy_uid(38505, [304, 319, 320, 321], [3956, 3957, 3958, 3959]),
            b"[COPYUID 38505 304,319:321 3956:3959]",
        ),
        (
            ResponseCode.permanent_flags(["\\Seen", "\\Deleted", "\\*"]),
            b"[PERMANENTFLAGS (\\Seen \\Deleted \\*)]",
        ),
        (
            ResponseCode.capability(["IMAP4rev1", "AUTH=PLAIN", "LITERAL+"]),
            b"[CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL+]",
        ),
        (ResponseCode.bad_charset(["US-ASCII", "UTF-8"]), b"[BADCHARSET (US-ASCII UTF-8)]"),
        (ResponseCode.modified([7, 9, 8]), b"[MODIFIED 7:9]"),
    ],
)
def test_response_codes(code: ResponseCode, wire: bytes) -> None:
    assert code.to_bytes() == wire
    assert status_response("t", "OK", "done", code) == b"t OK " + wire + b" done\r\n"


def test_copyuid_needs_matching_sets() -> None:
    with pytest.raises(ValueError):
        ResponseCode.copy_uid(1, [1, 2], [3])
    with pytest.raises(ValueError):
        ResponseCode("BAD NAME")


def test_continuations() -> None:
    assert continuation() == b"+ Ready\r\n"
    assert continuation("idling") == b"+ idling\r\n"
    assert continuation_challenge(b"") == b"+ \r\n"
    assert continuation_challenge(b"Username:") == b"+ VXNlcm5hbWU6\r\n"


# -- data responses -------------------------------------------------------------------------------


def test_simple_data_responses() -> None:
    assert capability_response(["IMAP4rev1", "IDLE"]) == b"* CAPABILITY IMAP4rev1 IDLE\r\n"
    assert enabled_response([]) == b"* ENABLED\r\n"
    assert enabled_response(["CONDSTORE"]) == b"* ENABLED CONDSTORE\r\n"
    assert flags_response(["\\Seen", "$Junk"]) == b"* FLAGS (\\Seen $Junk)\r\n"
    assert exists_response(172) == b"* 172 EXISTS\r\n"
    assert recent_response(0) == b"* 0 RECENT\r\n"
    assert expunge_response(3) == b"* 3 EXPUNGE\r\n"


def test_list_response() -> None:
    assert list_response(["\\HasNoChildren", "\\Sent"], "/", "Sent") == (
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n'
    )
    assert list_response([], None, "Entwürfe", command="LSUB") == (
        b"* LSUB () NIL Entw&APw-rfe\r\n"
    )
    assert list_response(["\\Noselect"], "/", "Old Mail") == (
        b'* LIST (\\Noselect) "/" "Old Mail"\r\n'
    )


def test_list_response_with_extended_data_items() -> None:
    # RFC 5258 §6: mbox-list-extended, one parenthesized list after the name, tags as astrings.
    assert list_response([], "/", "Foo", extended=[("CHILDINFO", ("SUBSCRIBED",))]) == (
        b'* LIST () "/" Foo (CHILDINFO ("SUBSCRIBED"))\r\n'
    )
    two = list_response(
        ["\\NonExistent"],
        "/",
        "Old Mail",
        extended=[("CHILDINFO", ("SUBSCRIBED", "SPECIAL-USE")), ("X-VENDOR TAG", 7)],
    )
    assert two == (
        b'* LIST (\\NonExistent) "/" "Old Mail" '
        b'(CHILDINFO ("SUBSCRIBED" "SPECIAL-USE") "X-VENDOR TAG" 7)\r\n'
    )
    # none: no empty list is written
    assert list_response([], "/", "Foo", extended=[]) == b'* LIST () "/" Foo\r\n'


def test_status_search_sort_esearch() -> None:
    assert status_data_response("INBOX", [("MESSAGES", 231), ("UIDNEXT", 44292)]) == (
        b"* STATUS INBOX (MESSAGES 231 UIDNEXT 44292)\r\n"
    )
    assert search_response([]) == b"* SEARCH\r\n"
    assert search_response([2, 84, 882]) == b"* SEARCH 2 84 882\r\n"
    assert search_response([2, 5], modseq=917162500) == b"* SEARCH 2 5 (MODSEQ 917162500)\r\n"
    assert sort_response([5, 3, 4]) == b"* SORT 5 3 4\r\n"
    assert esearch_response("A282", uid=True, minimum=2, count=3, all_numbers=[2, 10, 11]) == (
        b'* ESEARCH (TAG "A282") UID MIN 2 COUNT 3 ALL 2,10:11\r\n'
    )
    assert esearch_response("A283", count=0, all_numbers=[]) == (
        b'* ESEARCH (TAG "A283") COUNT 0\r\n'
    )


def test_thread_response_syntax() -> None:
    # RFC 5256 §4: "(2)(3 6 (4 23)(44 7 96))", the nesting of its example.
    tree = [
        ThreadNode(2),
        ThreadNode(
            3,
            (
                ThreadNode(
                    6,
                    (
                        ThreadNode(4, (ThreadNode(23),)),
                        ThreadNode(44, (ThreadNode(7, (ThreadNode(96),)),)),
                    ),
                ),
            ),
        ),
    ]
    assert thread_response(tree) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
    assert thread_response([ThreadNode(None, (ThreadNode(3), ThreadNode(5)))]) == (
        b"* THREAD ((3)(5))\r\n"
    )
    # A dummy with one child, or inside a thread, stands aside; one with none is left out.
    lone = ThreadNode(None, (ThreadNode(1, (ThreadNode(None, (ThreadNode(2), ThreadNode(3))),)),))
    assert thread_response([lone, ThreadNode(None)]) == b"* THREAD (1 (2)(3))\r\n"


def test_thread_response_writes_any_depth() -> None:
    # A chain of only children is written flat, without recursion, however long it is.
    chain = ThreadNode(5000)
    for number in range(4999, 0, -1):
        chain = ThreadNode(number, (chain,))
    expected = b"* THREAD (" + b" ".join(b"%d" % n for n in range(1, 5001)) + b")\r\n"
    assert thread_response([chain]) == expected


def test_id_response() -> None:
    assert id_response(None) == b"* ID NIL\r\n"
    assert id_response([("name", "Strata"), ("version", None)]) == (
        b'* ID ("name" "Strata" "version" NIL)\r\n'
    )


# -- FETCH ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "name"),
    [
        (FetchAttribute("FLAGS"), "FLAGS"),
        (FetchAttribute("BODY", Section(), None, True), "BODY[]"),
        (FetchAttribute("BODY", Section(), (0, 1024), True), "BODY[]<0>"),
        (FetchAttribute("BODY", Section((1, 2), "MIME")), "BODY[1.2.MIME]"),
        (FetchAttribute("BODY", Section((3,))), "BODY[3]"),
        (
            FetchAttribute("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM")), (10, 5)),
            "BODY[HEADER.FIELDS (DATE FROM)]<10>",
        ),
    ],
)
def test_fetch_item_name(attribute: FetchAttribute, name: str) -> None:
    assert fetch_item_name(attribute) == name


def test_fetch_response() -> None:
    items: list[tuple[str, Value]] = [
        ("UID", 4827313),
        ("FLAGS", (Atom("\\Seen"),)),
        ("INTERNALDATE", "17-Jul-1996 02:44:25 -0700"),
        ("BODY[HEADER.FIELDS (SUBJECT)]", b"Subject: hi\r\n\r\n"),
        ("ENVELOPE", Raw(b'(NIL "hi" NIL NIL NIL NIL NIL NIL NIL NIL)')),
        ("BODY[1]<0>", None),
    ]
    assert fetch_response(12, items) == (
        b'* 12 FETCH (UID 4827313 FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" '
        b"BODY[HEADER.FIELDS (SUBJECT)] {15}\r\nSubject: hi\r\n\r\n "
        b'ENVELOPE (NIL "hi" NIL NIL NIL NIL NIL NIL NIL NIL) BODY[1]<0> NIL)\r\n'
    )


def test_fetch_response_leaves_room_for_a_streamed_body() -> None:
    body = Streamed(50 * 1024 * 1024, source="message-7")
    parts = fetch_response_parts(7, [("UID", 9), ("BODY[]", body), ("FLAGS", ())])
    assert parts == [b"* 7 FETCH (UID 9 BODY[] {52428800}\r\n", body, b" FLAGS ())\r\n"]
    with pytest.raises(ValueError):
        fetch_response(7, [("BODY[]", body)])
    with pytest.raises(ValueError):
        fetch_response(7, [("BODY[]\r\n", 1)])


# -- round trips through the parser ---------------------------------------------------------------


def parse(data: bytes) -> list[Event]:
    limits = ParserLimits(max_line_length=100_000, max_literal_size=100_000)
    parser = IMAPCommandParser(limits)
    parser.receive_data(data)
    events: list[Event] = []
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            if not parser.awaiting_continuation:
                return events
            parser.accept_literal()
            continue
        events.append(event)


@settings(max_examples=200)
@given(st.binary(max_size=2000), st.binary(max_size=50))
def test_strings_round_trip(password: bytes, user: bytes) -> None:
    line = b"a LOGIN " + encode_astring(user) + b" " + encode_string(password) + b"\r\n"
    events = [e for e in parse(line) if isinstance(e, Login)]
    surrogate = "utf-8", "surrogateescape"
    assert events == [Login("a", user.decode(*surrogate), password.decode(*surrogate))]


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40))
def test_mailbox_names_round_trip(name: str) -> None:
    expected = "INBOX" if name.upper() == "INBOX" else name
    events = [e for e in parse(b"a CREATE " + encode_mailbox(name) + b"\r\n")]
    assert events[-1] == MailboxCommand("a", "CREATE", expected)


FLAG = st.sampled_from(["\\Answered", "\\Seen", "\\Draft"]) | st.from_regex(
    r"\$?[A-Za-z][A-Za-z0-9_.-]{0,20}", fullmatch=True
)


@settings(max_examples=200)
@given(st.lists(FLAG, max_size=10))
def test_flag_lists_round_trip(flags: list[str]) -> None:
    line = b"a STORE 1 FLAGS " + encode_value(tuple(Atom(f) for f in flags)) + b"\r\n"
    (event,) = parse(line)
    assert isinstance(event, Store)
    assert event.flags == tuple(flags)


@settings(max_examples=200)
@given(st.sets(st.integers(1, 500), min_size=1))
def test_sequence_sets_round_trip(numbers: set[int]) -> None:
    text = compact_sequence_set(numbers)
    (event,) = parse(b"a UID EXPUNGE " + text.encode() + b"\r\n")
    assert isinstance(event, ExpungeCommand) and event.uid_set is not None
    resolved = {n for low, high in event.uid_set.resolve(500) for n in range(low, high + 1)}
    assert resolved == numbers
    # Compact: no two ranges could have been one.
    ranges = event.uid_set.resolve(500)
    assert len(ranges) == len(text.split(","))
