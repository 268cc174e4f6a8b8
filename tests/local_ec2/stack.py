"""A production environment on the local EC2, made the way Terraform or a console user would
make one, for the Rust promotion tests: a launch template on an AMI, a target group (HTTP
health checks on a path) behind an application load balancer's listener, and an Auto Scaling
group of N instances attached to the target group, with ELB health checks. Waits until every
instance is InService and healthy, then prints what it made as one JSON line:

    python -m local_ec2.stack --endpoint http://127.0.0.1:PORT create --name web --ami ami-... \
        --capacity 2 --port 80 --path / [--role-arn arn:aws:iam::210987654321:role/NAME]

With `--role-arn` it is made in that role's account (another account than the test keys').
    {"url": "http://127.0.0.1:PORT2", "group": "web", "template_id": "lt-...", ...}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request

import boto3


def client(endpoint: str, service: str, region: str, creds: dict | None = None):
    """A client with the test keys, or with `creds` (an assumed role's: its account)."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=creds["AccessKeyId"] if creds else "test",
        aws_secret_access_key=creds["SecretAccessKey"] if creds else "test",
        aws_session_token=creds["SessionToken"] if creds else None,
    )


def control(endpoint: str, path: str) -> dict:
    with urllib.request.urlopen(f"{endpoint}/_local_ec2{path}", timeout=30) as r:
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="local_ec2.stack", description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--region", default="us-east-1")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("create", help="a launch template, target group, load balancer and group")
    m.add_argument("--name", required=True, help="names the template, group, target group and load balancer")
    m.add_argument("--ami", required=True)
    m.add_argument("--capacity", type=int, default=2)
    m.add_argument("--port", type=int, default=80)
    m.add_argument("--path", default="/")
    m.add_argument("--version", default="1", help="the template version the group names ($Default, $Latest or a number)")
    m.add_argument("--drain", type=int, default=20, help="the target group's deregistration delay, AWS seconds")
    m.add_argument("--grace", type=int, default=30, help="the group's health check grace period, AWS seconds")
    m.add_argument("--timeout", type=float, default=240, help="real seconds to wait for healthy instances")
    m.add_argument("--role-arn", help="make it in this role's account (STS AssumeRole), not the test keys' own")
    return create(p.parse_args(argv))


def create(a) -> int:
    creds = None
    if a.role_arn:
        sts = client(a.endpoint, "sts", a.region)
        creds = sts.assume_role(RoleArn=a.role_arn, RoleSessionName="stack")["Credentials"]
    ec2 = client(a.endpoint, "ec2", a.region, creds)
    asg = client(a.endpoint, "autoscaling", a.region, creds)
    elb = client(a.endpoint, "elbv2", a.region, creds)
    lt = ec2.create_launch_template(
        LaunchTemplateName=a.name, LaunchTemplateData={"ImageId": a.ami, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    tg = elb.create_target_group(
        Name=a.name,
        Protocol="HTTP",
        Port=a.port,
        VpcId=vpc,
        HealthCheckPath=a.path,
        HealthCheckIntervalSeconds=5,
        HealthCheckTimeoutSeconds=2,
        HealthyThresholdCount=2,
        UnhealthyThresholdCount=2,
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(
        TargetGroupArn=tg, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(a.drain)}]
    )
    lb = elb.create_load_balancer(Name=a.name, Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    listener = elb.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )["Listeners"][0]["ListenerArn"]
    url = next(e["url"] for e in control(a.endpoint, "/load_balancers")["listeners"] if e["listener_arn"] == listener)
    asg.create_auto_scaling_group(
        AutoScalingGroupName=a.name,
        LaunchTemplate={"LaunchTemplateId": lt, "Version": a.version},
        MinSize=1,
        MaxSize=max(4, 2 * a.capacity),
        DesiredCapacity=a.capacity,
        AvailabilityZones=[f"{a.region}a"],
        TargetGroupARNs=[tg],
        HealthCheckType="ELB",
        HealthCheckGracePeriod=a.grace,
    )
    deadline = time.monotonic() + a.timeout
    while True:
        g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[a.name])["AutoScalingGroups"][0]
        ids = [i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService"]
        health = {
            d["Target"]["Id"]: d["TargetHealth"]["State"]
            for d in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
        }
        if len(ids) == a.capacity and all(health.get(i) == "healthy" for i in ids):
            break
        if time.monotonic() > deadline:
            print(f"stack: {a.capacity} healthy instances not reached in {a.timeout}s: {ids} {health}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(
        json.dumps(
            {"url": url, "group": a.name, "template_id": lt, "target_group": tg, "listener": listener, "instances": ids}
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
