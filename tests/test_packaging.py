"""
The twistd plugin is found after a normal install and after an editable install in compat mode,
and the wheel carries only our files (never a twisted/__init__.py that would shadow Twisted).
"""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_wheel_contains_the_plugin_and_no_twisted_init(tmp_path: Path) -> None:
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(ROOT),
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("strata_twisted-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/strata_plugin.py" in names
    assert "strata_twisted/tap.py" in names and "strata_twisted/proto/smtp_server.py" in names
    assert not [n for n in names if n.startswith("twisted/") and n.endswith("__init__.py")]
    assert not [n for n in names if "dropin.cache" in n or n.startswith("tests/")]


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "editable-compat"])
def test_twistd_finds_the_plugin(tmp_path: Path, editable: bool) -> None:
    # An isolated venv that sees the system's packages (Twisted, setuptools) as a plain path entry,
    # so no .pth file of a global Strata install is processed and cannot make this pass by accident.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    python = str(venv / "bin" / "python")
    venv_site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
        ).strip()
    )
    (venv_site / "_system_packages.pth").write_text(
        "\n".join(p for p in site.getsitepackages() if "site-packages" in p) + "\n"
    )
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    if editable:
        pip += ["-e", str(ROOT), "--config-settings", "editable_mode=compat"]
    else:
        pip += [str(ROOT)]
    _run(*pip, cwd=tmp_path)
    where = _run(
        python, "-c", "import twisted.plugins.strata_plugin as m; print(m.__file__)", cwd=tmp_path
    ).strip()
    expected = ROOT if editable else venv_site
    assert where.startswith(str(expected)), where
    # From an unrelated directory, so the checkout is not on sys.path by accident.
    out = _run(
        python, "-c", "from twisted.scripts.twistd import run; run()", "--help", cwd=tmp_path
    )
    assert "strata" in out.split("Commands:")[1]
