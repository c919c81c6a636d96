# -*- test-case-name: tests.test_core_imap_thread -*-
"""
THREAD (RFC 5256 §3, BASE.6.4.THREAD), ORDEREDSUBJECT and REFERENCES, as pure functions.

The caller searches first, as for SORT, and hands L{thread} the messages that matched as
L{Candidate}s with their header block loaded (L{plan_thread} says what to load); L{thread} returns
the threads as L{ThreadNode}s, which L{thread_response} writes.  Everything is read from the
indexed header block: Message-ID, In-Reply-To, References, Subject and Date (DESIGN decision 9,
"Parse once": never the body).  Sent dates are RFC 5256 §2.2's (L{sort_date}), base subjects
§2.1's, compared by i;ascii-casemap, as for SORT.

This module never touches a socket, a reactor, a clock or a store, and it never recurses along a
thread: a reply chain thousands of messages long threads, and References that loop end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from strata_twisted.core.imap_search import (
    Candidate,
    Need,
    ascii_casemap,
    base_subject,
    is_reply_or_forward,
    plan,
    sort_date,
)
from strata_twisted.proto.imap_parser import SearchKey
from strata_twisted.proto.imap_response import ThreadNode, thread_response

__all__ = [
    "ALGORITHMS",
    "ThreadNode",
    "message_ids",
    "plan_thread",
    "thread",
    "thread_response",
]

ALGORITHMS: Final = ("ORDEREDSUBJECT", "REFERENCES")
"""The threading algorithms of RFC 5256 §3, as the capability names them (THREAD=...)."""


def plan_thread(key: SearchKey) -> Need:
    """What each message must have loaded for THREAD with the search key C{key}."""
    return max(Need.HEADER, plan(key))


# -- Message IDs ----------------------------------------------------------------------------------


def _normalized_id(inner: str) -> str | None:
    """
    The text between ``<`` and ``>`` as a normalized Message ID, or None when it is not one
    (``id-left "@" id-right``, RFC 5322 §3.6.4).  RFC 5256 §3 (REFERENCES): a msg-id is
    normalized so that quoting makes no difference (``<"a.b"@c>`` is ``<a.b@c>``); white space
    and comments (obs-id-left allows CFWS) are dropped.
    """
    out: list[str] = []
    at = -1
    i, size = 0, len(inner)
    while i < size:
        char = inner[i]
        if char == '"':  # a quoted-string: its content, without the quoting
            i += 1
            while i < size and inner[i] != '"':
                if inner[i] == "\\" and i + 1 < size:
                    i += 1
                out.append(inner[i])
                i += 1
            i += 1
        elif char == "(":  # a comment, possibly nested
            depth = 1
            i += 1
            while i < size and depth:
                if inner[i] == "\\":
                    i += 1
                elif inner[i] == "(":
                    depth += 1
                elif inner[i] == ")":
                    depth -= 1
                i += 1
        elif char in " \t\r\n":
            i += 1
        else:
            if char == "@" and at < 0:
                at = len(out)
            out.append(char)
            i += 1
    if at <= 0 or at == len(out) - 1:
        return None
    return "".join(out)


def message_ids(value: str) -> list[str]:
    """The valid Message IDs in a header value, in order, normalized (L{_normalized_id})."""
    found: list[str] = []
    pos = 0
    while (start := value.find("<", pos)) >= 0:
        end = value.find(">", start + 1)
        if end < 0:
            break
        inner = value[start + 1 : end]
        restart = inner.rfind("<")
        if restart >= 0:  # "<junk <id@host>": the last "<" opens the ID
            pos = start + 1 + restart
            continue
        normalized = _normalized_id(inner)
        if normalized is not None:
            found.append(normalized)
        pos = end + 1
    return found


# -- the messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Message:
    """What threading needs of one message, read once from its header."""

    number: int  # what the response shows: the sequence number, or the UID for UID THREAD
    order: tuple[float, int]  # RFC 5256 §2.2: sent date, then sequence number
    subject: str  # the base subject's i;ascii-casemap form; "" when there is none
    reply: bool  # the subject marked a reply or forward (§3 REFERENCES)
    message_id: str | None
    references: tuple[str, ...]


def _first_raw(candidate: Candidate, name: str) -> str:
    """The first C{name} field as sent (Message IDs are never RFC 2047 encoded); "" if none."""
    values = candidate.content.raw_values(name)
    return bytes(values[0]).decode("utf-8", "surrogateescape") if values else ""


def _message(candidate: Candidate, uid: bool) -> _Message:
    subject = candidate.content.first("subject") or ""
    own = message_ids(_first_raw(candidate, "message-id"))
    # RFC 5256 §3: the References' Message IDs; without a valid one, the first valid one of
    # In-Reply-To; without that, no references.
    references = message_ids(_first_raw(candidate, "references"))
    if not references:
        references = message_ids(_first_raw(candidate, "in-reply-to"))[:1]
    return _Message(
        number=candidate.message.uid if uid else candidate.seq,
        order=(sort_date(candidate), candidate.seq),
        subject=ascii_casemap(base_subject(subject)),
        reply=is_reply_or_forward(subject),
        message_id=own[0] if own else None,
        references=tuple(references),
    )


def thread(
    algorithm: str, candidates: Iterable[Candidate], *, uid: bool = False
) -> list[ThreadNode]:
    """
    The threads of C{candidates} (the messages that matched THREAD's search key, each with its
    header loaded) by C{algorithm}, ``ORDEREDSUBJECT`` or ``REFERENCES``, in response order.
    Nodes carry sequence numbers, or UIDs with C{uid} (UID THREAD).
    """
    messages = [_message(c, uid) for c in sorted(candidates, key=lambda c: c.seq)]
    if algorithm == "ORDEREDSUBJECT":
        return _ordered_subject(messages)
    if algorithm == "REFERENCES":
        return _references(messages)
    raise ValueError(f"unknown threading algorithm {algorithm}")


# -- ORDEREDSUBJECT -------------------------------------------------------------------------------


def _ordered_subject(messages: Sequence[_Message]) -> list[ThreadNode]:
    """
    RFC 5256 §3 ORDEREDSUBJECT: sorted by base subject, then sent date; each run of one base
    subject is a thread whose first message is the parent of all the others (no grandchildren);
    the threads sorted by their first message's sent date.  Messages without a subject make one
    thread of their own (their base subject is the empty string), as in Dovecot.
    """
    threads: list[list[_Message]] = []
    for message in sorted(messages, key=lambda m: (m.subject, m.order)):
        if threads and threads[-1][0].subject == message.subject:
            threads[-1].append(message)
        else:
            threads.append([message])
    threads.sort(key=lambda members: members[0].order)
    return [
        ThreadNode(first.number, tuple(ThreadNode(m.number) for m in rest))
        for first, *rest in threads
    ]


# -- REFERENCES -----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Container:
    """A place in the thread tree: a message, or a dummy (C{message} None) known only by ID."""

    message: _Message | None = None
    parent: _Container | None = None
    children: list[_Container] = field(default_factory=list)

    def first_message(self) -> _Message:
        """
        Its message, or a dummy's first child's: what a dummy sorts by (steps 4 and 6, its
        children sorted first) and whose subject is its thread subject (step 5.B.i).
        """
        node = self
        while node.message is None:
            node = node.children[0]
        return node.message

    def order(self) -> tuple[float, int]:
        return self.first_message().order


def _is_ancestor(node: _Container, of: _Container) -> bool:
    """Whether C{node} is C{of} or one of its ancestors."""
    current: _Container | None = of
    while current is not None:
        if current is node:
            return True
        current = current.parent
    return False


def _link(parent: _Container, child: _Container) -> None:
    child.parent = parent
    parent.children.append(child)


def _unlink(child: _Container) -> None:
    assert child.parent is not None
    child.parent.children.remove(child)
    child.parent = None


def _references(messages: Sequence[_Message]) -> list[ThreadNode]:
    """RFC 5256 §3 REFERENCES, steps 1 to 6, for messages in sequence order."""
    # Step 1: link messages and the IDs they reference into parent/child chains.
    by_id: dict[str, _Container] = {}
    every: list[_Container] = []

    def container(message_id: str) -> _Container:
        # "If no message can be found with a given Message ID, create a dummy message with this
        # ID.  Use this dummy message for all subsequent references to this ID."
        found = by_id.get(message_id)
        if found is None:
            found = by_id[message_id] = _Container()
            every.append(found)
        return found

    for message in messages:
        own = by_id.get(message.message_id) if message.message_id is not None else None
        if own is not None and own.message is None:
            own.message = message  # the dummy made for this ID by an earlier reference
        else:
            # No Message-ID, or one an earlier message (lower sequence number) has: a unique ID,
            # which nothing can reference.
            own = _Container(message)
            every.append(own)
            if message.message_id is not None and message.message_id not in by_id:
                by_id[message.message_id] = own
        chain = [container(reference) for reference in message.references]
        # 1.A: each reference the parent of the next, unless the child has a parent already (the
        # References may have been truncated) or the link would make a loop.
        for parent, child in zip(chain, chain[1:], strict=False):
            if child.parent is None and not _is_ancestor(child, parent):
                _link(parent, child)
        # 1.B: the last reference is the message's parent, replacing any parent it had; no
        # references, no parent.  Again never a loop.
        last = chain[-1] if chain else None
        if own.parent is not None and own.parent is not last:
            _unlink(own)
        if last is not None and own.parent is None and not _is_ancestor(own, last):
            _link(last, own)

    # Step 2: the messages without a parent are the roots.
    roots = [c for c in every if c.parent is None]
    # Step 3: prune the dummies.
    roots = _prune(roots)
    # Step 4: sort the roots by sent date (a dummy by its first child, its children sorted).
    for root in roots:
        if root.message is None:
            root.children.sort(key=_Container.order)
    roots.sort(key=_Container.order)
    # Step 5: gather the roots that have the same base subject.
    roots = _merge_subjects(roots)
    # Step 6: sort every set of siblings, the youngest first.
    _sort_siblings(roots)
    roots.sort(key=_Container.order)
    return [_node(root) for root in roots]


def _post_order(roots: Iterable[_Container]) -> list[_Container]:
    """Every container under C{roots}, each after all its descendants, without recursion."""
    out: list[_Container] = []
    pending = list(roots)
    while pending:
        node = pending.pop()
        out.append(node)
        pending.extend(node.children)
    out.reverse()
    return out


def _prune(roots: list[_Container]) -> list[_Container]:
    """
    RFC 5256 §3 step 3: a dummy without children goes; a dummy with children goes and its
    children take its place, except that under the root that happens only to a single child.
    Done from the leaves up, so a dummy's children are counted once its own dummies are gone.
    """
    for node in _post_order(roots):
        kept: list[_Container] = []
        for child in node.children:
            if child.message is None:
                for grandchild in child.children:  # already pruned: no dummies among them
                    grandchild.parent = node
                kept.extend(child.children)
            else:
                kept.append(child)
        node.children = kept
    out: list[_Container] = []
    for root in roots:
        if root.message is None and len(root.children) <= 1:
            for child in root.children:
                child.parent = None
            out.extend(root.children)
        else:
            out.append(root)
    return out


def _merge_subjects(roots: list[_Container]) -> list[_Container]:
    """RFC 5256 §3 step 5: merge the threads whose (non-empty) thread subjects are the same."""
    # 5.B: one message per thread subject.
    table: dict[str, _Container] = {}
    for root in roots:
        subject = root.first_message().subject
        if not subject:
            continue
        held = table.get(subject)
        if held is None:
            table[subject] = root
        elif held.message is not None and (
            root.message is None or (held.message.reply and not root.message.reply)
        ):
            table[subject] = root
    # 5.C: merge each other root of the same thread subject into the one in the table.
    added: list[_Container] = []
    for root in roots:
        subject = root.first_message().subject
        if not subject or root.parent is not None:
            continue
        held = table[subject]
        if held is root:
            continue
        if held.message is None and root.message is None:
            # Both dummies: the children of both become siblings; the current dummy goes.
            for child in root.children:
                child.parent = held
            held.children.extend(root.children)
            root.children = []
        elif held.message is None or (
            root.message is not None
            and root.message.reply
            and held.message is not None
            and not held.message.reply
        ):
            _link(held, root)  # a sibling of the held message's children
        else:
            dummy = _Container()
            _link(dummy, held)
            _link(dummy, root)
            table[subject] = dummy
            added.append(dummy)
    return [r for r in roots + added if r.parent is None and (r.message or r.children)]


def _sort_siblings(roots: list[_Container]) -> None:
    """RFC 5256 §3 step 6: every set of siblings by sent date, grandchildren before children."""
    for node in _post_order(roots):
        node.children.sort(key=_Container.order)


def _node(root: _Container) -> ThreadNode:
    """The container's tree as L{ThreadNode}s, built from the leaves up, without recursion."""
    built: dict[int, ThreadNode] = {}
    for node in _post_order([root]):
        children = tuple(built.pop(id(child)) for child in node.children)
        built[id(node)] = ThreadNode(
            node.message.number if node.message is not None else None, children
        )
    return built[id(root)]
