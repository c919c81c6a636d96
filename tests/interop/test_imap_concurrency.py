"""
Ten clients on one mailbox (issue 12's acceptance test): a phone, a laptop and the webmail
sharing one INBOX during an outage, against a real ``twistd -n strata``.

Ten sessions of one user work on INBOX for 85 seconds, and one more on ``Archive``, the target
of their COPY and MOVE: they APPEND, FETCH flags, envelopes and body sections, STORE with and
without UNCHANGEDSINCE, COPY, MOVE, EXPUNGE and UID EXPUNGE, SEARCH, IDLE and NOOP, each
checking every response against the mailbox view a client keeps (`tests.peers.imap_concurrency`
says how, and which RFC each check follows).  Required:

- 0 NO or BAD to a legal command; per-session MODSEQ never going backwards; every FETCHed
  section byte-identical to what was appended; every session's final view equal to a fresh
  EXAMINE's; no keyword before the FLAGS response announcing it; \\Recent in exactly one
  session; responses a client can follow (RFC 3501 §7.4.1: no EXPUNGE during FETCH, STORE or
  SEARCH by number).
- No ``no message`` warning in Strata's log (a FETCH that found a listed message gone).
- Strata's resident memory (``VmRSS``) at the end at most 10% above its value after the first
  minute: the caches are bounded, the mailbox stays between 80 and 220 messages.

The same workload runs against Dovecot for a shorter time: it must pass every check too, which
proves the checks (a client's bookkeeping is easy to get wrong), not only the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.peers.dovecot import dovecot_factory_context
from tests.peers.imap_concurrency import WorkloadConfig, WorkloadResult, run_workload, vm_rss_kib
from tests.peers.strata_imap import StrataIMAP, password_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]

USER = "alice@example.test"
STRATA_SECONDS = 85.0  # at least 60 s (#12); RSS is read after RSS_FIRST seconds and at the end
RSS_FIRST = 60.0
RSS_GROWTH = 0.10
DOVECOT_SECONDS = 15.0
# Every kind of command the clients send: a run that sent too few of one proves little about it.
COMMANDS = (
    "APPEND", "FETCH", "UID FETCH", "STORE", "UID STORE", "COPY", "UID COPY", "MOVE", "UID MOVE",
    "EXPUNGE", "UID EXPUNGE", "SEARCH", "UID SEARCH", "IDLE", "NOOP", "STATUS",
)  # fmt: skip


def _workload_failures(result: WorkloadResult) -> list[str]:
    findings = result.findings
    failures = [f"{c}: {findings.counts[c]}" for c in findings.failing()]
    few = {c: findings.commands.get(c, 0) for c in COMMANDS if findings.commands.get(c, 0) < 10}
    if few:
        failures.append(f"too few commands of a kind to judge it: {few}")
    return failures


def _report(name: str, result: WorkloadResult, failures: list[str]) -> str:
    head = (
        f"{name}: {result.commands} commands in {result.seconds:.0f} s "
        f"({result.commands_per_s:.0f}/s) by 10 clients and the Archive janitor"
    )
    return "\n".join([head, *failures, "", result.findings.summary()])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StrataIMAP]:
    strata = StrataIMAP(tmp_path / "strata", users=["alice"])
    try:
        yield strata.start()
    finally:
        strata.stop()


def test_ten_clients_share_one_mailbox_on_strata(server: StrataIMAP) -> None:
    rss: dict[str, int] = {}

    def read_rss(when: str) -> Callable[[], None]:
        return lambda: rss.__setitem__(when, vm_rss_kib(server.pid))

    config = WorkloadConfig(server.imap_port, USER, password_for(USER), seconds=STRATA_SECONDS)
    result = run_workload(
        config,
        checkpoints=[(RSS_FIRST, read_rss("first minute"))],
        on_stopped=read_rss("end"),
    )
    failures = _workload_failures(result)
    log = server.strata.log_text().splitlines()
    no_message = [line for line in log if "no message" in line]
    if no_message:
        failures.append(f"log: {len(no_message)} 'no message' warnings, e.g. {no_message[:3]}")
    growth = rss["end"] / rss["first minute"] - 1
    rss_text = (
        f"RSS: {rss['first minute'] / 1024:.1f} MiB after {RSS_FIRST:.0f} s, "
        f"{rss['end'] / 1024:.1f} MiB at {STRATA_SECONDS:.0f} s ({growth:+.1%})"
    )
    if growth > RSS_GROWTH:
        failures.append(f"{rss_text}: more than {RSS_GROWTH:.0%} growth")
    report = _report("Strata", result, failures) + "\n" + rss_text
    print(report)
    assert not failures, report


def test_ten_clients_share_one_mailbox_on_dovecot() -> None:
    password = password_for(USER)
    with dovecot_factory_context() as factory:
        dovecot = factory.start({USER: password})
        result = run_workload(WorkloadConfig(dovecot.port, USER, password, seconds=DOVECOT_SECONDS))
    failures = _workload_failures(result)
    report = _report("Dovecot", result, failures)
    print(report)
    assert not failures, report
