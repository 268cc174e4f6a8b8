"""Timing knobs: how long the AWS durations that Auto Scaling and the load balancer wait for
really last here, so that tests run in seconds.

Each AWS-configured duration is multiplied by its scale: health check interval and timeout
(target group), health check grace period and instance warm-up (Auto Scaling), the target
group's deregistration delay, and instance refresh checkpoint delays and bake time. `scale`
sets all of them at once; a specific scale overrides it. `refresh_timeout` is how long (real
seconds) an instance refresh may go without a replacement becoming healthy before it fails.

    POST /_local_ec2/timing {"scale": 0.1, "refresh_timeout": 20}
"""

from __future__ import annotations

import threading

SCALES = ("health_check_scale", "grace_scale", "drain_scale", "checkpoint_scale")
DEFAULT_REFRESH_TIMEOUT = 600.0


class Timing:
    def __init__(self, scale: float = 1.0) -> None:
        self.lock = threading.Lock()
        self.default_scale = scale
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.scale = self.default_scale
            self.specific: dict[str, float] = {}
            self.refresh_timeout = DEFAULT_REFRESH_TIMEOUT

    def update(self, spec: dict) -> None:
        if not isinstance(spec, dict):
            raise ValueError("timing: a JSON object")
        unknown = set(spec) - {"scale", "refresh_timeout", *SCALES}
        if unknown:
            raise ValueError(f"timing: unknown keys {sorted(unknown)} (known: scale, refresh_timeout, {', '.join(SCALES)})")
        values = {}
        for k, v in spec.items():
            if v is None and k in SCALES:
                values[k] = None
                continue
            f = float(v)
            if f < 0 or (k == "refresh_timeout" and f <= 0):
                raise ValueError(f"timing: {k} must be positive")
            values[k] = f
        with self.lock:
            for k, v in values.items():
                if k == "scale":
                    self.scale = v
                elif k == "refresh_timeout":
                    self.refresh_timeout = v
                elif v is None:
                    self.specific.pop(k, None)
                else:
                    self.specific[k] = v

    def _scale(self, name: str) -> float:
        with self.lock:
            return self.specific.get(name, self.scale)

    def health_check(self, seconds: float) -> float:
        return float(seconds) * self._scale("health_check_scale")

    def grace(self, seconds: float) -> float:
        return float(seconds) * self._scale("grace_scale")

    def drain(self, seconds: float) -> float:
        return float(seconds) * self._scale("drain_scale")

    def checkpoint(self, seconds: float) -> float:
        return float(seconds) * self._scale("checkpoint_scale")

    def to_json(self) -> dict:
        with self.lock:
            out = {"scale": self.scale, "refresh_timeout": self.refresh_timeout}
            for k in SCALES:
                out[k] = self.specific.get(k, self.scale)
            return out
