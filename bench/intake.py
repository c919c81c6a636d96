"""Intake benchmark: durable SMTP intake of Strata beside Postfix as a backup MX, in one run.

Postfix's ``smtp-source`` sends N messages of SIZE bytes over SESSIONS parallel SMTP sessions
(one message per transaction, ``-d``: sessions are kept open between messages unless
``--connection-per-message``) to each server in turn, for each session count. Both servers answer
250 only once a message is on disk (Postfix fsyncs its queue file; Strata commits and fsyncs), so
wall-clock messages per second measure durable intake. Afterwards each side must hold exactly the
messages sent (Postfix: ``postqueue -j``; Strata: ``strata queue list --json``), or the round is
marked failed.

    python -m bench.intake [--messages 2000] [--sessions 1,10,50] [--size 10240]

It prints a table (msgs/s of each side and the ratio Strata/Postfix) and writes the figures to
``bench/results/intake-<timestamp>.json``. It is not a timed test and never runs under pytest.
Everything listens on 127.0.0.1 only and every process started here is stopped before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.peers.net import free_port
from tests.peers.postfix import (
    POSTCONF_BIN,
    SMTP_SOURCE_BIN,
    PostfixInstance,
    postfix_installed,
)
from tests.peers.strata import StrataProcess

DOMAIN = "example.test"
SENDER = "sender@bench.test"
RECIPIENT = f"rcpt@{DOMAIN}"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Round:
    """One side's figures for one session count: the median of `repeat` timed runs."""

    server: str
    sessions: int
    messages: int
    seconds: float = 0.0  # median wall-clock seconds to send `messages`
    msgs_per_s: float = 0.0  # messages / median seconds
    cpu_seconds: float | None = None  # median user+system CPU of the server during a run
    samples: list[float] = field(default_factory=list)  # msgs/s of each run
    queued: list[int] = field(default_factory=list)  # messages in the server's queue after each
    ok: bool = False
    error: str = ""

    def add(self, seconds: float, cpu: float | None, queued: int) -> None:
        """Record one run; the round stays ok only while every run queued all its messages."""
        self._seconds.append(seconds)
        if cpu is not None:
            self._cpu.append(cpu)
        self.samples.append(round(self.messages / seconds, 1))
        self.queued.append(queued)
        self.seconds = statistics.median(self._seconds)
        self.msgs_per_s = self.messages / self.seconds
        self.cpu_seconds = statistics.median(self._cpu) if self._cpu else None
        if queued != self.messages:
            self.error = (
                f"{self.server}'s queue holds {queued} messages after sending {self.messages}"
            )
        self.ok = not self.error

    def fail(self, e: BaseException) -> None:
        self.error = f"{type(e).__name__}: {e}"
        self.ok = False

    def __post_init__(self) -> None:
        self._seconds: list[float] = []
        self._cpu: list[float] = []


def smtp_source(port: int, messages: int, sessions: int, size: int, reuse: bool) -> list[str]:
    """The ``smtp-source`` command line for one round."""
    argv = [SMTP_SOURCE_BIN]
    if reuse:
        argv.append("-d")  # keep each session open and send its next message over it
    argv += [
        "-s", str(sessions),
        "-m", str(messages),
        "-l", str(size),
        "-M", "bench.test",
        "-f", SENDER,
        "-t", RECIPIENT,
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    return argv


def send(port: int, args: argparse.Namespace, sessions: int, messages: int) -> float:
    """Run smtp-source against 127.0.0.1:port; return its wall-clock seconds."""
    argv = smtp_source(port, messages, sessions, args.size, not args.connection_per_message)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"smtp-source exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return elapsed


def process_cpu(pid: int) -> float:
    """utime+stime (all threads) of a live process, in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ Postfix


def postfix_once(
    postfix: PostfixInstance, args: argparse.Namespace, sessions: int
) -> tuple[float, float, int]:
    """Empty the queue, warm up, send N messages; (seconds, CPU seconds, messages queued)."""
    _empty_queue(postfix)
    if args.warmup:
        send(postfix.smtpd_port, args, min(sessions, args.warmup), args.warmup)
        postfix.wait_for_settled(timeout=60)
        _empty_queue(postfix)
    cpu0 = postfix.cpu_seconds()
    seconds = send(postfix.smtpd_port, args, sessions, args.messages)
    cpu = postfix.cpu_seconds() - cpu0
    # Every 250 came after cleanup had written and fsync'd the queue file. Let qmgr defer them
    # all, so that showq cannot see a message twice as it moves, then ask Postfix for its queue.
    if not postfix.wait_for_settled(timeout=120):
        raise RuntimeError(f"Postfix queue still moving: {postfix.queue_counts()}")
    return seconds, cpu, len(postfix.queue())


def _empty_queue(postfix: PostfixInstance) -> None:
    postfix.delete_queue()
    if postfix.wait_for_queue(0, timeout=60) != 0:
        raise RuntimeError(f"postsuper -d ALL left messages: {postfix.queue_counts()}")


# ------------------------------------------------------------------ Strata


def strata_server(root: Path, args: argparse.Namespace) -> StrataProcess:
    """``twistd -n strata`` with its own config and data dir, on a free loopback port."""
    return StrataProcess(
        root,
        twistd_cmd=shlex.split(args.twistd_cmd),
        cli_cmd=shlex.split(args.strata_cmd),
    )


def strata_once(root: Path, args: argparse.Namespace, sessions: int) -> tuple[float, float, int]:
    """Start Strata on a new data dir, warm up, send N messages; (seconds, CPU, queued)."""
    server = strata_server(root, args)
    try:
        server.cli("domain", "add", DOMAIN, "--relay", "127.0.0.1:9")  # nobody listens there
        server.start(timeout=60)
        if args.warmup:
            send(server.port, args, min(sessions, args.warmup), args.warmup)
        cpu0 = process_cpu(server.pid)
        seconds = send(server.port, args, sessions, args.messages)
        cpu = process_cpu(server.pid) - cpu0
        return seconds, cpu, len(server.queue()) - args.warmup
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ both


def run_all(
    base: Path, args: argparse.Namespace, session_counts: list[int]
) -> tuple[list[Round], list[Round]]:
    """For each session count, `repeat` times: a Postfix run, then a Strata run.

    Interleaving the two sides spreads any change in the machine's background load over both.
    One backup-MX Postfix serves every run (its queue is emptied before each); each Strata run
    gets a new server on a new data dir.
    """
    sides = [s for s in ("postfix", "strata") if args.only in (None, s)]
    postfix: PostfixInstance | None = None
    if "postfix" in sides:
        extra: dict[str, str] = {}
        if args.postfix_in_flow_delay is not None:
            extra["in_flow_delay"] = args.postfix_in_flow_delay
        postfix = PostfixInstance.backup_mx(base / "postfix", free_port(), [DOMAIN], main_cf=extra)
    rounds: dict[str, list[Round]] = {"postfix": [], "strata": []}
    try:
        if postfix is not None:
            postfix.start()
        for sessions in session_counts:
            current = {side: Round(side, sessions, args.messages) for side in sides}
            for i in range(args.repeat):
                for side, r in current.items():
                    if r.error:
                        continue  # one failed run fails the round; skip its other runs
                    try:
                        if postfix is not None and side == "postfix":
                            r.add(*postfix_once(postfix, args, sessions))
                        else:
                            root = base / f"strata-{sessions}-{i}"
                            r.add(*strata_once(root, args, sessions))
                    except Exception as e:  # noqa: BLE001 - record it, go on with the others
                        r.fail(e)
            for side, r in current.items():
                rounds[side].append(r)
                report(r)
        if postfix is not None:
            postfix.delete_queue()
    finally:
        if postfix is not None:
            postfix.stop()
    return rounds["postfix"], rounds["strata"]


# ------------------------------------------------------------------ report


def report(r: Round) -> None:
    if r.ok:
        cpu = f", {r.cpu_seconds:.1f} s CPU" if r.cpu_seconds is not None else ""
        runs = ", ".join(f"{x:.0f}" for x in r.samples)
        print(
            f"  {r.server:8} sessions={r.sessions:<4} {r.msgs_per_s:8.1f} msgs/s"
            f" (median {r.seconds:.2f} s for {r.messages}{cpu}; runs: {runs} msgs/s;"
            f" all queued)",
            flush=True,
        )
    else:
        print(f"  {r.server:8} sessions={r.sessions:<4} FAILED: {r.error}", flush=True)


def table(session_counts: list[int], postfix: list[Round], strata: list[Round]) -> str:
    by = {(r.server, r.sessions): r for r in [*postfix, *strata]}

    def cell(r: Round | None) -> str:
        if r is None:
            return "-"
        return f"{r.msgs_per_s:.1f}" if r.ok else "FAILED"

    def cpu(r: Round | None) -> str:
        if r is None or not r.ok or r.cpu_seconds is None:
            return "-"
        return f"{1000 * r.cpu_seconds / r.messages:.2f}"

    head = ["sessions", "Strata msg/s", "Postfix msg/s", "Strata/Postfix", "ms CPU/msg S|P"]
    rows = [head]
    for s in session_counts:
        st, pf = by.get(("strata", s)), by.get(("postfix", s))
        ratio = f"{st.msgs_per_s / pf.msgs_per_s:.2f}" if st and pf and st.ok and pf.ok else "-"
        rows.append([str(s), cell(st), cell(pf), ratio, f"{cpu(st)} | {cpu(pf)}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=2000, help="messages per round (N)")
    p.add_argument("--sessions", default="1,10,50", help="comma-separated parallel session counts")
    p.add_argument("--size", type=int, default=10240, help="payload bytes per message")
    p.add_argument("--warmup", type=int, default=20, help="untimed messages sent before each run")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per round (median reported)")
    p.add_argument(
        "--connection-per-message",
        action="store_true",
        help="open a new connection for every message (smtp-source without -d)",
    )
    p.add_argument("--only", choices=["strata", "postfix"], help="run one side only")
    p.add_argument("--strata-cmd", default=_default_strata_cmd(), help="the strata CLI command")
    p.add_argument("--twistd-cmd", default=_default_twistd_cmd(), help="the twistd command")
    p.add_argument(
        "--postfix-in-flow-delay",
        metavar="DELAY",
        help="Postfix in_flow_delay (the backup_mx preset turns it off: 0s)",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per smtp-source run")
    p.add_argument("--keep", action="store_true", help="keep the work directory for inspection")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    return p.parse_args(argv)


def _default_strata_cmd() -> str:
    found = shutil.which("strata")
    return shlex.quote(found) if found else f"{shlex.quote(sys.executable)} -m strata_twisted.cli"


def _default_twistd_cmd() -> str:
    found = shutil.which("twistd")
    if found:
        return shlex.quote(found)
    return f'{shlex.quote(sys.executable)} -c "from twisted.scripts.twistd import run; run()"'


def environment() -> dict[str, Any]:
    version = subprocess.run(
        [POSTCONF_BIN, "-d", "-h", "mail_version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "postfix": version,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    session_counts = [int(s) for s in args.sessions.split(",") if s.strip()]
    if not postfix_installed() or not os.access(SMTP_SOURCE_BIN, os.X_OK):
        print(
            "bench.intake needs Postfix and smtp-source: apt-get install postfix", file=sys.stderr
        )
        return 2
    if os.geteuid() != 0:
        print("bench.intake runs a private Postfix instance and needs root", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    env_start = environment()
    if env_start["loadavg"][0] > 0.5:
        print(
            f"warning: load average {env_start['loadavg'][0]:.1f} before the run;"
            " other work on this machine will blur the figures",
            flush=True,
        )
    # Not pytest's tmp dirs: Postfix's daemons (user postfix) must be able to reach this path.
    base = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    base.chmod(0o755)
    mode = "new connection per message" if args.connection_per_message else "sessions reused"
    print(
        f"intake: {args.messages} messages of {args.size} bytes per round, {mode}; work dir {base}",
        flush=True,
    )
    try:
        postfix, strata = run_all(base, args, session_counts)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print()
    print(table(session_counts, postfix, strata))

    results = {
        "benchmark": "intake",
        "started": started.isoformat(),
        "params": {
            "messages": args.messages,
            "sessions": session_counts,
            "size": args.size,
            "warmup": args.warmup,
            "repeat": args.repeat,
            "connection_per_message": args.connection_per_message,
            "postfix_in_flow_delay": args.postfix_in_flow_delay or "0s",
            "strata_cmd": args.strata_cmd,
            "twistd_cmd": args.twistd_cmd,
        },
        "environment": env_start,
        "loadavg_after": os.getloadavg(),
        "rounds": [asdict(r) for r in [*postfix, *strata]],
        "ratios": {
            str(s): st.msgs_per_s / pf.msgs_per_s
            for s in session_counts
            for st in strata
            for pf in postfix
            if st.sessions == pf.sessions == s and st.ok and pf.ok
        },
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"intake-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0 if all(r.ok for r in [*postfix, *strata]) else 1


if __name__ == "__main__":
    sys.exit(main())
