"""The learning curve the worker publishes with its progress stays small and spans the whole run."""

from __future__ import annotations

from workers.tasks import CURVE_POINTS, RecentCurve


def test_recent_curve_keeps_the_whole_run_in_a_bounded_payload():
    buffer = RecentCurve()
    for step in range(1, 5001):
        curve = buffer.add({"step": step, "train_loss": 1.0, "valid_metric": 1.0 if step % 100 == 0 else None})
        assert len(curve) <= CURVE_POINTS
    steps = [p["step"] for p in curve]
    assert steps[0] == 1 and steps[-1] == 5000 and steps == sorted(steps)
    train = [p["step"] for p in curve if p["valid_metric"] is None]
    gaps = [b - a for a, b in zip(train, train[1:-1], strict=False)]
    assert max(gaps) - min(gaps) <= 1 and max(gaps) <= 5000 / (CURVE_POINTS // 4)  # even spacing, no hole
    valid = [p["step"] for p in curve if p["valid_metric"] is not None]
    assert valid[0] == 100 and valid[-1] == 5000 and len(valid) >= CURVE_POINTS // 4
