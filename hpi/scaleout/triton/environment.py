"""The Python environment a repository's Python-backend models run in: an installed hpi, pinned.

The models of an exported repository import hpi (its decoder, preprocessing kernels, top-k) from the Python
environment of the Triton server's python backend, as Triton's own examples install their dependencies there. The
export writes ``requirements.txt`` beside the models naming the hpi it was exported with (its version, and the
source tree, wheel or URL it was installed from) and the packages the models import; every model checks at load
time that the installed hpi has the exported version.

:func:`server_environment` builds such an environment for a local trial: a virtual environment with
``nvidia-pytriton`` (whose wheel bundles a real ``tritonserver`` with only the Python backend; it pins numpy<2, so
it cannot share hpi's own environment) plus the repository's requirements.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from hpi.errors import BackendUnavailableError, ExportError
from hpi.version import __version__

REQUIREMENTS_FILE = "requirements.txt"
# The server itself, and the bounds its numpy<2 pin forces on the rest (OpenCV 4.12 needs numpy 2).
SERVER_REQUIREMENTS = ("nvidia-pytriton>=0.7,<0.8", "numpy<2", "opencv-python-headless>=4.8,<4.12")
ONNXRUNTIME_REQUIREMENT = "onnxruntime>=1.18"
PYVER = f"{sys.version_info[0]}.{sys.version_info[1]}"
STAMP = ".hpi-environment"
_HPI_ROOT = Path(__file__).resolve().parents[2]  # the hpi package directory


def package_hash() -> str:
    """SHA-256 over hpi's own Python files (names and bytes): which hpi code a repository was exported with."""
    digest = hashlib.sha256()
    for path in sorted(_HPI_ROOT.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(_HPI_ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _source_tree() -> Path | None:
    """The source checkout this hpi runs from (a ``pyproject.toml`` naming hpi above the package), or None."""
    root = _HPI_ROOT.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "hpi"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def hpi_requirement(extras: Sequence[str] = ()) -> tuple[str, str]:
    """The requirement line that installs *this* hpi, and where it comes from.

    A source checkout: ``hpi @ file:///path`` (the tree this process imports hpi from). An installed wheel or URL:
    its ``direct_url.json`` (PEP 610). Otherwise ``hpi==VERSION`` from the package index pip is configured with.
    """
    name = f"hpi[{','.join(extras)}]" if extras else "hpi"
    tree = _source_tree()
    if tree is not None:
        return f"{name} @ {tree.as_uri()}", f"the source tree {tree}"
    try:
        direct = metadata.distribution("hpi").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        direct = None
    if direct:
        url = json.loads(direct).get("url")
        if url:
            return f"{name} @ {url}", f"the install origin {url}"
    return f"{name}=={__version__}", "the package index pip is configured with"


def requirements_text(*, needs_onnxruntime: bool, needs_serve: bool, hpi_line: str | None = None) -> str:
    """The content of a repository's ``requirements.txt``.

    Args:
        needs_onnxruntime: a Python model runs the network (the ``python`` engine, the PaddleX layout).
        needs_serve: a model draws hpi serve's visualisation (the PaddleX layout: ``hpi[serve]``).
        hpi_line: the requirement for hpi (a wheel path, ``hpi==X`` from a private index, ...); default: how this
            hpi is installed (:func:`hpi_requirement`).
    """
    extras = ("serve",) if needs_serve else ()
    origin = "given at export"
    if hpi_line is None:
        hpi_line, origin = hpi_requirement(extras)
    lines = [
        "# The Python packages this repository's Python-backend models import, for the Python environment of the",
        "# Triton server's python backend: pip install -r requirements.txt (see README.md beside this file).",
        f"# Exported by hpi {__version__} (package sha256 {package_hash()[:16]}), installed from {origin};",
        f"# the models refuse to load under another hpi version than {__version__}.",
        hpi_line,
    ]
    if needs_onnxruntime:
        lines.append(ONNXRUNTIME_REQUIREMENT)
    return "\n".join(lines) + "\n"


def readme_text(*, entry_model: str, models: Sequence[str], engine_backend: str, gpu: bool) -> str:
    """The repository's README.md: what it holds, what the server's Python environment needs, how to start it."""
    python_only = engine_backend == "python" and not gpu
    server = ("any Triton server with the python backend, for example the one inside the `nvidia-pytriton` wheel "
              "(`hpi triton serve` starts it)" if python_only else
              f"a Triton server with the `{engine_backend}` and `python` backends, for example NVIDIA's Triton "
              "container (nvcr.io/nvidia/tritonserver:<yy.mm>-py3); the `nvidia-pytriton` wheel's server has only "
              "the python backend and cannot load the engine model. Unverified: hpi's tests have not run this "
              "variant on a full Triton server; its configs are checked against Triton's schema only")
    trial = ("Local trial on this machine (creates its own virtual environment with `nvidia-pytriton` and the "
             "requirements):\n\n    python -m hpi triton serve .\n" if python_only else
             "For a local trial on `nvidia-pytriton`'s server, export again with `--engine-backend python` and run "
             "`python -m hpi triton serve REPO`.\n")
    return f"""# Triton model repository written by hpi {__version__}

Models: {", ".join(f"`{m}`" for m in models)}. Clients call `{entry_model}`.
`hpi_manifest.json` records the decision, the plan, the outputs the repository must give on hpi's built-in photos,
and the size and SHA-256 of every file (`python -m hpi triton verify .` checks them).

## The server's Python environment

The Python-backend models import hpi from the Python environment of the server's python backend; nothing of hpi
is copied here. Install the pinned requirements into that environment before starting the server:

    pip install -r requirements.txt

In NVIDIA's Triton container that is the container's own `python3` (run the command inside it, or build an image
`FROM nvcr.io/nvidia/tritonserver:<yy.mm>-py3` that runs it). Alternatively pack an environment with conda-pack and
point each Python model at it with the `EXECUTION_ENV_PATH` parameter, as Triton's python backend documents.

## Which server

This repository needs {server}.

{trial}"""


def unsupported_reason() -> str | None:
    """Why this platform cannot run the ``nvidia-pytriton`` wheel's server (built for Linux x86-64), or None."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"nvidia-pytriton ships tritonserver for Linux x86-64 only, this is {sys.platform} {platform.machine()}"
    dirs = [sysconfig.get_config_var("LIBDIR") or "", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64", "/usr/local/lib"]
    if not any(list(Path(d).glob(f"libpython{PYVER}.so*")) for d in dirs if d and Path(d).is_dir()):
        return (f"Triton's Python backend stub links libpython{PYVER}.so, which is not on this machine "
                f"(looked in {', '.join(d for d in dirs if d)}); install your distribution's libpython{PYVER} package")
    return None


def default_venv() -> Path:
    """Where :func:`server_environment` keeps its virtual environment: ``$HPI_TRITON_VENV``, else one per Python
    version and server requirements under hpi's cache directory."""
    override = os.environ.get("HPI_TRITON_VENV")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    digest = hashlib.sha256("\n".join((PYVER, *SERVER_REQUIREMENTS)).encode()).hexdigest()[:12]
    return Path(user_cache_dir("hpi")) / f"triton-server-{digest}"


def _stage_source_tree(tree: Path, into: Path) -> Path:
    """A clean copy of hpi's packaging files, so pip builds outside the checkout (no build/ in the user's tree)."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (tree / name).is_file():
            shutil.copy2(tree / name, into / name)
    shutil.copytree(tree / "hpi", into / "hpi", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return into


def server_environment(requirements: Path, venv: Path | None = None, *, timeout_s: float = 1800,
                       progress: Callable[[str], None] | None = None) -> Path:
    """A virtual environment with the pytriton-bundled ``tritonserver`` and a repository's requirements.

    Created with ``pip install`` from the package index on first use; a stamp records what was installed (the
    requirement lines and, for a source-tree hpi, its package hash), so an environment that already has every line
    is reused at once and a changed hpi is reinstalled. Concurrent callers wait for one another (a file lock).

    Raises:
        BackendUnavailableError: this platform cannot run the server (:func:`unsupported_reason`).
        ExportError: creating the venv or installing failed; the message has pip's last lines.
    """
    from filelock import FileLock

    reason = unsupported_reason()
    if reason:
        raise BackendUnavailableError(reason)
    say = progress or (lambda _msg: None)
    venv = venv or default_venv()
    lines = [ln.strip() for ln in requirements.read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    tree_line = next((ln for ln in lines if ln.startswith("hpi") and "@ file:" in ln), None)
    base = {"python": PYVER, "server": list(SERVER_REQUIREMENTS), "hpi": package_hash() if tree_line else None}
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock", timeout=timeout_s):
        stamp = venv / STAMP
        python = venv / "bin" / "python"
        try:
            installed = json.loads(stamp.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            installed = {}
        have = set(installed.get("lines", [])) if {k: installed.get(k) for k in base} == base else set()
        if python.exists() and set(lines) <= have:
            return venv  # everything asked for is installed, with this hpi
        with tempfile.TemporaryDirectory(prefix="hpi-triton-env-") as tmp:
            reqs = list(lines)
            if tree_line:  # build from a clean copy of the tree the line names, reinstalled whatever pip caches
                name, url = (part.strip() for part in tree_line.split("@", 1))
                staged = _stage_source_tree(Path(unquote(urlparse(url).path)), Path(tmp))
                reqs[reqs.index(tree_line)] = f"{name} @ {staged.as_uri()}"
            steps = [] if python.exists() else [[sys.executable, "-m", "venv", str(venv)]]
            steps.append([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                          *SERVER_REQUIREMENTS, *reqs])
            if tree_line:
                steps.append([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                              "--force-reinstall", str(staged)])
            for cmd in steps:
                say(" ".join(cmd[:6]) + (" ..." if len(cmd) > 6 else ""))
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
                if done.returncode != 0:
                    tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
                    raise ExportError(f"preparing the Triton server environment {venv} failed "
                                      f"({' '.join(cmd[:5])} ...):\n{tail}")
        # hpi installed with extras satisfies the same hpi without them (the PaddleX layout asks for hpi[serve]).
        plain = {re.sub(r"^hpi\[[^\]]*\]", "hpi", line) for line in lines}
        stamp.write_text(json.dumps({**base, "lines": sorted(have | set(lines) | plain)}), encoding="utf-8")
    return venv
