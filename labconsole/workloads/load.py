"""Load presets: a producer's rate raised for a while from the lab page ("stress: 5,000
msg/s for 30 s"), for the course's stress tests. The one definition of each preset.

A running load is a producer setting, `load: {preset, rate, until}` (`until` in epoch
seconds): the producer publishes at the load's rate until then, and at its own `rate`
after, so a worker that takes the producer over mid-load goes on with it and a load
needs no message to end. The lab's monitor watches what the broker does meanwhile and
logs a summary when it ends (labconsole/flow/monitor.py, `LoadRun`).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field


class LoadPreset(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    rate: float = Field(gt=0)  # messages a second
    seconds: float = Field(gt=0)


LOAD_PRESETS: dict[str, LoadPreset] = {
    preset.name: preset
    for preset in (
        LoadPreset(name="spike", rate=1000, seconds=10),
        LoadPreset(name="stress", rate=5000, seconds=30),
    )
}


def load_setting(name: str, now: float | None = None) -> dict:
    """The producer setting that runs preset `name` from `now`."""
    preset = LOAD_PRESETS[name]
    start = time.time() if now is None else now
    return {"preset": name, "rate": preset.rate, "until": round(start + preset.seconds, 3)}


def running_load(settings: dict, now: float | None = None) -> dict | None:
    """The producer's load if one is running at `now` (epoch seconds)."""
    load = settings.get("load")
    if load and (time.time() if now is None else now) < float(load.get("until", 0)):
        return load
    return None


def effective_rate(settings: dict, now: float | None = None) -> float:
    """What the producer publishes at now: its load's rate while one runs, else its own."""
    load = running_load(settings, now)
    return float(load["rate"]) if load else float(settings.get("rate") or 1.0)
