"""The composition root's own checks: what it reads at startup."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata_twisted.config import Settings, parse_config
from strata_twisted.errors import ConfigError
from strata_twisted.service import _smarthost_auth


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
