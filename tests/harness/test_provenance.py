"""run.json's provenance: git state of real repositories made here, versions and hardware against
importlib.metadata and /proc."""

import os
import subprocess
from importlib import metadata
from pathlib import Path

from dvbench.harness import provenance
from dvbench.plugins.valuators.random import RandomValuator


def _git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_git_commit_and_dirty_flag(tmp_path):
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    spec = repo / "specs/a.yaml"
    spec.write_text("name: a\n")
    (repo / ".gitignore").write_text("venv/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert provenance.git(spec) == {"commit": head, "dirty": False}

    (repo / "specs/new.yaml").write_text("name: new\n")  # not committed: the commit does not hold it
    assert provenance.git(repo / "specs/new.yaml") == {"commit": head, "dirty": True}
    assert provenance.git(spec) == {"commit": head, "dirty": False}  # untracked files elsewhere do not count
    spec.write_text("name: b\n")
    assert provenance.git(spec) == {"commit": head, "dirty": True}

    (repo / "venv").mkdir()
    (repo / "venv/module.py").write_text("")
    assert provenance.git(repo / "venv/module.py") is None  # ignored: not that repository's file
    (tmp_path / "loose.yaml").write_text("")
    assert provenance.git(tmp_path / "loose.yaml") is None


def test_git_missing_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert provenance.git(Path(provenance.__file__)) is None


def test_versions_and_distributions():
    found = provenance.versions(("pluggy", "no-such-distribution"))
    assert found["pluggy"] == metadata.version("pluggy") and found["no-such-distribution"] is None
    assert found["numpy"] == metadata.version("numpy") and found["polars"] == metadata.version("polars")
    assert set(provenance.PACKAGES) <= set(found) and found["python"].count(".") == 2
    assert provenance.distribution(RandomValuator) == {"name": "dvbench", "version": metadata.version("dvbench")}

    class Unregistered(RandomValuator):
        pass

    Unregistered.__module__ = "someone_elses"
    assert provenance.distribution(Unregistered) is None


def test_hardware_against_proc():
    found = provenance.hardware()
    total = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemTotal:"))
    assert abs(found["memory_gb"] - total / 2 ** 20) <= 0.1
    assert found["cores"] == os.cpu_count() and 1 <= found["usable_cores"] <= found["cores"]
    assert found["cpu"]
