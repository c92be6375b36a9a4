"""ELM Lab's library: the ELM Network, its parameter budget, data, training, the results store and analysis.

The public API is re-exported here and imported lazily, so that `import elm_core.store` (say) does
not pay for importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ELMConfig": "elm_core.config",
    "LayerSpec": "elm_core.config",
    "ELMNetwork": "elm_core.model",
    "ELMState": "elm_core.model",
    "count_params": "elm_core.budget",
    "allocate": "elm_core.budget",
    "iso_budget": "elm_core.budget",
    "flops_per_step": "elm_core.budget",
    "breakdown": "elm_core.budget",
    "from_reference_npz": "elm_core.interop",
    "RunRecord": "elm_core.records",
    "Settings": "elm_core.settings",
    "get_settings": "elm_core.settings",
    "train": "elm_core.train",
    "RunSpec": "elm_core.spec",
}

__all__ = sorted(_EXPORTS) + ["interop"]


def __getattr__(name: str) -> Any:
    if name == "interop":
        return importlib.import_module("elm_core.interop")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'elm_core' has no attribute {name!r}")
