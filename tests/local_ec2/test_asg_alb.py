"""Auto Scaling groups, instance refresh and the load balancer, with real machines and real
HTTP: what `pipe promote` will rely on. Durations are scaled down (timing knobs) so that each
test takes seconds; every wait is bounded."""

import http.client
import subprocess
import threading
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from .harness import containers

SCALE = 0.1  # AWS seconds -> real seconds for health checks, grace, warm-up, draining

# A tiny HTTP server (the image has perl, not python): every path answers 200 with the AMI and
# instance ids; /slow/N waits N seconds first. Installed as a unit, so an AMI made from the
# instance serves at boot.
USER_DATA = r"""#!/bin/sh
set -e
cat > /usr/local/bin/page-server <<'PERL'
#!/usr/bin/perl
use strict; use warnings; use IO::Socket::INET;
$SIG{CHLD} = 'IGNORE';
my $s = IO::Socket::INET->new(LocalPort => 80, Listen => 128, ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
while (1) {
  my $c = $s->accept or next;
  my $pid = fork();
  if (!defined $pid || $pid) { close $c; next; }
  close $s;
  my $line = <$c> // exit 0;
  my (undef, $path) = split ' ', $line;
  while (my $h = <$c>) { last if $h =~ /^\r?\n$/; }
  select(undef, undef, undef, $1) if $path =~ m{^/slow/([\d.]+)};
  my $page = '';
  for my $f ('/etc/local-ec2/ami-id', '/etc/local-ec2/instance-id') {
    open(my $fh, '<', $f) or next; my $v = <$fh>; close $fh; chomp $v; $page .= "$v ";
  }
  $page =~ s/ $/\n/;
  print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($page) . "\r\nConnection: close\r\n\r\n$page";
  close $c; exit 0;
}
PERL
chmod 0755 /usr/local/bin/page-server
cat > /etc/systemd/system/page.service <<'UNIT'
[Unit]
Description=test page
After=network.target
[Service]
ExecStart=/usr/local/bin/page-server
Restart=always
RestartSec=0.2
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable page.service
systemctl start --no-block page.service
"""


def wait_for(what, check, timeout=60, every=0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def get(url, timeout=10) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def get_status(url, timeout=10) -> tuple[int | str, str]:
    """Status and body, or the error's name for a broken connection; HTTP errors are statuses."""
    try:
        return get(url, timeout)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return type(e).__name__, str(e)


@pytest.fixture
def fast(local_ec2):
    local_ec2.timing(scale=SCALE, refresh_timeout=60)
    return local_ec2


def serving_ami(local_ec2) -> tuple[str, str]:
    """Two AMIs whose machines serve their AMI id on port 80: one made from a configured
    instance (CreateImage), the other a copy of it (another id, the same disk)."""
    ec2 = local_ec2.client("ec2")
    (inst,) = ec2.run_instances(
        ImageId=local_ec2.source_ami, MinCount=1, MaxCount=1, InstanceType="t3.micro", UserData=USER_DATA
    )["Instances"]
    iid = inst["InstanceId"]

    def address():  # as on AWS: the address is the one the instance has now, not at launch
        return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["PublicIpAddress"]

    wait_for("the page server", lambda: get_status(f"http://{address()}/")[0] == 200, timeout=90)
    a = ec2.create_image(InstanceId=inst["InstanceId"], Name="page-a")["ImageId"]
    b = ec2.copy_image(SourceImageId=a, SourceRegion="us-east-1", Name="page-b")["ImageId"]
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
    return a, b


class Stack:
    """A launch template, a target group on port 80 behind an ALB listener, and a group."""

    def __init__(self, local_ec2, images: list[str], desired=2, version="1", health_check_type="ELB", traffic_sources=False, **group):
        self.local_ec2 = local_ec2
        self.ec2 = local_ec2.client("ec2")
        self.asg = local_ec2.client("autoscaling")
        self.elb = local_ec2.client("elbv2")
        lt = self.ec2.create_launch_template(
            LaunchTemplateName="web", LaunchTemplateData={"ImageId": images[0], "InstanceType": "t3.micro"}
        )["LaunchTemplate"]
        self.lt = lt["LaunchTemplateId"]
        for image in images[1:]:
            self.ec2.create_launch_template_version(LaunchTemplateId=self.lt, LaunchTemplateData={"ImageId": image})
        vpc = self.ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
        subnets = [s["SubnetId"] for s in self.ec2.describe_subnets()["Subnets"]][:2]
        self.tg = self.elb.create_target_group(
            Name="web",
            Protocol="HTTP",
            Port=80,
            VpcId=vpc,
            HealthCheckPath="/health",
            HealthCheckIntervalSeconds=5,
            HealthCheckTimeoutSeconds=2,
            HealthyThresholdCount=2,
            UnhealthyThresholdCount=2,
        )["TargetGroups"][0]["TargetGroupArn"]
        self.elb.modify_target_group_attributes(
            TargetGroupArn=self.tg, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "20"}]
        )
        lb = self.elb.create_load_balancer(Name="web", Subnets=subnets)["LoadBalancers"][0]
        self.listener = self.elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": self.tg}],
        )["Listeners"][0]["ListenerArn"]
        self.url = local_ec2.listener_url(self.listener)
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName="web",
            LaunchTemplate={"LaunchTemplateId": self.lt, "Version": version},
            MinSize=1,
            MaxSize=4,
            DesiredCapacity=desired,
            AvailabilityZones=["us-east-1a"],
            TargetGroupARNs=[] if traffic_sources else [self.tg],
            HealthCheckType=health_check_type,
            HealthCheckGracePeriod=group.pop("grace", 20),
            **group,
        )
        if traffic_sources:  # the newer API for the same thing
            self.asg.attach_traffic_sources(
                AutoScalingGroupName="web", TrafficSources=[{"Identifier": self.tg, "Type": "elbv2"}]
            )

    def group(self) -> dict:
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]

    def health(self) -> dict[str, tuple[str, str | None]]:
        out = self.elb.describe_target_health(TargetGroupArn=self.tg)["TargetHealthDescriptions"]
        return {d["Target"]["Id"]: (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason")) for d in out}

    def wait_healthy(self, count: int, timeout=90) -> list[str]:
        def ok():
            g = self.group()
            ids = [i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService"]
            health = self.health()
            if len(ids) == count and len(g["Instances"]) == count and all(health.get(i, ("",))[0] == "healthy" for i in ids):
                return ids
            return None

        return wait_for(f"{count} healthy instances", ok, timeout)

    def refresh(self, rid: str) -> dict:
        return self.asg.describe_instance_refreshes(AutoScalingGroupName="web", InstanceRefreshIds=[rid])["InstanceRefreshes"][0]


class Hammer:
    """A client sending requests to the load balancer without pause, half on fresh connections
    and half on one kept-alive HTTP/1.1 connection, recording every answer."""

    def __init__(self, url: str):
        self.url = url
        self.host, self.port = url.split("//")[1].split(":")
        self.results: list[tuple[float, object, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)

    def run(self) -> None:
        conn = None
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % 2:
                status, body = get_status(self.url + "/")
            else:
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)
                    conn.request("GET", "/")
                    r = conn.getresponse()
                    status, body = r.status, r.read().decode()
                except (OSError, http.client.HTTPException) as e:
                    status, body = type(e).__name__, str(e)
                    conn = None
            self.results.append((time.monotonic(), status, body))
            time.sleep(0.01)

    def failures(self) -> list:
        return [r for r in self.results if r[1] != 200]

    def amis(self) -> list[str]:
        return [r[2].split()[0] for r in self.results if r[1] == 200]


def instances_by_version(stack) -> dict[str, str]:
    return {i["InstanceId"]: i["LaunchTemplate"]["Version"] for i in stack.group()["Instances"]}


def test_group_launches_from_the_launch_template_version_and_replaces_lost_instances(fast):
    ec2 = fast.client("ec2")
    asg = fast.client("autoscaling")
    baked, _ = serving_ami(fast)
    lt = ec2.create_launch_template(
        LaunchTemplateName="app", LaunchTemplateData={"ImageId": fast.source_ami, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=lt, LaunchTemplateData={"ImageId": baked})
    asg.create_auto_scaling_group(
        AutoScalingGroupName="app",
        LaunchTemplate={"LaunchTemplateId": lt, "Version": "$Default"},  # version 1: the source AMI
        MinSize=0,
        MaxSize=3,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )

    def members():
        return asg.describe_auto_scaling_groups(AutoScalingGroupNames=["app"])["AutoScalingGroups"][0]["Instances"]

    (first,) = members()
    assert first["LifecycleState"] == "Pending"  # until its machine runs
    wait_for("InService", lambda: members()[0]["LifecycleState"] == "InService")
    by_id = {m["instance_id"]: m for m in fast.instances()}
    assert by_id[first["InstanceId"]]["image"] == "pipe-local-ec2/debian-12-cloud:latest"
    assert first["LaunchTemplate"]["Version"] == "1"

    # $Latest is version 2 (the baked AMI): new instances run its image, the old one stays.
    asg.update_auto_scaling_group(AutoScalingGroupName="app", LaunchTemplate={"LaunchTemplateId": lt, "Version": "$Latest"})
    asg.set_desired_capacity(AutoScalingGroupName="app", DesiredCapacity=2)
    wait_for("two in service", lambda: [m["LifecycleState"] for m in members()] == ["InService"] * 2)
    second = next(m for m in members() if m["InstanceId"] != first["InstanceId"])
    assert second["LaunchTemplate"]["Version"] == "2"
    by_id = {m["instance_id"]: m for m in fast.instances()}
    assert by_id[second["InstanceId"]]["image"] == f"pipe-local-ec2/ami:{baked}"
    reservations = ec2.describe_instances(InstanceIds=[second["InstanceId"]])["Reservations"]
    assert reservations[0]["Instances"][0]["ImageId"] == baked
    details = asg.describe_auto_scaling_instances(InstanceIds=[second["InstanceId"]])["AutoScalingInstances"]
    assert [(d["LifecycleState"], d["HealthStatus"]) for d in details] == [("InService", "HEALTHY")]

    # An instance terminated behind the group's back fails its EC2 health check: replaced.
    ec2.terminate_instances(InstanceIds=[second["InstanceId"]])
    replaced = wait_for(
        "a replacement",
        lambda: [m for m in members() if m["InstanceId"] not in (first["InstanceId"], second["InstanceId"]) and m["LifecycleState"] == "InService"],
    )
    assert replaced[0]["LaunchTemplate"]["Version"] == "2"
    wait_for("the terminated one to leave", lambda: len(members()) == 2)

    # A machine that dies (its container killed) stops its instance: replaced too.
    name = by_id[first["InstanceId"]]["container"]
    subprocess.run(["docker", "kill", name], check=True, capture_output=True)
    wait_for("the dead one replaced", lambda: first["InstanceId"] not in [m["InstanceId"] for m in members()] and len(members()) == 2, timeout=30)

    # A refresh to what every instance already runs, skipping matches: nothing to do.
    before_refresh = members()
    rid = asg.start_instance_refresh(
        AutoScalingGroupName="app",
        DesiredConfiguration={"LaunchTemplate": {"LaunchTemplateId": lt, "Version": "$Latest"}},
        Preferences={"SkipMatching": True},
    )["InstanceRefreshId"]
    r = wait_for(
        "the refresh to end",
        lambda: (x := asg.describe_instance_refreshes(AutoScalingGroupName="app", InstanceRefreshIds=[rid])["InstanceRefreshes"][0])["Status"] not in ("Pending", "InProgress") and x,
        timeout=30,
    )
    assert (r["Status"], r["PercentageComplete"], r["InstancesToUpdate"]) == ("Successful", 100, 0)
    assert not {m["InstanceId"] for m in members()} - {m["InstanceId"] for m in before_refresh}  # none replaced

    # Scale in: instances of another configuration go first (none left here), then the oldest.
    asg.set_desired_capacity(AutoScalingGroupName="app", DesiredCapacity=1)
    wait_for("one left", lambda: len(members()) == 1)
    assert members()[0]["InstanceId"] != replaced[0]["InstanceId"]
    with pytest.raises(ClientError) as e:
        asg.delete_auto_scaling_group(AutoScalingGroupName="app")
    assert e.value.response["Error"]["Code"] in ("ResourceInUse", "ScalingActivityInProgress")
    asg.delete_auto_scaling_group(AutoScalingGroupName="app", ForceDelete=True)
    wait_for("no machines", lambda: containers(str(fast.pid), all=False) == [], timeout=30)


def test_load_balancer_checks_health_forwards_to_healthy_targets_and_drains(fast):
    ec2 = fast.client("ec2")
    elb = fast.client("elbv2")
    a, _ = serving_ami(fast)
    good = ec2.run_instances(ImageId=a, MinCount=2, MaxCount=2, InstanceType="t3.micro")["Instances"]
    (bad,) = ec2.run_instances(ImageId=fast.source_ami, MinCount=1, MaxCount=1)["Instances"]  # nothing on :80
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    tg = elb.create_target_group(
        Name="t", Protocol="HTTP", Port=80, VpcId=vpc, HealthCheckPath="/ping",
        HealthCheckIntervalSeconds=5, HealthyThresholdCount=2, UnhealthyThresholdCount=2,
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(TargetGroupArn=tg, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "20"}])
    ids = [i["InstanceId"] for i in good] + [bad["InstanceId"]]
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": i} for i in ids])

    def health():
        out = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
        return {d["Target"]["Id"]: (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason")) for d in out}

    # No listener uses the target group yet: no health checks.
    assert set(health().values()) == {("unused", "Target.NotInUse")}
    lb = elb.create_load_balancer(Name="lb", Subnets=subnets)["LoadBalancers"][0]
    listener = elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )["Listeners"][0]["ListenerArn"]
    (entry,) = fast.load_balancers()
    assert entry["listener_arn"] == listener and entry["listener_port"] == 80
    url = entry["url"]
    assert url.startswith("http://127.0.0.1:")
    assert health()[ids[0]][0] == "initial"
    wait_for(
        "health checks",
        lambda: health() == {ids[0]: ("healthy", None), ids[1]: ("healthy", None), bad["InstanceId"]: ("unhealthy", "Target.FailedHealthChecks")},
    )
    # Round robin over the healthy ones only.
    served = [get(url + "/x")[1].split()[1] for _ in range(10)]
    assert sorted(set(served)) == sorted(ids[:2])
    assert all(served[i] != served[i + 1] for i in range(9))

    # Draining: no new requests, requests in flight finish; one that outlasts the delay
    # (20 s x 0.1) is cut.
    answers = {}
    slow = [threading.Thread(target=lambda n=n: answers.__setitem__(n, get_status(f"{url}/slow/{n}"))) for n in (1, 6)]
    for t in slow:
        t.start()
    time.sleep(0.3)
    elb.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": i} for i in ids])
    assert {s for s, _ in health().values()} == {"draining"}
    assert get_status(url + "/")[0] == 503  # no target left to send it to
    for t in slow:
        t.join(15)
    assert answers[1][0] == 200
    assert answers[6][0] != 200, answers[6]
    wait_for("draining to end", lambda: health() == {}, timeout=10)

    # Only unhealthy targets: the load balancer fails open (sends anyway: 502 from a closed port).
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": bad["InstanceId"]}])
    wait_for("unhealthy", lambda: health().get(bad["InstanceId"], ("",))[0] == "unhealthy")
    assert get_status(url + "/")[0] == 502


def test_instance_refresh_launching_before_terminating_has_zero_failed_requests(fast):
    a, b = serving_ami(fast)
    stack = Stack(fast, [a, b])
    before = stack.wait_healthy(2)
    with Hammer(stack.url) as hammer:
        time.sleep(1)
        rid = stack.asg.start_instance_refresh(
            AutoScalingGroupName="web",
            DesiredConfiguration={"LaunchTemplate": {"LaunchTemplateId": stack.lt, "Version": "2"}},
            Preferences={"MinHealthyPercentage": 100, "MaxHealthyPercentage": 200, "InstanceWarmup": 10, "AutoRollback": True},
        )["InstanceRefreshId"]
        with pytest.raises(ClientError) as e:
            stack.asg.start_instance_refresh(AutoScalingGroupName="web")
        assert e.value.response["Error"]["Code"] == "InstanceRefreshInProgress"
        most = 0
        statuses = []

        def done():
            nonlocal most
            most = max(most, len([i for i in stack.group()["Instances"] if i["LifecycleState"] in ("Pending", "InService")]))
            r = stack.refresh(rid)
            statuses.append(r["Status"])
            return r if r["Status"] not in ("Pending", "InProgress") else None

        r = wait_for("the refresh", done, timeout=120)
        time.sleep(1)
    assert r["Status"] == "Successful", r
    assert (r["PercentageComplete"], r["InstancesToUpdate"]) == (100, 0)
    assert "InProgress" in statuses
    assert most == 4  # launched before terminating: MaxHealthyPercentage 200
    assert hammer.failures() == []
    amis = hammer.amis()
    assert len(amis) > 50
    assert amis[0] == a and amis[-1] == b
    assert all(x == b for x in amis[-20:])
    g = stack.group()
    assert g["LaunchTemplate"]["Version"] == "2"
    assert set(instances_by_version(stack).values()) == {"2"}
    assert not set(instances_by_version(stack)) & set(before)


def test_refresh_to_an_ami_that_never_gets_healthy_rolls_back_with_zero_failed_requests(fast):
    a, _ = serving_ami(fast)
    stack = Stack(fast, [a, fast.source_ami])  # version 2: nothing listens on port 80
    before = stack.wait_healthy(2)
    fast.timing(refresh_timeout=8)
    with Hammer(stack.url) as hammer:
        rid = stack.asg.start_instance_refresh(
            AutoScalingGroupName="web",
            DesiredConfiguration={"LaunchTemplate": {"LaunchTemplateId": stack.lt, "Version": "2"}},
            Preferences={"MinHealthyPercentage": 100, "MaxHealthyPercentage": 200, "InstanceWarmup": 10, "AutoRollback": True},
        )["InstanceRefreshId"]
        statuses = []

        def done():
            r = stack.refresh(rid)
            statuses.append(r["Status"])
            return r if r["Status"] in ("Successful", "Failed", "RollbackSuccessful", "RollbackFailed", "Cancelled") else None

        r = wait_for("the rollback", done, timeout=90)
    assert r["Status"] == "RollbackSuccessful", r
    assert "RollbackInProgress" in statuses and "InProgress" in statuses
    assert "AutoRollback" in r["RollbackDetails"]["RollbackReason"]
    assert r["RollbackDetails"]["PercentageCompleteOnRollback"] == 0
    assert hammer.failures() == []
    assert set(hammer.amis()) == {a}
    assert stack.group()["LaunchTemplate"]["Version"] == "1"
    assert instances_by_version(stack) == {i: "1" for i in before}


def test_cancel_and_manual_rollback_of_a_terminate_then_launch_refresh(fast):
    a, b = serving_ami(fast)
    stack = Stack(fast, [a, b])
    stack.wait_healthy(2)
    asg = stack.asg
    with pytest.raises(ClientError) as e:
        asg.cancel_instance_refresh(AutoScalingGroupName="web")
    assert e.value.response["Error"]["Code"] == "ActiveInstanceRefreshNotFound"
    slow_warmup = {"MinHealthyPercentage": 90, "MaxHealthyPercentage": 100, "InstanceWarmup": 3000}
    desired = {"LaunchTemplate": {"LaunchTemplateId": stack.lt, "Version": "2"}}

    # 2 instances at 90 %: one at a time, the old one going first (capacity drops to 1).
    rid = asg.start_instance_refresh(AutoScalingGroupName="web", DesiredConfiguration=desired, Preferences=slow_warmup)["InstanceRefreshId"]
    states = [i["LifecycleState"] for i in stack.group()["Instances"]]
    assert sorted(states) == ["InService", "Terminating"]  # terminated first, launched after
    most = 0

    def replacement_in_service():
        nonlocal most
        members = stack.group()["Instances"]
        most = max(most, len([i for i in members if i["LifecycleState"] in ("Pending", "InService")]))
        return "2" in [i["LaunchTemplate"]["Version"] for i in members if i["LifecycleState"] == "InService"]

    wait_for("a replacement in service", replacement_in_service)
    assert most == 2  # never more than the desired capacity: MaxHealthyPercentage 100
    assert asg.cancel_instance_refresh(AutoScalingGroupName="web")["InstanceRefreshId"] == rid
    assert stack.refresh(rid)["Status"] in ("Cancelling", "Cancelled")
    wait_for("cancelled", lambda: stack.refresh(rid)["Status"] == "Cancelled", timeout=30)
    versions = instances_by_version(stack)
    assert sorted(versions.values()) == ["1", "2"]
    assert stack.group()["LaunchTemplate"]["Version"] == "1"  # unchanged by a cancelled refresh

    # Started again, then rolled back: version 2 instances are replaced by version 1 ones.
    rid = asg.start_instance_refresh(
        AutoScalingGroupName="web", DesiredConfiguration=desired, Preferences={**slow_warmup, "InstanceWarmup": 20}
    )["InstanceRefreshId"]
    assert asg.rollback_instance_refresh(AutoScalingGroupName="web")["InstanceRefreshId"] == rid
    r = wait_for("rolled back", lambda: (r := stack.refresh(rid))["Status"] in ("RollbackSuccessful", "RollbackFailed") and r, timeout=90)
    assert r["Status"] == "RollbackSuccessful", r
    assert r["RollbackDetails"]["RollbackReason"]
    stack.wait_healthy(2)
    assert set(instances_by_version(stack).values()) == {"1"}
    assert stack.group()["LaunchTemplate"]["Version"] == "1"
    with pytest.raises(ClientError) as e:
        asg.rollback_instance_refresh(AutoScalingGroupName="web")
    assert e.value.response["Error"]["Code"] == "ActiveInstanceRefreshNotFound"

    # A group on $Latest cannot be rolled back.
    asg.update_auto_scaling_group(AutoScalingGroupName="web", LaunchTemplate={"LaunchTemplateId": stack.lt, "Version": "$Latest"})
    with pytest.raises(ClientError) as e:
        asg.start_instance_refresh(AutoScalingGroupName="web", DesiredConfiguration=desired, Preferences={**slow_warmup, "AutoRollback": True})
    assert e.value.response["Error"]["Code"] == "ValidationError"
    asg.start_instance_refresh(AutoScalingGroupName="web", DesiredConfiguration=desired, Preferences=slow_warmup)
    with pytest.raises(ClientError) as e:
        asg.rollback_instance_refresh(AutoScalingGroupName="web")
    assert e.value.response["Error"]["Code"] == "IrreversibleInstanceRefresh"
    asg.cancel_instance_refresh(AutoScalingGroupName="web")
    refreshes = asg.describe_instance_refreshes(AutoScalingGroupName="web")["InstanceRefreshes"]
    assert len(refreshes) == 3 and refreshes[-1]["Status"] == "Cancelled"  # newest first


def test_an_instance_unhealthy_at_the_load_balancer_is_replaced(fast):
    a, _ = serving_ami(fast)
    stack = Stack(fast, [a], grace=10, traffic_sources=True)
    first, second = stack.wait_healthy(2)
    (source,) = stack.asg.describe_traffic_sources(AutoScalingGroupName="web")["TrafficSources"]
    assert (source["Identifier"], source["Type"], source["State"]) == (stack.tg, "elbv2", "InService")
    name = next(m["container"] for m in fast.instances() if m["instance_id"] == first)
    subprocess.run(["docker", "exec", name, "systemctl", "stop", "page.service"], check=True, capture_output=True)
    wait_for("unhealthy at the target group", lambda: stack.health().get(first, ("",))[0] in ("unhealthy", "draining", ""), timeout=30)
    seen = set()

    def replaced():
        for i in stack.group()["Instances"]:
            seen.add((i["InstanceId"], i["LifecycleState"], i["HealthStatus"]))
        ids = [i["InstanceId"] for i in stack.group()["Instances"]]
        return first not in ids and len(ids) == 2

    wait_for("the replacement", replaced, timeout=60)
    assert (first, "Terminating", "Unhealthy") in seen
    now = stack.wait_healthy(2)
    assert second in now and first not in now
    assert get(stack.url + "/")[0] == 200
    activities = stack.asg.describe_scaling_activities(AutoScalingGroupName="web")["Activities"]
    (gone,) = [a for a in activities if a["Description"] == f"Terminating EC2 instance: {first}"]
    assert gone["StatusCode"] == "Successful" and "ELB health check" in gone["Cause"]
    launched = [a for a in activities if a["Description"].startswith("Launching a new EC2 instance")]
    assert len(launched) == 3 and {a["StatusCode"] for a in launched} == {"Successful"}


def test_blue_green_a_second_group_on_the_same_target_group_has_zero_failed_requests(fast):
    a, b = serving_ami(fast)
    stack = Stack(fast, [a, b])  # the blue group "web" runs version 1
    blue = stack.wait_healthy(2)
    asg = stack.asg
    source = [{"Identifier": stack.tg, "Type": "elbv2"}]
    with Hammer(stack.url) as hammer:
        asg.create_auto_scaling_group(
            AutoScalingGroupName="web-green",
            LaunchTemplate={"LaunchTemplateId": stack.lt, "Version": "2"},
            MinSize=1, MaxSize=4, DesiredCapacity=2, AvailabilityZones=["us-east-1a"],
            HealthCheckType="ELB", HealthCheckGracePeriod=20,
        )
        asg.attach_traffic_sources(AutoScalingGroupName="web-green", TrafficSources=source)

        def green_healthy():
            g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web-green"])["AutoScalingGroups"][0]
            ids = [i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService"]
            health = stack.health()
            return ids if len(ids) == 2 and all(health.get(i, ("",))[0] == "healthy" for i in ids) else None

        green = wait_for("green healthy at the load balancer", green_healthy, timeout=90)
        asg.detach_traffic_sources(AutoScalingGroupName="web", TrafficSources=source)
        assert {stack.health()[i][0] for i in blue} == {"draining"}
        wait_for("blue drained", lambda: set(stack.health()) == set(green), timeout=30)
        asg.update_auto_scaling_group(AutoScalingGroupName="web", MinSize=0, DesiredCapacity=0)
        wait_for("blue scaled to 0", lambda: stack.group()["Instances"] == [], timeout=30)
        time.sleep(0.5)
    assert hammer.failures() == []
    amis = hammer.amis()
    assert amis[0] == a and all(x == b for x in amis[-20:])
    asg.delete_auto_scaling_group(AutoScalingGroupName="web")  # empty: no ForceDelete needed


def test_refresh_pauses_at_checkpoints_and_bakes_before_it_succeeds(fast):
    # No load balancer: with EC2 health checks, ready means InService, healthy and warmed up.
    ec2 = fast.client("ec2")
    asg = fast.client("autoscaling")
    lt = ec2.create_launch_template(
        LaunchTemplateName="cp", LaunchTemplateData={"ImageId": fast.source_ami, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=lt, LaunchTemplateData={"ImageId": fast.source_ami, "InstanceType": "t3.small"})
    asg.create_auto_scaling_group(
        AutoScalingGroupName="cp", LaunchTemplate={"LaunchTemplateId": lt, "Version": "1"},
        MinSize=1, MaxSize=2, DesiredCapacity=2, AvailabilityZones=["us-east-1a"],
    )

    def members():
        return asg.describe_auto_scaling_groups(AutoScalingGroupNames=["cp"])["AutoScalingGroups"][0]["Instances"]

    wait_for("in service", lambda: [m["LifecycleState"] for m in members()] == ["InService"] * 2)
    rid = asg.start_instance_refresh(
        AutoScalingGroupName="cp",
        DesiredConfiguration={"LaunchTemplate": {"LaunchTemplateId": lt, "Version": "2"}},
        Preferences={
            "MinHealthyPercentage": 50, "MaxHealthyPercentage": 100, "InstanceWarmup": 10,
            "CheckpointPercentages": [50, 100], "CheckpointDelay": 40, "BakeTime": 10,
        },
    )["InstanceRefreshId"]
    seen = []

    def refresh():
        return asg.describe_instance_refreshes(AutoScalingGroupName="cp", InstanceRefreshIds=[rid])["InstanceRefreshes"][0]

    def status():
        # The refresh moves on its own while we look: the members count for a state only when
        # the refresh was in it both before and after they were read.
        before = refresh()
        versions = sorted(m["LaunchTemplate"]["Version"] for m in members() if m["LifecycleState"] in ("Pending", "InService"))
        r = refresh()
        same = (before["Status"], before.get("StatusReason")) == (r["Status"], r.get("StatusReason"))
        seen.append((r["Status"], r["PercentageComplete"], r.get("StatusReason", "") if same else "(moving)", tuple(versions)))
        return r if r["Status"] not in ("Pending", "InProgress", "Baking") else None

    r = wait_for("the refresh", status, timeout=90)
    assert r["Status"] == "Successful", r
    paused = [s for s in seen if "checkpoint 50%" in s[2]]
    assert paused and all(s[1] == 50 and s[3] == ("1", "2") for s in paused)  # half replaced, waiting
    assert any(s[0] == "Baking" and s[1] == 100 for s in seen)
    assert {m["LaunchTemplate"]["Version"] for m in members()} == {"2"}
    assert {m["InstanceType"] for m in members()} == {"t3.small"}
