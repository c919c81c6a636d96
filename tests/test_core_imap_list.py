"""
Tests for LIST and LSUB as pure functions (L{strata_twisted.core.imap_list}).

Plain calls: each test parses a real command line with the IMAP parser, hands it a user's
mailboxes and subscriptions, and reads the response lines.  The RFC 5258 §5 examples are here
with Strata's hierarchy rules: INBOX may have children (so it is never \\NoInferiors), no mailbox
is \\Marked, there are no remote mailboxes, and every superior of a mailbox exists.  Where an
answer is a choice the RFCs leave open, the expected lines are what Dovecot 2.3 answered for the
same mailboxes and subscriptions.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strata_twisted.core.imap_list import (
    Listed,
    canonical_pattern,
    list_line,
    list_mailboxes,
    lsub,
    pattern_matches,
)
from strata_twisted.model import MailboxInfo
from strata_twisted.proto.imap_parser import IMAPCommandParser, ListMailboxes, Lsub

SPECIAL = {"Archive": "\\Archive", "Drafts": "\\Drafts", "Junk": "\\Junk", "Sent": "\\Sent"}
SPECIAL |= {"Trash": "\\Trash"}


def boxes(*names: str, special: dict[str, str] | None = None) -> list[MailboxInfo]:
    uses = SPECIAL if special is None else special
    return [MailboxInfo(name, 1, 1, 1, uses.get(name)) for name in names]


def command(line: str) -> ListMailboxes | Lsub:
    parser = IMAPCommandParser()
    parser.receive_data(f"t {line}\r\n".encode())
    event = parser.next_event()
    assert isinstance(event, ListMailboxes | Lsub), event
    return event


def listed(
    line: str, mailboxes: Sequence[MailboxInfo], subscriptions: Collection[str] = ()
) -> list[Listed]:
    parsed = command(line)
    if isinstance(parsed, Lsub):
        return lsub(parsed, mailboxes, subscriptions)
    return list_mailboxes(parsed, mailboxes, subscriptions)


def answer(
    line: str, mailboxes: Sequence[MailboxInfo], subscriptions: Collection[str] = ()
) -> list[str]:
    """The response lines, as text without CRLF."""
    name: Literal["LIST", "LSUB"] = "LSUB" if line.startswith("LSUB") else "LIST"
    return [
        list_line(item, command=name).decode("ascii").removesuffix("\r\n")
        for item in listed(line, mailboxes, subscriptions)
    ]


# -- RFC 5258 §5 ----------------------------------------------------------------------------------

# Examples 1 to 6: the hierarchy and subscriptions of example 1 and 2.  "Fruit/Peach" is
# subscribed but does not exist ("perhaps it was deleted while still subscribed").
FOOD = boxes(
    "Fruit",
    "Fruit/Apple",
    "Fruit/Banana",
    "INBOX",
    "Tofu",
    "Vegetable",
    "Vegetable/Broccoli",
    "Vegetable/Corn",
)
FOOD_SUBSCRIBED = {"INBOX", "Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli"}


def test_rfc5258_example_1_the_whole_hierarchy() -> None:
    # A basic LIST: Strata (like Dovecot) adds the child attributes (RFC 5258 §4 allows it).
    assert answer('LIST "" "*"', FOOD, FOOD_SUBSCRIBED) == [
        '* LIST (\\HasChildren) "/" Fruit',
        '* LIST (\\HasNoChildren) "/" Fruit/Apple',
        '* LIST (\\HasNoChildren) "/" Fruit/Banana',
        '* LIST (\\HasNoChildren) "/" INBOX',
        '* LIST (\\HasNoChildren) "/" Tofu',
        '* LIST (\\HasChildren) "/" Vegetable',
        '* LIST (\\HasNoChildren) "/" Vegetable/Broccoli',
        '* LIST (\\HasNoChildren) "/" Vegetable/Corn',
    ]


SUBSCRIBED_FOOD = [
    '* LIST (\\Subscribed) "/" Fruit/Banana',
    '* LIST (\\Subscribed \\NonExistent) "/" Fruit/Peach',
    '* LIST (\\Subscribed) "/" INBOX',
    '* LIST (\\Subscribed) "/" Vegetable',
    '* LIST (\\Subscribed) "/" Vegetable/Broccoli',
]


def test_rfc5258_example_2_subscribed_names_even_those_that_do_not_exist() -> None:
    # RFC 5258 §3.1: SUBSCRIBED lists exactly the subscribed names that match, existing or not;
    # a gone one is \NonExistent.  Fruit is not listed: it is not subscribed.
    assert answer('LIST (SUBSCRIBED) "" "*"', FOOD, FOOD_SUBSCRIBED) == SUBSCRIBED_FOOD


def test_rfc5258_examples_3_and_4_children_of_the_top_level() -> None:
    expected = [
        '* LIST (\\HasChildren) "/" Fruit',
        '* LIST (\\HasNoChildren) "/" INBOX',
        '* LIST (\\HasNoChildren) "/" Tofu',
        '* LIST (\\HasChildren) "/" Vegetable',
    ]
    assert answer('LIST () "" "%" RETURN (CHILDREN)', FOOD, FOOD_SUBSCRIBED) == expected
    # Example 4 adds REMOTE; Strata has no remote mailboxes, so it changes nothing.
    assert answer('LIST (REMOTE) "" "%" RETURN (CHILDREN)', FOOD, FOOD_SUBSCRIBED) == expected


def test_rfc5258_example_5_remote_and_subscribed() -> None:
    assert answer('LIST (REMOTE SUBSCRIBED) "" "*"', FOOD, FOOD_SUBSCRIBED) == SUBSCRIBED_FOOD


def test_rfc5258_example_6_return_subscribed_lists_only_existing_names() -> None:
    # "the output of this command is not a superset of the output in the previous example, as it
    # doesn't include LIST response for the non-existent "Fruit/Peach"."
    assert answer('LIST (REMOTE) "" "*" RETURN (SUBSCRIBED)', FOOD, FOOD_SUBSCRIBED) == [
        '* LIST () "/" Fruit',
        '* LIST () "/" Fruit/Apple',
        '* LIST (\\Subscribed) "/" Fruit/Banana',
        '* LIST (\\Subscribed) "/" INBOX',
        '* LIST () "/" Tofu',
        '* LIST (\\Subscribed) "/" Vegetable',
        '* LIST (\\Subscribed) "/" Vegetable/Broccoli',
        '* LIST () "/" Vegetable/Corn',
    ]


def test_rfc5258_example_7_several_patterns() -> None:
    mailboxes = boxes(
        "Drafts", "INBOX", "Sent", "Sent/August2004", "Sent/December2003", "Sent/March2004"
    )
    # A pattern list makes the LIST extended: no attributes nobody asked for.
    assert answer('LIST "" ("INBOX" "Drafts" "Sent/%")', mailboxes) == [
        '* LIST () "/" Drafts',
        '* LIST () "/" INBOX',
        '* LIST () "/" Sent/August2004',
        '* LIST () "/" Sent/December2003',
        '* LIST () "/" Sent/March2004',
    ]


FOO = boxes("Foo", "Foo/Bar", "Foo/Baz", "INBOX", "Moo")


def test_rfc5258_example_8_children_versus_childinfo() -> None:
    assert answer('LIST "" "%" RETURN (CHILDREN)', FOO) == [
        '* LIST (\\HasChildren) "/" Foo',
        '* LIST (\\HasNoChildren) "/" INBOX',
        '* LIST (\\HasNoChildren) "/" Moo',
    ]


def test_rfc5258_example_8a_a_parent_with_a_subscribed_child() -> None:
    subscribed = {"Foo/Baz"}
    assert answer('LIST (SUBSCRIBED) "" "*"', FOO, subscribed) == [
        '* LIST (\\Subscribed) "/" Foo/Baz'
    ]
    # "the server will return no mailboxes (as the mailboxes "Moo", "Foo", and "Inbox" are NOT
    # subscribed)"
    assert answer('LIST (SUBSCRIBED) "" "%"', FOO, subscribed) == []
    # "the mailbox "Foo" is not subscribed, but it has a child that is"
    assert answer('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"', FOO, subscribed) == [
        '* LIST () "/" Foo (CHILDINFO ("SUBSCRIBED"))'
    ]


def test_rfc5258_example_8a1_the_parent_subscribed_too() -> None:
    subscribed = {"Foo", "Foo/Baz"}
    assert answer('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"', FOO, subscribed) == [
        '* LIST (\\Subscribed) "/" Foo (CHILDINFO ("SUBSCRIBED"))'
    ]
    # "or even this", which is what RETURN (CHILDREN) gives
    assert answer('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)', FOO, subscribed) == [
        '* LIST (\\Subscribed \\HasChildren) "/" Foo (CHILDINFO ("SUBSCRIBED"))'
    ]


def test_rfc5258_example_8a2_a_parent_that_does_not_exist() -> None:
    # Strata keeps every superior of a mailbox, so "Foo" is missing only when nothing under it
    # exists: the subscription to Foo/Baz outlived both.
    assert answer(
        'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"', boxes("INBOX", "Moo"), {"Foo/Baz"}
    ) == ['* LIST (\\NonExistent) "/" Foo (CHILDINFO ("SUBSCRIBED"))']


def test_rfc5258_example_8b_nothing_subscribed() -> None:
    # "no responses, as there are no subscribed children (even though "Foo" has children)"
    assert answer('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"', FOO, set()) == []


def test_rfc5258_example_8c_subscribed_parents_without_subscribed_children() -> None:
    line = 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)'
    assert answer(line, FOO, {"Foo", "Moo"}) == [
        '* LIST (\\Subscribed \\HasChildren) "/" Foo',
        '* LIST (\\Subscribed \\HasNoChildren) "/" Moo',
    ]


TWOS = boxes(
    "baz2",
    "baz2/bar2",
    "baz2/bar22",
    "baz2/bar222",
    "eps2",
    "eps2/mamba",
    "foo2",
    "foo2/bar1",
    "foo2/bar2",
    "qux2",
    "qux2/bar2",
)
TWOS_SUBSCRIBED = {n.name for n in TWOS} - {"baz2", "foo2", "qux2"}


def test_rfc5258_example_9_recursivematch_with_a_pattern_that_skips_children() -> None:
    # foo2 is listed for foo2/bar1, which "*2" does not match; baz2 and qux2 are not, because all
    # their subscribed children are listed anyway and "servers SHOULD suppress redundant CHILDINFO
    # responses" (§3.5).  eps2 is listed for itself, and gets CHILDINFO for eps2/mamba.  Dovecot
    # answers the same lines.
    assert answer('LIST (SUBSCRIBED RECURSIVEMATCH) "" "*2"', TWOS, TWOS_SUBSCRIBED) == [
        '* LIST (\\Subscribed) "/" baz2/bar2',
        '* LIST (\\Subscribed) "/" baz2/bar22',
        '* LIST (\\Subscribed) "/" baz2/bar222',
        '* LIST (\\Subscribed) "/" eps2 (CHILDINFO ("SUBSCRIBED"))',
        '* LIST () "/" foo2 (CHILDINFO ("SUBSCRIBED"))',
        '* LIST (\\Subscribed) "/" foo2/bar2',
        '* LIST (\\Subscribed) "/" qux2/bar2',
    ]


def test_childinfo_of_a_listed_parent_does_not_depend_on_the_child_being_listed() -> None:
    # RFC 5258 §3.5's table: a name that meets the criteria and has a child that does gets
    # CHILDINFO; with "*" the child is listed as well (Dovecot: the same).
    lines = answer('LIST (SUBSCRIBED RECURSIVEMATCH) "" "eps*"', TWOS, TWOS_SUBSCRIBED)
    assert lines == [
        '* LIST (\\Subscribed) "/" eps2 (CHILDINFO ("SUBSCRIBED"))',
        '* LIST (\\Subscribed) "/" eps2/mamba',
    ]


# -- basic LIST -----------------------------------------------------------------------------------

STRATA = boxes("Drafts", "INBOX", "INBOX/Lists", "Junk", "Sent", "Sent/2024", "Trash")
STRATA_SUBSCRIBED = {"Drafts", "INBOX", "Junk", "Sent", "Trash"}


def test_basic_list_carries_child_and_special_use_attributes() -> None:
    # RFC 5258 §4 and RFC 6154 §2 allow both in a basic LIST; Roundcube reads the special use
    # from a plain LIST.  \Subscribed is never there.
    assert answer('LIST "" "%"', STRATA, STRATA_SUBSCRIBED) == [
        '* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
        '* LIST (\\HasChildren) "/" INBOX',
        '* LIST (\\HasNoChildren \\Junk) "/" Junk',
        '* LIST (\\HasChildren \\Sent) "/" Sent',
        '* LIST (\\HasNoChildren \\Trash) "/" Trash',
    ]


@pytest.mark.parametrize(
    ("reference", "root"),
    [
        ("", '""'),
        ("Sent/2024", "Sent/"),
        ("Sent", '""'),
        ("#news.comp.mail.misc", '""'),  # no "/" in it: a flat reference has an empty root
        ("a b/c", '"a b/"'),
    ],
)
def test_an_empty_pattern_asks_for_the_delimiter_and_the_root(reference: str, root: str) -> None:
    # RFC 3501 §6.3.8: the root is the reference's first level with its delimiter, as in the
    # RFC's example ("#news.comp.mail.misc" "" answers "#news." for "." as delimiter).
    [item] = listed(f'LIST "{reference}" ""', STRATA)
    assert list_line(item) == f'* LIST (\\Noselect) "/" {root}\r\n'.encode()
    assert not item.selectable and not item.wants_status


@pytest.mark.parametrize(
    "line", ['LIST () "" ""', 'LIST "" ("")', 'LIST "" "" RETURN ()', 'LIST (SUBSCRIBED) "" ""']
)
def test_an_extended_list_never_takes_an_empty_pattern_as_the_delimiter_request(line: str) -> None:
    # RFC 5258 §3: an extended LIST "MUST NOT treat the empty mailbox name as such a special
    # request"; no mailbox is called "", so nothing matches.
    assert answer(line, STRATA, STRATA_SUBSCRIBED) == []


def test_an_empty_extended_pattern_still_joins_the_reference() -> None:
    # Regular processing applies: reference "Sent" and pattern "" name Sent (Dovecot agrees).
    assert answer('LIST () "Sent" ""', STRATA) == ['* LIST () "/" Sent']


@pytest.mark.parametrize("line", ['LIST "Sent/" "%"', 'LIST "Sent" "/%"', 'LIST "sent/" "*"'])
def test_the_reference_is_prefixed_to_the_pattern(line: str) -> None:
    expected = [] if "sent/" in line else ['* LIST (\\HasNoChildren) "/" Sent/2024']
    assert answer(line, STRATA) == expected


def test_a_foreign_reference_reaches_only_the_users_own_names() -> None:
    for reference in ("../bob", "~bob/", "/home/bob/", "#shared/"):
        assert answer(f'LIST "{reference}" "*"', STRATA) == []
        assert answer(f'LSUB "{reference}" "*"', STRATA, STRATA_SUBSCRIBED) == []


def test_a_name_matching_several_patterns_is_listed_once() -> None:
    # RFC 5258 §3: "the server SHOULD return only a single LIST response" for it.
    lines = answer('LIST "" ("*" "%" "INBOX" "inbox")', STRATA)
    assert len(lines) == len(STRATA)
    assert lines.count('* LIST () "/" INBOX') == 1


def test_children_are_mailboxes_not_subscriptions() -> None:
    # RFC 5258 §4: \HasChildren means child mailboxes exist.  A subscription that outlived its
    # mailbox is not one (Dovecot says \HasChildren for a gone parent of a gone child under
    # RECURSIVEMATCH; Strata does not follow it there).
    mailboxes = boxes("INBOX", "Tofu")
    subscribed = {"Tofu", "Tofu/Silken", "Xyzzy/Plugh"}
    assert answer('LIST "" "Tofu"', mailboxes, subscribed) == ['* LIST (\\HasNoChildren) "/" Tofu']
    line = 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)'
    assert answer(line, mailboxes, subscribed) == [
        '* LIST (\\Subscribed \\HasNoChildren) "/" Tofu (CHILDINFO ("SUBSCRIBED"))',
        '* LIST (\\NonExistent \\HasNoChildren) "/" Xyzzy (CHILDINFO ("SUBSCRIBED"))',
    ]


def test_children_count_even_where_the_pattern_does_not_reach() -> None:
    assert answer('LIST "" "Sent"', STRATA) == ['* LIST (\\HasChildren \\Sent) "/" Sent']


# -- extended LIST: return options ----------------------------------------------------------------


def test_an_extended_list_carries_only_what_it_asks_for() -> None:
    # Dovecot's answers: no child or special-use attributes unless RETURN asks for them.
    assert answer('LIST () "" "Sent"', STRATA, STRATA_SUBSCRIBED) == ['* LIST () "/" Sent']
    assert answer('LIST "" "Sent" RETURN ()', STRATA, STRATA_SUBSCRIBED) == ['* LIST () "/" Sent']
    assert answer('LIST "" "Sent" RETURN (SPECIAL-USE)', STRATA) == ['* LIST (\\Sent) "/" Sent']
    assert answer('LIST "" "Sent" RETURN (CHILDREN)', STRATA) == ['* LIST (\\HasChildren) "/" Sent']
    line = 'LIST "" "S*" RETURN (SUBSCRIBED CHILDREN SPECIAL-USE)'
    assert answer(line, STRATA, STRATA_SUBSCRIBED) == [
        '* LIST (\\Subscribed \\HasChildren \\Sent) "/" Sent',
        '* LIST (\\HasNoChildren) "/" Sent/2024',
    ]


def test_return_subscribed_marks_subscribed_mailboxes() -> None:
    # RFC 5258 §3.2: RETURN (SUBSCRIBED) marks \Subscribed, and lists no name that does not exist.
    assert answer('LIST "" "*" RETURN (SUBSCRIBED)', FOOD, FOOD_SUBSCRIBED)[:3] == [
        '* LIST () "/" Fruit',
        '* LIST () "/" Fruit/Apple',
        '* LIST (\\Subscribed) "/" Fruit/Banana',
    ]


def test_a_subscribed_name_that_no_longer_exists() -> None:
    # RFC 5258 §3: \NonExistent (which implies \Noselect, §3.4); it has no child mailboxes.
    line = 'LIST (SUBSCRIBED) "" "Fruit/*" RETURN (CHILDREN SPECIAL-USE)'
    assert answer(line, FOOD, FOOD_SUBSCRIBED) == [
        '* LIST (\\Subscribed \\HasNoChildren) "/" Fruit/Banana',
        '* LIST (\\Subscribed \\NonExistent \\HasNoChildren) "/" Fruit/Peach',
    ]
    [gone] = listed('LIST (SUBSCRIBED) "" "Fruit/Peach"', FOOD, FOOD_SUBSCRIBED)
    assert not gone.selectable and not gone.wants_status


# -- extended LIST: selection options -------------------------------------------------------------


def test_special_use_selection_lists_only_special_mailboxes_with_their_use() -> None:
    # RFC 6154 §3: only mailboxes with a special use, which the answer carries.
    assert answer('LIST (SPECIAL-USE) "" "*"', STRATA, STRATA_SUBSCRIBED) == [
        '* LIST (\\Drafts) "/" Drafts',
        '* LIST (\\Junk) "/" Junk',
        '* LIST (\\Sent) "/" Sent',
        '* LIST (\\Trash) "/" Trash',
    ]


def test_roundcubes_special_folder_query() -> None:
    # rcube_imap::get_special_folders: LIST (SPECIAL-USE) "" "*" RETURN (SUBSCRIBED)
    subscribed = STRATA_SUBSCRIBED - {"Junk"}
    assert answer('LIST (SPECIAL-USE) "" "*" RETURN (SUBSCRIBED)', STRATA, subscribed) == [
        '* LIST (\\Subscribed \\Drafts) "/" Drafts',
        '* LIST (\\Junk) "/" Junk',
        '* LIST (\\Subscribed \\Sent) "/" Sent',
        '* LIST (\\Subscribed \\Trash) "/" Trash',
    ]


def test_selection_options_combine() -> None:
    # RFC 5258 §3: a listed name satisfies every selection option.
    subscribed = STRATA_SUBSCRIBED - {"Junk"} | {"INBOX/Lists", "Gone"}
    assert answer('LIST (SPECIAL-USE SUBSCRIBED) "" "*"', STRATA, subscribed) == [
        '* LIST (\\Subscribed \\Drafts) "/" Drafts',
        '* LIST (\\Subscribed \\Sent) "/" Sent',
        '* LIST (\\Subscribed \\Trash) "/" Trash',
    ]


def test_recursivematch_with_special_use() -> None:
    mailboxes = boxes(
        "Archive",
        "Archive/2024",
        "INBOX",
        "Projects",
        "Projects/Old",
        special={"Archive/2024": "\\Archive"},
    )
    assert answer('LIST (SPECIAL-USE RECURSIVEMATCH) "" "%"', mailboxes) == [
        '* LIST () "/" Archive (CHILDINFO ("SPECIAL-USE"))'
    ]


def test_recursivematch_with_two_criteria_needs_a_child_meeting_both() -> None:
    # RFC 5258 §3.1: RECURSIVEMATCH lists parents of "submailboxes that do" match the other
    # selection options: all of them.  CHILDINFO names both criteria (§6 allows a list).
    # Dovecot instead gives Sent CHILDINFO ("SUBSCRIBED") for a subscribed child with no
    # special use; Strata does not.
    mailboxes = boxes(
        "Archive",
        "Archive/2024",
        "INBOX",
        "Sent",
        "Sent/2024",
        special={"Archive/2024": "\\Archive", "Sent": "\\Sent"},
    )
    subscribed = {"Archive/2024", "Sent", "Sent/2024"}
    assert answer('LIST (SUBSCRIBED SPECIAL-USE RECURSIVEMATCH) "" "%"', mailboxes, subscribed) == [
        '* LIST () "/" Archive (CHILDINFO ("SUBSCRIBED" "SPECIAL-USE"))',
        '* LIST (\\Subscribed \\Sent) "/" Sent',
    ]


def test_remote_alone_changes_nothing_but_makes_the_list_extended() -> None:
    assert answer('LIST (REMOTE) "" "Sent"', STRATA) == ['* LIST () "/" Sent']


def test_no_childinfo_without_recursivematch() -> None:
    # RFC 5258 §3.5: "The CHILDINFO extended data item MUST NOT be returned unless the client
    # has specified the RECURSIVEMATCH selection option."
    for line in ('LIST (SUBSCRIBED) "" "*"', 'LIST (SUBSCRIBED) "" "%"', 'LIST "" "*"'):
        assert all(not item.child_info for item in listed(line, FOO, {"Foo", "Foo/Baz"}))


# -- LIST-STATUS ----------------------------------------------------------------------------------


def test_status_goes_with_selectable_names_that_meet_the_selection() -> None:
    # RFC 5819 §2: STATUS "for each selectable mailbox matching the list pattern and selection
    # options": not for a CHILDINFO parent (Foo) nor a name that is gone (Gone); Dovecot agrees.
    mailboxes = boxes("Foo", "Foo/Baz", "INBOX", "Moo")
    line = 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (STATUS (MESSAGES))'
    items = listed(line, mailboxes, {"Foo/Baz", "Moo", "Gone"})
    assert [(i.name, i.selectable, i.matched, i.wants_status) for i in items] == [
        ("Foo", True, False, False),
        ("Gone", False, True, False),
        ("Moo", True, True, True),
    ]


# -- LSUB -----------------------------------------------------------------------------------------


def test_lsub_lists_subscribed_names_with_special_use_and_nothing_else() -> None:
    # RFC 3501 §6.3.9, and RFC 3501 §6.3.6: a subscription outlives its mailbox (Gone).  Dovecot
    # sends the special use in LSUB too, and no child attributes.
    subscribed = STRATA_SUBSCRIBED | {"Gone", "Sent/2024"}
    assert answer('LSUB "" "*"', STRATA, subscribed) == [
        '* LSUB (\\Drafts) "/" Drafts',
        '* LSUB () "/" Gone',
        '* LSUB () "/" INBOX',
        '* LSUB (\\Junk) "/" Junk',
        '* LSUB (\\Sent) "/" Sent',
        '* LSUB () "/" Sent/2024',
        '* LSUB (\\Trash) "/" Trash',
    ]


def test_lsub_percent_returns_an_unsubscribed_parent_as_noselect() -> None:
    # RFC 3501 §6.3.9: "if "foo/bar" ... is subscribed but "foo" is not.  A "%" wildcard to LSUB
    # must return foo, not foo/bar, in the LSUB response, and it MUST be flagged with the
    # \Noselect attribute."  Whether foo exists (Fruit) or not (Xyzzy); Sent keeps its use.
    subscribed = {"Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli", "Xyzzy/Plugh"}
    subscribed |= {"Sent/2024"}
    mailboxes = FOOD + boxes("Sent", "Sent/2024")
    assert answer('LSUB "" "%"', mailboxes, subscribed) == [
        '* LSUB (\\Noselect) "/" Fruit',
        '* LSUB (\\Noselect \\Sent) "/" Sent',
        '* LSUB () "/" Vegetable',
        '* LSUB (\\Noselect) "/" Xyzzy',
    ]
    fruit = listed('LSUB "" "Fr%"', mailboxes, subscribed)
    assert [(i.name, i.selectable, i.matched) for i in fruit] == [("Fruit", False, False)]


def test_lsub_percent_at_a_deeper_level() -> None:
    subscribed = {"a/b/c", "a/x"}
    mailboxes = boxes("INBOX", "a", "a/b", "a/b/c", "a/x")
    assert answer('LSUB "" "%/%"', mailboxes, subscribed) == [
        '* LSUB (\\Noselect) "/" a/b',
        '* LSUB () "/" a/x',
    ]
    assert answer('LSUB "a/" "%"', mailboxes, subscribed) == [
        '* LSUB (\\Noselect) "/" a/b',
        '* LSUB () "/" a/x',
    ]


@pytest.mark.parametrize("pattern", ["*", "F*", "Fruit", "Fr*%", "%t"])
def test_lsub_lists_no_stand_in_unless_a_final_percent_stopped_short(pattern: str) -> None:
    # With "*" the subscribed child itself is listed; an exact name is a question about that
    # name (Roundcube's LSUB "" "folder" checks a subscription).  Dovecot answers the same.
    lines = answer(f'LSUB "" "{pattern}"', FOOD, FOOD_SUBSCRIBED)
    assert all("\\Noselect" not in line for line in lines)
    assert '* LSUB () "/" Fruit' not in lines


def test_lsub_of_a_subscribed_parent_is_not_noselect() -> None:
    assert answer('LSUB "" "Veg%"', FOOD, FOOD_SUBSCRIBED) == ['* LSUB () "/" Vegetable']


# -- patterns -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "a/b/c", True),
        ("%", "a/b", False),
        ("%", "a", True),
        ("a/%", "a/b", True),
        ("a/%", "a/b/c", False),
        ("a/%/c", "a/b/c", True),
        ("a%", "a", True),  # % may match nothing
        ("a*", "a", True),
        ("%%", "abc", True),
        ("%*", "a/b", True),
        ("*/%", "a/b/c", True),
        ("", "", True),
        ("", "a", False),
        ("Sent", "sent", False),  # names other than INBOX are case-sensitive
        ("a.b", "aXb", False),  # no regex meaning anywhere
        ("a+", "aa", False),
        # RFC 3501 §5.1: INBOX is case-insensitive, also against wildcards (Dovecot: the same)
        ("inbox", "INBOX", True),
        ("InBoX/%", "INBOX/Lists", True),
        ("inbox/lists", "INBOX/Lists", False),  # only the INBOX level folds
        ("i%", "INBOX", True),
        ("*x", "INBOX", True),
        ("%o%", "INBOX", True),
        ("%/inbox", "Lists/INBOX", False),
        ("inbox", "INBOXES", False),
        ("inboxes", "INBOXES", False),  # INBOXES is not INBOX: no folding
        ("\u0131nbox", "INBOX", False),  # dotless i upper-cases to I, but is not ASCII
    ],
)
def test_pattern_matches(pattern: str, name: str, expected: bool) -> None:
    assert pattern_matches(pattern, name) is expected


def test_canonical_pattern_appends_the_pattern_to_the_reference() -> None:
    assert canonical_pattern("", "%") == "%"
    assert canonical_pattern("Sent/", "%") == "Sent/%"
    assert canonical_pattern("Sent", "/%") == "Sent/%"


def _reference_regex(pattern: str) -> re.Pattern[str]:
    """The obvious translation, for names without an INBOX level."""
    parts = {"*": ".*", "%": "[^/]*"}
    return re.compile("".join(parts.get(c) or re.escape(c) for c in pattern), re.DOTALL)


@given(
    st.text(alphabet="ab/%*", max_size=8),
    st.text(alphabet="ab/", max_size=10),
)
def test_pattern_matches_agrees_with_a_regular_expression(pattern: str, name: str) -> None:
    assert pattern_matches(pattern, name) == bool(_reference_regex(pattern).fullmatch(name))


@given(st.text(alphabet="iInNbBoOxX/%*", max_size=8), st.sampled_from(["INBOX", "INBOX/x"]))
def test_the_inbox_level_matches_as_if_spelled_in_the_patterns_case(
    pattern: str, name: str
) -> None:
    # Matching INBOX folds exactly the first five characters: the same as trying the name
    # with its INBOX level in lower case, and in upper case, when the pattern is all one case.
    if pattern == pattern.lower():
        spelled = "inbox" + name[5:]
    elif pattern == pattern.upper():
        spelled = name
    else:
        return
    assert pattern_matches(pattern, name) == bool(_reference_regex(pattern).fullmatch(spelled))
