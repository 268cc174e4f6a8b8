"""Changes to moto's ELBv2 models: registration and deregistration reach targets.py at once
(so that a deregistered target stops getting requests at once, and drains), and
DescribeTargetHealth answers from the real health checks, draining targets included."""

from __future__ import annotations


def install(targets) -> None:
    from moto.elbv2 import models as m

    if getattr(m.FakeTargetGroup, "_local_ec2_patched", False):
        return
    register = m.FakeTargetGroup.register
    deregister = m.FakeTargetGroup.deregister
    deregister_terminated = m.FakeTargetGroup.deregister_terminated_instances
    describe = m.ELBv2Backend.describe_target_health

    def patched_register(self, targets_: list) -> None:
        register(self, targets_)
        for t in targets_:
            spec = self.targets.get(t["Id"])
            if spec is not None:
                targets.on_register(self, spec)

    def patched_deregister(self, targets_: list) -> None:
        deregister(self, targets_)
        for t in targets_:
            targets.on_deregister(self, t["Id"])

    def patched_deregister_terminated(self, instance_ids: list) -> None:
        gone = [i for i in instance_ids if i in self.targets]
        deregister_terminated(self, instance_ids)
        for i in gone:
            targets.on_deregister(self, i)

    def patched_health_for(self, target: dict, ec2_backend):
        tid = target["Id"]
        known = self.targets.get(tid)
        port = int(target.get("Port") or (known or {}).get("Port") or self.port or 80)
        check_port = str(port) if self.health_check_port in (None, "traffic-port") else self.health_check_port
        health = targets.health(self.arn, tid)
        if health is None:
            if known is not None:  # registered a moment ago: not seen by a pass yet
                health = ("initial", "Elb.RegistrationInProgress", "Target registration is in progress")
            else:
                health = ("unused", "Target.NotRegistered", "Target is not registered to the target group")
        state, reason, description = health
        return m.FakeHealthStatus(tid, port, check_port, state, reason, description)

    def patched_describe(self, target_group_arn: str, targets_: list):
        if not targets_ and target_group_arn in self.target_groups:
            tg = self.target_groups[target_group_arn]
            targets_ = list(tg.targets.values()) + targets.draining(target_group_arn)
        return describe(self, target_group_arn, targets_)

    m.FakeTargetGroup.register = patched_register
    m.FakeTargetGroup.deregister = patched_deregister
    m.FakeTargetGroup.deregister_terminated_instances = patched_deregister_terminated
    m.FakeTargetGroup.health_for = patched_health_for
    m.ELBv2Backend.describe_target_health = patched_describe
    m.FakeTargetGroup._local_ec2_patched = True
