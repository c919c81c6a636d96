"""
A loopback DNS server for tests: an authoritative twisted.names server for a small zone, UDP and
TCP on one free port of 127.0.0.1.

- `listen_dns` serves a zone on a reactor the caller runs (the unit tests of MX routing run it on
  pytest-twisted's reactor).
- `serve` runs it in a process of its own until killed, printing its port first; `LoopbackDNS`
  starts that process for interop and end-to-end tests (real ``twistd``, real Postfix) and stops
  it again.
- `query_txt` asks such a server for a TXT record with dnspython, the way a receiver looks up a
  DKIM key (the character-strings of each record, RFC 1035 §3.3.14).

It never listens off loopback and never forwards a query: a name not in the zone is NXDOMAIN.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.names import common, dns, server

ROOT = Path(__file__).resolve().parents[2]

# A zone: name -> records, each ("MX", preference, exchange) | ("A", address) | ("AAAA", address)
# | ("TXT", text) | ("TXT", [string, string, ...]): one record of several character-strings (a
# DKIM key longer than 255 bytes) | ("SERVFAIL", type): queries of that type fail | ("SILENT",
# type): queries of that type are never answered.  A name not listed is NXDOMAIN;
# "servfail.test" always fails.  Records may be lists instead of tuples (the zone crosses JSON).
Zone = dict[str, list[tuple[Any, ...]]]


def _payload(record: Sequence[Any]) -> tuple[int, Any]:
    kind = record[0]
    if kind == "MX":
        exchange = "" if record[2] == "." else record[2]
        return dns.MX, dns.Record_MX(record[1], exchange.encode())
    if kind == "A":
        return dns.A, dns.Record_A(record[1])
    if kind == "AAAA":
        return dns.AAAA, dns.Record_AAAA(record[1])
    if kind == "TXT":
        strings = [record[1]] if isinstance(record[1], str) else list(record[1])
        return dns.TXT, dns.Record_TXT(*(s.encode() for s in strings))
    raise ValueError(f"unknown record type {kind!r}")


_TYPES = {"A": dns.A, "AAAA": dns.AAAA, "MX": dns.MX, "TXT": dns.TXT}


class ZoneResolver(common.ResolverBase):
    """
    An authoritative twisted.names resolver for a L{Zone}; ``queries`` lists what it was asked,
    as (name, type name).
    """

    def __init__(self, zone: Zone) -> None:
        super().__init__()
        self.queries: list[tuple[str, str]] = []
        self.zone = {
            name.lower(): [_payload(r) for r in records if r[0] not in ("SERVFAIL", "SILENT")]
            for name, records in zone.items()
        }
        self.behaviour = {
            (name.lower(), _TYPES[r[1]]): r[0]
            for name, records in zone.items()
            for r in records
            if r[0] in ("SERVFAIL", "SILENT")
        }

    def _lookup(
        self, name: bytes, cls: int, type: int, timeout: Any
    ) -> Deferred[tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]]:
        text = name.decode().lower().rstrip(".")
        self.queries.append((text, dns.QUERY_TYPES.get(type, str(type))))
        behaviour = self.behaviour.get((text, type))
        if text == "servfail.test" or behaviour == "SERVFAIL":
            return fail(RuntimeError("simulated server failure"))
        if behaviour == "SILENT":
            return Deferred()  # never answered: the client times out
        if text not in self.zone:
            return fail(dns.AuthoritativeDomainError(text))
        answers = [
            dns.RRHeader(name, rtype, dns.IN, 60, payload, auth=True)
            for rtype, payload in self.zone[text]
            if rtype == type
        ]
        return succeed((answers, [], []))


def listen_dns(reactor: Any, zone: Zone | ZoneResolver) -> tuple[int, list[IListeningPort]]:
    """Serve ``zone`` on 127.0.0.1, UDP and TCP on one free port; return it and the ports."""
    authority = zone if isinstance(zone, ZoneResolver) else ZoneResolver(zone)
    factory = server.DNSServerFactory(authorities=[authority])
    for _ in range(20):
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        port: int = udp.getHost().port
        try:
            tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
        except Exception:  # noqa: BLE001 - the TCP port is taken: try another
            udp.stopListening()
            continue
        return port, [udp, tcp]
    raise RuntimeError("no free port for the loopback DNS server")


def serve(zone: Zone) -> None:
    """Run a loopback DNS server for ``zone`` until killed; print its port first (interop)."""
    from twisted.internet import reactor as running

    port, _ = listen_dns(running, zone)
    print(port, flush=True)
    running.run()


class LoopbackDNS:
    """
    `serve` in a subprocess of its own (its own reactor, so it answers while the test blocks):
    ``start()`` returns once it listens, ``port`` is its UDP and TCP port, ``stop()`` ends it.
    Use it as a context manager or call ``stop()`` yourself; ``stop()`` is idempotent.
    """

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> int:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.peers.dns", json.dumps(self.zone)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # the port, or "" when the server died
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the loopback DNS server did not start: {line!r}")
        self.port = int(line)
        return self.port

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> LoopbackDNS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def query_txt(port: int, name: str, timeout: float = 5.0) -> list[list[bytes]]:
    """
    The TXT records at ``name`` on the loopback server at ``port``, each as its list of
    character-strings, asked with dnspython (UDP, then TCP when the answer is truncated).
    Raises dnspython's errors (``NXDOMAIN``, ``NoAnswer``) as they are.
    """
    from dns.rdtypes.ANY.TXT import TXT  # dnspython (this module's ``dns`` is twisted.names')
    from dns.resolver import Resolver

    resolver = Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    answer = resolver.resolve(name, "TXT", lifetime=timeout, search=False)
    records: list[list[bytes]] = []
    for rdata in answer:
        assert isinstance(rdata, TXT), rdata
        records.append(list(rdata.strings))
    return records


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
