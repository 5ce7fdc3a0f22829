import subprocess
import sys

import pytest

from research_ext import __version__
from research_ext.cli import main


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: research-ext" in out and "tune" in out and "privacy" in out


def test_no_arguments_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "usage: research-ext" in capsys.readouterr().out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"research-ext {__version__}"


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'" in err and "'tune'" in err


@pytest.mark.slow
def test_console_script_smoke():
    result = subprocess.run(
        [sys.executable, "-m", "research_ext.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"research-ext {__version__}"
