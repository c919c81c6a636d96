"""
swaks, the SMTP test client admins reach for, driven from tests: `run_swaks` runs it against a
loopback port and `SwaksRun` reads its transcript back as the replies the server sent.

swaks marks each line of its transcript (``man swaks``, "OUTPUT"): ``-> `` what it sent and
``<- `` what the server answered, ``~>``/``<~`` for the same inside TLS, and a ``*`` when the reply
was an error: in place of the ``-`` in the clear (``<** 530 …``), after the ``~`` inside TLS
(``<~* 535 …``).

A missing swaks is a failure, never a skip: CI installs it (``.ci/run``), and a test that could
not talk to its client has not passed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

__all__ = ["SWAKS_EXIT", "SwaksRun", "run_swaks"]

# swaks's exit codes (``man swaks``, "EXIT CODES") that these tests meet.
SWAKS_EXIT = {
    "ok": 0,
    "mail": 23,  # error in the MAIL transaction
    "data_end": 26,  # the server did not accept the mail after DATA
    "auth": 28,  # error in the AUTH transaction
}

_REPLY = re.compile(r"^<([-~*])([ *]) ?(\d{3}[ -].*)$")


@dataclass(frozen=True)
class SwaksRun:
    """One finished swaks run: its exit code and transcript."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def replies(self) -> list[tuple[bool, str]]:
        """The server's reply lines in order, as (was it marked an error, the line)."""
        out = []
        for line in self.stdout.splitlines():
            match = _REPLY.match(line)
            if match is not None:
                out.append(("*" in (match.group(1), match.group(2)), match.group(3)))
        return out

    def tls_replies(self) -> list[str]:
        """The reply lines swaks read inside TLS (``<~``), in order."""
        return [m.group(3) for line in self.stdout.splitlines() if (m := _REPLY.match(line))
                and m.group(1) == "~"]  # fmt: skip

    def has_reply(self, prefix: str, *, error: bool | None = None) -> bool:
        """Whether some reply line starts with ``prefix`` (and is or is not marked an error)."""
        return any(
            text.startswith(prefix) and (error is None or error == marked)
            for marked, text in self.replies()
        )

    def queue_id(self) -> str:
        """The id in the ``250 … queued as ID`` reply to the message; AssertionError if none."""
        match = re.search(r"^<[-~]  250 \S+ Ok: queued as (\S+)", self.stdout, re.MULTILINE)
        assert match is not None, f"no 'queued as' reply in:\n{self.stdout}"
        return match.group(1)

    def explain(self) -> str:
        """The whole run, for an assertion message."""
        return f"swaks {' '.join(self.args)}\nexit {self.returncode}\n{self.stdout}{self.stderr}"


def run_swaks(port: int, *args: str, timeout: float = 60.0) -> SwaksRun:
    """Run ``swaks --server 127.0.0.1:port --helo client.test`` with ``args``; never raises on a
    non-zero exit (the tests assert it).  Fails the calling test when swaks is not installed."""
    if shutil.which("swaks") is None:
        pytest.fail(
            "swaks is not installed: apt-get install -y swaks (CI installs it in .ci/run)",
            pytrace=False,
        )
    command = ["swaks", "--server", f"127.0.0.1:{port}", "--helo", "client.test",
               "--timeout", "20", *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return SwaksRun(tuple(command[1:]), result.returncode, result.stdout, result.stderr)
