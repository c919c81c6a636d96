"""Submission benchmark: users sending through Strata's submission service beside Postfix's.

``--sessions`` (10) authenticated SMTP clients, each a process of its own (so the client side is
not held back by one interpreter), log in with ``AUTH PLAIN`` as their own user (over plain TCP
on loopback, which both servers allow there) and send ``--messages`` (2,000) messages of
``--size`` (10 KiB) between them, one message per transaction, to recipients spread over
``--domains`` (10) outside domains.  Both servers send everything on to the same Postfix
``smtp-sink`` (a smarthost, no TLS), which writes one file per message to a tmpfs.

- **Strata**: a new ``twistd -n strata`` per run on a fresh data directory, with a
  ``[submission]`` listener, the users imported from a passwd-file (SHA512-CRYPT) into a
  protected domain (portal ``always``), ``[outbound] smarthost`` = the sink, ``smarthost_tls =
  "none"``, ``[relay] interval`` = ``--relay-interval`` (1 s) and the per-user rate limit out of
  the way.
- **Postfix**: one private instance for every run (``tests/peers/postfix.py``) with a submission
  service in ``master.cf`` like Debian's stock one (SASL required, relay for authenticated users
  only, ``reject_sender_login_mismatch``), minus TLS, and ``relayhost`` = the sink.  Its SASL is
  Dovecot's auth service (``tests/peers/dovecot.py``) over a UNIX socket, checking the same
  passwd-file hashes (the shared setup in ``tests/peers/postfix_sasl.py``).

Two rates per run, both over the time from the clients' common start:

- *accepted*: messages over the time until the last client had its last ``250``;
- *delivered*: messages over the time until the sink wrote its last message file.

**Honesty check**: every message must be accepted, and the sink must hold each message (by its
Message-ID) exactly once — no loss, no duplicate — or the run is ``FAILED`` (exit status 1).
The sides alternate, ``--repeat`` (3) runs each; the medians count.

    python -m bench.submission [--messages 2000] [--sessions 10] [--size 10240] [--repeat 3]

It prints both rates for each side and the ratios Strata/Postfix, and writes JSON to
``bench/results/submission-<timestamp>.json``.  It is not a timed test; everything listens on
127.0.0.1 only and every process started here is stopped before it exits.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import resource
import shutil
import smtplib
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.imap import process_cpu
from bench.intake import DOMAIN, RESULTS_DIR, environment
from tests.peers.dovecot import (
    DovecotInstance,
    dovecot_factory_context,
    dovecot_installed,
    sha512_crypt,
)
from tests.peers.net import free_port, wait_for_port
from tests.peers.postfix import PostfixInstance, SmtpSink, _inline_map, postfix_installed
from tests.peers.postfix_sasl import postfix_sasl_settings, start_auth_dovecot
from tests.peers.strata import StrataProcess

_MESSAGE_ID = re.compile(rb"^Message-ID: <(bench-[^>]+)>", re.IGNORECASE | re.MULTILINE)
_PASSWORD = "bench-pw!"  # noqa: S105 - every benchmark user's


def user(n: int) -> str:
    """The address of session `n`'s user."""
    return f"sender{n:02d}@{DOMAIN}"


def recipient(n: int, domains: int) -> str:
    """The `n`-th message's recipient: the outside domains take turns."""
    return f"rcpt{n % 97}@dest{n % domains}.test"


@dataclass(frozen=True)
class Workload:
    """What every run sends: `messages` split over `sessions` sessions, `size` bytes each."""

    messages: int
    sessions: int
    size: int
    domains: int

    def share(self, session: int) -> range:
        """The message numbers that one session sends."""
        return range(session, self.messages, self.sessions)


def make_message(sender: str, to: str, message_id: str, size: int) -> bytes:
    """A plain-text message of about `size` bytes, From the authenticated user (CRLF lines)."""
    header = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: bench {message_id}\r\n"
        f"Date: Mon, 01 Jun 2026 10:00:00 +0000\r\nMessage-ID: <{message_id}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog while the primary is down.  0123\r\n"
    body = line * max(1, (size - len(header)) // len(line))
    return header + body


# -- the clients ---------------------------------------------------------------------------------


def client_worker(
    port: int, session: int, run_tag: str, workload: Workload, start: Any, results: Any
) -> None:
    """One session: wait for the start, AUTH PLAIN, send its share, QUIT; report what happened."""
    sender = user(session)
    share = workload.share(session)
    ids = [f"bench-{run_tag}-{n}@{DOMAIN}" for n in share]
    batch = [
        (recipient(n, workload.domains), make_message(sender, recipient(n, workload.domains),
                                                      mid, workload.size))
        for n, mid in zip(share, ids, strict=True)
    ]  # fmt: skip
    accepted: list[str] = []
    error = ""
    start.wait()
    cpu0 = _own_cpu()
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench.test",
                          timeout=300) as smtp:  # fmt: skip
            smtp.ehlo()
            if not smtp.has_extn("auth") or "PLAIN" not in smtp.esmtp_features["auth"].upper():
                raise smtplib.SMTPException("the server does not offer AUTH PLAIN")
            smtp.user, smtp.password = sender, _PASSWORD
            smtp.auth("PLAIN", smtp.auth_plain)
            for (to, message), mid in zip(batch, ids, strict=True):
                smtp.sendmail(sender, [to], message)
                accepted.append(mid)
    except (smtplib.SMTPException, OSError) as e:
        error = f"session {session} after {len(accepted)} messages: {type(e).__name__}: {e}"
    ended = time.time()
    results.put({"accepted": accepted, "error": error, "ended": ended, "cpu": _own_cpu() - cpu0})


def _own_cpu() -> float:
    """This process's user+system CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_clients(port: int, workload: Workload, run_tag: str, timeout: float) -> dict[str, Any]:
    """Every session against one server at once; when they started and ended, what they sent."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    results = ctx.Queue()
    workers = [
        ctx.Process(target=client_worker, args=(port, s, run_tag, workload, start, results))
        for s in range(workload.sessions)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # every process is up, its messages built, waiting
    began = time.time()
    start.set()
    done = [results.get(timeout=timeout) for _ in workers]
    for worker in workers:
        worker.join(30)
        if worker.is_alive():
            worker.kill()
    return {
        "began": began,
        "ended": max(d["ended"] for d in done),
        "accepted": [mid for d in done for mid in d["accepted"]],
        "errors": [d["error"] for d in done if d["error"]],
        "cpu": sum(d["cpu"] for d in done),
    }


# -- the sink ------------------------------------------------------------------------------------


class Sink:
    """One ``smtp-sink`` on a tmpfs that both sides deliver to; emptied before each run."""

    def __init__(self, sink_dir: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="strata-bench-submission-sink-", dir=sink_dir))
        self.root.chmod(0o755)  # the postfix user must reach the dump directory
        self.smtp_sink = SmtpSink(self.root / "dump", free_port())

    @property
    def port(self) -> int:
        return self.smtp_sink.port

    def files(self) -> list[Path]:
        return [p for p in self.smtp_sink.dump_dir.rglob("*") if p.is_file()]

    def empty(self) -> None:
        for path in self.files():
            path.unlink()

    def wait_for(self, count: int, timeout: float) -> list[Path]:
        """Wait until `count` messages arrived (and one more second for any duplicate)."""
        deadline = time.monotonic() + timeout
        while len(self.files()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.files())} of {count} messages at the sink")
            time.sleep(0.1)
        time.sleep(1.0)
        return self.files()

    def close(self) -> None:
        self.smtp_sink.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# -- one run -------------------------------------------------------------------------------------


def measure(
    name: str, port: int, sink: Sink, args: argparse.Namespace, workload: Workload, tag: str,
    cpu: Callable[[], float],
) -> dict[str, Any]:  # fmt: skip
    """Warm up (untimed), then one timed run against `port`; the figures and the honesty check."""
    if args.warmup:
        warm = Workload(args.warmup, min(workload.sessions, args.warmup), workload.size,
                        workload.domains)  # fmt: skip
        clients = run_clients(port, warm, f"{tag}-warmup", args.timeout)
        if clients["errors"]:
            raise RuntimeError(f"warm-up: {clients['errors'][0]}")
        sink.wait_for(args.warmup, args.timeout)
        sink.empty()
    cpu0 = cpu()
    clients = run_clients(port, workload, tag, args.timeout)
    files = sink.wait_for(len(clients["accepted"]), args.timeout) if clients["accepted"] else []
    cpu_used = cpu() - cpu0
    seen = Counter(m.decode() for p in files for m in _MESSAGE_ID.findall(p.read_bytes()))
    sent = set(clients["accepted"])
    problems = list(clients["errors"])
    if len(sent) != workload.messages:
        problems.append(f"{len(sent)} of {workload.messages} messages accepted")
    if lost := sent - set(seen):
        problems.append(f"{len(lost)} accepted messages never reached the sink")
    if twice := [mid for mid, n in seen.items() if n > 1]:
        problems.append(f"{len(twice)} messages reached the sink more than once")
    if strays := set(seen) - sent:
        problems.append(f"{len(strays)} messages at the sink were never accepted")
    last_file = max((p.stat().st_mtime for p in files), default=clients["ended"])
    accept_s = clients["ended"] - clients["began"]
    deliver_s = max(last_file, clients["ended"]) - clients["began"]
    sink.empty()
    return {
        "server": name,
        "accepted_per_s": workload.messages / accept_s,
        "delivered_per_s": workload.messages / deliver_s,
        "accept_seconds": accept_s,
        "deliver_seconds": deliver_s,
        "server_cpu_s": cpu_used,
        "client_cpu_s": clients["cpu"],
        "received": sum(seen.values()),
        "ok": not problems,
        "problems": problems[:10],
    }


def strata_run(
    base: Path, sink: Sink, args: argparse.Namespace, workload: Workload, tag: str
) -> dict[str, Any]:
    """A new Strata on a fresh data dir: protected domain, users, submission, smarthost = sink."""
    port = free_port()
    strata = StrataProcess(
        base / f"strata-{tag}",
        # StrataProcess ends its config inside [intake]; IMAP is off (no fixed port).
        extra_config=f'[submission]\nlisten = ["127.0.0.1:{port}"]\ntls_listen = []\n'
        "max_per_hour = 100000000\nmax_connections_per_ip = 1000\n"
        f'[outbound]\nsmarthost = "127.0.0.1:{sink.port}"\nsmarthost_tls = "none"\n'
        f"[relay]\ninterval = {args.relay_interval}\n[imap]\nlisten = []\n",
    )
    try:
        strata.cli("domain", "add", DOMAIN, "--relay", "127.0.0.1:9", "--no-monitor",
                   "--portal", "always")  # fmt: skip
        passwd = strata.root / "users.passwd"
        passwd.write_text("".join(f"{user(s)}:{sha512_crypt(_PASSWORD)}\n"
                                  for s in range(workload.sessions)))  # fmt: skip
        strata.cli("user", "import", DOMAIN, str(passwd))
        strata.start(timeout=60)
        if not wait_for_port(port, 30):
            raise RuntimeError(f"no submission listener on {port}\n{strata.log_text()[-3000:]}")
        return measure("strata", port, sink, args, workload, tag, lambda: process_cpu(strata.pid))
    finally:
        strata.stop()
        if not args.keep:
            shutil.rmtree(strata.root, ignore_errors=True)


# Debian's stock submission service (master.cf), on plain TCP: AUTH required and offered without
# TLS, relay for authenticated users only, MAIL FROM must be the login's own address.
_POSTFIX_SUBMISSION = """\
127.0.0.1:{port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=none
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=no
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=reject_sender_login_mismatch
  -o smtpd_recipient_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
"""


class PostfixSide:
    """Postfix's submission service with Dovecot SASL, relaying to the sink; one for all runs."""

    def __init__(self, base: Path, dovecot: DovecotInstance, sink: Sink, sessions: int) -> None:
        self.port = free_port()
        self.dovecot = dovecot
        logins = {user(s): user(s) for s in range(sessions)}
        # The backup-MX preset for its "nothing throttles loopback clients" settings; routing
        # is replaced: no relay domains, everything to the sink as the smarthost.
        self.postfix = PostfixInstance.backup_mx(
            base / "postfix", free_port(), [],
            main_cf={
                "relay_domains": "",
                "transport_maps": "",
                "relayhost": f"[127.0.0.1]:{sink.port}",
                **postfix_sasl_settings(dovecot),
                "smtpd_sender_login_maps": _inline_map(logins),
            },
            extra_master_cf=_POSTFIX_SUBMISSION.format(port=self.port),
        )  # fmt: skip

    def start(self) -> None:
        self.postfix.start()
        if not wait_for_port(self.port, 30):
            raise RuntimeError(f"no Postfix submission on {self.port}\n"
                               f"{self.postfix.maillog_tail()}")  # fmt: skip

    def cpu_seconds(self) -> float:
        """Postfix's processes and Dovecot's (its auth answers Postfix's SASL)."""
        return self.postfix.cpu_seconds() + self.dovecot.cpu_seconds()

    def run(self, sink: Sink, args: argparse.Namespace, workload: Workload,
            tag: str) -> dict[str, Any]:  # fmt: skip
        result = measure("postfix", self.port, sink, args, workload, tag, self.cpu_seconds)
        if self.postfix.wait_for_queue(0, timeout=60) != 0:
            result["ok"] = False
            result["problems"].append(f"Postfix's queue kept {self.postfix.queue_counts()}")
        return result

    def stop(self) -> None:
        self.postfix.stop()


# -- report --------------------------------------------------------------------------------------


def describe(run: dict[str, Any]) -> str:
    if not run["ok"]:
        return f"  {run['server']:8} FAILED: {'; '.join(run['problems'])}"
    return (
        f"  {run['server']:8} accepted {run['accepted_per_s']:7.1f} msgs/s"
        f" ({run['accept_seconds']:.1f} s), delivered {run['delivered_per_s']:7.1f} msgs/s"
        f" ({run['deliver_seconds']:.1f} s), CPU server {run['server_cpu_s']:.1f} s,"
        f" clients {run['client_cpu_s']:.1f} s"
    )


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    good = [r for r in runs if r["ok"]]
    if not good:
        return {}
    return {
        key: statistics.median(r[key] for r in good)
        for key in ("accepted_per_s", "delivered_per_s", "server_cpu_s", "client_cpu_s")
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.submission",
                                description=__doc__.split("\n")[0])  # fmt: skip
    p.add_argument("--messages", type=int, default=2000, help="messages per run")
    p.add_argument("--sessions", type=int, default=10, help="concurrent AUTH sessions (users)")
    p.add_argument("--size", type=int, default=10240, help="bytes per message")
    p.add_argument("--domains", type=int, default=10, help="outside recipient domains")
    p.add_argument("--warmup", type=int, default=20, help="untimed messages before each run")
    p.add_argument("--repeat", type=int, default=3, help="runs per side (medians reported)")
    p.add_argument("--relay-interval", type=float, default=1.0,
                   help="Strata's [relay] interval, seconds")  # fmt: skip
    p.add_argument("--only", choices=["strata", "postfix"], help="run one side only")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--sink-dir", type=Path, default=Path("/dev/shm"),
                   help="where smtp-sink writes its files (a tmpfs)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep Strata's data dirs")
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not postfix_installed() or not dovecot_installed():
        print("bench.submission needs Postfix and Dovecot: apt-get install postfix"
              " dovecot-core dovecot-imapd", file=sys.stderr)  # fmt: skip
        return 2
    if os.geteuid() != 0:
        print("bench.submission runs private Postfix and Dovecot and needs root", file=sys.stderr)
        return 2
    workload = Workload(args.messages, args.sessions, args.size, args.domains)
    started = datetime.now(UTC)
    env = environment()
    if env["loadavg"][0] > 0.5:
        print(f"warning: load average {env['loadavg'][0]:.2f}; figures from a busy machine"
              " vary a lot", flush=True)  # fmt: skip
    print(f"submission: {args.messages} messages of {args.size} bytes, {args.sessions} AUTH"
          f" sessions, {args.domains} recipient domains, {args.repeat} runs a side",
          flush=True)  # fmt: skip
    # Not pytest's tmp dirs: Postfix's daemons (user postfix) must be able to reach this path.
    base = Path(tempfile.mkdtemp(prefix="strata-bench-submission-"))
    base.chmod(0o755)
    sink = Sink(args.sink_dir)
    names = [s for s in ("strata", "postfix") if args.only in (None, s)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    postfix: PostfixSide | None = None
    try:
        with dovecot_factory_context(show_logs=False) as factory:
            sink.smtp_sink.start()
            if "postfix" in names:
                users = {user(s): _PASSWORD for s in range(args.sessions)}
                dovecot = start_auth_dovecot(factory, users)
                postfix = PostfixSide(base, dovecot, sink, args.sessions)
                postfix.start()
            for round_ in range(args.repeat):
                # Alternate who goes first, so a drift in the machine's load blurs both alike.
                order = names if round_ % 2 == 0 else list(reversed(names))
                for name in order:
                    tag = f"{name}{round_}"
                    try:
                        if name == "postfix" and postfix is not None:
                            run = postfix.run(sink, args, workload, tag)
                        else:
                            run = strata_run(base, sink, args, workload, tag)
                    except Exception as e:  # noqa: BLE001 - record it, go on with the others
                        run = {"server": name, "ok": False,
                               "problems": [f"{type(e).__name__}: {e}"]}  # fmt: skip
                        sink.empty()
                    runs[name].append(run)
                    print(describe(run), flush=True)
    finally:
        if postfix is not None:
            postfix.stop()
        sink.close()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    summary = {name: medians(side) for name, side in runs.items()}
    print()
    for name, m in summary.items():
        if m:
            print(f"median {name:8} accepted {m['accepted_per_s']:7.1f} msgs/s,"
                  f" delivered {m['delivered_per_s']:7.1f} msgs/s,"
                  f" server CPU {m['server_cpu_s']:.1f} s per run")  # fmt: skip
    ratios: dict[str, float] = {}
    st, pf = summary.get("strata"), summary.get("postfix")
    if st and pf:
        ratios = {key: st[key] / pf[key] for key in ("accepted_per_s", "delivered_per_s")}
        print(f"\nStrata/Postfix: accepted {ratios['accepted_per_s']:.2f},"
              f" delivered {ratios['delivered_per_s']:.2f}")  # fmt: skip
    ok = all(run["ok"] for side in runs.values() for run in side)
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"submission-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps({
        "benchmark": "submission", "started": started.isoformat(),
        "args": vars(args) | {"results": str(args.results), "sink_dir": str(args.sink_dir)},
        "environment": env, "loadavg_after": os.getloadavg(),
        "runs": runs, "medians": summary, "ratios": ratios, "ok": ok,
    }, indent=2) + "\n")  # fmt: skip
    print(f"results: {out}")
    if not ok:
        print("FAILED: a run lost, duplicated or refused messages (see above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
