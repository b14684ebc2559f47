"""What a new user meets first (issue 18, item 10): the wheel holds every package; after a plain
``pip install posync`` in a fresh virtualenv the README's first snippet runs (the embedded scheduler is a
base dependency) and ``posync demo`` says in one line which extra it needs, without a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_lists_every_package_in_the_tree() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "posync").rglob("__init__.py")}
    assert tree - listed == set()


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it in a POS"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    return snippet.group(1).replace("https://ho.example.com", "http://127.0.0.1:9")  # HO down: stays local


@pytest.mark.slow
def test_a_plain_install_runs_the_readme_and_the_demo_names_its_extra(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300,
                   cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("posync-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True,
                   timeout=600)
    work = tmp_path / "pos"
    work.mkdir()
    (work / "app.py").write_text(_readme_snippet())
    readme = subprocess.run([str(python), "app.py"], cwd=work, capture_output=True, text=True, timeout=120)
    assert readme.returncode == 0, readme.stderr[-2000:]
    demo = subprocess.run([str(venv / "bin" / "posync"), "demo"], cwd=work, capture_output=True, text=True,
                          timeout=120)
    assert demo.returncode == 2, demo.stderr[-2000:]
    assert "Traceback" not in demo.stderr
    assert demo.stderr.strip().count("\n") == 0 and "pip install 'posync[demo]'" in demo.stderr
