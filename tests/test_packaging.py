"""The wheel holds every subpackage under the dvbench. prefix, and no generic top-level names."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _source_packages() -> set[str]:
    found = set()
    for top in ("harness", "plugins"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(("dvbench", *init.parent.relative_to(ROOT).parts)))
    return found


def test_pyproject_lists_every_subpackage():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert set(declared) == _source_packages()


def test_wheel_contains_every_subpackage(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("dvbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in _source_packages():
        assert package.replace(".", "/") + "/__init__.py" in names, package
    assert not [n for n in names if n.split("/")[0] in ("harness", "plugins", "tests", "benchmarks")]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "dvbench = dvbench.harness.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
