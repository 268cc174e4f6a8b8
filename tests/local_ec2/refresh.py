"""Instance refresh (moto has none): StartInstanceRefresh, DescribeInstanceRefreshes,
CancelInstanceRefresh, RollbackInstanceRefresh, as a state machine per refresh that the
reconcile pass steps (autoscaling.Groups calls `step` for a group with an active refresh).

Rolling replacement, as AWS describes it: with D the desired capacity, at least
ceil(D x MinHealthyPercentage / 100) instances stay ready (InService, healthy at every target
group of the group, warmed up) and at most floor(D x MaxHealthyPercentage / 100) are live
(Pending or InService). Each pass launches replacements from the desired configuration as room
allows and terminates (after draining) old instances as readiness allows. When neither is
possible and nothing is in flight (say D = 2 at 90 % / 100 %), one old instance is terminated
anyway: AWS always replaces at least one at a time (terminate, then launch). With
MaxHealthyPercentage above 100, replacements launch before old instances go.

A replacement counts once it is ready (PercentageComplete, InstancesToUpdate). When no
replacement becomes ready for `refresh_timeout` seconds (timing knob), the refresh fails; with
AutoRollback it rolls back instead: the group's configuration never changed (it becomes the
desired one only on success), and the instances launched by the refresh are replaced by ones of
that configuration with the same rolling rules (RollbackInProgress -> RollbackSuccessful, or
RollbackFailed). Cancelling stops launching and terminating; Cancelled once nothing is pending
or terminating. CheckpointPercentages pause for CheckpointDelay; BakeTime waits in `Baking`
before `Successful`.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .autoscaling import LIVE, Config, group_config, matches, resolve
from .log import log

ACTIVE = ("Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking")


def _error(code: str, message: str):
    from moto.autoscaling.exceptions import AutoscalingClientError

    return AutoscalingClientError(code, message)


def _validation(message: str):
    return _error("ValidationError", message)


@dataclass
class Refresh:
    id: str
    key: tuple[str, str, str]  # account, region, group name
    group: str
    desired_spec: dict | None  # DesiredConfiguration as given
    target: Config  # what it launches (the version resolved to a number at start)
    original: Config  # the group's configuration when it started
    prefs: dict
    planned: set[str]  # instances to replace (ids), fixed at start
    total: int
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    status: str = "Pending"
    reason: str | None = None
    ended: datetime | None = None
    last_progress: float = field(default_factory=time.monotonic)
    replaced: int = 0
    checkpoints: list[int] = field(default_factory=list)
    paused_until: float | None = None
    bake_until: float | None = None
    rollback: dict | None = None
    old_left: int | None = None  # instances still to replace, at the last pass
    good: int = 0  # ready instances of the configuration it launches, at the last pass

    @property
    def rolling_back(self) -> bool:
        return self.status == "RollbackInProgress"

    def percentage(self) -> int:
        return 100 if self.total == 0 else min(100, math.floor(100 * self.replaced / self.total))

    def describe(self) -> dict:
        out = {
            "InstanceRefreshId": self.id,
            "AutoScalingGroupName": self.group,
            "Status": self.status,
            "StatusReason": self.reason,
            "StartTime": self.started,
            "EndTime": self.ended,
            "PercentageComplete": self.percentage(),
            "InstancesToUpdate": max(0, self.total - self.replaced),
            "Preferences": self.prefs,
            "Strategy": "Rolling",
        }
        if self.rollback:
            out["InstancesToUpdate"] = self.rollback["InstancesToUpdateOnRollback"]
        if self.desired_spec:
            out["DesiredConfiguration"] = self.desired_spec
        if self.rollback:
            out["RollbackDetails"] = self.rollback
        return {k: v for k, v in out.items() if v is not None}


class Refreshes:
    def __init__(self, timing) -> None:
        self.timing = timing
        self.by_group: dict[tuple[str, str, str], list[Refresh]] = {}

    def clear(self) -> None:
        self.by_group.clear()

    def active(self, g) -> Refresh | None:
        for r in self.by_group.get((g.account_id, g.region, g.name), []):
            if r.status in ACTIVE:
                return r
        return None

    def forget(self, g) -> None:
        self.by_group.pop((g.account_id, g.region, g.name), None)

    # --- the API (under the world lock, from moto's request handler) ---------------------------

    def start(self, backend, name: str, strategy: str | None, desired: dict | None, prefs: dict | None) -> str:
        g = backend.autoscaling_groups.get(name)
        if g is None:
            raise _validation(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
        if strategy and strategy != "Rolling":
            raise _validation(f"The {strategy} strategy is not supported by the local EC2 (only Rolling)")
        if self.active(g) is not None:
            raise _error(
                "InstanceRefreshInProgress",
                "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.",
            )
        prefs = dict(prefs or {})
        min_hp = int(prefs.get("MinHealthyPercentage", 90))
        max_hp = int(prefs.get("MaxHealthyPercentage", 100))
        if not 0 <= min_hp <= 100:
            raise _validation("MinHealthyPercentage must be between 0 and 100")
        if not 100 <= max_hp <= 200:
            raise _validation("MaxHealthyPercentage must be between 100 and 200")
        if max_hp - min_hp > 100:
            raise _validation("The difference between MaxHealthyPercentage and MinHealthyPercentage cannot be greater than 100")
        checkpoints = [int(c) for c in prefs.get("CheckpointPercentages") or []]
        if checkpoints != sorted(set(checkpoints)) or any(not 1 <= c <= 100 for c in checkpoints):
            raise _validation("CheckpointPercentages must be unique, ascending, between 1 and 100")
        original = group_config(g)
        spec = None
        target = original
        lt = (desired or {}).get("LaunchTemplate")
        if (desired or {}).get("MixedInstancesPolicy"):
            raise _validation("A MixedInstancesPolicy desired configuration is not supported by the local EC2")
        if lt:
            by_id, by_name = lt.get("LaunchTemplateId"), lt.get("LaunchTemplateName")
            if bool(by_id) == bool(by_name):
                raise _validation("Valid requests must contain either launchTemplateId or LaunchTemplateName")
            try:
                tmpl = (
                    g.ec2_backend.get_launch_template(by_id)
                    if by_id
                    else g.ec2_backend.get_launch_template_by_name(by_name)
                )
                version = tmpl.get_version(lt.get("Version") or "$Default")
            except Exception:
                raise _validation(f"The specified launch template {by_id or by_name} (version {lt.get('Version') or '$Default'}) does not exist.") from None
            spec = {"LaunchTemplate": {k: v for k, v in lt.items() if v}}
            target = Config(tmpl.id, tmpl.name, lt.get("Version") or "$Default")
        elif original.template_id is None and original.launch_configuration is None:
            raise _validation("The group has no launch template or launch configuration")
        # Launch what the desired version is now, for the whole refresh.
        if target.template_id:
            _, version = resolve(g, target)
            target = Config(target.template_id, target.template_name, str(version.number))
        if prefs.get("AutoRollback"):
            if spec is None:
                raise _validation("AutoRollback requires a DesiredConfiguration")
            if not (original.template_id and (original.version or "").isdigit()):
                raise _validation(
                    "AutoRollback is not supported when the group uses a launch template's $Latest or $Default version"
                )
        skip = bool(prefs.get("SkipMatching", False))
        protected = prefs.get("ScaleInProtectedInstances", "Ignore")
        planned = set()
        for st in g.instance_states:
            if st.lifecycle_state not in LIVE:
                continue
            if skip and matches(g, st, target):
                continue
            if st.protected_from_scale_in and protected == "Ignore":
                continue
            planned.add(st.instance.id)
        shown = {
            "MinHealthyPercentage": min_hp,
            "MaxHealthyPercentage": max_hp,
            "SkipMatching": skip,
            "AutoRollback": bool(prefs.get("AutoRollback", False)),
            "ScaleInProtectedInstances": protected,
            "StandbyInstances": prefs.get("StandbyInstances", "Ignore"),
        }
        for k in ("InstanceWarmup", "CheckpointPercentages", "CheckpointDelay", "BakeTime"):
            if prefs.get(k) is not None:
                shown[k] = prefs[k]
        r = Refresh(
            id=str(uuid.uuid4()),
            key=(g.account_id, g.region, g.name),
            group=g.name,
            desired_spec=spec,
            target=target,
            original=original,
            prefs=shown,
            planned=planned,
            total=len(planned),
            checkpoints=[c for c in checkpoints if c < 100],
        )
        self.by_group.setdefault(r.key, []).insert(0, r)
        log(f"{g.name}: instance refresh {r.id} started: {r.total} to replace")
        return r.id

    def describe(self, backend, name: str, ids: list[str] | None) -> list[dict]:
        g = backend.autoscaling_groups.get(name)
        if g is None:
            return []
        return [r.describe() for r in self.by_group.get((g.account_id, g.region, g.name), []) if not ids or r.id in ids]

    def cancel(self, backend, name: str) -> str:
        g = backend.autoscaling_groups.get(name)
        r = self.active(g) if g is not None else None
        if r is None or r.status not in ("Pending", "InProgress", "Baking"):
            raise _error("ActiveInstanceRefreshNotFound", f"No in progress or pending Instance Refresh found for Auto Scaling group {name}")
        r.status, r.reason = "Cancelling", "Cancelling the instance refresh"
        log(f"{name}: instance refresh {r.id} cancelling")
        return r.id

    def roll_back(self, backend, name: str) -> str:
        g = backend.autoscaling_groups.get(name)
        r = self.active(g) if g is not None else None
        if r is None or r.status not in ("Pending", "InProgress", "Baking"):
            raise _error("ActiveInstanceRefreshNotFound", f"No in progress or pending Instance Refresh found for Auto Scaling group {name}")
        if r.desired_spec is None or not (r.original.template_id and (r.original.version or "").isdigit()):
            raise _error(
                "IrreversibleInstanceRefresh",
                "The instance refresh cannot be rolled back: it has no desired configuration, or the group uses a launch template's $Latest or $Default version",
            )
        self._start_rollback(r, "Rollback initiated by user (RollbackInstanceRefresh)")
        return r.id

    def _start_rollback(self, r: Refresh, reason: str) -> None:
        r.rollback = {
            "RollbackReason": reason,
            "RollbackStartTime": datetime.now(timezone.utc),
            "PercentageCompleteOnRollback": r.percentage(),
            "InstancesToUpdateOnRollback": max(0, r.total - r.replaced),
        }
        r.status, r.reason = "RollbackInProgress", reason
        r.last_progress = time.monotonic()
        r.old_left, r.good = None, 0
        r.paused_until = r.bake_until = None
        log(f"{r.group}: instance refresh {r.id} rolling back: {reason}")

    # --- the state machine (under the world lock, from the reconcile pass) ---------------------

    def step(self, groups, backend, g, r: Refresh, now: float) -> bool:
        if r.status == "Pending":
            r.status, r.reason = "InProgress", None
            r.last_progress = now
        if r.status == "Cancelling":
            if not any(st.lifecycle_state in ("Pending", "Terminating") for st in g.instance_states):
                self._end(r, "Cancelled", "The instance refresh was cancelled")
            return False
        if r.status == "Baking":
            if now >= (r.bake_until or 0):
                self._succeed(g, r)
            return False
        return self._roll(groups, backend, g, r, now)

    def _roll(self, groups, backend, g, r: Refresh, now: float) -> bool:
        back = r.rolling_back
        target = r.original if back else r.target
        warmup = groups.timing.grace(
            r.prefs.get("InstanceWarmup")
            if r.prefs.get("InstanceWarmup") is not None
            else (getattr(g, "default_instance_warmup", None) or g.health_check_grace_period or 0)
        )
        live = [st for st in g.instance_states if st.lifecycle_state in LIVE]
        if back:
            old = [st for st in live if not matches(g, st, target)]
        else:
            old = [st for st in live if st.instance.id in r.planned]
        new = [st for st in live if st not in old]
        # Warm-up is for the instances this refresh launched; the others have served already.
        ready = {id(st) for st in live if groups.ready(g, st, now, warmup if st.local_refresh == r.id else 0)}
        new_ready = sum(1 for st in new if id(st) in ready)
        desired = g.desired_capacity or 0

        # Progress: an old instance gone, or one more of the target configuration ready.
        good = sum(1 for st in live if id(st) in ready and matches(g, st, target))
        if r.old_left is None or len(old) < r.old_left or good > r.good:
            r.last_progress = now
        r.old_left, r.good = len(old), good
        if back:
            done = sum(1 for st in live if id(st) in ready and matches(g, st, r.target))
            r.replaced = min(r.replaced, done)  # goes back down
        else:
            r.replaced = max(r.replaced, min(r.total, new_ready))
        terminating = [st for st in g.instance_states if st.lifecycle_state == "Terminating"]
        if not old and len(live) >= desired and all(id(st) in ready for st in live) and not terminating:
            if back:
                self._end(r, "RollbackSuccessful", "The rollback completed successfully")
            else:
                bake = float(r.prefs.get("BakeTime") or 0)
                if bake > 0:
                    r.status, r.reason = "Baking", "Waiting for bake time to end"
                    r.bake_until = now + groups.timing.checkpoint(bake)
                else:
                    self._succeed(g, r)
            return False
        if now - r.last_progress > self.timing.refresh_timeout:
            reason = f"No replacement instance became healthy within {self.timing.refresh_timeout:g} s"
            if back:
                self._end(r, "RollbackFailed", f"Rollback failed: {reason}")
            elif r.prefs.get("AutoRollback"):
                self._start_rollback(r, f"Instance refresh failed: {reason}; rolling back (AutoRollback)")
            else:
                self._end(r, "Failed", f"Instance refresh failed: {reason}")
            return False
        if not back and r.checkpoints and r.percentage() >= r.checkpoints[0]:
            if r.paused_until is None:
                delay = float(r.prefs.get("CheckpointDelay") or 3600)
                r.paused_until = now + groups.timing.checkpoint(delay)
                r.reason = f"Waiting at checkpoint {r.checkpoints[0]}%"
            if now < r.paused_until:
                r.last_progress = now  # a pause is not a failure to make progress
                return False
            r.checkpoints.pop(0)
            r.paused_until = None

        min_ok = math.ceil(desired * int(r.prefs["MinHealthyPercentage"]) / 100)
        max_live = max(desired, math.floor(desired * int(r.prefs["MaxHealthyPercentage"]) / 100))
        changed = False
        # Launch replacements, as far as MaxHealthyPercentage allows.
        launch = min(desired - len(new), max_live - len(live))
        if launch > 0:
            what = "a rollback" if back else "an instance refresh"
            groups.launch(g, launch, target, now, refresh_id=r.id, cause=f"an instance was launched in response to {what} ({r.id}).")
            changed = True
        # Terminate old instances, as far as MinHealthyPercentage allows. Old ones that are not
        # ready count for nothing: they can go at once.
        in_flight = bool(terminating) or any(id(st) not in ready for st in new) or changed
        victims = [st for st in old if id(st) not in ready]
        spare = len(ready) - min_ok
        ready_old = sorted((st for st in old if id(st) in ready), key=lambda st: st.local_launched_at)
        victims += ready_old[: max(0, spare)]
        if not victims and ready_old and not in_flight:
            victims = ready_old[:1]  # always at least one at a time
        for st in victims:
            groups.terminate(backend, g, st, now, f"an instance was taken out of service in response to {'a rollback' if back else 'an instance refresh'} ({r.id}).")
        waiting = [st.instance.id for st in new if id(st) not in ready]
        if waiting:
            r.reason = f"Waiting for instances to warm up and pass health checks: {', '.join(sorted(waiting))}"
        elif victims or changed:
            r.reason = "Replacing instances"
        return changed

    def _succeed(self, g, r: Refresh) -> None:
        if r.desired_spec:
            lt = r.desired_spec["LaunchTemplate"]
            spec = {"LaunchTemplateId": r.target.template_id, "Version": lt.get("Version") or "$Default"}
            g._set_launch_configuration(None, spec, g.mixed_instances_policy)
        r.replaced = r.total
        self._end(r, "Successful", None)

    def _end(self, r: Refresh, status: str, reason: str | None) -> None:
        r.status, r.reason = status, reason
        r.ended = datetime.now(timezone.utc)
        r.paused_until = r.bake_until = None
        log(f"{r.group}: instance refresh {r.id} {status}" + (f": {reason}" if reason else ""))
