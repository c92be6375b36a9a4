"""The layer scans' time loops in C++ (scan.cpp), built on first use by this machine's C++ compiler.

`elm_core.fast` runs a layer's forward and backward loops through these when they are available and
the layer fits them (CPU, float32, one hidden MLP layer), and through its Python loops otherwise: the
two give the same results to float32 rounding (tests/elm_core/test_native.py).

The build needs a C++ compiler and ninja (`pip install ninja`, in requirements.txt); it runs once per
machine, torch version and source, takes about a minute, and lands in the cache folder (`cache_dir()`),
where every later process finds it. Without a compiler the build fails, once per process, with the
reason in `status()`, and everything runs on the Python loops.

ELMLAB_NATIVE selects: `auto` (default) use the loops when they build, `0` never, `1` always (an error
if they do not build). ELMLAB_NATIVE_CACHE moves the cache folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("scan.cpp")
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-tree-loop-distribute-patterns"]
MODES = ("auto", "0", "1")

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "ops": None, "reason": None}


class NativeUnavailable(RuntimeError):
    """ELMLAB_NATIVE=1 and the native loops do not build or load."""


def mode() -> str:
    value = os.environ.get("ELMLAB_NATIVE", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"ELMLAB_NATIVE: must be one of {', '.join(MODES)}, not {value!r}")
    return value


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def build_key() -> str:
    """What the build depends on: the source, the flags, torch, Python and the CPU (-march=native)."""
    h = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(CFLAGS).encode(),
        torch.__version__.encode(),
        platform.python_version().encode(),
        _cpu_flags().encode(),
    ):
        h.update(part)
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    root = os.environ.get("ELMLAB_NATIVE_CACHE") or Path.home() / ".cache" / "elmlab" / "native"
    return Path(root) / build_key()


def _build() -> Any:
    from torch.utils import cpp_extension

    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # ninja from requirements.txt lives beside this interpreter, which need not be on PATH
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    cpp_extension.load(
        name="elm_native",
        sources=[str(SOURCE)],
        extra_cflags=CFLAGS,
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.elm_native


def load() -> Any | None:
    """The native ops (`torch.ops.elm_native`), building them if needed; None when off or unavailable."""
    chosen = mode()
    if chosen == "0":
        return None
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["ops"] = _build()
            except Exception as exc:  # noqa: BLE001 - any build or load failure means: use the Python loops
                _state["reason"] = _reason(exc)
                log.warning("native scan loops unavailable, using the Python loops (%s)", _state["reason"])
    if _state["ops"] is None and chosen == "1":
        raise NativeUnavailable(f"ELMLAB_NATIVE=1 but the native scan loops did not build: {_state['reason']}")
    return _state["ops"]


def _reason(exc: BaseException) -> str:
    """One line for a failed build: the compiler's first error if it printed one."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    errors = [ln for ln in lines if "error" in ln.lower() and not ln.startswith("[")]
    return f"{type(exc).__name__}: {(errors or lines)[0]}"[:500]


def status() -> dict[str, Any]:
    """Whether the native loops are in use, and why not when they are not (builds them if needed)."""
    chosen = mode()
    ops = load() if chosen != "0" else None
    reason = "ELMLAB_NATIVE=0" if chosen == "0" else _state["reason"]
    return {"mode": chosen, "available": ops is not None, "reason": reason, "cache": str(cache_dir())}
