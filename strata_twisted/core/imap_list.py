# -*- test-case-name: tests.test_core_imap_list -*-
"""
LIST and LSUB as pure functions: which names a command lists, and with which attributes (RFC 3501
§6.3.8 and §6.3.9, LIST-EXTENDED RFC 5258, SPECIAL-USE RFC 6154, LIST-STATUS RFC 5819).

The caller reads the user's mailboxes and subscriptions from the store and hands them over; these
functions never read or write a store, never look at a clock and keep nothing between calls.  The
answer is a list of L{Listed}, in name order, which L{list_line} writes as response lines; STATUS
for LIST-STATUS is the caller's to fetch, for the entries whose L{Listed.wants_status} is true.

Where the RFCs leave a choice, the answers are Dovecot's (2.3, checked against a running one), so
that a client sees the same listing from both; the places where Dovecot is not followed say why.
In short:

- A basic LIST always carries \\HasChildren or \\HasNoChildren and the special-use attributes; an
  extended one only what its options ask for (RFC 5258 §4 and RFC 6154 §2 allow either).
- LSUB carries no child attributes, only special use, and \\Noselect for a parent that is listed
  because a subscribed child below it is not (RFC 3501 §6.3.9).
- Attributes come in Dovecot's order: \\Subscribed, \\NonExistent, the child attribute, the
  special use.

What the store guarantees and this module relies on: every superior of an existing mailbox
exists (CREATE makes them, DELETE of a mailbox with inferiors is refused), and every mailbox can
be selected.  ``subscriptions`` may name mailboxes that no longer exist: DELETE keeps the
subscription (RFC 3501 §6.3.6), and LIST (SUBSCRIBED) and LSUB still show it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from strata_twisted.model import INBOX, MAILBOX_DELIMITER, MailboxInfo, mailbox_parents
from strata_twisted.proto.imap_parser import ListMailboxes, Lsub
from strata_twisted.proto.imap_response import list_response

__all__ = [
    "Listed",
    "canonical_pattern",
    "list_line",
    "list_mailboxes",
    "lsub",
    "pattern_matches",
]

NOSELECT: Final = "\\Noselect"
NONEXISTENT: Final = "\\NonExistent"
SUBSCRIBED: Final = "\\Subscribed"
HAS_CHILDREN: Final = "\\HasChildren"
HAS_NO_CHILDREN: Final = "\\HasNoChildren"

# RFC 5258 §3.5: CHILDINFO names the selection criteria a descendant met, in this order.
_BASE_SELECTION: Final = ("SUBSCRIBED", "SPECIAL-USE")


@dataclass(frozen=True)
class Listed:
    """
    One LIST or LSUB response: the mailbox ``name``, its ``attributes`` in the order to write
    them, and ``child_info``, the selection criteria of an RFC 5258 §3.5 CHILDINFO extended data
    item (empty: none).

    ``selectable`` is true when the name is an existing mailbox (SELECT would work); ``matched``
    when the name itself meets the command's selection options, and is not only listed for its
    descendants (a CHILDINFO parent, an LSUB \\Noselect parent, the root of ``LIST "" ""``).
    """

    name: str
    attributes: tuple[str, ...]
    child_info: tuple[str, ...] = ()
    selectable: bool = True
    matched: bool = True

    @property
    def wants_status(self) -> bool:
        """
        RFC 5819 §2: with RETURN (STATUS ...), a STATUS response follows the LIST response "for
        each selectable mailbox matching the list pattern and selection options".  So never for
        a \\NonExistent name, nor for a parent listed only for CHILDINFO (as in Dovecot).
        """
        return self.selectable and self.matched


# -- patterns -------------------------------------------------------------------------------------


def canonical_pattern(reference: str, pattern: str) -> str:
    """
    The reference and the pattern as one pattern.  RFC 3501 §6.3.8 leaves the interpretation of
    the reference to the server; Strata appends the pattern to it, as Dovecot does for its own
    mailboxes (``LIST Fruit/ %`` and ``LIST Fruit /%`` both list Fruit's children).  Only the
    user's own names are ever matched, so no reference reaches another user's mailboxes.
    """
    return reference + pattern


def pattern_matches(pattern: str, name: str) -> bool:
    """
    Whether a canonical pattern matches a mailbox name.

    RFC 3501 §6.3.8: ``*`` matches zero or more characters, ``%`` the same except the hierarchy
    delimiter.  RFC 3501 §5.1: INBOX is case-insensitive, so the INBOX level of a name matches
    pattern letters in any ASCII case: ``inbox/%``, ``i%`` and ``*x`` all reach ``INBOX`` (as in
    Dovecot); other levels match exactly.

    The time is bounded by len(pattern) × len(name): no pattern makes it backtrack.
    """
    folded = len(INBOX) if name == INBOX or name.startswith(INBOX + MAILBOX_DELIMITER) else 0
    size = len(name)
    # reach[j]: the pattern read so far matches name[:j].
    reach = [True] + [False] * size
    for char in pattern:
        step = [False] * (size + 1)
        if char == "*":
            if True in reach:
                start = reach.index(True)
                step[start:] = [True] * (size + 1 - start)
        elif char == "%":
            for j in range(size + 1):
                step[j] = reach[j] or (j > 0 and step[j - 1] and name[j - 1] != MAILBOX_DELIMITER)
        else:
            for j in range(size):
                if reach[j] and (
                    name[j] == char or (j < folded and char.isascii() and char.upper() == name[j])
                ):
                    step[j + 1] = True
        if True not in step:
            return False
        reach = step
    return reach[size]


class _Matcher:
    """Whether any of the patterns matches a name, remembered per name."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = tuple(patterns)
        self._seen: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        known = self._seen.get(name)
        if known is None:
            known = self._seen[name] = any(pattern_matches(p, name) for p in self._patterns)
        return known


# -- LIST -----------------------------------------------------------------------------------------


def list_mailboxes(
    command: ListMailboxes, mailboxes: Sequence[MailboxInfo], subscriptions: Collection[str]
) -> list[Listed]:
    """
    The answer to LIST, basic or extended, in name order.

    ``mailboxes`` are the user's existing mailboxes; ``subscriptions`` the subscribed names (the
    truth about subscription: L{MailboxInfo.subscribed} is not read), which may include names
    that no longer exist.
    """
    if not command.extended and command.patterns == ("",):
        # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root of the reference.
        # An extended LIST never means this (RFC 5258 §3): "" is then an ordinary pattern.
        return [Listed(_root(command.reference), (NOSELECT,), selectable=False, matched=False)]
    matches = _Matcher(canonical_pattern(command.reference, p) for p in command.patterns)
    existing = {m.name: m for m in mailboxes}
    subscribed = frozenset(subscriptions)
    selection = command.selection
    by_subscription = "SUBSCRIBED" in selection
    by_special_use = "SPECIAL-USE" in selection

    def meets(name: str) -> bool:
        """RFC 5258 §3: a listed name satisfies every selection option (REMOTE means nothing)."""
        mailbox = existing.get(name)
        if by_subscription:
            # RFC 5258 §3.1: SUBSCRIBED lists subscribed names, whether they exist or not.
            if name not in subscribed:
                return False
        elif mailbox is None:
            return False
        # RFC 6154 §3: the SPECIAL-USE selection option lists mailboxes with a special use.
        return not by_special_use or (mailbox is not None and mailbox.special_use is not None)

    pool = existing.keys() | (subscribed if by_subscription else frozenset())
    selected = {name for name in pool if meets(name)}
    returned = {name for name in selected if matches(name)}
    with_child_info = (
        _child_info_parents(selected, returned, matches) if "RECURSIVEMATCH" in selection else set()
    )
    criteria = tuple(option for option in _BASE_SELECTION if option in selection)

    returns = command.return_options
    # RFC 5258 §3.1: the SUBSCRIBED selection option implies the SUBSCRIBED return option.
    show_subscribed = by_subscription or "SUBSCRIBED" in returns
    # RFC 5258 §4: CHILDREN asks for \HasChildren/\HasNoChildren, and "a server MAY provide it
    # even if the option is not specified".  Like Dovecot, a basic LIST always gets them, an
    # extended one only when asked.
    show_children = not command.extended or "CHILDREN" in returns
    # RFC 6154 §2: a basic LIST MAY carry the special-use attributes (Roundcube reads them from
    # one); §3: an extended LIST carries them for RETURN (SPECIAL-USE), which the SPECIAL-USE
    # selection option implies.
    show_special_use = not command.extended or by_special_use or "SPECIAL-USE" in returns
    # RFC 5258 §4: \HasChildren means child mailboxes exist; a subscription to a name that no
    # longer exists is not a child.
    parents = {parent for name in existing for parent in mailbox_parents(name)}

    listed: list[Listed] = []
    for name in sorted(returned | with_child_info):
        mailbox = existing.get(name)
        attributes: list[str] = []
        if show_subscribed and name in subscribed:
            attributes.append(SUBSCRIBED)
        if mailbox is None:
            # RFC 5258 §3: \NonExistent, which implies \Noselect (§3.4); Dovecot writes it
            # alone, as the examples in §5 do.
            attributes.append(NONEXISTENT)
        if show_children:
            attributes.append(HAS_CHILDREN if name in parents else HAS_NO_CHILDREN)
        if show_special_use and mailbox is not None and mailbox.special_use is not None:
            attributes.append(mailbox.special_use)
        listed.append(
            Listed(
                name,
                tuple(attributes),
                criteria if name in with_child_info else (),
                selectable=mailbox is not None,
                matched=name in returned,
            )
        )
    return listed


def _child_info_parents(
    selected: Collection[str], returned: Collection[str], matches: _Matcher
) -> set[str]:
    """
    RFC 5258 §3.1 RECURSIVEMATCH and §3.5 CHILDINFO: the names that match a pattern and have a
    descendant meeting the selection criteria, whether or not that descendant matches a pattern
    (§3.1 note 2).  Such a name that meets the criteria itself is listed anyway and gets CHILDINFO
    (the table in §3.5); one that does not is listed only when some such descendant is not
    listed, because "servers SHOULD suppress redundant CHILDINFO responses" (§3.5).  It may not
    exist: RFC 5258 §5 example 8 A2 lists it as \\NonExistent.
    """
    hidden: dict[str, bool] = {}  # parent -> some qualifying descendant is not itself listed
    for name in selected:
        for parent in mailbox_parents(name):
            if matches(parent):
                hidden[parent] = hidden.get(parent, False) or name not in returned
    return {parent for parent, unlisted in hidden.items() if unlisted or parent in returned}


def _root(reference: str) -> str:
    """
    RFC 3501 §6.3.8: the root of the reference for ``LIST ref ""``, its first level with the
    delimiter (the RFC's own example answers ``#news.`` for ``#news.comp.mail.misc``), or ""
    when it has no delimiter.  Dovecot answers the same.
    """
    head, delimiter, _ = reference.partition(MAILBOX_DELIMITER)
    return head + delimiter if delimiter else ""


# -- LSUB -----------------------------------------------------------------------------------------


def lsub(
    command: Lsub, mailboxes: Sequence[MailboxInfo], subscriptions: Collection[str]
) -> list[Listed]:
    """
    The answer to LSUB (RFC 3501 §6.3.9), in name order: every subscribed name that matches,
    whether or not the mailbox still exists, with its special use if it does (Dovecot sends it
    in LSUB too, for Outlook 2013); no child attributes (RFC 5258 §3.1: LSUB attributes
    "may not reflect the actual attribute status").

    And the parent rule: "if "foo/bar" ... is subscribed but "foo" is not.  A "%" wildcard to
    LSUB must return foo, not foo/bar, in the LSUB response, and it MUST be flagged with the
    \\Noselect attribute."  A name that is not subscribed is listed with \\Noselect when the
    pattern ends in ``%``, the name matches it and a subscribed name below it does not.  The
    ending ``%`` is Dovecot's condition too, and keeps ``LSUB "" foo`` (a client asking whether
    foo is subscribed) from answering foo when only foo/bar is.
    """
    pattern = canonical_pattern(command.reference, command.pattern)
    matches = _Matcher([pattern])
    existing = {m.name: m for m in mailboxes}
    subscribed = frozenset(subscriptions)
    names = {name for name in subscribed if matches(name)}
    stand_ins: set[str] = set()
    if pattern.endswith("%"):
        for name in subscribed - names:
            stand_ins.update(
                parent
                for parent in mailbox_parents(name)
                if parent not in subscribed and matches(parent)
            )
    listed: list[Listed] = []
    for name in sorted(names | stand_ins):
        mailbox = existing.get(name)
        attributes = [NOSELECT] if name in stand_ins else []
        if mailbox is not None and mailbox.special_use is not None:
            attributes.append(mailbox.special_use)
        listed.append(
            Listed(
                name,
                tuple(attributes),
                selectable=mailbox is not None and name not in stand_ins,
                matched=name in names,
            )
        )
    return listed


# -- responses ------------------------------------------------------------------------------------


def list_line(listed: Listed, *, command: Literal["LIST", "LSUB"] = "LIST") -> bytes:
    """
    ``* LIST (\\HasNoChildren) "/" Fruit`` CRLF for one L{Listed}, with its CHILDINFO extended
    data item when it has one: ``* LIST () "/" Fruit (CHILDINFO ("SUBSCRIBED"))``, the item tag
    bare as in RFC 5258 §6's childinfo-extended-item and Dovecot's answer, the criteria quoted
    (list-select-base-opt-quoted).
    """
    extended = [("CHILDINFO", listed.child_info)] if listed.child_info else []
    return list_response(
        listed.attributes, MAILBOX_DELIMITER, listed.name, command=command, extended=extended
    )
