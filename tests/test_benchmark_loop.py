"""netdsl.benchmark: round trips are timed by the one timed loop, each phase inside every trip."""

from __future__ import annotations

from netdsl import benchmark


class _Bound:
    def __init__(self, log):
        self.log = log

    def synchronize(self):
        self.log.append("sync")

    def run(self):
        self.log.append("run")

    def fetch(self):
        self.log.append("fetch")
        return {}


class _Runner:
    def __init__(self):
        self.log = []

    def bind(self, feeds):
        self.log.append("bind")
        return _Bound(self.log)


def test_round_trips_go_through_time_calls(monkeypatch):
    loops = []
    real = benchmark.time_calls

    def counting(fn, duration, min_iterations, progress=None):
        loops.append(min_iterations)
        return real(fn, duration, min_iterations, progress)

    monkeypatch.setattr(benchmark, "time_calls", counting)
    runner = _Runner()
    phases, wall = benchmark.time_round_trips(runner, {}, 0.0, 3)
    assert loops == [3]
    assert runner.log == ["bind", "sync", "run", "sync", "fetch"] * 3
    assert {k: len(v) for k, v in phases.items()} == {"h2d": 3, "compute": 3, "d2h": 3, "total": 3}
    for h, c, d, t in zip(phases["h2d"], phases["compute"], phases["d2h"], phases["total"], strict=True):
        assert abs(h + c + d - t) < 1e-9
    assert wall >= sum(phases["total"])
