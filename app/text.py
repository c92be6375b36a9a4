"""Numbers to text and back, and the names of columns, for every page and figure (no Streamlit here).

`human` writes a count the way the budget boxes read it back (`parse_ints("60k")` == 60_000), so a
default typed by the dashboard round-trips through the parser.
"""

from __future__ import annotations

import datetime as dt
import math

METRICS: dict[str, str] = {
    "test_metric": "test",
    "valid_metric": "validation",
    "best_valid_metric": "best validation",
    "train_metric": "train",
}
COST_AXES: dict[str, str] = {
    "params": "parameters",
    "flops_per_step": "FLOPs per step",
    "wall_time_s": "wall time (s)",
}
ALLOCATION_LABELS: dict[str, str] = {
    "d_m": "d_m (memory units per neuron)",
    "k_e": "k_e (per-neuron complexity)",
    "n_neurons": "N (neurons)",
    "k_e_frac": "k_e / (k_e + k_c)",
}
SCALING_AXES: dict[str, tuple[str, ...]] = {  # axis -> the columns held fixed along it (claim 1)
    "n_neurons": ("k_e", "k_c"),
    "k_e": ("n_neurons", "k_c"),
    "k_c": ("n_neurons", "k_e"),
}
LABELS: dict[str, str] = {  # axis titles
    **ALLOCATION_LABELS,
    **COST_AXES,
    "k_c": "k_c (per-neuron connectivity)",
    "budget": "budget (parameters)",
}


def human(n: float | None, digits: int = 3) -> str:
    """1234 -> '1.23k', 3516748 -> '3.52M' (`digits` significant digits); '-' for None or not finite."""
    if n is None or not math.isfinite(float(n)):
        return "-"
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}g}{unit}"
    return f"{n:.{digits}g}"


def duration(seconds: float | None) -> str:
    """Seconds as a person reads them: '45 s', '12 min', '3.5 h', '4.2 days'; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def live_line(status: str, progress: dict) -> str:
    """A training run's progress in one line: 'step 5/20 · loss 1.234 · 812 tokens/s · ETA 30 s · w1'
    (loss in nats, as the worker reports it); 'queued' or 'starting' before the first step."""
    total, step = progress.get("total_steps") or 0, progress.get("step") or 0
    if not total:
        return "queued, waiting for a worker" if status == "queued" else "starting"
    loss = "-" if progress.get("loss") is None else f"{progress['loss']:.3f}"
    worker = f" · {progress['worker']}" if progress.get("worker") else ""
    return (f"step {step:,}/{total:,} · loss {loss} · {progress.get('tokens_per_s') or 0:,.0f} tokens/s · "
            f"ETA {duration(progress.get('eta_s'))}{worker}")


def plain(value: object) -> str:
    """A table cell as text: floats to 6 significant digits, lists joined by commas, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def timestamp(seconds: float) -> str:
    """Seconds since the epoch as '2026-12-01 09:30:00 UTC'."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def label(column: str, metric_name: str | None = None) -> str:
    """An axis title: 'test_metric' with metric 'bpc' -> 'test BPC'; other columns from LABELS."""
    if column.endswith("_metric"):
        split = column.removesuffix("_metric").replace("_", " ")
        unit = {"bpc": "BPC", "accuracy": "accuracy"}.get(metric_name or "", "metric")
        return f"{split} {unit}"
    return LABELS.get(column, column)


def parse_number(text: str) -> float:
    """'60k' -> 60000.0, '1.5M' -> 1.5e6, '1e-3' -> 0.001 (k, M, G suffixes); ValueError otherwise."""
    part = text.strip().lower()
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(part[-1:], 1.0)
    value = float(part[:-1] if scale != 1.0 else part) * scale
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def parse_ints(text: str, what: str) -> list[int]:
    """'2, 4, 8' -> [2, 4, 8] (also accepts 1e5, 60k, 1.5M), sorted and deduplicated; ValueError
    naming `what` (the box it was typed in) and the part that is wrong."""
    out = []
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        part = part.strip().lower()
        if not part:
            continue
        scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(part[-1], 1.0)
        try:
            value = float(part[:-1] if scale != 1.0 else part) * scale
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{what}: {part!r} is not a finite number")
        if value <= 0:
            raise ValueError(f"{what}: {part!r} must be positive")
        out.append(int(round(value)))
    if not out:
        raise ValueError(f"{what}: give at least one value")
    return sorted(set(out))
