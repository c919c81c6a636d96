"""
The rules of queue-entry changes, kept in one place so that every backend applies the same ones.

Two kinds of change move a queue entry, and both are pure functions here (an entry in, the changed
entry out, or L{QueueStateError}); a backend reads the entry, calls one of them and writes the
result back inside one transaction.  This module must never do I/O.

The rules:

- A delivery attempt (L{apply_result}) always counts: ``attempts`` + 1, ``last_attempt_at`` =
  ``result.at``.  Then, by outcome:

  ========== =========== ===========================================================
  outcome    new state   also
  ========== =========== ===========================================================
  delivered  DELIVERED   ``delivered_at`` = ``at``, ``delivery_reply`` = ``reply``
  deferred   QUEUED      ``last_error`` = ``reply``, ``next_attempt_at`` from result
  bounced    BOUNCED     ``last_error`` = ``reply``
  held       HELD        ``last_error`` = ``reply``
  ========== =========== ===========================================================

- An admin's move (L{apply_change}) sets ``to_state`` if the entry is in one of ``from_states``;
  releasing to QUEUED makes it due at ``at``; a non-empty ``note`` becomes ``last_error``.  Only a
  delivery attempt can make an entry DELIVERED (it alone knows the primary's reply).
- A DELIVERED entry is final: neither kind of change applies to it (the primary has the message; a
  second delivery would be a duplicate).
- An admin wins over an attempt that did not deliver: when an entry was held, deleted or bounced
  while the relay was trying it, a deferred, bounced or held result counts the attempt and keeps
  ``last_error`` but leaves the admin's state.  A delivered result always applies: the primary
  has the message, whatever was decided meanwhile.
- Many attempts at once (L{apply_results}, for C{IQueueStore.record_results}): each as
  L{apply_result}, in order; an unknown or DELIVERED entry is skipped, not an error.
- Neither kind of change touches what the entry is (``outbound``) or whether its sender was told
  of a delay (``delay_notified_at``, set by C{IQueueStore.mark_delay_notified} alone).
- A third kind, a new route (L{apply_reroute}), is the one change of where an entry goes: its
  recipient, domain and ``outbound``.  Only an entry still waiting (QUEUED or HELD) can take it;
  it becomes QUEUED and due at ``at``, its attempts kept, ``note`` as its ``last_error``.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import replace

from strata_twisted.errors import QueueStateError
from strata_twisted.model import (
    BOUNCED,
    BOUNCED_OUTCOME,
    DEFERRED_OUTCOME,
    DELIVERED,
    DELIVERED_OUTCOME,
    HELD,
    HELD_OUTCOME,
    OUTCOMES,
    QUEUE_STATES,
    QUEUED,
    AttemptResult,
    QueueEntry,
)

# outcome -> the state it leaves the entry in.
_OUTCOME_STATES = {
    DELIVERED_OUTCOME: DELIVERED,
    DEFERRED_OUTCOME: QUEUED,
    BOUNCED_OUTCOME: BOUNCED,
    HELD_OUTCOME: HELD,
}
assert set(_OUTCOME_STATES) == set(OUTCOMES), "every outcome needs a state"


def check_result(result: AttemptResult) -> None:
    """Raise L{QueueStateError} for an outcome that is not one of L{OUTCOMES}."""
    if result.outcome not in _OUTCOME_STATES:
        raise QueueStateError(f"unknown delivery outcome {result.outcome!r}")


def apply_result(entry: QueueEntry, result: AttemptResult) -> QueueEntry:
    """``entry`` after the delivery attempt ``result``; L{QueueStateError} if it is DELIVERED."""
    check_result(result)
    if entry.state == DELIVERED:
        raise QueueStateError(f"{entry.id} is already delivered; it cannot be {result.outcome}")
    attempted = replace(entry, attempts=entry.attempts + 1, last_attempt_at=result.at)
    state = _OUTCOME_STATES[result.outcome]
    if result.outcome != DELIVERED_OUTCOME and entry.state != QUEUED:
        return replace(attempted, last_error=result.reply)
    if result.outcome == DELIVERED_OUTCOME:
        return replace(attempted, state=state, delivered_at=result.at, delivery_reply=result.reply)
    if result.outcome == DEFERRED_OUTCOME:
        return replace(
            attempted,
            state=state,
            last_error=result.reply,
            next_attempt_at=result.next_attempt_at,
        )
    return replace(attempted, state=state, last_error=result.reply)


def apply_results(
    entries: MutableMapping[str, QueueEntry], results: Sequence[AttemptResult]
) -> list[QueueEntry]:
    """
    Apply ``results`` in order to ``entries`` (id -> entry, updated in place), skipping those
    whose entry is missing or DELIVERED (nothing left to attempt); the changed entries, one per
    result applied.  L{QueueStateError} for an unknown outcome, before anything changes.
    """
    for result in results:
        check_result(result)
    changed = []
    for result in results:
        entry = entries.get(result.entry_id)
        if entry is None or entry.state == DELIVERED:
            continue
        entries[entry.id] = apply_result(entry, result)
        changed.append(entries[entry.id])
    return changed


def apply_change(
    entry: QueueEntry, from_states: tuple[str, ...], to_state: str, at: float, note: str
) -> QueueEntry:
    """``entry`` after an admin's move to ``to_state``; L{QueueStateError} if it is not legal."""
    if to_state not in QUEUE_STATES:
        raise QueueStateError(f"unknown queue state {to_state!r}")
    if to_state == DELIVERED:
        raise QueueStateError("only a delivery attempt can mark an entry delivered")
    if entry.state == DELIVERED:
        raise QueueStateError(f"{entry.id} is already delivered; it cannot be {to_state}")
    if entry.state not in from_states:
        allowed = ", ".join(from_states) or "no state"
        raise QueueStateError(
            f"{entry.id} is {entry.state}; only an entry that is {allowed} can become {to_state}"
        )
    changed = replace(entry, state=to_state)
    if to_state == QUEUED:
        changed = replace(changed, next_attempt_at=at)
    if note:
        changed = replace(changed, last_error=note)
    return changed


def check_change_target(to_state: str) -> None:
    """L{QueueStateError} unless an admin's move may lead some entry to ``to_state``."""
    if to_state not in QUEUE_STATES or to_state == DELIVERED:
        raise QueueStateError(f"no queue entry can be moved to {to_state!r} by an admin")


def apply_changes(
    entries: MutableMapping[str, QueueEntry],
    entry_ids: Sequence[str],
    from_states: tuple[str, ...],
    to_state: str,
    at: float,
    note: str,
) -> list[QueueEntry]:
    """
    L{apply_change} on each of ``entry_ids`` in ``entries`` (id -> entry, updated in place), in
    order; an id missing, named again, or whose entry may not move is skipped.  The changed
    entries; L{QueueStateError} for a ``to_state`` no entry may reach, before anything changes.
    """
    check_change_target(to_state)
    changed = []
    for entry_id in dict.fromkeys(entry_ids):
        entry = entries.get(entry_id)
        if entry is None:
            continue
        try:
            entries[entry_id] = apply_change(entry, from_states, to_state, at, note)
        except QueueStateError:
            continue
        changed.append(entries[entry_id])
    return changed


def apply_reroute(
    entry: QueueEntry, recipient: str, domain: str, outbound: bool, at: float, note: str
) -> QueueEntry:
    """``entry`` sent to ``recipient`` in ``domain`` instead; L{QueueStateError} unless it is
    QUEUED or HELD."""
    if entry.state not in (QUEUED, HELD):
        raise QueueStateError(
            f"{entry.id} is {entry.state}; only a queued or held entry can be routed elsewhere"
        )
    return replace(
        entry,
        recipient=recipient,
        domain=domain,
        outbound=outbound,
        state=QUEUED,
        next_attempt_at=at,
        last_error=note or entry.last_error,
    )
