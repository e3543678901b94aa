"""Replay every fuzz reproducer in tests/regressions/: each target must now agree with numpy.

The files are findings of ``graphdsl fuzz`` (backends/fuzz/reproducer.py) whose bugs were fixed;
replaying them keeps those bugs fixed. A file that is malformed fails here too, by name.
"""
from pathlib import Path

import pytest

from backends import fuzz

DIR = Path(__file__).resolve().parent / "regressions"
FILES = sorted(DIR.glob("*.json"))


def test_regressions_directory_documents_itself():
    assert (DIR / "README.md").is_file()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_reproducer_agrees_now(path):
    rep = fuzz.load(path)
    assert rep.doc.get("status") == "fixed", f"{path.name}: only reproducers of fixed bugs belong here"
    findings = rep.replay()
    assert not findings, f"{path.name} ({rep.doc.get('reason')}) still fails: " + \
        "; ".join(f.summary() for f in findings)
