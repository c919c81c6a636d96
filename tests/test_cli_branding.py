"""
``strata reseller add|update --hostname`` and ``strata reseller logo`` (#14): host names as the
operator types them, a taken one refused, and a logo stored, refused and cleared.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli_accounts import Run, cli, data  # noqa: F401 - the fixtures

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_host_names_and_the_logo_from_the_command_line(
    cli: Run,  # noqa: F811
    data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    code, out, _ = cli(
        "reseller", "add", "acme", "--product-name", "Acme",
        "--hostname", "Webmail.Acme.test", "--hostname", "panel.acme.test",
    )  # fmt: skip
    assert (code, out.strip()) == (0, "added reseller acme")
    code, _, err = cli("reseller", "add", "other", "--hostname", "webmail.acme.test")
    assert code == 1 and "webmail.acme.test is already another reseller's" in err
    code, _, err = cli("reseller", "update", "acme", "--hostname", "not a host")
    assert code == 2 and "not a valid domain name" in err
    [acme] = json.loads(cli("reseller", "list", "--json")[1])
    assert acme["hostnames"] == ["panel.acme.test", "webmail.acme.test"]

    (tmp_path / "logo.png").write_bytes(PNG)
    (tmp_path / "logo.svg").write_text("<svg/>")
    code, out, _ = cli("reseller", "logo", "acme", str(tmp_path / "logo.png"))
    assert code == 0 and "image/png" in out
    code, _, err = cli("reseller", "logo", "acme", str(tmp_path / "logo.svg"))
    assert code == 2 and "SVG" in err
    assert cli("reseller", "logo", "acme", "--clear") == (
        0,
        "removed the logo of reseller acme\n",
        "",
    )

    assert cli("reseller", "update", "acme", "--no-hostnames")[0] == 0
    [acme] = json.loads(cli("reseller", "list", "--json")[1])
    assert acme["hostnames"] == [] and acme["product_name"] == "Acme"
