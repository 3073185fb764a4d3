"""The README's test command collects every test file of the repository.

pytest's default ``norecursedirs`` once skipped a whole folder named like build output (``tests/build/``, 34 tests
never run); ``pyproject.toml`` now sets the list explicitly, and this test keeps it that way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_test_files() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files", "tests"], cwd=ROOT, capture_output=True, text=True, check=True,
                             timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):  # not a git checkout: every test file on disk
        out = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")]
    return {p for p in out if Path(p).name.startswith("test_") and p.endswith(".py")}


def test_every_tracked_test_file_is_collected_by_the_readme_command():
    # The README's command is plain `python -m pytest` from the repository root: collect exactly that.
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    collected = {line.split("::", 1)[0] for line in done.stdout.splitlines() if "::" in line}
    missing = sorted(tracked_test_files() - collected)
    assert not missing, f"test files the README's command never collects: {missing}\n{done.stdout[-2000:]}"


def test_no_folder_is_named_like_build_output():
    names = {"build", "dist", "out", "target"}
    offenders = [str(p.relative_to(ROOT)) for top in ("hpi", "tests") for p in (ROOT / top).rglob("*")
                 if p.is_dir() and p.name in names]
    assert not offenders, f"folders named like build output, which tools skip: {offenders}"
