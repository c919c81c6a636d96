"""Drain benchmark: how fast a backlog reaches a recovered primary, Strata beside Postfix.

Both servers first take the same backlog while "the primary is down": N messages of SIZE bytes
from ``smtp-source``, held because the next hop does not answer (Strata: relay to 127.0.0.1:9;
Postfix: the backup-MX preset, next hop [127.0.0.1]:1).  Then the primary "recovers": both are
pointed at the same kind of Postfix ``smtp-sink`` and drain their queue into it.

- Postfix: ``transport_maps`` now names the sink, ``postfix reload``, ``postqueue -f``.  It
  delivers with its default concurrency (20 parallel connections), in no particular order.
- Strata: ``strata domain update --relay`` names the sink; Strata starts and drains at once, in
  strict arrival order over one connection, recording every recipient's result durably before the
  next message's content goes.

The rate is the number of messages over the time between the first and the last message file the
sink wrote, so neither side's startup is counted.  The sink must receive exactly N messages.

The sink stands for a primary on another machine, so its files go to a tmpfs (``--sink-dir``,
default /dev/shm): its writes must not land on the disk whose fsyncs the two servers wait for.
The queues stay on disk.  Before each drain the page cache is flushed (``sync``), so neither side
pays for the other's writeback.  The sides alternate, ``--repeat`` times each; the median counts.

Strata runs its default configuration: each delivery result committed before the next message's
content goes, fsync'd once per batch.  ``--sync-each-result`` fsyncs every one instead.

    python -m bench.drain [--messages 10000] [--size 10240] [--repeat 3]

It prints msgs/s for both and the ratio Strata/Postfix, and writes JSON to
``bench/results/drain-<timestamp>.json``.  It is not a timed test; everything listens on
127.0.0.1 only and every process started here is stopped before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.intake import DOMAIN, RESULTS_DIR, smtp_source
from tests.peers.net import free_port
from tests.peers.postfix import PostfixInstance, SmtpSink, _inline_map, postfix_installed
from tests.peers.strata import StrataProcess


def load(port: int, messages: int, size: int) -> None:
    argv = smtp_source(port, messages, 20, size, reuse=True)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"smtp-source exited {proc.returncode}: {proc.stderr[-2000:]}")


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def sink_rate(sink: SmtpSink, expected: int, timeout: float) -> tuple[float, int]:
    """Wait for `expected` messages at the sink; (msgs/s between first and last file, count)."""

    def files() -> list[Path]:
        return [p for p in sink.dump_dir.iterdir() if p.is_file()]

    wait_for(lambda: len(files()) >= expected, timeout, f"{expected} messages at the sink")
    time.sleep(1.0)  # anything more would be a duplicate: count it
    times = sorted(p.stat().st_mtime for p in files())
    span = max(times[-1] - times[0], 1e-3)
    return (len(times) - 1) / span, len(times)


def sink_for(args: argparse.Namespace, name: str) -> tuple[SmtpSink, Path]:
    """A sink dumping into a fresh directory under ``--sink-dir`` (removed by the caller)."""
    root = Path(tempfile.mkdtemp(prefix=f"strata-drain-{name}-", dir=args.sink_dir))
    root.chmod(0o755)  # the postfix user must reach the dump directory
    return SmtpSink(root / "dump", free_port()), root


def postfix_drain(base: Path, args: argparse.Namespace) -> dict[str, Any]:
    sink, sink_root = sink_for(args, "postfix-sink")
    postfix = PostfixInstance.backup_mx(base / "postfix", free_port(), [DOMAIN])
    try:
        sink.start()
        postfix.start()
        load(postfix.smtpd_port, args.messages, args.size)
        if not postfix.wait_for_settled(timeout=600):
            raise RuntimeError("Postfix's queue did not settle")
        queued = len(postfix.queue())
        os.sync()
        postfix.main_cf["transport_maps"] = _inline_map({DOMAIN: f"smtp:[127.0.0.1]:{sink.port}"})
        postfix.write_config()
        postfix.postfix("reload")
        postfix.flush()
        rate, received = sink_rate(sink, args.messages, args.timeout)
        return {"queued": queued, "received": received, "msgs_per_s": rate}
    finally:
        postfix.stop()
        sink.stop()
        shutil.rmtree(sink_root, ignore_errors=True)


def strata_drain(base: Path, args: argparse.Namespace) -> dict[str, Any]:
    sink, sink_root = sink_for(args, "strata-sink")
    sync = "true" if args.sync_each_result else "false"
    strata = StrataProcess(
        base / "strata", extra_config=f"[relay]\ninterval = 3600\nsync_each_result = {sync}\n"
    )
    try:
        sink.start()
        strata.cli("domain", "add", DOMAIN, "--relay", "127.0.0.1:9")
        strata.start(timeout=60)
        load(strata.port, args.messages, args.size)
        strata.stop()
        queued = json.loads(strata.cli("status", "--json").stdout)["queued"]
        strata.cli("domain", "update", DOMAIN, "--relay", f"127.0.0.1:{sink.port}")
        os.sync()
        strata.start(timeout=60)  # the relay runs at start: the primary has "recovered"
        rate, received = sink_rate(sink, args.messages, args.timeout)
        wait_for(lambda: json.loads(strata.cli("status", "--json").stdout)["queued"] == 0,
                 60, "Strata's queue to empty")  # fmt: skip
        return {"queued": queued, "received": received, "msgs_per_s": rate}
    finally:
        strata.stop()
        sink.stop()
        shutil.rmtree(sink_root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--size", type=int, default=10_240)
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    p.add_argument("--repeat", type=int, default=3, help="drains per side (median reported)")
    p.add_argument("--sync-each-result", action="store_true",
                   help="Strata fsyncs every delivery result (relay.sync_each_result)")  # fmt: skip
    p.add_argument("--sink-dir", type=Path, default=Path("/dev/shm"),
                   help="where the sinks write their files (a tmpfs)")  # fmt: skip
    args = p.parse_args(argv)
    if not postfix_installed():
        print("bench.drain needs Postfix (apt-get install postfix)", file=sys.stderr)
        return 2
    sides = {"postfix": postfix_drain, "strata": strata_drain}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    print(f"drain: {args.messages} messages of {args.size} bytes, {args.repeat} drains a side")
    for round_ in range(args.repeat):
        # Alternate who goes first, so a drift in the machine's load blurs both alike.
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            base = Path(tempfile.mkdtemp(prefix=f"strata-drain-{name}-"))
            base.chmod(0o755)  # the postfix user must reach its queue directories
            try:
                run = sides[name](base, args)
            finally:
                shutil.rmtree(base, ignore_errors=True)
            runs[name].append(run)
            print(f"  {name:8} {run['msgs_per_s']:8.1f} msgs/s  ({run['received']} received)")
    postfix = {
        "runs": runs["postfix"],
        "msgs_per_s": statistics.median(r["msgs_per_s"] for r in runs["postfix"]),
    }
    strata = {"runs": runs["strata"],
              "msgs_per_s": statistics.median(r["msgs_per_s"] for r in runs["strata"])}  # fmt: skip
    print(f"\nmedian: postfix {postfix['msgs_per_s']:.1f} msgs/s, "
          f"strata {strata['msgs_per_s']:.1f} msgs/s")  # fmt: skip
    ratio = strata["msgs_per_s"] / postfix["msgs_per_s"]
    print(f"\nStrata/Postfix: {ratio:.2f}  (Strata in strict order over one connection)")
    ok = all(run["received"] == args.messages for side in runs.values() for run in side)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results / f"drain-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args) | {"results": str(args.results),
                                                     "sink_dir": str(args.sink_dir)},
                               "postfix": postfix, "strata": strata, "ratio": ratio,
                               "ok": ok}, indent=2))  # fmt: skip
    print(f"results: {out}")
    if not ok:
        print("FAILED: a drain did not deliver exactly the messages queued", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
