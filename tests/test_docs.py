"""The documentation works as written: generated reference pages match the code, the MkDocs site builds with
``--strict``, every ``hpi`` command in the README and the docs names real subcommands and options (the cheap ones
run), Python examples compile, relative links resolve, every environment variable the code reads is documented, and
the README stays a front door (about 200 lines, CI's exact test command).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

from hpi import docs
from hpi.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 220
# Pages that other branches add (serving, Ray, Triton, tuning, selection, exit codes). A link to one of them is
# skipped only while the page is absent; once it exists the link is checked like any other.
PENDING_PAGES = {"docs/guides/serving.md", "docs/guides/ray.md", "docs/guides/triton.md", "docs/guides/tuning.md",
                 "docs/guides/int8.md", "docs/concepts/selection.md", "docs/reference/exit-codes.md"}
# Documented commands that run here in seconds, without a model or a server: run them, not only parse them.
CHEAP = {("--help",), ("backends",), ("models",), ("cache", "list"), ("zoo", "list")}


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def fenced_blocks(text: str, languages: set[str]) -> list[str]:
    """The bodies of the fenced code blocks of ``text`` in one of ``languages``."""
    blocks, body, inside = [], [], None
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and inside is None:
            inside = fence.group(1)
            body = []
        elif fence and inside is not None:
            if inside in languages:
                blocks.append("\n".join(body))
            inside = None
        elif inside is not None:
            body.append(line)
    return blocks


def hpi_commands(text: str) -> list[list[str]]:
    """The argument lists of every ``hpi ...`` / ``python -m hpi ...`` command in the shell blocks of ``text``
    (continuation lines joined, comments and environment assignments dropped, ``&&`` / ``;`` / ``|`` split)."""
    commands = []
    for block in fenced_blocks(text, {"bash", "sh", "shell", "console"}):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue
            segment: list[str] = []
            for token in [*tokens, "&&"]:
                if token in ("&&", "||", ";", "|"):
                    while segment and re.match(r"^[A-Z_][A-Z0-9_]*=", segment[0]):
                        segment.pop(0)  # VAR=value hpi ...
                    if segment[:1] == ["hpi"]:
                        commands.append(segment[1:])
                    elif segment[:3] == ["python", "-m", "hpi"]:
                        commands.append(segment[3:])
                    segment = []
                else:
                    segment.append(token)
    return commands


def parse_error(argv: list[str]) -> str | None:
    """None when ``hpi ARGV`` parses (a subcommand and options that exist, values they accept); else argparse's
    message."""
    out, err = StringIO(), StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip() or f"exit {exc.code}"
    return None


# ------------------------------------------------------------------------------------------- generated pages


@pytest.mark.parametrize("page", sorted(docs.PAGES))
def test_generated_reference_page_matches_the_code(page):
    path = ROOT / page
    assert path.exists(), f"{page} is missing: run `{docs.REGENERATE}`"
    assert path.read_text(encoding="utf-8") == docs.PAGES[page](), (
        f"{page} differs from what the code gives: run `{docs.REGENERATE}` and commit the page")


def test_cli_reference_names_every_command_and_option():
    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    seen = 0
    for name, _, sub in docs._subcommands(parser):
        assert f"## `hpi {name}`" in text
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in text, f"hpi {name} {option} is not in the CLI reference"
                    seen += 1
    assert seen > 50  # the parser really was walked


def test_config_reference_names_every_key():
    import dataclasses

    from hpi.config import AccuracyGate, HpiConfig

    text = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    for cls in (HpiConfig, AccuracyGate):
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in text, f"{cls.__name__}.{f.name} is not in the config reference"


def test_field_comments_reads_trailing_and_block_comments():
    from hpi.config import HpiConfig

    comments = docs.field_comments(HpiConfig)
    assert comments["threads"].startswith("CPU threads for every candidate")  # a comment at the end of the line
    assert comments["gate_data"].startswith("The accuracy gate also judges")  # a block above the field


def test_check_mode_reports_a_stale_page(tmp_path):
    for page, make in docs.PAGES.items():
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text(make(), encoding="utf-8")
    assert docs.main(["--check", "--root", str(tmp_path)]) == 0
    stale = tmp_path / "docs" / "reference" / "cli.md"
    stale.write_text(stale.read_text(encoding="utf-8") + "\nhand edit\n", encoding="utf-8")
    assert docs.stale_pages(tmp_path) == ["docs/reference/cli.md"]
    assert docs.main(["--check", "--root", str(tmp_path)]) == 1


def test_every_error_class_is_on_the_errors_page():
    text = (DOCS / "reference" / "errors.md").read_text(encoding="utf-8")
    for path in (ROOT / "hpi").rglob("*.py"):
        for name in re.findall(r"^class (\w+)\(\w*Error\b", path.read_text(encoding="utf-8"), re.MULTILINE):
            assert f"**`{name}`**" in text, f"{name} ({path.relative_to(ROOT)}) is not on the errors page"


# ------------------------------------------------------------------------------------------------ the site


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    # No --quiet: it raises the log level above WARNING, and --strict then has no warning to count.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], cwd=config.parent, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_mkdocs_build_strict_passes(tmp_path):
    done = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    api = (tmp_path / "site" / "reference" / "python-api" / "index.html").read_text(encoding="utf-8")
    assert "create_model" in api and "PredictionError" in api  # mkdocstrings rendered the docstrings


@pytest.mark.slow
def test_mkdocs_strict_fails_on_a_broken_link(tmp_path):
    # The same site with one link to a page that does not exist: --strict must refuse it, or the test above
    # proves nothing.
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copytree(DOCS, copy / "docs")
    shutil.copytree(ROOT / "hpi", copy / "hpi", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "benchmarks" / "results", copy / "benchmarks" / "results")
    index = copy / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "\n\n[gone](concepts/no-such-page.md)\n", encoding="utf-8")
    done = mkdocs_build(copy / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr


# ------------------------------------------------------------------------------------ commands as written


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in markdown_files():
        for argv in hpi_commands(path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(ROOT)), argv))
    return found


def test_the_readme_has_hpi_commands():
    argvs = [argv for page, argv in documented_commands() if page == "README.md"]
    assert len(argvs) >= 10
    assert ["bench"] in argvs  # the main job of the set-up section


@pytest.mark.parametrize("page,argv", documented_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_documented_command_names_real_options(page, argv):
    if "..." in argv:
        pytest.skip("an elided command (...) is not meant to run as written")
    error = parse_error(argv)
    assert error is None, f"{page}: `hpi {' '.join(argv)}` does not parse: {error}"


def test_command_extraction_finds_every_form():
    text = ("```bash\nhpi bench --model A  # comment\nHPI_MAX_CPU_ISA=avx2 python -m hpi backends\n"
            "pip install x && hpi serve --pipeline p \\\n    --port 1\necho hpi\n```\n```python\nhpi.create_model()\n```\n")
    assert hpi_commands(text) == [["bench", "--model", "A"], ["backends"], ["serve", "--pipeline", "p", "--port", "1"]]
    assert parse_error(["bench", "--no-such-flag"]) is not None
    assert parse_error(["no-such-command"]) is not None
    assert parse_error(["bench", "--batch-sizes", "1,8"]) is None


def cheap_commands() -> list[list[str]]:
    seen, out = set(), []
    for _, argv in documented_commands():
        key = tuple(argv)
        if key not in seen and any(tuple(argv[:len(c)]) == c for c in CHEAP):
            seen.add(key)
            out.append(argv)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("argv", cheap_commands(), ids=" ".join)
def test_cheap_documented_command_runs(argv, tmp_path):
    env = {**os.environ, "HPI_CACHE_DIR": str(tmp_path / "cache"), "HPI_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "hpi", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, f"hpi {' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}"
    assert done.stdout.strip()


def test_cheap_commands_include_the_readme_ones():
    runs = {tuple(a) for a in cheap_commands()}
    assert ("backends", "--device", "cpu") in runs and ("--help",) in runs


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_compile(path):
    for block in fenced_blocks(path.read_text(encoding="utf-8"), {"python", "py"}):
        if block.lstrip().startswith(">>>"):
            continue
        compile(block, str(path), "exec")


# --------------------------------------------------------------------------------------------- the README


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (at most ~200)"


def test_readme_test_command_is_what_ci_runs():
    readme = README.read_text(encoding="utf-8")
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.startswith("pip install")]
    assert len(ci) == 1
    assert f"```bash\n{ci[0]}\n```" in readme, "README's test command and .ci/run differ"


def test_readme_holds_no_emulated_rows():
    readme = README.read_text(encoding="utf-8").lower()
    assert "emulated" not in readme


def test_readme_links_resolve():
    # The docs pages' links are checked by mkdocs build --strict; the README is outside the site.
    broken = []
    for path in [README]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):
                continue
            resolved = (path.parent / target).resolve()
            rel = os.path.relpath(resolved, ROOT)
            if not resolved.exists() and rel not in PENDING_PAGES:
                broken.append(target)
    assert not broken, f"README links to missing files: {broken}"


# ------------------------------------------------------------------------------------ environment variables


def environment_variables_read() -> set[str]:
    names = set()
    pattern = re.compile(r"""(?:environ(?:\.get|\.setdefault|\.pop)?\s*[(\[]\s*|getenv\(\s*)["']([A-Z][A-Z0-9_]+)["']""")
    constant = re.compile(r"""^\w*_ENV\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", re.MULTILINE)
    for path in (ROOT / "hpi").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names |= set(pattern.findall(text)) | set(constant.findall(text))
    return names


def test_every_environment_variable_is_documented():
    names = environment_variables_read()
    assert {"HPI_CACHE_DIR", "HPI_HOME", "HPI_MAX_CPU_ISA"} <= names  # the scan finds what it must
    page = (DOCS / "reference" / "environment.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"environment variables hpi reads but docs/reference/environment.md does not list: {missing}"
