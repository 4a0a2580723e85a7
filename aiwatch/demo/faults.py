"""The faults a demo scenario switches on in its middle stage, inside the services.

Each service keeps one :class:`Faults` and serves it at ``/demo/faults`` (``GET`` reads it, ``POST`` with a JSON
object changes the fields it names); the runner flips them when a stage starts and ends (:func:`set_faults`). The
faults are sleeps, never busy work, so a fault adds the time it says and no CPU:

- ``features_delay_ms`` (gateway): every fetch from the backing feature store takes this much longer;
- ``cold_cache`` (gateway): the feature cache was flushed and is not refilled while the fault lasts, so every lookup
  misses and goes to the (slow) backing store;
- ``model_delay_ms`` (inference): every model call takes this much longer, as on a GPU that throttles its clocks.

The network fault lives outside both services: a delaying, bandwidth-limiting proxy on the gateway -> inference hop
(:mod:`aiwatch.demo.slowlink`).
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from aiwatch.demo.slowlink import SlowLink

PATH = "/demo/faults"
#: The longest delay a fault takes (``--severity-ms`` is held to it too).
MAX_DELAY_MS = 60_000.0


@dataclass
class Faults:
    features_delay_ms: float = 0.0
    cold_cache: bool = False
    model_delay_ms: float = 0.0
    #: bumped each time the cold-cache fault is switched on: the cache's keys of the flushed generation are gone
    cache_generation: int = 0

    @property
    def features_delay(self) -> float:
        return self.features_delay_ms / 1000.0

    @property
    def model_delay(self) -> float:
        return self.model_delay_ms / 1000.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (field -> value); unknown fields and wrong types raise ``ValueError``."""
        known = {f.name: f for f in fields(self) if f.name != "cache_generation"}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r} (known: {sorted(known)})")
            if name == "cold_cache":
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false, got {value!r}")
                if value and not self.cold_cache:
                    self.cache_generation += 1
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_DELAY_MS:
                raise ValueError(f"{name} must be a number of milliseconds (0-{MAX_DELAY_MS:.0f}), got {value!r}")
            setattr(self, name, float(value) if name != "cold_cache" else value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_routes(app: FastAPI, faults: Faults) -> None:
    """Serve ``faults`` at ``GET`` / ``POST`` :data:`PATH` on a FastAPI ``app``."""
    from fastapi import Body, HTTPException

    @app.get(PATH)
    async def read_faults() -> dict[str, Any]:
        return faults.as_dict()

    @app.post(PATH)
    async def change_faults(changes: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's way
        try:
            faults.update(changes)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        return faults.as_dict()


def set_faults(base_url: str, timeout: float = 5.0, **changes: Any) -> dict[str, Any]:
    """``POST`` ``changes`` to a demo service's :data:`PATH`; returns its faults afterwards."""
    req = urllib.request.Request(f"{base_url.rstrip('/')}{PATH}", data=json.dumps(changes).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


class Injector:
    """The runner's side of one scenario's fault: :meth:`on` when the middle stage starts, :meth:`off` when it ends.

    ``link`` is the slow link on the gateway -> inference hop (the ``network`` scenario only)."""

    def __init__(self, scenario: str, severity_seconds: float, gateway_url: str, inference_url: str,
                 link: SlowLink | None = None) -> None:
        if scenario == "network" and link is None:
            raise ValueError("the network scenario needs the slow link on the gateway -> inference hop")
        self.scenario = scenario
        self.severity = severity_seconds
        self.gateway_url, self.inference_url = gateway_url, inference_url
        self.link = link

    def describe(self) -> str:
        """What :meth:`on` does, in words ("" for a scenario without a fault to switch)."""
        ms = f"+{self.severity * 1000:g} ms"
        return {"network": f"gateway -> inference link congested, {ms} per round trip",
                "feature-store": f"feature store {ms} per fetch, cache flushed",
                "model": f"model {ms} per call"}.get(self.scenario, "")

    def on(self) -> None:
        self._switch(True)

    def off(self) -> None:
        self._switch(False)

    def _switch(self, on: bool) -> None:
        ms = self.severity * 1000.0 if on else 0.0
        if self.scenario == "network" and self.link is not None:
            if on:
                self.link.congest(self.severity)
            else:
                self.link.clear()
        elif self.scenario == "feature-store":
            set_faults(self.gateway_url, features_delay_ms=ms, cold_cache=on)
        elif self.scenario == "model":
            set_faults(self.inference_url, model_delay_ms=ms)
