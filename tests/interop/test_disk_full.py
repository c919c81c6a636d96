"""
Disk full (non-negotiable 1): with the data dir on a small tmpfs the test mounts, intake answers
4xx once space runs out, acknowledges nothing it did not store, keeps running, and accepts again as
soon as space returns.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.test_durability import stored_bodies

pytestmark = pytest.mark.interop


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(
            f"this test needs root to mount a small tmpfs (CI runs as root): "
            f"{result.stderr.strip()}"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def message(n: int, size: int) -> bytes:
    head = f"From: a@s.test\r\nTo: u@example.test\r\nMessage-ID: <full-{n}@s.test>\r\n\r\n"
    line = b"0123456789abcdef" * 4 + b"\r\n"
    return head.encode() + line * (size // len(line))


def test_intake_answers_4xx_when_the_disk_fills_and_recovers(strata_factory, small_disk) -> None:
    strata = strata_factory(data_dir=small_disk / "data")
    strata.cli("domain", "add", "example.test", "--relay", "127.0.0.1:2999")
    strata.start()
    # Leave room for the database and a few messages, then fill the rest with a file we can delete.
    filler = small_disk / "filler"
    stat = os.statvfs(small_disk)
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 700_000))

    acked: dict[str, bytes] = {}
    refusals: list[tuple[int, bytes | str]] = []
    client = smtplib.SMTP("127.0.0.1", strata.port, timeout=30)
    for n in range(40):
        # Small bodies are stored inline in the database, larger ones (over 256 KiB) as files:
        # the disk must run out on both paths.
        body = message(n, 100_000 if n % 2 else 300_000)
        try:
            client.sendmail("a@s.test", ["u@example.test"], body)
            acked[f"<full-{n}@s.test>"] = body
        except smtplib.SMTPDataError as e:
            refusals.append((e.smtp_code, e.smtp_error))
            if len(refusals) >= 3:
                break
    assert acked, "some messages should fit before the disk is full"
    assert refusals, "the disk never filled up"
    for code, text in refusals:
        reason = text.decode() if isinstance(text, bytes) else text
        assert 400 <= code < 500, (code, reason)
        assert reason.startswith(("4.3.1", "4.3.0")), reason

    # Space comes back: the same server accepts again, without a restart.
    filler.unlink()
    body = message(99, 100_000)
    client.sendmail("a@s.test", ["u@example.test"], body)
    acked["<full-99@s.test>"] = body
    client.quit()
    strata.stop()

    entries, bodies = stored_bodies(strata.data_dir)
    assert sorted(e["message_id"] for e in entries) == sorted(acked)
    for entry in entries:
        assert bodies[entry["queue_id"]].split(b"\r\n", 3)[3] == acked[entry["message_id"]]
    files = [p for p in (strata.data_dir / "messages").rglob("*") if p.is_file()]
    assert all(p.name in bodies for p in files), "a refused message left its file behind"
    assert files, "no message took the file path (bodies over 256 KiB)"
