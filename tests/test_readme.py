"""The README's examples run as written (so the README stays true).

Python blocks run in one scratch directory; a Python block whose first line is ``# NAME.py`` is a
file the shell examples use, and is written there instead. Shell blocks (```sh) run in order in
that directory with this environment's ``graphdsl`` on PATH, every line a command that must
succeed; the set-up block (``make demo`` / ``make test``) is the one not run.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text()
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, re.S)
FILES = [b for b in PYTHON if re.match(r"# [\w-]+\.py\n", b)]
EXAMPLES = [b for b in PYTHON if b not in FILES]
SHELL = [b for b in re.findall(r"```sh\n(.*?)```", TEXT, re.S) if "make demo" not in b]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    for block in FILES:
        name = block.splitlines()[0][2:].strip()
        (root / name).write_text(block)
    return root


def test_readme_has_examples():
    assert len(EXAMPLES) >= 4 and len(SHELL) >= 4 and FILES


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"block{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(code, capsys, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip(), "each example prints what it shows"


def test_readme_files_trace(workdir, monkeypatch):
    """The model files the shell examples name are valid MODELs."""
    from graphdsl.cli import model_ref
    monkeypatch.chdir(workdir)
    for block in FILES:
        name = block.splitlines()[0][2:].strip()
        funcs = re.findall(r"^def (\w+)\(\):", block, re.M)
        for fn in funcs:
            model = model_ref.load(f"{name}:{fn}")
            assert model.graph.nodes and (model.params is None or set(model.params) == set(model.graph.params))


def test_readme_commands_run(workdir):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GRAPHDSL_PROGRESS": "0"}
    for block in SHELL:
        for line in block.strip().splitlines():
            command = line.split("  #")[0].strip()
            if not command or command.startswith("#"):
                continue
            done = subprocess.run(["bash", "-ec", command], cwd=workdir, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"README command failed: {command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            assert "Traceback" not in done.stderr, command
