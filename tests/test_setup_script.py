"""``scripts/setup.sh`` run in a copy of the repository, with stand-ins for the venv's python and for apt-get
(the real ones would install packages on the test machine): one line per step, and waiting for the apt lock."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

from conftest import TESTS

SETUP = TESTS.parent / "scripts" / "setup.sh"
TOOLS = ("bash", "cat", "dirname", "grep", "mktemp", "rm", "sleep")

# pip and apt are chatty: a hundred lines each, which setup.sh must keep off the console
FAKE_PYTHON = """#!/bin/bash
echo "python $*" >> "$CALLS"
if [ "$1" = -c ]; then echo "anomalyclip_med 0.1.0 torch 2.x"; exit 0; fi
for i in $(seq 100); do echo "Requirement already satisfied: package$i"; done
"""
# apt-get whose package-lists lock is held by another process for the first LOCKED_TRIES calls of `update`
FAKE_APT = """#!/bin/bash
echo "apt-get $*" >> "$CALLS"
if [[ " $* " == *" update "* ]]; then
  tries=$(grep -c " update" "$CALLS")
  if [ "$tries" -le "$LOCKED_TRIES" ]; then
    echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
    echo "E: Unable to lock directory /var/lib/apt/lists/" >&2
    exit 100
  fi
fi
for i in $(seq 100); do echo "Selecting previously unselected package $i"; done
"""


def _executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run_setup(tmp_path, locked_tries, lock_timeout):
    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    (repo / "scripts").mkdir(parents=True)
    (repo / ".venv" / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy(SETUP, repo / "scripts" / "setup.sh")
    _executable(repo / ".venv" / "bin" / "python", FAKE_PYTHON)
    _executable(bin_dir / "apt-get", FAKE_APT)
    _executable(bin_dir / "id", "#!/bin/bash\necho 0\n")  # root, so the DICOM tools step runs
    for tool in TOOLS + ("seq",):
        os.symlink(shutil.which(tool), bin_dir / tool)
    calls = tmp_path / "calls.log"
    calls.touch()
    env = {"PATH": str(bin_dir), "CALLS": str(calls), "LOCKED_TRIES": str(locked_tries),
           "APT_LOCK_TIMEOUT": str(lock_timeout)}  # no dcm2niix / dciodvfy on this PATH: they get installed
    proc = subprocess.run([str(bin_dir / "bash"), str(repo / "scripts" / "setup.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    return proc, calls.read_text().splitlines()


def test_setup_prints_one_line_per_step_and_waits_for_the_apt_lock(tmp_path):
    proc, calls = _run_setup(tmp_path, locked_tries=1, lock_timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.rsplit(" ... ", 1)[-1] for line in lines[:-1]] == ["ok"] * 4, proc.stdout
    assert lines[-1] == "setup done: anomalyclip_med 0.1.0 torch 2.x" and proc.stderr == ""
    apt = [c for c in calls if c.startswith("apt-get")]
    assert all("-o DPkg::Lock::Timeout=60" in c for c in apt)
    assert sum(" update" in c for c in apt) == 2  # the locked try, then the one after the other process finished
    assert any(" install " in c and "dcm2niix" in c for c in apt)


def test_setup_gives_up_on_a_lock_held_past_the_timeout_and_shows_why(tmp_path):
    proc, calls = _run_setup(tmp_path, locked_tries=99, lock_timeout=0)
    assert proc.returncode == 100
    assert "apt package lists" in proc.stdout and "FAILED (exit 100)" in proc.stdout
    assert "Could not get lock /var/lib/apt/lists/lock" in proc.stderr
    assert not any(" install " in c for c in calls if c.startswith("apt-get"))
