"""The two commands on a fresh machine (issue 12 §1): nothing installed with pip outside `.venv`.

`python compose_maker.py N` run by a Python without PyYAML sets up the project's venv from
requirements.txt, says so in one line and runs itself again there; every Make target that needs
PyYAML or pytest creates the same venv first. The compose_maker tests run a copy of the script
(with tools/gen_data.py and requirements.txt beside it, as in the repo) in a temporary directory,
started by a fresh venv made without pip or PyYAML, so the repo's own .venv is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ONE_LINE = re.compile(
    r"compose_maker\.py: PyYAML is missing from (?P<python>\S+); running again with (?P<venv>\S+)/bin/python"
    r"(?: \((?P<how>created|updated) from requirements\.txt\))?"
)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python without PyYAML (and without pip): a venv that does not see the host's packages."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import yaml"], capture_output=True).returncode != 0
    return python


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of what compose_maker.py needs, plus a working directory `run` with the data and
    credentials of 2 agencies already there (so nothing is generated or issued)."""
    copy = tmp_path / "repo"
    (copy / "tools").mkdir(parents=True)
    for name in ("compose_maker.py", "requirements.txt", "tools/gen_data.py", "tools/compose_spec.py",
                 "tools/credentials.py"):
        shutil.copy(ROOT / name, copy / name)
    run = copy / "run"
    (run / ".data").mkdir(parents=True)
    (run / ".secrets").mkdir()
    for agency in (1, 2):
        (run / ".data" / f"agency-{agency}.csv").write_bytes(b"stub\r\n")
        for name in (f"agency-{agency}.pem", f"agency-{agency}-key.pem"):
            (run / ".secrets" / name).write_bytes(b"stub\n")
    for name in ("ca.pem", "server.pem", "server-key.pem"):
        (run / ".secrets" / name).write_bytes(b"stub\n")
    return copy


def compose_maker(python: Path, repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOTTERY_VENV")}
    return subprocess.run([str(python), str(repo / "compose_maker.py"), *args], cwd=repo / "run",
                          capture_output=True, text=True, timeout=600, env={**clean, **env})


def test_without_pyyaml_it_sets_up_the_venv_and_runs_again_there(bare_python: Path, repo: Path) -> None:
    first = compose_maker(bare_python, repo, "2", "--output", "first.yaml")
    assert first.returncode == 0, first.stderr
    line = ONE_LINE.fullmatch(first.stderr.strip())  # one line, and nothing else (no traceback)
    assert line, first.stderr
    assert line["python"] == str(bare_python) and line["how"] == "created"
    assert Path(repo / "run", line["venv"]).resolve() == repo / ".venv"
    assert first.stdout == ("wrote first.yaml: server and 2 client(s)\n"
                            "wrote first.stack.yaml: the same for docker stack deploy (make swarm-up)\n")
    assert "client2:" in (repo / "run" / "first.yaml").read_text()
    # The venv is the Makefile's: made from requirements.txt, whose installed copy it keeps.
    assert (repo / ".venv" / "requirements.txt").read_bytes() == (repo / "requirements.txt").read_bytes()
    installed = subprocess.run([str(repo / ".venv" / "bin" / "python"), "-c", "import yaml, pytest"])
    assert installed.returncode == 0

    again = compose_maker(bare_python, repo, "2", "--output", "again.yaml")  # up to date: used as is
    assert again.returncode == 0, again.stderr
    line = ONE_LINE.fullmatch(again.stderr.strip())
    assert line and line["how"] is None, again.stderr
    assert (repo / "run" / "again.yaml").read_bytes() == (repo / "run" / "first.yaml").read_bytes()

    with open(repo / "requirements.txt", "a") as requirements:  # changed: installed again
        requirements.write("# changed\n")
    updated = compose_maker(bare_python, repo, "2", "--output", "updated.yaml")
    assert updated.returncode == 0, updated.stderr
    line = ONE_LINE.fullmatch(updated.stderr.strip())
    assert line and line["how"] == "updated", updated.stderr
    assert (repo / ".venv" / "requirements.txt").read_text().endswith("# changed\n")


def test_the_venv_location_can_be_moved(bare_python: Path, repo: Path, tmp_path: Path) -> None:
    """LOTTERY_VENV names another venv (as make VENV=... does): one already set up is used as is."""
    venv = tmp_path / "elsewhere"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # Set up without a second install: it sees the PyYAML these tests run with.
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "tests-pyyaml.pth").write_text(str(Path(yaml.__file__).parent.parent) + "\n")
    shutil.copy(repo / "requirements.txt", venv / "requirements.txt")  # as the Makefile leaves it
    result = compose_maker(bare_python, repo, "1", "--output", "moved.yaml", LOTTERY_VENV=str(venv))
    assert result.returncode == 0, result.stderr
    line = ONE_LINE.fullmatch(result.stderr.strip())
    assert line and line["how"] is None and Path(repo / "run", line["venv"]).resolve() == venv.resolve()
    assert not (repo / ".venv").exists()


def test_without_the_venv_module_it_says_what_to_install(bare_python: Path, repo: Path, tmp_path: Path) -> None:
    no_venv = tmp_path / "no-venv"  # what Debian's python3 without python3-venv amounts to
    no_venv.mkdir()
    (no_venv / "ensurepip.py").write_text("raise ImportError('no ensurepip here')\n")
    result = compose_maker(bare_python, repo, "2", "--output", "out.yaml", PYTHONPATH=str(no_venv))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "apt-get install python3-venv" in result.stderr and "pip install -r" in result.stderr, result.stderr
    assert not (repo / ".venv").exists() and not (repo / "run" / "out.yaml").exists()


def test_a_venv_still_without_pyyaml_is_an_error_not_a_loop(bare_python: Path, repo: Path) -> None:
    result = compose_maker(bare_python, repo, "2", "--output", "out.yaml", LOTTERY_VENV_REEXEC="1")
    assert result.returncode == 1
    assert result.stderr.startswith("compose_maker.py: error: PyYAML is missing even in "), result.stderr
    assert not (repo / "run" / "out.yaml").exists()


@pytest.mark.parametrize("target", ["secrets", "docker-compose-up", "test", "test-python", "lint", "bench",
                                    "chaos", "data"])
def test_make_targets_that_need_python_packages_set_up_the_venv_first(target: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    dry = subprocess.run(["make", "--no-print-directory", "-n", target, f"VENV={venv}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    commands = dry.stdout.splitlines()
    setup = next(i for i, command in enumerate(commands) if f"-m venv {venv}" in command)
    assert f"{venv}/bin/python -m pip install" in commands[setup + 1]
    assert f"cp requirements.txt {venv}/requirements.txt" in commands[setup + 2]
    python_commands = [i for i, command in enumerate(commands) if f"{venv}/bin/python " in command]
    assert python_commands[-1] > setup + 2  # the target's own command, with the venv's Python
    assert not any(re.search(r"(^|\s)python3? (-m pytest|\S+\.py)", command) for command in commands), commands
