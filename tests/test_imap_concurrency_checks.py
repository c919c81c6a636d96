"""
The checks of the concurrency test's clients (`tests.peers.imap_concurrency`), fed crafted
answers: each invariant must catch what breaks it and let through what the RFCs allow, or the
interop test would prove nothing (or fail Dovecot).
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from tests.peers.imap_concurrency import (
    Findings,
    Report,
    Session,
    _Slot,
    compress,
    generate,
    number_set,
)
from tests.peers.imapscript import Reply

MID = "<r0.c01.1@concurrency.test>"


def session(*uids: int, flags: tuple[str, ...] = ()) -> Session:
    """A session on INBOX that knows messages with `uids` (no connection: answers are fed)."""
    s = Session(0, "user", "pw", "INBOX", "t")
    s.view = [_Slot(uid, flags) for uid in uids]
    s.announced = {"\\seen", "\\deleted", "\\flagged", "$work"}
    return s


def feed(
    s: Session,
    kind: str,
    command: str,
    *untagged: bytes,
    tagged: bytes = b"s1 OK done",
    **kw: object,
) -> None:
    reply = Reply(command.encode(), list(untagged), tagged=tagged)
    uid = command.startswith("UID ")
    s.absorb(reply, kind, uid=uid, partial=kw.get("partial"), targets=kw.get("targets", ()))  # type: ignore[arg-type]


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def test_a_generated_message_parts_are_its_mime_parts() -> None:
    message = generate(MID)
    assert message.raw == message.sections["HEADER"] + message.sections["TEXT"]
    parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Message-ID"] == MID
    parts = list(parsed.iter_parts())
    assert len(parts) == 2
    text, attachment = (part.get_payload(decode=False) for part in parts)
    assert isinstance(text, str) and isinstance(attachment, str)
    assert text.encode() == message.sections["1"]
    assert attachment.encode().rstrip(b"\r\n") == message.sections["2"]
    assert generate(MID) == message  # the same bytes wherever it is generated


def test_sequence_sets() -> None:
    assert number_set("1:3,7,9:8") == {1, 2, 3, 7, 8, 9}
    assert compress([7, 1, 2, 3, 9, 8]) == "1:3,7:9"


def test_expunge_while_answering_fetch_by_number_is_caught() -> None:
    s = session(10, 11, 12)
    feed(s, "FETCH", "FETCH 1:3 (FLAGS)", b"* 2 EXPUNGE")
    assert s.report.problem_counts["protocol"] == 1
    assert [slot.uid for slot in s.view] == [10, 12]


def test_expunge_while_answering_uid_fetch_is_allowed() -> None:
    s = session(10, 11, 12)
    feed(s, "FETCH", "UID FETCH 11 (FLAGS)", b"* 2 EXPUNGE")
    assert not s.report.problem_counts
    assert [slot.uid for slot in s.view] == [10, 12]
    feed(s, "NOOP", "NOOP", b"* 3 EXPUNGE")  # beyond the two messages left
    assert s.report.problem_counts["protocol"] == 1


def test_exists_may_grow_never_shrink() -> None:
    s = session(10, 11)
    feed(s, "NOOP", "NOOP", b"* 3 EXISTS")
    assert len(s.view) == 3 and s.view[2].uid is None
    feed(s, "NOOP", "NOOP", b"* 3 FETCH (UID 9 FLAGS ())")  # below UID 11: impossible
    feed(s, "NOOP", "NOOP", b"* 2 EXISTS")
    assert s.report.problem_counts["protocol"] == 2


def test_a_uid_never_changes_under_a_sequence_number() -> None:
    s = session(10, 11)
    feed(s, "FETCH", "FETCH 2 (UID)", b"* 2 FETCH (UID 12)")
    assert s.report.problem_counts["protocol"] == 1


def test_modseq_going_backwards_names_where_the_higher_one_came_from() -> None:
    s = session(10)
    feed(
        s, "STORE", "UID STORE 10 +FLAGS (\\Seen)", b"* 1 FETCH (UID 10 FLAGS (\\Seen) MODSEQ (9))"
    )
    feed(s, "NOOP", "NOOP", b"* 1 FETCH (UID 10 FLAGS () MODSEQ (7))")
    assert s.report.problem_counts["modseq"] == 1
    assert "UID STORE 10" in s.report.problems["modseq"][0]
    feed(s, "NOOP", "NOOP", b"* 1 FETCH (FLAGS () MODSEQ (9))")  # equal is fine
    assert s.report.problem_counts["modseq"] == 1


def test_highestmodseq_is_at_least_every_modseq_seen() -> None:
    s = session(10)
    feed(s, "NOOP", "NOOP", b"* 1 FETCH (UID 10 MODSEQ (20))")
    feed(s, "NOOP", "NOOP", b"* OK [HIGHESTMODSEQ 19] Highest")
    feed(s, "STATUS", "STATUS Archive (HIGHESTMODSEQ)", b"* STATUS Archive (HIGHESTMODSEQ 5)")
    feed(s, "STATUS", "STATUS Archive (HIGHESTMODSEQ)", b"* STATUS Archive (HIGHESTMODSEQ 4)")
    assert s.report.problem_counts["modseq"] == 2


def test_sections_are_compared_to_the_appended_octets() -> None:
    message = generate(MID)
    s = session(10)
    field = b"BODY[HEADER.FIELDS (MESSAGE-ID)] " + literal(
        message.sections["HEADER.FIELDS (MESSAGE-ID)"]
    )
    good = b"* 1 FETCH (UID 10 " + field + b" BODY[1] " + literal(message.sections["1"]) + b")"
    feed(s, "FETCH", "UID FETCH 10 (BODY.PEEK[1])", good)
    assert not s.report.problem_counts
    partial = b"* 1 FETCH (UID 10 BODY[]<5> " + literal(message.raw[5:15]) + b")"
    feed(s, "FETCH", "UID FETCH 10 (BODY.PEEK[]<5.10>)", partial, partial=(5, 10))
    assert not s.report.problem_counts
    bad = b"* 1 FETCH (UID 10 BODY[TEXT] " + literal(message.sections["TEXT"][:-1] + b"X") + b")"
    feed(s, "FETCH", "UID FETCH 10 (BODY.PEEK[TEXT])", bad)
    assert s.report.problem_counts["bodies"] == 1


def test_one_uid_is_one_message() -> None:
    s = session(10)
    other = generate("<r0.c02.9@concurrency.test>")
    s.report.message_ids[10] = MID
    fetch = b"* 1 FETCH (UID 10 BODY[HEADER] " + literal(other.sections["HEADER"]) + b")"
    feed(s, "FETCH", "UID FETCH 10 (BODY.PEEK[HEADER])", fetch)
    assert s.report.problem_counts["bodies"] == 1


def test_nil_sections_need_expungeissued_and_an_expunge() -> None:
    s = session(10, 11)
    fetch = b"* 1 FETCH (UID 10 BODY[HEADER.FIELDS (MESSAGE-ID)] NIL BODY[TEXT] NIL)"
    feed(s, "FETCH", "FETCH 1 (BODY.PEEK[TEXT])", fetch)
    assert s.report.problem_counts["bodies"] == 1
    feed(s, "FETCH", "FETCH 1 (BODY.PEEK[TEXT])", fetch, tagged=b"s2 OK [EXPUNGEISSUED] Some")
    envelope = b"* 2 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))"
    feed(s, "FETCH", "FETCH 2 (ENVELOPE)", envelope, tagged=b"s3 OK [EXPUNGEISSUED] Some")
    assert s.report.problem_counts["bodies"] == 1
    assert [uids for _, _, uids in s.report.must_be_gone] == [[10], [11]]


def test_keywords_must_be_announced_first() -> None:
    s = session(10)
    feed(s, "NOOP", "NOOP", b"* 1 FETCH (UID 10 FLAGS ($Work $New))")
    assert s.report.problem_counts["keywords"] == 1
    feed(s, "NOOP", "NOOP", b"* FLAGS (\\Seen $Work $New)", b"* 1 FETCH (UID 10 FLAGS ($New))")
    assert s.report.problem_counts["keywords"] == 1


def test_no_answers() -> None:
    s = session(10, 11)
    feed(s, "FETCH", "UID FETCH 10 (FLAGS)", tagged=b"s1 NO [UNAVAILABLE] Temporary failure")
    assert s.report.problem_counts["answers"] == 1
    # RFC 2180 §4.4: a COPY naming a message expunged meanwhile may fail...
    refused = b"s2 NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
    feed(s, "COPY", "COPY 1:2 Archive", tagged=refused, targets=[10, 11])
    assert s.report.problem_counts["answers"] == 1
    assert s.report.must_be_gone[-1][2] == [10, 11]
    # ...but not one naming only UIDs the session already saw expunged (RFC 3501 §6.4.8).
    feed(s, "COPY", "UID COPY 5 Archive", tagged=refused, targets=[])
    assert s.report.problem_counts["answers"] == 2
    feed(s, "SEARCH", "SEARCH ALL", b"* SEARCH 1 2 3")  # 3 is beyond the two messages
    assert s.report.problem_counts["protocol"] == 1


def _final(who: str, view: list[tuple[int | None, tuple[str, ...]]], **kw: object) -> Report:
    report = Report(who, "INBOX", final_view=view)
    for key, value in kw.items():
        setattr(report, key, value)
    return report


def test_final_views_and_cross_checks() -> None:
    fresh = _final("fresh", [(10, ("\\seen",)), (12, ())], modseqs={10: 5, 12: 8}, highestmodseq=9)
    same = _final("c01", [(10, ("\\seen",)), (12, ())], recent={10, 12}, modseqs={10: 5})
    stale = _final("c02", [(10, ()), (12, ())], modseqs={12: 9}, max_modseq=10)
    gone = [("answers", "COPY 1 Archive -> NO [EXPUNGEISSUED]", [12])]
    claims = _final("c03", [(10, ("\\seen",)), (12, ())], recent={12}, must_be_gone=gone)
    findings = Findings.evaluate([same, stale, claims], {"INBOX": fresh})
    assert findings.counts == {"final_view": 1, "modseq": 2, "recent": 1, "answers": 1}, (
        findings.summary()
    )
    assert Findings.evaluate([same], {"INBOX": fresh}).ok
