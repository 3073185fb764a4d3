"""Caches that a runtime writes itself (ONNX Runtime's and Paddle's TensorRT engines), kept as sealed entries.

ONNX Runtime's TensorRT provider and Paddle-TensorRT serialise the engines they build into a directory they are
given. Pointing them at an engine-cache entry would let them write after its manifest is sealed and outside its
lock. Instead the entry is built by a warm-up: under the cache's lock, a throwaway session is created with the
entry's temporary directory as its cache and run once, and the cache seals what it wrote. A session that serves
requests then gets a private copy of the sealed entry (:class:`ScratchCopy`): whatever the runtime writes later
(an engine for a shape outside the warmed profile) goes there and is dropped on close.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpi.cache import EngineCache

README = "README"


class ScratchCopy:
    """A private, writable copy of a sealed entry's files; removed by :meth:`close`."""

    def __init__(self, cache: EngineCache, entry: Path) -> None:
        scratch_root = cache.root / ".scratch"
        scratch_root.mkdir(parents=True, exist_ok=True)
        self.entry = entry
        self.path = Path(tempfile.mkdtemp(prefix=f"{entry.name}-", dir=scratch_root))
        shutil.copytree(entry, self.path, dirs_exist_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def warmed_copy(cache: EngineCache, kind: str, parts: Mapping[str, Any], warm_up: Callable[[Path], None],
                what: str) -> ScratchCopy:
    """The runtime cache for ``parts``: built once by ``warm_up(directory)`` under the lock, then copied.

    Args:
        cache: the engine cache.
        kind: the entry kind (``ort-trt``, ``paddle-optim``).
        parts: everything that determines what the runtime writes.
        warm_up: creates a session whose cache directory is the given one and runs it once.
        what: one line for the entry's README (an entry always holds at least one file).
    """

    def build(out: Path) -> None:
        (out / README).write_text(what + "\n", encoding="utf-8")
        warm_up(out)

    return ScratchCopy(cache, cache.get_or_build(kind, parts, build))
