"""hpi: high-performance inference for PaddleX / PaddleClas vision models.

>>> import hpi
>>> model = hpi.create_model("PP-LCNet_x1_0", model_dir="path/to/PP-LCNet_x1_0_infer", device="cpu")
>>> for res in model.predict("cat.jpg", topk=5):
...     res.print()
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from hpi.cpu import apply_isa_cap
from hpi.errors import InvalidConfigError
from hpi.version import __version__

# HPI_MAX_CPU_ISA: before any engine loads (hpi.cpu.isa_cap). A bad value is named where hpi first needs this
# CPU's flags, not at import.
with contextlib.suppress(InvalidConfigError):
    apply_isa_cap()

if TYPE_CHECKING:
    from hpi.models.base import LoadedModel


def create_model(
    model_name: str,
    model_dir: str | None = None,
    *,
    device: str | None = None,
    use_hpip: bool = False,
    hpi_config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> LoadedModel:
    """Load a model for inference, as PaddleX's ``create_model`` does: a classifier, feature model or detector,
    by the task in its ``inference.yml``. See :func:`hpi.api.create_model`."""
    from hpi.api import create_model as _create_model

    return _create_model(model_name, model_dir, device=device, use_hpip=use_hpip, hpi_config=hpi_config, **kwargs)


def create_pipeline(pipeline: str | None = None, **kwargs: Any) -> Any:
    """Build a pipeline by name or YAML path. See :func:`hpi.pipelines.create_pipeline`."""
    from hpi.pipelines import create_pipeline as _create_pipeline

    return _create_pipeline(pipeline, **kwargs)


__all__ = ["__version__", "create_model", "create_pipeline"]
