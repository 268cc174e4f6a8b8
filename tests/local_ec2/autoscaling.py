"""Auto Scaling groups that run like AWS's, one reconcile pass at a time.

moto's groups launch and terminate synchronously inside the API call, every instance InService
at once. Here moto only records the group (and its desired capacity; patches.py turns moto's own
launching off), and each pass of this engine does what the Auto Scaling service does:

- lifecycle: a launched instance is `Pending` until its machine has booted (its sshd accepts a
  connection on its 127.0.0.x), then `InService` (and registered with the group's target
  groups); an instance on its way out is `Terminating` while
  its target groups drain it (the longest deregistration delay among them), then it is
  terminated and leaves the group;
- health: an instance whose EC2 state is not `running` (stopped, terminated, its machine gone)
  is `Unhealthy`; with HealthCheckType ELB, so is one that a target group reports `unhealthy`
  once the health check grace period (from InService) is over; SetInstanceHealth works too.
  Unhealthy instances are replaced (terminate and launch at the same time, as AWS does by
  default);
- capacity: launches to DesiredCapacity from the group's launch template version (`$Default`,
  `$Latest` or a number, resolved at launch; the instance remembers the number it was launched
  from, which DescribeAutoScalingGroups/Instances report), terminates the excess: instances of
  another configuration first, then the oldest (never those protected from scale in);
- while an instance refresh runs (refresh.py), it decides launches and terminations instead;
- every launch and termination is a scaling activity (DescribeScalingActivities), with its cause
  and status (`WaitingForELBConnectionDraining` while it drains, `Failed` with the reason for a
  launch whose machine could not start).
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from .log import log
from .targets import loopback

LIVE = ("Pending", "InService")
ASG_NAME_TAG = "aws:autoscaling:groupName"


@dataclass(frozen=True)
class Config:
    """What a group launches: a launch template and version as written ("3", "$Latest",
    "$Default"), or a launch configuration."""

    template_id: str | None = None
    template_name: str | None = None
    version: str | None = None
    launch_configuration: str | None = None

    def to_spec(self) -> dict:
        if self.template_id:
            spec = {"LaunchTemplateId": self.template_id, "LaunchTemplateName": self.template_name}
            if self.version:
                spec["Version"] = self.version
            return spec
        return {}


def group_config(g) -> Config:
    if g.ec2_launch_template is not None:
        return Config(
            g.ec2_launch_template.id,
            g.ec2_launch_template.name,
            getattr(g, "launch_template_version", None) or "$Default",
        )
    return Config(launch_configuration=getattr(g, "launch_configuration_name", None))


def resolve(g, cfg: Config):
    """(template, version) a launch with `cfg` uses now."""
    tmpl = g.ec2_backend.get_launch_template(cfg.template_id)
    return tmpl, tmpl.get_version(cfg.version or "$Default")


def matches(g, st, cfg: Config) -> bool:
    """Whether the instance was launched from what `cfg` launches now."""
    if cfg.template_id:
        lt = getattr(st, "local_lt", None)
        if not lt or lt.get("LaunchTemplateId") != cfg.template_id:
            return False
        _, version = resolve(g, cfg)
        return lt.get("Version") == str(version.number)
    return getattr(st, "local_lc", None) == cfg.launch_configuration


def meta(st, now: float) -> None:
    """Our bookkeeping on moto's InstanceState (also for instances moto attached itself)."""
    if not hasattr(st, "local_launched_at"):
        st.local_launched_at = now
        st.local_in_service_at = now if st.lifecycle_state == "InService" else None
        st.local_drain_until = None
        st.local_refresh = None
        st.local_activity = None
        st.local_why = None
        st.local_lt = None
        st.local_lc = None


def suspended(g, process: str) -> bool:
    return any(p.get("ProcessName") == process for p in g.suspended_processes)


class Groups:
    def __init__(self, machines, targets, timing) -> None:
        self.machines = machines
        self.targets = targets
        self.timing = timing
        self.refreshes = None  # refresh.Refreshes, set by the server
        self.activities: dict[tuple[str, str, str], list[dict]] = {}  # newest first
        self.booted: set[str] = set()  # instance ids whose sshd answered
        self.booting: set[str] = set()  # being asked
        self.boot_lock = threading.Lock()

    def step(self, backends) -> bool:
        """One pass over every group (under the world lock). True if it launched or terminated
        an EC2 instance (the machines must follow)."""
        now = time.monotonic()
        changed = False
        for backend in backends:
            for g in list(backend.autoscaling_groups.values()):
                try:
                    changed |= self._group(backend, g, now)
                except Exception as e:  # one broken group must not stop the others
                    log(f"error: auto scaling group {g.name}: {e}")
        return changed

    def _group(self, backend, g, now: float) -> bool:
        changed = False
        for st in list(g.instance_states):
            meta(st, now)
            changed |= self._lifecycle(backend, g, st, now)
        refresh = self.refreshes.active(g) if self.refreshes else None
        if refresh is not None:
            changed |= self.refreshes.step(self, backend, g, refresh, now)
        else:
            changed |= self._capacity(backend, g, now)
        self._register(backend, g)
        return changed

    # --- one instance ----------------------------------------------------------------------------

    def _lifecycle(self, backend, g, st, now: float) -> bool:
        inst = st.instance
        if st.lifecycle_state == "Pending":
            if inst.state in ("shutting-down", "terminated", "stopping", "stopped"):
                g.instance_states.remove(st)
                reason = getattr(getattr(inst, "state_reason", None), "message", None) or inst.state
                self._finish(st.local_activity, "Failed", f"Instance {inst.id} failed to start: {reason}")
                log(f"{g.name}: launch of {inst.id} failed ({inst.state}); it leaves the group")
            elif inst.state == "running" and self._booted(inst):
                st.lifecycle_state = "InService"
                st.local_in_service_at = now
                self._finish(st.local_activity)
                log(f"{g.name}: {inst.id} InService")
            return False
        if st.lifecycle_state == "InService":
            if st.health_status == "Healthy":
                why = self._unhealthy(g, st, now)
                if why:
                    st.health_status = "Unhealthy"
                    st.local_why = why
                    log(f"{g.name}: {inst.id} Unhealthy: {why}")
            if st.health_status == "Unhealthy" and not suspended(g, "ReplaceUnhealthy"):
                self.terminate(backend, g, st, now, f"an instance was taken out of service in response to a health check: {st.local_why or 'SetInstanceHealth'}")
            return False
        if st.lifecycle_state == "Terminating":
            if now >= (st.local_drain_until or 0):
                if inst.state not in ("shutting-down", "terminated"):
                    g.ec2_backend.terminate_instances([inst.id])
                g.instance_states.remove(st)
                self._finish(st.local_activity)
                log(f"{g.name}: {inst.id} terminated")
                return True
        return False

    # --- scaling activities ----------------------------------------------------------------------

    def _activity(self, g, description: str, cause: str, status: str = "Successful", message: str | None = None) -> dict:
        now = datetime.now(timezone.utc)
        a = {
            "ActivityId": str(uuid.uuid4()),
            "AutoScalingGroupName": g.name,
            "AutoScalingGroupARN": g.arn,
            "Description": description,
            "Cause": f"At {now.strftime('%Y-%m-%dT%H:%M:%SZ')} {cause}",
            "StartTime": now,
            "StatusCode": status,
            "Progress": 100 if status in ("Successful", "Failed") else 50,
            "Details": "{}",
        }
        if status in ("Successful", "Failed"):
            a["EndTime"] = now
        if message:
            a["StatusMessage"] = message
        self.activities.setdefault((g.account_id, g.region, g.name), []).insert(0, a)
        return a

    @staticmethod
    def _finish(a: dict | None, status: str = "Successful", message: str | None = None) -> None:
        if a is not None and a["StatusCode"] not in ("Successful", "Failed"):
            a.update(StatusCode=status, Progress=100, EndTime=datetime.now(timezone.utc))
            if message:
                a["StatusMessage"] = message

    def describe_activities(self, g, ids: list[str] | None = None) -> list[dict]:
        return [a for a in self.activities.get((g.account_id, g.region, g.name), []) if not ids or a["ActivityId"] in ids]

    def forget(self, g) -> None:
        self.activities.pop((g.account_id, g.region, g.name), None)

    def _booted(self, inst) -> bool:
        """Whether the instance's machine is up: its sshd answers (asked in the background, the
        world lock must not wait on the network)."""
        machine = self.machines.get(inst.id)
        if machine is None:
            return False
        with self.boot_lock:
            if inst.id in self.booted:
                return True
            if inst.id in self.booting:
                return False
            self.booting.add(inst.id)
        threading.Thread(target=self._wait_boot, args=(inst.id, machine.address), daemon=True).start()
        return False

    def _wait_boot(self, iid: str, address: str) -> None:
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline and self.machines.get(iid) is not None:
                try:
                    with socket.create_connection((loopback(address), 22), timeout=1) as s:
                        s.settimeout(2)
                        if s.recv(4).startswith(b"SSH"):
                            with self.boot_lock:
                                self.booted.add(iid)
                            return
                except OSError:
                    pass
                time.sleep(0.2)
        finally:
            with self.boot_lock:
                self.booting.discard(iid)

    def forget_boots(self) -> None:
        with self.boot_lock:
            self.booted.clear()

    def _unhealthy(self, g, st, now: float) -> str | None:
        inst = st.instance
        if inst.state != "running":
            return f"EC2 health check: the instance is {inst.state}"
        if (g.health_check_type or "EC2").upper() != "ELB":
            return None
        grace = self.timing.grace(g.health_check_grace_period or 0)
        if now - (st.local_in_service_at or now) < grace:
            return None
        for arn in g.target_group_arns:
            if self.targets.state_of(arn, inst.id) == "unhealthy":
                return f"ELB health check: unhealthy in target group {arn.rsplit(':', 1)[-1]}"
        return None

    def ready(self, g, st, now: float, warmup: float) -> bool:
        """In service, healthy (at every target group of the group too) and warmed up: what an
        instance refresh counts as replaced."""
        if st.lifecycle_state != "InService" or st.health_status != "Healthy":
            return False
        if st.instance.state != "running":
            return False
        if now - (st.local_in_service_at or now) < warmup:
            return False
        return all(self.targets.state_of(arn, st.instance.id) == "healthy" for arn in g.target_group_arns)

    def terminate(self, backend, g, st, now: float, cause: str = "an instance was taken out of service") -> None:
        """Out of service: deregistered from the group's target groups, terminated once they
        have drained it."""
        if st.lifecycle_state not in LIVE:
            return
        st.lifecycle_state = "Terminating"
        st.local_activity = self._activity(
            g, f"Terminating EC2 instance: {st.instance.id}", cause, "WaitingForELBConnectionDraining"
        )
        delay = 0.0
        elbv2 = backend.elbv2_backend
        for arn in g.target_group_arns:
            tg = elbv2.target_groups.get(arn)
            if tg is None or st.instance.id not in tg.targets:
                continue
            elbv2.deregister_targets(arn, [{"Id": st.instance.id}])
            if st.instance.state == "running":
                seconds = float(tg.attributes.get("deregistration_delay.timeout_seconds", 300))
                delay = max(delay, self.timing.drain(seconds))
        st.local_drain_until = now + delay
        if not delay:
            st.local_activity["StatusCode"] = "InProgress"
        log(f"{g.name}: {st.instance.id} Terminating" + (f" (draining {delay:.1f} s)" if delay else ""))

    # --- the group -------------------------------------------------------------------------------

    def _capacity(self, backend, g, now: float) -> bool:
        live = [st for st in g.instance_states if st.lifecycle_state in LIVE]
        desired = g.desired_capacity or 0
        if len(live) < desired and not suspended(g, "Launch"):
            self.launch(
                g, desired - len(live), group_config(g), now,
                cause=f"an instance was started in response to a difference between desired and actual capacity, increasing the capacity from {len(live)} to {desired}.",
            )
            return True
        if len(live) > desired and not suspended(g, "Terminate"):
            cfg = group_config(g)
            candidates = [st for st in live if not st.protected_from_scale_in]
            # Instances of another configuration first, then the oldest.
            candidates.sort(key=lambda st: (matches(g, st, cfg), st.local_launched_at))
            for st in candidates[: len(live) - desired]:
                self.terminate(
                    backend, g, st, now,
                    f"an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from {len(live)} to {desired}.",
                )
        return False

    def launch(self, g, count: int, cfg: Config, now: float, refresh_id: str | None = None, cause: str = "an instance was started") -> list:
        from moto.autoscaling.models import InstanceState

        tags = dict(g.get_propagated_tags())
        tags[ASG_NAME_TAG] = g.name
        lt = lc = None
        if cfg.template_id:
            tmpl, version = resolve(g, cfg)
            tags.update(getattr(version, "instance_tags", None) or {})
            image_id, user_data = version.image_id, version.user_data
            security_groups, instance_type = version.security_groups, version.instance_type
            launch_template = {"LaunchTemplateId": tmpl.id, "Version": str(version.number)}
            lt = {"LaunchTemplateId": tmpl.id, "LaunchTemplateName": tmpl.name, "Version": str(version.number)}
            launch_config = None
        else:
            launch_config = g.autoscaling_backend.launch_configurations[cfg.launch_configuration]
            image_id, user_data = launch_config.image_id, launch_config.user_data
            security_groups, instance_type = launch_config.security_groups, launch_config.instance_type
            launch_template = None
            lc = cfg.launch_configuration
        reservation = g.ec2_backend.run_instances(
            image_id,
            count,
            user_data,
            security_groups,
            instance_type=instance_type,
            tags={"instance": tags},
            placement=random.choice(g.availability_zones),
            launch_config=launch_config,
            launch_template=launch_template,
            is_instance_type_default=False,
            associate_public_ip=getattr(launch_config, "associate_public_ip_address", None),
            subnet_id=g.vpc_zone_identifier.split(",")[0] if g.vpc_zone_identifier else None,
        )
        states = []
        for inst in reservation.instances:
            inst.autoscaling_group = g
            st = InstanceState(
                inst,
                lifecycle_state="Pending",
                protected_from_scale_in=g.new_instances_protected_from_scale_in,
                autoscaling_group=g,
            )
            meta(st, now)
            st.local_lt, st.local_lc, st.local_refresh = lt, lc, refresh_id
            st.local_activity = self._activity(g, f"Launching a new EC2 instance: {inst.id}", cause, "PreInService")
            g.instance_states.append(st)
            states.append(st)
            log(f"{g.name}: launched {inst.id} from {image_id}" + (f" (template version {lt['Version']})" if lt else ""))
        return states

    def _register(self, backend, g) -> None:
        """In-service instances are registered with every target group of the group."""
        elbv2 = backend.elbv2_backend
        for arn in list(g.target_group_arns):
            tg = elbv2.target_groups.get(arn)
            if tg is None:
                continue
            for st in g.instance_states:
                inst = st.instance
                if st.lifecycle_state == "InService" and inst.state == "running" and inst.id not in tg.targets:
                    elbv2.register_targets(arn, [{"Id": inst.id, "Port": tg.port}])

    def delete(self, backend, g) -> None:
        """ForceDelete: every instance terminated now, without waiting for draining."""
        elbv2 = backend.elbv2_backend
        for st in list(g.instance_states):
            inst = st.instance
            for arn in g.target_group_arns:
                tg = elbv2.target_groups.get(arn)
                if tg is not None and inst.id in tg.targets:
                    elbv2.deregister_targets(arn, [{"Id": inst.id}])
            if inst.state not in ("shutting-down", "terminated"):
                g.ec2_backend.terminate_instances([inst.id])
        g.instance_states = []
