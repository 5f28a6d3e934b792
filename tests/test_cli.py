"""The command line: every option documented, and commands run the code of the repository they
run in (a DVC experiment's temp copy, a second clone sharing the environment)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from birdclef.cli import build_parser
from tests.conftest import REPO


def subparsers() -> dict:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return action.choices


def test_every_command_and_option_has_help() -> None:
    assert "examples:" in build_parser().format_help()
    for name, sub in subparsers().items():
        assert sub.description, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"birdclef {name} {action.option_strings or action.dest}"


def test_a_copy_of_the_repository_runs_its_own_code(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "src" / "birdclef" / "__init__.py"
    init.write_text(init.read_text() + "\nimport atexit, os\natexit.register(lambda: print("
                    "'COPY', os.environ.get('BIRDCLEF_WORKSPACE_CODE'), os.environ.get('PYTHONPATH')))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BIRDCLEF_WORKSPACE_CODE")}
    command = Path(sys.executable).parent / "birdclef"
    if not command.exists():
        pytest.skip("the birdclef console command is not installed in this environment")
    out = subprocess.run([str(command), "schema"], cwd=copy, env=env, capture_output=True,
                         text=True, check=True).stdout
    # the copy's code ran, and its children see the environment the command was given
    assert out.rstrip().endswith("COPY None None")
