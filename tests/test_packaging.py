"""The package as users install it: the wheel and sdist carry the Apache-2.0 licence and open dependency ranges."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile

from packaging.requirements import Requirement

from conftest import TESTS

REPO = TESTS.parent


def test_wheel_and_sdist_carry_the_licence_and_allow_todays_torch(tmp_path):
    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    # build from a copy: building writes build/ and *.egg-info next to pyproject.toml
    src = tmp_path / "src"
    shutil.copytree(REPO / "anomalyclip_med", src / "anomalyclip_med", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "THIRD_PARTY_NOTICES"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path / "dist"
    # the PEP 517 hooks pip and `python -m build` call, with this environment's setuptools (>= 77, as pyproject asks)
    built = {}
    for hook in ("build_wheel", "build_sdist"):  # one process each: setuptools keeps state between the two
        proc = subprocess.run(
            [sys.executable, "-c", f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))",
             str(out)], cwd=src, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        built[hook] = proc.stdout.splitlines()[-1]  # the file name, after setuptools' log lines
    wheel_name, sdist_name = built["build_wheel"], built["build_sdist"]

    with zipfile.ZipFile(out / wheel_name) as whl:
        names = whl.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert whl.read(f"{info}/licenses/LICENSE").decode("utf-8") == licence
        # the authors' MIT notice (and OpenAI's) for what the package reimplements and downloads
        notices = whl.read(f"{info}/licenses/THIRD_PARTY_NOTICES").decode("utf-8")
        assert notices == (REPO / "THIRD_PARTY_NOTICES").read_text(encoding="utf-8")
        assert "Copyright (c) 2024 Qihang Zhou" in notices
        metadata = whl.read(f"{info}/METADATA").decode("utf-8")
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    requires = {r.name: r for r in map(Requirement, (line.split(": ", 1)[1] for line in metadata.splitlines()
                                                     if line.startswith("Requires-Dist: ") and "extra ==" not in line))}
    # released today: torch 2.15.0 (with torchvision 0.30.0); the tested pins live in constraints.txt
    assert requires["torch"].specifier.contains("2.15.0") and requires["torchvision"].specifier.contains("0.30.0")
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert all(requires[name].specifier.contains(version) for name, version in pins.items() if name in requires)

    with tarfile.open(out / sdist_name) as sdist:
        root = sdist_name.removesuffix(".tar.gz")
        assert sdist.extractfile(f"{root}/LICENSE").read().decode("utf-8") == licence
