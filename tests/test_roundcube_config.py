"""
roundcube-config/config.inc.php, evaluated by the real PHP: every setting Strata needs is there,
and the hosts and white-labelling come from the environment with the documented defaults.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "roundcube-config" / "config.inc.php"


def evaluate(**env: str) -> dict[str, Any]:
    """The $config array the file builds, with ``env`` as the STRATA_* variables."""
    php = shutil.which("php")
    if php is None:
        pytest.fail("PHP is required (apt-get install php-cli)", pytrace=False)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    script = (
        f"$config = []; include {json.dumps(str(CONFIG))};"
        " echo json_encode(['config' => $config, 'leaked' => array_keys(get_defined_vars())]);"
    )
    done = subprocess.run([php, "-r", script], env=clean | env, capture_output=True, text=True,
                          timeout=30, check=True)  # fmt: skip
    out = json.loads(done.stdout)
    # The file leaves nothing but $config behind in Roundcube's scope.
    leaked = {name for name in out["leaked"] if not name.startswith("_")}  # superglobals
    assert leaked <= {"config", "argv", "argc"}
    config: dict[str, Any] = out["config"]
    return config


def test_defaults_point_at_the_embedded_strata() -> None:
    config = evaluate()
    assert config["imap_host"] == "localhost:2143"
    assert config["smtp_host"] == "localhost:2587"
    assert (config["smtp_user"], config["smtp_pass"]) == ("%u", "%p")
    assert config["product_name"] == "Webmail"
    assert "skin_logo" not in config  # Roundcube's own logo


def test_hosts_and_branding_come_from_the_environment() -> None:
    config = evaluate(
        STRATA_IMAP_HOST="ssl://strata.example.net:993",
        STRATA_SMTP_HOST="tls://strata.example.net:587",
        STRATA_PRODUCT_NAME="Acme Webmail",
        STRATA_LOGO="https://acme.example/logo.svg",
        STRATA_SUPPORT_URL="https://acme.example/help",
    )
    assert config["imap_host"] == "ssl://strata.example.net:993"
    assert config["smtp_host"] == "tls://strata.example.net:587"
    assert config["product_name"] == "Acme Webmail"
    assert config["skin_logo"] == "https://acme.example/logo.svg"
    assert config["support_url"] == "https://acme.example/help"


def test_the_folders_are_strata_s_special_use_folders() -> None:
    config = evaluate()
    assert config["create_default_folders"] is False  # Strata creates them, subscribed
    assert [config[k] for k in ("drafts_mbox", "sent_mbox", "junk_mbox", "trash_mbox")] == [
        "Drafts", "Sent", "Junk", "Trash"
    ]  # fmt: skip
    assert config["default_folders"] == ["INBOX", "Drafts", "Sent", "Junk", "Trash"]
    assert config["imap_delimiter"] == "/"
    assert (config["imap_auth_type"], config["smtp_auth_type"]) == ("PLAIN", "PLAIN")


def test_roundcube_forwards_the_browsers_address_to_strata() -> None:
    # Issue 11: IMAP ID x-originating-ip comes from the strata_portal plugin (its hook is tested
    # against the real Roundcube in tests/interop/test_login_throttle.py); XCLIENT ADDR is
    # Roundcube's own, switched on here.
    config = evaluate()
    assert "strata_portal" in config["plugins"]
    assert config["smtp_xclient_addr"] is True
    assert "proxy_whitelist" not in config
    # Roundcube's own per-user lockout (3 failures a minute from anywhere) is off: Strata slows
    # the guesser instead.
    assert config["login_rate_limit"] == 0
    config = evaluate(STRATA_PROXIES="172.18.0.1, 10.0.0.2,")
    assert config["proxy_whitelist"] == ["172.18.0.1", "10.0.0.2"]


def test_the_branding_plugin_asks_the_strata_named_in_the_environment() -> None:
    # Issue 14: per host name, the reseller's brand (tests/e2e/test_roundcube_branding.py runs it
    # against a real Strata); off (empty URL) unless STRATA_ADMIN_URL names Strata's admin site.
    config = evaluate()
    assert "strata_branding" in config["plugins"]
    assert config["strata_branding_url"] == ""
    config = evaluate(STRATA_ADMIN_URL="http://127.0.0.1:8080")
    assert config["strata_branding_url"] == "http://127.0.0.1:8080"
    assert 0 < config["strata_branding_timeout"] <= 5
    assert config["strata_branding_ttl"] == 60


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("Webmail.Acme-IT.test:8443", "webmail.acme-it.test"),
        ("webmail.acme-it.test.", "webmail.acme-it.test"),
        ("127.0.0.1:80", None),
        ("[::1]:80", None),
        ("", None),
        ("evil.test/../x", None),
    ],
)
def test_the_branding_plugin_takes_the_host_name_without_its_port(
    host: str, name: str | None
) -> None:
    php = shutil.which("php")
    assert php is not None
    plugin = CONFIG.parent / "plugins" / "strata_branding" / "strata_branding.php"
    script = (
        "class rcube_plugin {} "
        f"include {json.dumps(str(plugin))}; "
        f"echo json_encode(strata_branding::host_name({json.dumps(host)}));"
    )
    done = subprocess.run([php, "-r", script], capture_output=True, text=True, timeout=30,
                          check=True)  # fmt: skip
    assert json.loads(done.stdout) == name


def test_the_container_mounts_every_plugin_the_config_enables() -> None:
    # Roundcube loads plugins only from its own plugins directory: webmail/compose.yaml must
    # mount each one the shared config turns on, and pass the environment it reads.
    compose = (CONFIG.parents[1] / "webmail" / "compose.yaml").read_text()
    for plugin in evaluate()["plugins"]:
        mount = f"../roundcube-config/plugins/{plugin}:/var/www/html/plugins/{plugin}:ro"
        assert mount in compose, plugin
    assert "STRATA_ADMIN_URL: ${STRATA_ADMIN_URL:-}" in compose
