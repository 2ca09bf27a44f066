"""Fakes for runner tests: a clock that only moves when a fake step runs."""

from __future__ import annotations

from bench.hw.device import Device, StepTimer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeDevice(Device):
    """A device whose timer reads the fake clock and which counts synchronisations."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.syncs = 0

    def synchronize(self) -> None:
        self.syncs += 1

    def make_timer(self) -> StepTimer:
        return StepTimer(self.clock)


class ScriptedStep:
    """A step whose duration follows a script: warm-up steps slow, then measured steps."""

    def __init__(self, clock: FakeClock, durations) -> None:
        self.clock = clock
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> None:
        d = self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        self.clock.advance(d)


def patch_everywhere(monkeypatch, module, name: str, replacement) -> None:
    """Replace ``module.name`` and every bench module's own binding of it (``from x import name``
    at the top binds the function where it is used): the seam the device and model fakes use."""
    import sys

    original = getattr(module, name)
    monkeypatch.setattr(module, name, replacement)
    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("bench.") and mod is not module and getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, replacement)
