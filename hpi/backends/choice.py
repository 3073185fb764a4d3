"""The record of which backend runs a model and why: what the model layer keeps, and what the selection layer
decides (:func:`hpi.selection.choice.resolve_choice`).

It lives beside the backend configs, below both layers, so that a loaded model can hold its choice without
importing the machinery that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpi.backends.base import BackendConfig


@dataclass(frozen=True)
class BackendChoice:
    """The decision of which backend, precision and config run a model, and why."""

    backend: str
    config: BackendConfig
    reason: str  # one line a person can read
    mode: str  # "normal", "explicit", "measured", "static"

    @property
    def precision(self) -> str:
        return self.config.precision
