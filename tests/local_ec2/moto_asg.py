"""Changes to moto's Auto Scaling: the reconcile pass (autoscaling.py) launches and terminates,
not moto; and the actions moto lacks or gets wrong here.

- Setting the desired capacity only records it (moto would launch or terminate at once).
- EC2 TerminateInstances no longer makes moto replace the instance behind the group's back: the
  group notices (EC2 health check) and replaces it, as on AWS.
- Target group registration follows the lifecycle (InService in, Terminating out), done by the
  engine; moto would register Pending instances too.
- Instances report the launch template version they were launched from; DescribeAutoScaling-
  Instances spells health as AWS does there (HEALTHY, UNHEALTHY).
- Detaching a target group deregisters the members that are registered (they drain).
- DeleteAutoScalingGroup refuses a group with instances unless ForceDelete (ResourceInUse,
  ScalingActivityInProgress, as AWS); TerminateInstanceInAutoScalingGroup drains first.
- DescribeScalingActivities answers the engine's launches and terminations.
- New actions: StartInstanceRefresh, DescribeInstanceRefreshes, CancelInstanceRefresh,
  RollbackInstanceRefresh (refresh.py); AttachTrafficSources, DetachTrafficSources,
  DescribeTrafficSources (for target groups, like the LoadBalancerTargetGroups actions).
"""

from __future__ import annotations

import time


def install(groups, refreshes, targets) -> None:
    from moto.autoscaling import models as m
    from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
    from moto.autoscaling.responses import AutoScalingResponse
    from moto.core.responses import ActionResult, EmptyResult

    if getattr(m.FakeAutoScalingGroup, "_local_ec2_patched", False):
        return

    # --- the models ----------------------------------------------------------------------------

    def set_desired_capacity(self, new_capacity) -> None:
        self.desired_capacity = self.min_size if new_capacity is None else new_capacity

    m.FakeAutoScalingGroup.set_desired_capacity = set_desired_capacity
    m.AutoScalingBackend.notify_terminate_instances = lambda self, instance_ids: None
    m.AutoScalingBackend.update_attached_target_groups = lambda self, group_name: None

    moto_launch_template = m.InstanceState.launch_template

    def launch_template(self):
        return getattr(self, "local_lt", None) or moto_launch_template.fget(self)

    m.InstanceState.launch_template = property(launch_template)

    def delete_auto_scaling_group(self, group_name: str) -> None:
        g = self.autoscaling_groups.get(group_name)
        if g is None:
            raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{group_name}' not found")
        groups.delete(self, g)
        groups.forget(g)
        refreshes.forget(g)
        self.autoscaling_groups.pop(group_name, None)

    m.AutoScalingBackend.delete_auto_scaling_group = delete_auto_scaling_group

    def terminate_instance(self, instance_id: str, should_decrement: bool):
        for g in self.autoscaling_groups.values():
            for st in g.instance_states:
                if st.instance.id == instance_id and st.lifecycle_state in ("Pending", "InService"):
                    original = g.desired_capacity
                    if should_decrement:
                        if (g.desired_capacity or 0) - 1 < (g.min_size or 0):
                            raise ValidationError(
                                f"Currently, desiredSize equals minSize ({g.min_size}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size."
                            )
                        g.desired_capacity = (g.desired_capacity or 0) - 1
                    groups.terminate(
                        self, g, st, time.monotonic(),
                        "an instance was taken out of service in response to a user request"
                        + (", shrinking the capacity." if should_decrement else "."),
                    )
                    return m.TerminateInstanceActivity(st.instance, original)
        raise ValidationError(f"Instance Id not found - No managed instance found for instance ID: {instance_id}")

    m.AutoScalingBackend.terminate_instance = terminate_instance

    def detach_load_balancer_target_groups(self, group_name: str, target_group_arns: list) -> None:
        # moto deregisters every member, and fails on one not registered yet (Pending).
        g = self.autoscaling_groups[group_name]
        g.target_group_arns = [x for x in g.target_group_arns if x not in target_group_arns]
        for arn in target_group_arns:
            tg = self.elbv2_backend.target_groups.get(arn)
            if tg is None:
                continue
            ids = [{"Id": st.instance.id} for st in g.instance_states if st.instance.id in tg.targets]
            if ids:
                self.elbv2_backend.deregister_targets(arn, ids)

    m.AutoScalingBackend.detach_load_balancer_target_groups = detach_load_balancer_target_groups
    m.FakeAutoScalingGroup._local_ec2_patched = True

    # --- the API -------------------------------------------------------------------------------

    def delete_group(self):
        name = self._get_param("AutoScalingGroupName")
        g = self.autoscaling_backend.autoscaling_groups.get(name)
        if g is not None and not self._get_bool_param("ForceDelete", False):
            if any(st.lifecycle_state in ("Pending", "Terminating") for st in g.instance_states):
                raise AutoscalingClientError(
                    "ScalingActivityInProgress",
                    "You cannot delete an AutoScalingGroup while there are scaling activities in progress for that group.",
                )
            if g.instance_states:
                raise AutoscalingClientError(
                    "ResourceInUse",
                    "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group.",
                )
        self.autoscaling_backend.delete_auto_scaling_group(name)
        return EmptyResult()

    def start_instance_refresh(self):
        rid = refreshes.start(
            self.autoscaling_backend,
            self._get_param("AutoScalingGroupName"),
            self._get_param("Strategy"),
            self._get_param("DesiredConfiguration"),
            self._get_param("Preferences"),
        )
        return ActionResult({"InstanceRefreshId": rid})

    def describe_instance_refreshes(self):
        items = refreshes.describe(
            self.autoscaling_backend,
            self._get_param("AutoScalingGroupName"),
            self._get_param("InstanceRefreshIds", []),
        )
        start = int(self._get_param("NextToken") or 0)
        size = int(self._get_param("MaxRecords") or 50)
        page = items[start : start + size]
        token = str(start + size) if start + size < len(items) else None
        return ActionResult({"InstanceRefreshes": page, "NextToken": token})

    def cancel_instance_refresh(self):
        rid = refreshes.cancel(self.autoscaling_backend, self._get_param("AutoScalingGroupName"))
        return ActionResult({"InstanceRefreshId": rid})

    def rollback_instance_refresh(self):
        rid = refreshes.roll_back(self.autoscaling_backend, self._get_param("AutoScalingGroupName"))
        return ActionResult({"InstanceRefreshId": rid})

    def _sources(self) -> tuple[str, list[str], list[str]]:
        name = self._get_param("AutoScalingGroupName")
        if name not in self.autoscaling_backend.autoscaling_groups:
            raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
        arns, elbs = [], []
        for s in self._get_param("TrafficSources", []) or []:
            ident = s.get("Identifier") or ""
            if s.get("Type") == "vpc-lattice":
                raise ValidationError("VPC Lattice traffic sources are not supported by the local EC2")
            (arns if ":targetgroup/" in ident else elbs).append(ident)
        return name, arns, elbs

    def attach_traffic_sources(self):
        name, arns, elbs = _sources(self)
        if arns:
            self.autoscaling_backend.attach_load_balancer_target_groups(name, arns)
        if elbs:
            self.autoscaling_backend.attach_load_balancers(name, elbs)
        return EmptyResult()

    def detach_traffic_sources(self):
        name, arns, elbs = _sources(self)
        if arns:
            self.autoscaling_backend.detach_load_balancer_target_groups(name, arns)
        if elbs:
            self.autoscaling_backend.detach_load_balancers(name, elbs)
        return EmptyResult()

    def describe_traffic_sources(self):
        name = self._get_param("AutoScalingGroupName")
        g = self.autoscaling_backend.autoscaling_groups.get(name)
        if g is None:
            raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")
        wanted = self._get_param("TrafficSourceType")
        out = []
        for arn in g.target_group_arns:
            ids = [st.instance.id for st in g.instance_states]
            passed = any(targets.state_of(arn, i) == "healthy" for i in ids)
            out.append({"TrafficSource": arn, "Identifier": arn, "Type": "elbv2", "State": "InService" if passed else "Added"})
        for elb in g.load_balancer_names:
            out.append({"TrafficSource": elb, "Identifier": elb, "Type": "elb", "State": "Added"})
        if wanted:
            out = [s for s in out if s["Type"] == wanted]
        return ActionResult({"TrafficSources": out, "NextToken": None})

    def describe_auto_scaling_instances(self):
        # AWS spells health HEALTHY/UNHEALTHY here, and Healthy/Unhealthy in
        # DescribeAutoScalingGroups.
        states = self.autoscaling_backend.describe_auto_scaling_instances(
            instance_ids=self._get_param("InstanceIds", [])
        )
        out = [
            {
                "InstanceId": st.instance_id,
                "InstanceType": st.instance_type,
                "AutoScalingGroupName": st.auto_scaling_group_name,
                "AvailabilityZone": st.availability_zone,
                "LifecycleState": st.lifecycle_state,
                "HealthStatus": (st.health_status or "").upper(),
                "LaunchConfigurationName": getattr(st.auto_scaling_group, "launch_configuration_name", None),
                "LaunchTemplate": st.launch_template,
                "ProtectedFromScaleIn": bool(st.protected_from_scale_in),
            }
            for st in states
        ]
        return ActionResult({"AutoScalingInstances": [{k: v for k, v in d.items() if v is not None} for d in out]})

    def describe_scaling_activities(self):
        name = self._get_param("AutoScalingGroupName")
        ids = self._get_param("ActivityIds", [])
        found = []
        for g in self.autoscaling_backend.autoscaling_groups.values():
            if not name or g.name == name:
                found.extend(groups.describe_activities(g, ids))
        start = int(self._get_param("NextToken") or 0)
        size = int(self._get_param("MaxRecords") or 100)
        token = str(start + size) if start + size < len(found) else None
        return ActionResult({"Activities": found[start : start + size], "NextToken": token})

    AutoScalingResponse.describe_scaling_activities = describe_scaling_activities
    AutoScalingResponse.describe_auto_scaling_instances = describe_auto_scaling_instances
    AutoScalingResponse.delete_auto_scaling_group = delete_group
    AutoScalingResponse.start_instance_refresh = start_instance_refresh
    AutoScalingResponse.describe_instance_refreshes = describe_instance_refreshes
    AutoScalingResponse.cancel_instance_refresh = cancel_instance_refresh
    AutoScalingResponse.rollback_instance_refresh = rollback_instance_refresh
    AutoScalingResponse.attach_traffic_sources = attach_traffic_sources
    AutoScalingResponse.detach_traffic_sources = detach_traffic_sources
    AutoScalingResponse.describe_traffic_sources = describe_traffic_sources
