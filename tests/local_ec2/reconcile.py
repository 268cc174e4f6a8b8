"""The reconcile pass: what the server does every quarter second, and right after API calls
that change things, so that moto's records and the real world agree.

1. machines: moto's instances -> containers (machines.py);
2. under the world lock: target groups' targets (targets.py), Auto Scaling groups and their
   instance refreshes (autoscaling.py, refresh.py), load balancer listeners (balancer.py);
3. machines again if a group launched or terminated instances, so that a launched instance has
   its container before the pass ends.
"""

from __future__ import annotations

from . import world


def _all(backend_dict) -> list:
    """Every backend that exists, in every account and region (moto makes them on first use)."""
    out = []
    for per_account in list(backend_dict.values()):
        out.extend(list(per_account.values()))
    return out


def elbv2_backends() -> list:
    from moto.elbv2.models import elbv2_backends as backends

    return _all(backends)


def autoscaling_backends() -> list:
    from moto.autoscaling.models import autoscaling_backends as backends

    return _all(backends)


class Reconciler:
    def __init__(self, machines, targets, groups, refreshes, balancers, timing) -> None:
        self.machines = machines
        self.targets = targets
        self.groups = groups
        self.refreshes = refreshes
        self.balancers = balancers
        self.timing = timing

    def run(self) -> None:
        self.machines.reconcile()
        with world.lock:
            self.targets.sync(elbv2_backends())
            changed = self.groups.step(autoscaling_backends())
            self.balancers.sync(elbv2_backends())
        if changed:
            self.machines.reconcile()

    def after_call(self, service: str, action: str) -> None:
        """Right after a call that may have changed something, before its answer goes out."""
        if action.startswith(("Describe", "Get", "List")):
            return
        if service == "autoscaling":
            with world.lock:
                self.targets.sync(elbv2_backends())
                self.groups.step(autoscaling_backends())
            self.machines.reconcile()
        elif service == "elasticloadbalancing":
            with world.lock:
                self.targets.sync(elbv2_backends())
                self.balancers.sync(elbv2_backends())

    def reset(self) -> None:
        """Part of the server's reset (called with the world lock held)."""
        self.refreshes.clear()
        self.groups.forget_boots()
        self.groups.activities.clear()
        self.balancers.clear()
        self.targets.clear()
        self.timing.reset()
