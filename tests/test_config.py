"""Configuration: defaults, the documented example, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from strata_twisted.config import load_config, parse_config, schema_keys
from strata_twisted.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in document.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out


def test_example_documents_every_key_with_its_default() -> None:
    document = tomllib.loads((ROOT / "strata.example.toml").read_text())
    assert sorted(_flatten(document)) == sorted(schema_keys())
    from_example = parse_config(document)
    default = parse_config({})
    assert from_example.intake == default.intake
    assert from_example.tls == default.tls
    assert from_example.storage == default.storage
    assert from_example.monitor == default.monitor
    assert from_example.submission == default.submission
    assert from_example.outbound == default.outbound
    assert from_example.alerts == default.alerts
    assert from_example.data_dir == default.data_dir
    assert from_example.server == default.server


def test_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_config()
    assert settings.source is None
    assert settings.data_dir == tmp_path / "strata-data"
    assert [str(a) for a in settings.intake.listen] == ["127.0.0.1:2525"]
    assert settings.relay.sync_each_result is False
    (tmp_path / "strata.toml").write_text(
        'data_dir = "elsewhere"\n[relay]\nsync_each_result = true\n'
    )
    assert load_config().data_dir == tmp_path / "elsewhere"
    assert load_config().relay.sync_each_result is True


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[intake]\nmax_recipients = 0\n", "intake.max_recipients"),
        ('[outbound]\ntls = "sometimes"\n', "outbound.tls"),
        ('[outbound]\nsmarthost_tls = "maybe"\n', "outbound.smarthost_tls"),
        ('[outbound]\nsmarthost = "host:port"\n', "outbound.smarthost"),
        ("[outbound]\nretry_min = 600\nretry_max = 300\n", "outbound.retry_max"),
        ('[outbound]\nsmarthost_user = "u"\n', "outbound.smarthost_password_file"),
        ("[submission]\nmax_per_hour = 0\n", "submission.max_per_hour"),
        ('[submission]\ntrusted_networks = ["not a net"]\n', "submission.trusted_networks"),
        ("[alerts]\nqueue_age = -1\n", "alerts.queue_age"),
        ('[intake]\nmax_recipients = "ten"\n', "intake.max_recipients"),
        ('[intake]\nlisten = ["nowhere"]\n', "intake.listen"),
        ("[intake]\nidle_timeout = -1\n", "intake.idle_timeout"),
        ("[intake]\nmax_mesage_size = 10\n", "intake.max_mesage_size"),
        ("[smpt]\nlisten = []\n", "smpt"),
        ('[storage]\nbackend = "postgres"\n', "storage.backend"),
        ('[relay]\nsync_each_result = "yes"\n', "relay.sync_each_result"),
        ('[relay]\nresolver = "ns.example.com"\n', "relay.resolver"),
        ("[monitor]\nalert_window = 0\n", "monitor.alert_window"),
        ("[imap]\nlogin_max_delay = 61\n", "imap.login_max_delay"),
        ("[imap]\nlogin_max_delay = -1\n", "imap.login_max_delay"),
        # A retired key is still checked as it was.
        ("[imap]\nlogin_failures_per_ip = 0\n", "imap.login_failures_per_ip"),
        ('[monitor]\nalert_window = "15m"\n', "monitor.alert_window"),
        ('[tls]\nprivate_key = "k.pem"\n', "tls.certificate"),
        ("data_dir = 5\n", "data_dir"),
        ('[server]\npostmaster = "Postmaster"\n', "server.postmaster"),
        ('[server]\npostmaster = "Ops <ops@example.net>"\n', "server.postmaster"),
        ('[server]\npostmaster = "ops@localhost"\n', "server.postmaster"),
        ("[server]\npostmaster = 1\n", "server.postmaster"),
        ("this is not toml", "--config"),
        ("[intake]\nmax_line_length = 10\n", "intake.max_line_length"),
        (
            "[intake]\nmax_line_length = 4096\nmax_command_line_length = 4096\n",
            "intake.max_line_length",
        ),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == key
    assert key in str(e.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_alert_window_defaults_to_15_minutes_and_can_be_set(tmp_path: Path) -> None:
    # Issue #5: at most one alert per kind per domain per 15 minutes, configurable.
    assert parse_config({}).monitor.alert_window == 900.0
    path = tmp_path / "strata.toml"
    path.write_text("[monitor]\nalert_window = 3600\n")
    assert load_config(path).monitor.alert_window == 3600.0


def test_the_old_name_of_the_command_line_limit_still_loads(tmp_path: Path) -> None:
    """Issue 11, point 3: intake.max_line_length limits command lines only now, and is called
    max_command_line_length; a config file written with the old name still starts Strata."""
    path = tmp_path / "strata.toml"
    path.write_text("[intake]\nmax_line_length = 4096\n")
    settings = load_config(path)
    assert settings.intake.max_command_line_length == 4096
    assert settings.notes == (
        "intake.max_line_length is read as intake.max_command_line_length, its new name: rename it",
    )
    path.write_text("[intake]\nmax_command_line_length = 2048\n")
    assert load_config(path).intake.max_command_line_length == 2048
    assert parse_config({}).intake.max_command_line_length == 8192
    assert "intake.max_line_length" not in schema_keys()


def test_the_login_delay_bound_defaults_to_15_seconds_and_can_be_set(tmp_path: Path) -> None:
    assert parse_config({}).imap.login_max_delay == 15.0
    path = tmp_path / "strata.toml"
    path.write_text("[imap]\nlogin_max_delay = 0\n")
    assert load_config(path).imap.login_max_delay == 0.0


def test_an_old_file_with_the_lockout_keys_still_loads_and_says_they_are_ignored(
    tmp_path: Path,
) -> None:
    # Before issue 11, failed logins locked users out; those keys are accepted and ignored.
    path = tmp_path / "strata.toml"
    path.write_text(
        "[imap]\nlogin_failures_per_ip = 20\nlogin_failures_per_user = 10\nlogin_window = 900\n"
    )
    settings = load_config(path)
    assert settings.imap == parse_config({}).imap
    assert [note.split(" ", 1)[0] for note in settings.notes] == [
        "imap.login_failures_per_ip",
        "imap.login_failures_per_user",
        "imap.login_window",
    ]
    assert "no longer lock anyone out" in settings.notes[0]
    assert "imap.login_max_delay" in settings.notes[0]
    assert parse_config({}).notes == ()


def test_server_postmaster_is_unset_by_default_and_kept_with_its_domain_in_ascii() -> None:
    # Issue #11: <Postmaster> mail goes to the operator's address; none by default.
    assert parse_config({}).server.postmaster == ""
    settings = parse_config({"server": {"postmaster": " Ops@Bücher.Example "}})
    assert settings.server.postmaster == "Ops@xn--bcher-kva.example"
    assert parse_config({"server": {"postmaster": ""}}).server.postmaster == ""
