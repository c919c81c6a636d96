"""IMAP benchmark: one mail-client workload against Strata and Dovecot holding the same mailbox.

Both servers hold the same 1,000 messages for one user: they reach Strata through SMTP intake
(domain in mode ``both``), and the bytes Strata stored, read back over IMAP, are written into
Dovecot's Maildir with the same INTERNALDATE, in the same order (as in the differential test,
``tests/interop/test_imap_dovecot_diff.py``).  Then ``--clients`` concurrent clients (10), each a
process of its own so the client side is not held back by one interpreter, run ``--sessions``
sessions each, on one side at a time.  A session is what a webmail request or a mail client's
sync does:

    LOGIN, SELECT INBOX, FETCH 1:* (FLAGS ENVELOPE),
    5 x UID FETCH <uid> (BODY.PEEK[]), 2 x UID STORE +FLAGS (\\Seen), 2 x UID STORE -FLAGS (\\Seen),
    SEARCH UNSEEN, SEARCH SUBJECT <word>, SEARCH FROM <word>, LOGOUT

(16 commands; the UIDs and words come from a seeded generator, so both sides get the same
scripts).  The rate is the number of commands over the wall time from the first client's start
to the last one's end.  Every command must answer OK, and every SELECT must see 1,000 messages,
or the run is reported FAILED.  The sides alternate, ``--repeat`` (3) runs each; the median
counts.  Server CPU seconds per run come from /proc (Strata: the twistd process; Dovecot: the
master, its live children and those it reaped).

Dovecot runs its defaults (a new imap-login process per connection, Maildir, fsync on) with two
changes, both to match what Strata does: plaintext LOGIN on loopback, and an authentication cache
(``auth_cache_size``), as Strata caches successful verifications for Roundcube's login per
request.  Both use the same SHA512-CRYPT hash (5,000 rounds).

    python -m bench.imap [--messages 1000] [--clients 10] [--sessions 10] [--repeat 3]

It prints commands/s for both and the ratio Strata/Dovecot (issue 4's target: at least 0.5), and
writes JSON to ``bench/results/imap-<timestamp>.json``.

``--workload expunge`` is the concurrent variant (issue 12): ``--clients`` sessions share one
INBOX for ``--seconds`` (30) a run, half of them reading (FETCH of flags, envelopes and body
sections, SEARCH, NOOP, IDLE) while the other half append, flag \\Deleted, EXPUNGE, UID EXPUNGE,
COPY and MOVE to Archive, where one more session reads and expunges what arrives.  These are the
checking clients of the concurrency acceptance test (``tests/peers/imap_concurrency.py``): every
NO or BAD answer is counted (the one allowed refusal, ``NO [EXPUNGEISSUED]`` to a COPY or MOVE
of a message expunged meanwhile, apart), and so is every other broken invariant (MODSEQ going
back, a body not as appended, a final view unlike a fresh EXAMINE...).  Each run starts from an
emptied INBOX holding 150 fresh messages.  It prints commands/s, the NO/BAD counts of both sides
and the ratio, and writes ``bench/results/imap-expunge-<timestamp>.json``; any error fails it.

It is not a timed test; everything listens on 127.0.0.1 only and every process started here is
stopped before it exits.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import random
import shutil
import smtplib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.intake import DOMAIN, RESULTS_DIR
from tests.peers.dovecot import (
    DovecotInstance,
    dovecot_factory_context,
    dovecot_installed,
    sha512_crypt,
)
from tests.peers.imap_concurrency import READER, WRITER, WorkloadConfig, run_workload
from tests.peers.imapscript import IMAPScript, parse_response
from tests.peers.net import free_port, wait_for_port
from tests.peers.strata import StrataProcess

USER = f"bench@{DOMAIN}"
PASSWORD = "bench-pw!"  # noqa: S105 - the benchmark user's
WORDS = (
    "continuity outage primary relay queue mailbox shadow durable webmail failover backup "
    "report invoice meeting agenda minutes budget forecast schedule delivery"
).split()
SENDERS = [f"{name}@{host}" for name in ("ann", "bob", "cho", "dev", "eli") for host in (
    "example.org", "example.net", "example.com", "partner.test")]  # fmt: skip
COMMANDS_PER_SESSION = 16


# -- the mailbox ----------------------------------------------------------------------------------


def make_messages(count: int, seed: int = 4) -> list[bytes]:
    """`count` CRLF messages: mostly text of 1-20 KiB, one in five with a base64 attachment."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        subject = " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))
        sender = rng.choice(SENDERS)
        day = 1 + n % 28
        lines = []
        for _ in range(rng.randint(10, 300)):
            lines.append(" ".join(rng.choices(WORDS, k=rng.randint(3, 12))))
        text = "\r\n".join(lines).encode() + b"\r\n"
        header = (
            f"From: {sender.split('@')[0].title()} <{sender}>\r\nTo: {USER}\r\n"
            f"Subject: {subject}\r\nDate: Mon, {day:02d} Jun 2026 10:{n % 60:02d}:00 +0000\r\n"
            f"Message-ID: <bench-{n}@example.org>\r\nMIME-Version: 1.0\r\n"
        ).encode()
        if rng.random() < 0.2:
            blob = base64.encodebytes(rng.randbytes(rng.randint(20_000, 100_000)))
            body = (
                b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
                b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text + b"--b\r\n"
                b"Content-Type: application/octet-stream; name=data.bin\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n"
                + blob.replace(b"\n", b"\r\n")
                + b"--b--\r\n"
            )
        else:
            body = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text
        out.append(header + body)
    return out


def deliver(smtp_port: int, messages: list[bytes], sessions: int = 4) -> None:
    """Send every message to USER through Strata's intake over `sessions` SMTP sessions."""

    def session(part: int) -> None:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=300) as smtp:
            smtp.ehlo("client.test")
            for message in messages[part::sessions]:
                smtp.sendmail("sender@outside.test", [USER], message)

    with ThreadPoolExecutor(sessions) as pool:
        for result in [pool.submit(session, p) for p in range(sessions)]:
            result.result()


def copy_to_dovecot(imap_port: int, dovecot: DovecotInstance, count: int) -> None:
    """What Strata stored, in UID order, into Dovecot's Maildir: same bytes, same INTERNALDATE."""
    client = IMAPScript("127.0.0.1", imap_port, timeout=600)
    try:
        client.login(USER, PASSWORD)
        assert client.run("EXAMINE INBOX").ok
        copied = 0
        for start in range(1, count + 1, 100):
            reply = client.run(f"FETCH {start}:{min(start + 99, count)} (INTERNALDATE BODY[])")
            assert reply.ok, reply.tagged
            for raw in reply.untagged:
                values = parse_response(raw)
                if len(values) < 4 or str(values[2]).upper() != "FETCH":
                    continue
                pairs = values[3]
                assert isinstance(pairs, list)
                items = {str(pairs[i]).upper(): pairs[i + 1] for i in range(0, len(pairs), 2)}
                body, date = items["BODY[]"], items["INTERNALDATE"]
                assert isinstance(body, bytes) and isinstance(date, bytes)
                arrived = datetime.strptime(date.decode(), "%d-%b-%Y %H:%M:%S %z").timestamp()
                dovecot.deliver(USER, body, internal_date=arrived)
                copied += 1
        if copied != count:
            raise RuntimeError(f"copied {copied} of {count} messages to Dovecot")
    finally:
        client.logout()


# -- the workload ---------------------------------------------------------------------------------


def session_script(rng: random.Random, count: int) -> list[str]:
    """One session's commands after LOGIN (the UIDs are 1..count on both sides)."""
    uids = [rng.randint(1, count) for _ in range(9)]
    return [
        "SELECT INBOX",
        "FETCH 1:* (FLAGS ENVELOPE)",
        *(f"UID FETCH {uid} (BODY.PEEK[])" for uid in uids[:5]),
        *(f"UID STORE {uid} +FLAGS (\\Seen)" for uid in uids[5:7]),
        *(f"UID STORE {uid} -FLAGS (\\Seen)" for uid in uids[7:9]),
        "SEARCH UNSEEN",
        f"SEARCH SUBJECT {rng.choice(WORDS)}",
        f"SEARCH FROM {rng.choice(SENDERS).split('@')[0]}",
    ]


def client_worker(
    port: int, seed: int, sessions: int, count: int, start: Any, results: Any
) -> None:
    """One client process: wait for the start, run `sessions` sessions, report its counts."""
    rng = random.Random(seed)
    commands = errors = 0
    problems: list[str] = []
    start.wait()
    for _ in range(sessions):
        client = IMAPScript("127.0.0.1", port, timeout=600)
        try:
            replies = [client.run(f'LOGIN "{USER}" "{PASSWORD}"')]
            for command in session_script(rng, count):
                replies.append(client.run(command))
            logout = client.logout()
            if logout is not None:
                replies.append(logout)
        finally:
            client.close()
        commands += client.sent
        for reply in replies:
            if not reply.ok:
                errors += 1
                problems.append(reply.tagged.decode("utf-8", "replace")[:200])
        exists = [r for r in replies[1].untagged if r.endswith(b" EXISTS")]
        if exists != [f"* {count} EXISTS".encode()]:
            errors += 1
            problems.append(f"SELECT saw {exists!r}, not {count} messages")
    results.put({"commands": commands, "errors": errors, "problems": problems[:5]})


def run_side(port: int, args: argparse.Namespace, round_: int, cpu: Any) -> dict[str, Any]:
    """`args.clients` processes against one server; commands/s over the whole run."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=client_worker,
            args=(port, 1000 * round_ + c, args.sessions, args.messages, start, results),
        )
        for c in range(args.clients)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # every process is up and waiting
    cpu_before = cpu()
    began = time.monotonic()
    start.set()
    done = [results.get(timeout=args.timeout) for _ in workers]
    elapsed = time.monotonic() - began
    cpu_used = cpu() - cpu_before
    for worker in workers:
        worker.join(30)
        if worker.is_alive():
            worker.kill()
    commands = sum(d["commands"] for d in done)
    return {
        "commands": commands,
        "seconds": elapsed,
        "commands_per_s": commands / elapsed,
        "server_cpu_s": cpu_used,
        "errors": sum(d["errors"] for d in done),
        "problems": [p for d in done for p in d["problems"]][:10],
    }


def process_cpu(pid: int) -> float:
    """User+system CPU seconds of one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_workload(
    args: argparse.Namespace,
    strata: StrataProcess,
    imap_port: int,
    dovecot: DovecotInstance,
    load: float,
) -> int:
    """The mail-client workload (`session_script`) on 1,000 messages: commands/s, both sides."""
    runs: dict[str, list[dict[str, Any]]] = {"strata": [], "dovecot": []}
    shape = f"{args.clients} clients x {args.sessions} sessions x {COMMANDS_PER_SESSION}"
    print(f"imap: {args.messages} messages, {shape} commands, {args.repeat} runs a side")
    messages = make_messages(args.messages)
    t0 = time.monotonic()
    deliver(strata.port, messages)
    copy_to_dovecot(imap_port, dovecot, args.messages)
    print(f"  mailboxes filled in {time.monotonic() - t0:.1f}s")
    sides = {
        "strata": (imap_port, lambda: process_cpu(strata.pid)),
        "dovecot": (dovecot.port, dovecot.cpu_seconds),
    }
    for round_ in range(args.repeat):
        # Alternate who goes first, so a drift in the machine's load blurs both alike.
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            port, cpu = sides[name]
            run = run_side(port, args, round_, cpu)
            runs[name].append(run)
            print(f"  {name:8} {run['commands_per_s']:8.1f} commands/s  "
                  f"({run['commands']} in {run['seconds']:.1f}s, server CPU "
                  f"{run['server_cpu_s']:.1f}s, {run['errors']} errors)")  # fmt: skip
    medians = {n: statistics.median(r["commands_per_s"] for r in rs) for n, rs in runs.items()}
    ratio = medians["strata"] / medians["dovecot"]
    print(f"\nmedian: strata {medians['strata']:.1f} commands/s, "
          f"dovecot {medians['dovecot']:.1f} commands/s")  # fmt: skip
    print(f"\nStrata/Dovecot: {ratio:.2f}  (target: at least 0.5)")
    ok = all(run["errors"] == 0 for side in runs.values() for run in side)
    out = write_results(args, "imap", {"runs": runs, "medians": medians, "ratio": ratio,
                                       "ok": ok, "load_before": load})  # fmt: skip
    print(f"results: {out}")
    if not ok:
        print("FAILED: a command did not answer OK (see the JSON's problems)", file=sys.stderr)
        for name, side in runs.items():
            for run in side:
                for problem in run["problems"]:
                    print(f"  {name}: {problem}", file=sys.stderr)
    return 0 if ok else 1


def expunge_workload(
    args: argparse.Namespace,
    strata: StrataProcess,
    imap_port: int,
    dovecot: DovecotInstance,
    load: float,
) -> int:
    """
    Half the clients expunge, move and append while the other half fetch, on one INBOX
    (`tests.peers.imap_concurrency`, roles WRITER and READER, plus the Archive janitor): NO/BAD
    answers, the other invariants broken, and commands/s, both sides.
    """
    runs: dict[str, list[dict[str, Any]]] = {"strata": [], "dovecot": []}
    print(f"imap --workload expunge: {args.clients} clients (half reading, half expunging and "
          f"moving) for {args.seconds:.0f}s, {args.repeat} runs a side")  # fmt: skip
    sides = {
        "strata": (imap_port, lambda: process_cpu(strata.pid)),
        "dovecot": (dovecot.port, dovecot.cpu_seconds),
    }
    for round_ in range(args.repeat):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            port, cpu = sides[name]
            config = WorkloadConfig(
                port, USER, PASSWORD, clients=args.clients, seconds=args.seconds, seed=round_,
                roles=(READER, WRITER), run_tag=f"r{round_}",
            )  # fmt: skip
            cpu_at: list[float] = []
            result = run_workload(
                config, checkpoints=[(0.0, _reader(cpu, cpu_at))], on_stopped=_reader(cpu, cpu_at)
            )
            findings = result.findings
            errors = findings.counts.get("answers", 0)
            broken = {c: findings.counts[c] for c in findings.failing() if c != "answers"}
            run: dict[str, Any] = {
                "commands": result.commands,
                "seconds": result.seconds,
                "commands_per_s": result.commands_per_s,
                "server_cpu_s": cpu_at[1] - cpu_at[0],
                "errors": errors,
                "allowed_no_expungeissued": findings.answers.get("NO [EXPUNGEISSUED] (allowed)", 0),
                "violations": broken,
                "commands_by_kind": dict(findings.commands),
                "examples": {c: findings.examples.get(c, [])[:5] for c in findings.failing()},
                "ok": findings.ok,
            }
            runs[name].append(run)
            others = ", ".join(f"{c} {n}" for c, n in broken.items()) or "none"
            print(f"  {name:8} {run['commands_per_s']:8.1f} commands/s  "
                  f"({run['commands']} in {run['seconds']:.1f}s, server CPU "
                  f"{run['server_cpu_s']:.1f}s)  NO/BAD {errors}, "
                  f"other violations: {others}")  # fmt: skip
    medians = {n: statistics.median(r["commands_per_s"] for r in rs) for n, rs in runs.items()}
    ratio = medians["strata"] / medians["dovecot"]
    totals = {n: sum(r["errors"] for r in rs) for n, rs in runs.items()}
    print(f"\nmedian: strata {medians['strata']:.1f} commands/s, "
          f"dovecot {medians['dovecot']:.1f} commands/s")  # fmt: skip
    print(f"NO/BAD answers: strata {totals['strata']}, dovecot {totals['dovecot']} (target: 0)")
    print(f"\nStrata/Dovecot: {ratio:.2f}")
    ok = all(run["ok"] for side in runs.values() for run in side)
    out = write_results(args, "imap-expunge", {"runs": runs, "medians": medians, "ratio": ratio,
                                               "ok": ok, "load_before": load})  # fmt: skip
    print(f"results: {out}")
    if not ok:
        print("FAILED: an answer or a view was wrong (examples below and in the JSON)",
              file=sys.stderr)  # fmt: skip
        for name, side in runs.items():
            for run in side:
                for category, examples in run["examples"].items():
                    for example in examples[:2]:
                        print(f"  {name} {category}: {example[:300]}", file=sys.stderr)
    return 0 if ok else 1


def _reader(cpu: Callable[[], float], into: list[float]) -> Callable[[], None]:
    """A function that appends the server's CPU seconds now to `into`."""
    return lambda: into.append(cpu())


def write_results(args: argparse.Namespace, name: str, figures: dict[str, Any]) -> Path:
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.results / f"{name}-{stamp}.json"
    settings = vars(args) | {"results": str(args.results)}
    out.write_text(json.dumps({"args": settings, **figures}, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.imap", description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=("client", "expunge"), default="client",
                   help="client: sessions of a mail client on 1,000 messages; expunge: clients "
                   "expunging and moving while others fetch, on one INBOX")  # fmt: skip
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--sessions", type=int, default=10, help="sessions per client per run")
    p.add_argument("--seconds", type=float, default=30.0, help="length of an expunge run")
    p.add_argument("--repeat", type=int, default=3, help="runs per side (median reported)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    if not dovecot_installed():
        print("bench.imap needs Dovecot (apt-get install dovecot-imapd)", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f}; figures from a busy machine vary a lot")
    root = Path(tempfile.mkdtemp(prefix="strata-bench-imap-"))
    imap_port = free_port()
    strata = StrataProcess(
        root / "strata",
        extra_config=f'[imap]\nlisten = ["127.0.0.1:{imap_port}"]\nmax_connections_per_ip = 1000\n',
    )
    strata.cli("domain", "add", DOMAIN, "--relay", "127.0.0.1:9", "--mode", "both",
               "--no-monitor", "--portal", "always")  # fmt: skip
    passwd = root / "users.passwd"
    passwd.write_text(f"{USER}:{sha512_crypt(PASSWORD)}\n")
    strata.cli("user", "import", DOMAIN, str(passwd))
    workload = expunge_workload if args.workload == "expunge" else client_workload
    with dovecot_factory_context(show_logs=False) as factory:
        try:
            strata.start()
            if not wait_for_port(imap_port, 30):
                raise RuntimeError(f"Strata's IMAP is not up\n{strata.log_text()[-3000:]}")
            dovecot = factory.start(
                {USER: PASSWORD}, extra_config="auth_cache_size = 10M\nauth_cache_ttl = 1 hour\n"
            )
            return workload(args, strata, imap_port, dovecot, load)
        finally:
            strata.stop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
