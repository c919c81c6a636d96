"""The composition root's own checks: what it reads at startup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet import task

from strata_twisted.config import Settings, parse_config
from strata_twisted.errors import ConfigError
from strata_twisted.runlock import (
    LOCK_NAME,
    RunningServer,
    ServerLock,
    ServerRunning,
    running_server,
)
from strata_twisted.service import StrataService, _smarthost_auth, build_service


def settings_with(password_file: Path, user: str = "relay@smarthost.test") -> Settings:
    return parse_config({"outbound": {
        "smarthost": "127.0.0.1:2587", "smarthost_user": user,
        "smarthost_password_file": str(password_file),
    }})  # fmt: skip


def test_the_smarthost_password_comes_from_a_private_file(tmp_path: Path) -> None:
    secret = tmp_path / "smarthost.pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    assert _smarthost_auth(settings_with(secret)) == ("relay@smarthost.test", "s3cret")
    assert _smarthost_auth(parse_config({})) is None


@pytest.mark.parametrize(
    ("mode", "content", "message"),
    [
        (0o644, "s3cret", "may be read by other users; make it private: chmod 600"),
        (0o600, "\n", "is empty"),
    ],
)
def test_an_unusable_password_file_stops_startup_with_a_clear_error(
    tmp_path: Path, mode: int, content: str, message: str
) -> None:
    secret = tmp_path / "smarthost.pw"
    secret.write_text(content)
    secret.chmod(mode)
    with pytest.raises(ConfigError) as raised:
        _smarthost_auth(settings_with(secret))
    assert raised.value.key == "outbound.smarthost_password_file"
    assert message in str(raised.value) and "s3cret" not in str(raised.value)


def test_a_missing_password_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _smarthost_auth(settings_with(tmp_path / "absent"))
    assert raised.value.key == "outbound.smarthost_password_file"


# -- the data dir's lock (issue #11, point 8) ----------------------------------------------------


def test_the_root_service_says_who_runs_and_lets_go_when_stopped(tmp_path: Path) -> None:
    clock = task.Clock()
    clock.advance(1_800_000_000.0)
    lock = ServerLock(tmp_path / "data")
    lock.acquire()
    root = StrataService(lock, clock)
    assert running_server(tmp_path / "data") == RunningServer(None, None)  # not said yet
    root.startService()
    assert running_server(tmp_path / "data") == RunningServer(os.getpid(), 1_800_000_000.0)
    stopped = root.stopService()
    assert stopped.called
    assert running_server(tmp_path / "data") is None
    assert (tmp_path / "data" / LOCK_NAME).read_bytes() == b""  # names no one now


def test_a_second_server_stops_before_it_opens_the_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = ServerLock(data_dir)
    first.acquire()
    first.record(4242, 1.0)
    try:
        with pytest.raises(ServerRunning, match=r"another Strata server \(pid 4242\) is running"):
            build_service(parse_config({"data_dir": str(data_dir)}), task.Clock())
    finally:
        first.release()
    assert not (data_dir / "strata.db").exists()
