"""
THREAD (strata_twisted.core.imap_thread): ORDEREDSUBJECT and REFERENCES against RFC 5256 §3's
rules, one scenario per rule, and the cases of dovecot/imaptest's thread tests (thread,
thread2-8, thread-orderedsubject, -2) rebuilt with messages of our own.  Every expected answer in
SCENARIOS is also what Dovecot 2.3.19 answers for the same messages (checked once, by hand, with
the messages put in a private Dovecot; the test itself needs no Dovecot).
"""

from __future__ import annotations

import datetime
import io
import sys

import pytest

from strata_twisted.core.imap_search import Candidate, Content, Need, matches
from strata_twisted.core.imap_search import Mailbox as SearchMailbox
from strata_twisted.core.imap_thread import (
    ALGORITHMS,
    message_ids,
    plan_thread,
    thread,
    thread_response,
)
from strata_twisted.model import MailMessage
from strata_twisted.proto.imap_parser import IMAPCommandParser, NeedData, SearchKey
from strata_twisted.proto.mime import index_message

T0 = datetime.datetime(2024, 2, 22, 12, 0, tzinfo=datetime.UTC).timestamp()


def at(minutes: float) -> float:
    """An INTERNALDATE C{minutes} after T0."""
    return T0 + 60 * minutes


def candidates(messages: list[tuple[str, float]]) -> list[Candidate]:
    """Messages (header block, INTERNALDATE) as candidates numbered 1..n, UID = 10 * seq."""
    out = []
    for seq, (header, internal) in enumerate(messages, start=1):
        raw = (header.strip("\n").replace("\n", "\r\n") + "\r\n\r\nbody\r\n").encode()
        root = index_message(io.BytesIO(raw), len(raw)).root
        block = raw[root.header_offset : root.body_offset]
        message = MailMessage(seq * 10, "q", frozenset(), internal, len(raw), 1)
        out.append(Candidate(seq, message, Content(header=block)))
    return out


def threads(algorithm: str, messages: list[tuple[str, float]], *, uid: bool = False) -> str:
    """The THREAD response's data, ``(1)(2 3)``."""
    line = thread_response(thread(algorithm, candidates(messages), uid=uid))
    return line.decode().removeprefix("* THREAD").strip()


# Each scenario: the messages (header, INTERNALDATE) in mailbox order, and the expected threads.
SCENARIOS: dict[str, tuple[list[tuple[str, float]], dict[str, str]]] = {
    # imaptest thread: a message's References name one message and a later one; the later one
    # (found by its ID) references the middle one.  Step 1.B breaks <late>'s link to <top> and
    # would make a loop linking it under <middle>, so <late> is a root with <middle> under it.
    "references-loop-breaks-old-parent": (
        [
            ("Message-ID: <top@t>", at(120)),
            ("Message-ID: <middle@t>\nReferences: <top@t> <late@t>", at(0)),
            ("Message-ID: <late@t>\nReferences: <middle@t>", at(60)),
        ],
        {"REFERENCES": "(3 2)(1)"},
    ),
    # The same after the first message is expunged: <top> is a dummy without children.
    "references-loop-without-top": (
        [
            ("Message-ID: <middle@t>\nReferences: <top@t> <late@t>", at(0)),
            ("Message-ID: <late@t>\nReferences: <middle@t>", at(60)),
        ],
        {"REFERENCES": "(2 1)"},
    ),
    # imaptest thread2: a duplicate Message-ID; the second message gets a unique one.
    "duplicate-ids": (
        [("Message-ID: <same@t>", at(0)), ("Message-ID: <same@t>", at(0))],
        {"REFERENCES": "(1)(2)"},
    ),
    # imaptest thread3: duplicate IDs, then step 5 puts the reply under the original.
    "duplicate-ids-merged-by-subject": (
        [
            ("Message-ID: <same@t>\nSubject: lunch", at(0)),
            ("Message-ID: <same@t>\nSubject: Re: lunch", at(1)),
        ],
        {"REFERENCES": "(1 2)", "ORDEREDSUBJECT": "(1 2)"},
    ),
    # imaptest thread4: the reply's parent is missing: a dummy with one child, which step 3
    # promotes to the root; step 5 then puts the reply under the original.
    "missing-parent-then-subject": (
        [
            ("Message-ID: <first@t>\nSubject: lunch", at(0)),
            ("Message-ID: <second@t>\nReferences: <gone@t>\nSubject: Re: lunch", at(1)),
        ],
        {"REFERENCES": "(1 2)"},
    ),
    # imaptest thread5, first part: In-Reply-To alone builds the tree.
    "in-reply-to": (
        [
            ("Message-ID: <m1@t>", at(120)),
            ("Message-ID: <m2@t>\nIn-Reply-To: <m1@t>", at(0)),
            ("Message-ID: <m3@t>\nIn-Reply-To: <m1@t>", at(0)),
            ("Message-ID: <m4@t>\nIn-Reply-To: <m2@t>", at(0)),
        ],
        {"REFERENCES": "(1 (2 4)(3))"},
    ),
    # thread5 after 1 and 2 are expunged: two dummies with one child each, both promoted.
    "in-reply-to-parents-gone": (
        [
            ("Message-ID: <m3@t>\nIn-Reply-To: <m1@t>", at(0)),
            ("Message-ID: <m4@t>\nIn-Reply-To: <m2@t>", at(0)),
        ],
        {"REFERENCES": "(1)(2)"},
    ),
    # thread5's last step: a second reply to <m2>: a dummy with two children stays at the top.
    "dummy-with-two-children-stays": (
        [
            ("Message-ID: <m3@t>\nIn-Reply-To: <m1@t>", at(0)),
            ("Message-ID: <m4@t>\nIn-Reply-To: <m2@t>", at(0)),
            ("Message-ID: <m5@t>\nIn-Reply-To: <m2@t>", at(0)),
        ],
        {"REFERENCES": "(1)((2)(3))"},
    ),
    # imaptest thread6: no Message-IDs, both reference one missing message.
    "siblings-of-a-missing-parent": (
        [("References: <gone@t>", at(0)), ("References: <gone@t>", at(1))],
        {"REFERENCES": "((1)(2))"},
    ),
    # imaptest thread7: a duplicate ID referencing the same parent is a sibling, not a child.
    "duplicate-id-is-a-sibling": (
        [
            ("Message-ID: <a@t>", at(0)),
            ("Message-ID: <b@t>\nReferences: <a@t>", at(0)),
            ("Message-ID: <c@t>\nReferences: <b@t>", at(0)),
            ("Message-ID: <b@t>\nReferences: <a@t>", at(0)),
        ],
        {"REFERENCES": "(1 (2 3)(4))"},
    ),
    # thread7 after 2 is expunged: the other <b> takes its place in the chain.
    "duplicate-id-takes-over": (
        [
            ("Message-ID: <a@t>", at(0)),
            ("Message-ID: <c@t>\nReferences: <b@t>", at(0)),
            ("Message-ID: <b@t>\nReferences: <a@t>", at(0)),
        ],
        {"REFERENCES": "(1 3 2)"},
    ),
    # RFC 5256 §3: References win over In-Reply-To; In-Reply-To's first valid ID otherwise;
    # Message IDs are normalized (quoting, comments, white space).
    "references-before-in-reply-to": (
        [
            ("Message-ID: <a@t>", at(0)),
            ("Message-ID: <b@t>", at(1)),
            ('Message-ID: <c@t>\nIn-Reply-To: <a@t>\nReferences: <"b"@t>', at(2)),
            ("Message-ID: <d@t>\nIn-Reply-To: junk <x> <(note) a @t> <b@t>", at(3)),
            ("Message-ID: <e@t>\nReferences: nothing valid\nIn-Reply-To: <b@t>", at(4)),
        ],
        {"REFERENCES": "(1 4)(2 (3)(5))"},
    ),
    # Step 4 and 6 sort by sent date (the Date header in UTC, else INTERNALDATE), ties by
    # sequence number; a dummy sorts by its first child.
    "sorted-by-sent-date": (
        [
            ("Message-ID: <p@t>\nDate: Thu, 22 Feb 2024 14:00:00 +0200", at(500)),  # 12:00Z
            ("Message-ID: <q@t>\nIn-Reply-To: <p@t>", at(30)),
            ("Message-ID: <r@t>\nIn-Reply-To: <p@t>\nDate: Thu, 22 Feb 2024 12:10:00 +0000", at(5)),
            ("Message-ID: <s@t>", at(-10)),
            ("References: <gone@t>", at(20)),
            ("References: <gone@t>", at(-20)),
        ],
        {"REFERENCES": "((6)(5))(4)(1 (3)(2))", "ORDEREDSUBJECT": "(6 (4)(1)(3)(5)(2))"},
    ),
    # Step 5: roots with the same base subject merge.  A reply goes under a non-reply; two
    # non-replies go under a new dummy; a dummy takes the others in; empty subjects never merge.
    "subject-merging": (
        [
            ("Message-ID: <1@t>\nSubject: plans", at(0)),
            ("Message-ID: <2@t>\nSubject: Re: plans", at(1)),
            ("Message-ID: <3@t>\nSubject: budget", at(2)),
            ("Message-ID: <4@t>\nSubject: [team] budget", at(3)),
            ("Message-ID: <5@t>\nSubject: menu\nReferences: <gone@t>", at(4)),
            ("Message-ID: <6@t>\nSubject: Fwd: menu\nReferences: <gone@t>", at(5)),
            ("Message-ID: <7@t>\nSubject: menu", at(6)),
            ("Message-ID: <8@t>", at(7)),
            ("Message-ID: <9@t>\nSubject: ", at(8)),
            ("Message-ID: <10@t>\nSubject: RE: PLANS (fwd)", at(9)),
        ],
        {
            "REFERENCES": "(1 (2)(10))((3)(4))((5)(6)(7))(8)(9)",
            "ORDEREDSUBJECT": "(1 (2)(10))(3 4)(5 (6)(7))(8 9)",
        },
    ),
    # imaptest thread-orderedsubject: base subjects (RFC 5256 §2.1) decide the threads; equal
    # dates keep mailbox order; no subject and an encoded space are the same (empty) subject.
    "orderedsubject-base-subjects": (
        [
            ("Subject: a", at(0)),
            ("Subject: C", at(0)),
            ("Subject: b", at(0)),
            ("Subject: _", at(0)),
            ("Subject: [x] Fwd: [y] Re: fw: b (fWd)  (fwd)", at(0)),
            ("Subject: b (a)", at(0)),
            ("Subject: Re: [FWD: c]", at(0)),
            ("Subject: [only]", at(0)),
            ("X-Note: no subject", at(0)),
            ("Subject: =?iso-8859-1?q?_?=", at(0)),
            ("Subject: Re: =?utf-8?q?b?=", at(0)),
            ("Subject: =?iso-8859-1?q?RE:_C?=", at(0)),
            ("Subject: =?us-ascii?b?UmU6IGM=?=", at(0)),
            ("Subject: Ad: Re: Ad: Re: Ad: x", at(0)),
            ("Subject: re: [fwd: [fwd: re: [fwd: end]]]", at(0)),
        ],
        {"ORDEREDSUBJECT": "(1)(2 (7)(12)(13))(3 (5)(11))(4)(6)(8)(9 10)(14)(15)"},
    ),
    # imaptest thread-orderedsubject2: within a thread and between threads, the sent date.
    "orderedsubject-dates": (
        [
            ("Subject: a\nDate: Thu, 22 Feb 2024 14:00:10 +0200", at(1)),
            ("Subject: b\nDate: Thu, 22 Feb 2024 14:00:09 +0200", at(2)),
            ("Subject: a\nDate: Thu, 22 Feb 2024 14:00:08 +0200", at(3)),
            ("Subject: b\nDate: Thu, 22 Feb 2024 14:00:07 +0200", at(4)),
            ("Subject: a", T0 + 30),
            ("Subject: b", T0 + 29),
            ("Subject: a", T0 + 28),
            ("Subject: b", T0 + 27),
        ],
        {"ORDEREDSUBJECT": "(4 (2)(8)(6))(3 (1)(7)(5))"},
    ),
}


@pytest.mark.parametrize(
    ("name", "algorithm"),
    [(name, algorithm) for name, (_, expected) in SCENARIOS.items() for algorithm in expected],
)
def test_scenarios(name: str, algorithm: str) -> None:
    messages, expected = SCENARIOS[name]
    assert threads(algorithm, messages) == expected[algorithm]


def test_uid_thread_answers_uids() -> None:
    messages = SCENARIOS["in-reply-to"][0]
    assert threads("REFERENCES", messages, uid=True) == "(10 (20 40)(30))"
    assert threads("ORDEREDSUBJECT", messages, uid=True) == "(20 (30)(40)(10))"


def key(criteria: str) -> SearchKey:
    parser = IMAPCommandParser()
    parser.receive_data(b"t SEARCH " + criteria.encode() + b"\r\n")
    event = parser.next_event()
    assert not isinstance(event, NeedData)
    result = getattr(event, "key", None)
    assert isinstance(result, SearchKey), event
    return result


def test_only_the_matching_messages_are_threaded() -> None:
    # RFC 5256 §3: THREAD threads the messages that match its search key; a parent that did not
    # match is a dummy, its children siblings under it (the RFC's example "((3)(5))").
    everything = candidates(
        [
            ("Message-ID: <p@t>\nSubject: x", at(0)),
            ("Message-ID: <q@t>\nIn-Reply-To: <p@t>\nSubject: y", at(1)),
            ("Message-ID: <r@t>\nIn-Reply-To: <p@t>\nSubject: z", at(2)),
        ]
    )
    box = SearchMailbox(largest_seq=3, largest_uid=30)
    found = [c for c in everything if matches(key("NOT 1"), c, box)]
    assert thread_response(thread("REFERENCES", found)) == b"* THREAD ((2)(3))\r\n"
    assert thread_response(thread("REFERENCES", [])) == b"* THREAD\r\n"


def test_a_long_reply_chain_does_not_recurse() -> None:
    # A chain far longer than Python's recursion limit: every step is iterative.
    length = sys.getrecursionlimit() * 3
    messages = [("Message-ID: <0@t>", at(0))] + [
        (f"Message-ID: <{i}@t>\nReferences: <{i - 1}@t>", at(i)) for i in range(1, length)
    ]
    expected = "(" + " ".join(str(n) for n in range(1, length + 1)) + ")"
    assert threads("REFERENCES", messages) == expected


def test_references_that_loop_end() -> None:
    # Each message names the other as its parent, and one names itself: no link makes a loop
    # (<b> would become a child of its own child <a>, so it stays a root).
    messages = [
        ("Message-ID: <a@t>\nReferences: <b@t>", at(0)),
        ("Message-ID: <b@t>\nReferences: <a@t>", at(1)),
        ("Message-ID: <c@t>\nReferences: <c@t> <c@t>", at(2)),
    ]
    assert threads("REFERENCES", messages) == "(2 1)(3)"


def test_message_ids_are_normalized() -> None:
    # RFC 5256 §3: <"01KF8JCEOCBS0045PS"@xxx.yyy.com> and <01KF8JCEOCBS0045PS@xxx.yyy.com> are
    # the same Message ID; comparisons are case-sensitive.
    assert message_ids('<"01KF8JCEOCBS0045PS"@xxx.yyy.com>') == ["01KF8JCEOCBS0045PS@xxx.yyy.com"]
    assert message_ids("<a@b> <A@b>\r\n <c (comment) @ d>") == ["a@b", "A@b", "c@d"]
    assert message_ids("<no-at> <@x> <x@> junk <<y@z>") == ["y@z"]
    assert message_ids('<"a b\\"c"@d>') == ['a b"c@d']
    assert message_ids("") == []


def test_plan_needs_the_header() -> None:
    assert plan_thread(key("ALL")) is Need.HEADER
    assert plan_thread(key("BODY x")) is Need.BODY
    assert ALGORITHMS == ("ORDEREDSUBJECT", "REFERENCES")


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="REFS"):
        thread("REFS", [])
