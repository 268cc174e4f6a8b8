"""The local EC2 against boto3: AMIs, real machines over SSH, images, faults, reset, recording."""

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error

import pytest
from botocore.exceptions import ClientError

from .harness import LocalEc2, containers, ssh, ssh_once

DEBIAN = "136693071363"


def source_ami(ec2) -> str:
    images = ec2.describe_images(
        Owners=[DEBIAN], Filters=[{"Name": "name", "Values": ["debian-12-amd64-*"]}]
    )["Images"]
    assert len(images) == 1, images
    assert images[0]["State"] == "available"
    return images[0]["ImageId"]


def import_key(ec2, key, name="k") -> str:
    ec2.import_key_pair(KeyName=name, PublicKeyMaterial=(key.parent / (key.name + ".pub")).read_bytes())
    return name


def run(ec2, image, key_name, count=1, **kw) -> list[dict]:
    r = ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, KeyName=key_name, InstanceType="t3.micro", **kw)
    return r["Instances"]


def describe(ec2, iid) -> dict:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def machine(local_ec2, iid) -> dict:
    return next(m for m in local_ec2.instances() if m["instance_id"] == iid)


def container_state(name) -> str:
    return subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}}", name], capture_output=True, text=True
    ).stdout.strip()


def test_source_ami_is_found_by_name_and_owner(local_ec2):
    ec2 = local_ec2.client("ec2")
    assert source_ami(ec2) == local_ec2.source_ami
    # Other regions have it too; other owners' AMIs do not match.
    assert source_ami(local_ec2.client("ec2", "eu-west-1")) == local_ec2.source_ami
    assert ec2.describe_images(Owners=["137112412989"], Filters=[{"Name": "name", "Values": ["debian-12-amd64-*"]}])["Images"] == []


def test_a_registered_newer_source_ami_is_the_most_recent_everywhere_and_runs_the_same_machine(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    newer = local_ec2.control("POST", "/source_amis", {})
    assert newer["image_id"] != local_ec2.source_ami
    assert newer["name"].startswith("debian-12-amd64-")
    assert newer["owner_id"] == DEBIAN
    listed = local_ec2.control("GET", "/source_amis")["source_amis"]
    assert [a["image_id"] for a in listed] == [local_ec2.source_ami, newer["image_id"]]

    # Found by the same filter and owner in every region, newer than the first, public, available.
    for region in ("us-east-1", "eu-west-1"):
        images = local_ec2.client("ec2", region).describe_images(
            Owners=[DEBIAN], Filters=[{"Name": "name", "Values": ["debian-12-amd64-*"]}]
        )["Images"]
        assert sorted(i["ImageId"] for i in images) == sorted([local_ec2.source_ami, newer["image_id"]])
        newest = max(images, key=lambda i: i["CreationDate"])
        assert newest["ImageId"] == newer["image_id"], images
        assert newest["State"] == "available" and newest["Public"] is True
        assert newest["Name"] == newer["name"]

    # An instance of it is the same kind of machine, and knows its AMI.
    (inst,) = run(ec2, newer["image_id"], import_key(ec2, key))
    p = ssh(key, inst["PublicIpAddress"], "cat /etc/local-ec2/ami-id && sudo -n true")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == newer["image_id"]

    # A second one is newer still; names and dates can be given; bad requests say what is wrong.
    third = local_ec2.control(
        "POST", "/source_amis", {"name": "debian-12-amd64-20260301-3", "creation_date": "2026-03-01T00:00:00.000Z"}
    )
    assert third["image_id"] not in (local_ec2.source_ami, newer["image_id"])
    assert third["creation_date"].startswith("2026-03-01")
    with pytest.raises(urllib.error.HTTPError) as bad:
        local_ec2.control("POST", "/source_amis", {"owner": "me"})
    assert bad.value.code == 400
    assert "unknown keys" in bad.value.read().decode()

    # A reset forgets them; the start-up source AMI stays.
    local_ec2.reset()
    assert source_ami(ec2) == local_ec2.source_ami
    assert [a["image_id"] for a in local_ec2.control("GET", "/source_amis")["source_amis"]] == [local_ec2.source_ami]


def test_each_instance_is_a_machine_on_its_own_loopback_address(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    launched = run(ec2, source_ami(ec2), import_key(ec2, key), count=2)
    assert [i["State"]["Name"] for i in launched] == ["pending", "pending"]
    addresses = []
    for inst in launched:
        d = describe(ec2, inst["InstanceId"])
        assert d["State"]["Name"] == "running"
        assert d["PrivateIpAddress"] == d["PublicIpAddress"]
        assert ipaddress.ip_address(d["PublicIpAddress"]) in ipaddress.ip_network("127.0.0.0/8")
        addresses.append(d["PublicIpAddress"])
    assert len(set(addresses)) == 2
    hostnames = set()
    for addr in addresses:
        p = ssh(key, addr, "sudo -n true && hostname && systemctl is-system-running --wait")
        assert p.returncode == 0, p.stderr + p.stdout
        hostnames.add(p.stdout.split()[0])
    assert len(hostnames) == 2
    assert len(containers(str(local_ec2.pid), all=False)) == 2


def test_create_image_then_launch_from_it_has_the_file_and_terminate_removes(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    # CreateKeyPair: the local EC2 installs the public half of moto's key.
    material = ec2.create_key_pair(KeyName="made", KeyType="ed25519")["KeyMaterial"]
    made = key.parent / "made"
    made.write_text(material)
    made.chmod(0o600)
    (first,) = run(ec2, source_ami(ec2), "made")
    addr = first["PublicIpAddress"]
    p = ssh(made, addr, "echo baked | sudo tee /etc/pipe-marker >/dev/null")
    assert p.returncode == 0, p.stderr
    image = ec2.create_image(InstanceId=first["InstanceId"], Name="baked")["ImageId"]
    described = ec2.describe_images(ImageIds=[image])["Images"][0]
    assert described["State"] == "available"
    # EBS-backed, like its source (Packer's amazon-ebs refuses anything else as a source AMI).
    assert described["RootDeviceType"] == "ebs"
    assert described["RootDeviceName"] == "/dev/xvda"

    ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
    assert machine_gone(local_ec2, first["InstanceId"])
    assert describe(ec2, first["InstanceId"])["State"]["Name"] == "terminated"

    (second,) = run(ec2, image, import_key(ec2, key))
    # The address of the terminated instance is free again.
    assert second["PublicIpAddress"] == addr
    p = ssh(key, second["PublicIpAddress"], "cat /etc/pipe-marker; cat /etc/local-ec2/instance-id")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["baked", second["InstanceId"]]
    ec2.terminate_instances(InstanceIds=[second["InstanceId"]])
    assert containers(str(local_ec2.pid)) == []


def machine_gone(local_ec2, iid) -> bool:
    return all(m["instance_id"] != iid for m in local_ec2.instances()) and not any(
        iid in n for n in containers(str(local_ec2.pid))
    )


def test_stop_and_start_stop_and_start_the_container(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    (inst,) = run(ec2, source_ami(ec2), import_key(ec2, key))
    iid = inst["InstanceId"]
    name = machine(local_ec2, iid)["container"]
    assert ssh(key, inst["PublicIpAddress"], "true").returncode == 0
    ec2.stop_instances(InstanceIds=[iid])
    assert container_state(name) == "exited"
    assert ssh_once(key, inst["PublicIpAddress"], "true").returncode == 255
    ec2.start_instances(InstanceIds=[iid])
    assert container_state(name) == "running"
    assert describe(ec2, iid)["PublicIpAddress"] == inst["PublicIpAddress"]
    assert ssh(key, inst["PublicIpAddress"], "true").returncode == 0


def test_injected_error_fails_the_next_call_only(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    ami = source_ami(ec2)
    local_ec2.faults({"fail": {"action": "RunInstances", "code": "RequestLimitExceeded"}})
    with pytest.raises(ClientError) as e:
        run(ec2, ami, import_key(ec2, key))
    assert e.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert containers(str(local_ec2.pid)) == []
    (inst,) = run(ec2, ami, "k")
    assert describe(ec2, inst["InstanceId"])["State"]["Name"] == "running"

    local_ec2.faults({"fail": {"action": "DescribeInstances", "code": "InsufficientInstanceCapacity", "count": 2}})
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            ec2.describe_instances()
        assert e.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    ec2.describe_instances()

    # Other protocols get their own error documents.
    local_ec2.faults(
        [
            {"fail": {"action": "GetParameter", "code": "ThrottlingException"}},
            {"fail": {"action": "GetCallerIdentity", "code": "ServiceUnavailable"}},
        ]
    )
    with pytest.raises(ClientError) as e:
        local_ec2.client("ssm").get_parameter(Name="/x")
    assert e.value.response["Error"]["Code"] == "ThrottlingException"
    with pytest.raises(ClientError) as e:
        local_ec2.client("sts").get_caller_identity()
    assert e.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert local_ec2.client("sts").get_caller_identity()["Account"]


def test_pending_describes(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    local_ec2.faults({"pending": {"instances": 2, "images": 1}})
    (inst,) = run(ec2, source_ami(ec2), import_key(ec2, key))
    iid = inst["InstanceId"]
    states = [describe(ec2, iid)["State"]["Name"] for _ in range(3)]
    assert states == ["pending", "pending", "running"]
    image = ec2.create_image(InstanceId=iid, Name="pending-image")["ImageId"]
    states = [ec2.describe_images(ImageIds=[image])["Images"][0]["State"] for _ in range(2)]
    assert states == ["pending", "available"]
    # The source AMI was never pending.
    assert source_ami(ec2)


def test_cut_ssh_drops_and_refuses_connections_for_a_while(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    (inst,) = run(ec2, source_ami(ec2), import_key(ec2, key))
    addr = inst["PublicIpAddress"]
    assert ssh(key, addr, "true").returncode == 0
    session = subprocess.Popen(
        ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", f"admin@{addr}", "sleep 60"],
    )
    time.sleep(1)
    local_ec2.faults({"cut_ssh": {"instance_id": inst["InstanceId"], "seconds": 4}})
    assert session.wait(10) != 0  # the open session was dropped
    assert ssh_once(key, addr, "true").returncode == 255
    p = ssh(key, addr, "true", timeout=30)
    assert p.returncode == 0, p.stderr


def test_reset_leaves_no_container_and_keeps_the_source_ami(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    run(ec2, source_ami(ec2), import_key(ec2, key), count=2)
    assert len(containers(str(local_ec2.pid))) == 2
    local_ec2.faults({"fail": {"action": "DescribeImages", "count": 5}})
    local_ec2.reset()
    assert containers(str(local_ec2.pid)) == []
    assert ec2.describe_instances()["Reservations"] == []
    assert source_ami(ec2) == local_ec2.source_ami  # the fault went too
    assert ec2.describe_key_pairs()["KeyPairs"] == []


def test_every_request_is_recorded(local_ec2, key):
    canary = "canary-3f1d0c"
    local_ec2.client("ssm").put_parameter(Name="/pipe/canary", Value=canary, Type="SecureString")
    found = local_ec2.requests(contains=canary)
    assert [(r["service"], r["action"]) for r in found] == [("ssm", "PutParameter")]
    # Base64 parameters (user data) are searched decoded too.
    ec2 = local_ec2.client("ec2")
    run(ec2, source_ami(ec2), import_key(ec2, key), UserData=f"#!/bin/sh\necho {canary}\n")
    assert [r["action"] for r in local_ec2.requests(contains=canary)] == ["PutParameter", "RunInstances"]
    assert local_ec2.requests(contains="not-sent-anywhere") == []
    assert any(r["action"] == "DescribeImages" for r in local_ec2.requests(action="DescribeImages"))


def test_user_data_runs_once(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    script = "#!/bin/sh\necho from-user-data > /var/tmp/ud\n"
    (inst,) = run(ec2, source_ami(ec2), import_key(ec2, key), UserData=script)
    p = ssh(key, inst["PublicIpAddress"], "for i in $(seq 50); do [ -s /var/tmp/ud ] && break; sleep 0.2; done; cat /var/tmp/ud")
    assert p.stdout.strip() == "from-user-data", p.stderr


def test_sts_ssm_s3_and_autoscaling_answer(local_ec2):
    assert local_ec2.client("sts").get_caller_identity()["Account"]
    ssm = local_ec2.client("ssm", "eu-west-1")
    ssm.put_parameter(Name="/pipe/ami", Value="ami-1", Type="String")
    assert ssm.get_parameter(Name="/pipe/ami")["Parameter"]["Value"] == "ami-1"
    s3 = local_ec2.client("s3")
    s3.create_bucket(Bucket="pipe-ledger")
    s3.put_object(Bucket="pipe-ledger", Key="a/b.json", Body=b"{}")
    assert s3.get_object(Bucket="pipe-ledger", Key="a/b.json")["Body"].read() == b"{}"
    assert s3.head_object(Bucket="pipe-ledger", Key="a/b.json")["ContentLength"] == 2
    assert local_ec2.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []


def test_sigterm_removes_containers_and_a_new_server_sweeps_a_killed_ones(key):
    killed = LocalEc2.start()
    try:
        ec2 = killed.client("ec2")
        run(ec2, killed.source_ami, import_key(ec2, key))
        assert len(containers(str(killed.pid))) == 1
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait()
        assert len(containers(str(killed.pid))) == 1  # left behind
        with LocalEc2.start() as other:
            assert containers(str(killed.pid)) == []  # swept at start
            ec2 = other.client("ec2")
            run(ec2, other.source_ami, import_key(ec2, key))
            assert len(containers(str(other.pid))) == 1
            other.stop(signal.SIGTERM, sweep=False)
            assert other.proc.returncode == 0
            assert containers(str(other.pid)) == []
    finally:
        killed.stop()


def test_auto_scaling_instances_are_machines_too(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    import_key(ec2, key)
    ec2.create_launch_template(
        LaunchTemplateName="web",
        LaunchTemplateData={"ImageId": source_ami(ec2), "InstanceType": "t3.micro", "KeyName": "k"},
    )
    asg = local_ec2.client("autoscaling")
    asg.create_auto_scaling_group(
        AutoScalingGroupName="web",
        LaunchTemplate={"LaunchTemplateName": "web", "Version": "$Latest"},
        MinSize=1,
        MaxSize=2,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )
    (member,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]["Instances"]
    addr = describe(ec2, member["InstanceId"])["PublicIpAddress"]
    assert machine(local_ec2, member["InstanceId"])["address"] == addr
    p = ssh(key, addr, "true")
    assert p.returncode == 0, p.stderr


def test_reboot_restarts_the_machine(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    (inst,) = run(ec2, source_ami(ec2), import_key(ec2, key))
    addr = inst["PublicIpAddress"]
    boot_id = ssh(key, addr, "cat /proc/sys/kernel/random/boot_id; cat /proc/1/stat").stdout
    started = time.monotonic()
    ec2.reboot_instances(InstanceIds=[inst["InstanceId"]])
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        p = ssh_once(key, addr, "cat /proc/sys/kernel/random/boot_id; cat /proc/1/stat")
        if p.returncode == 0 and p.stdout != boot_id:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the instance did not restart")


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
def test_packer_amazon_ebs_bakes_an_ami(local_ec2, key, tmp_path):
    template = {
        "builders": [
            {
                "type": "amazon-ebs",
                "region": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "custom_endpoint_ec2": local_ec2.endpoint,
                "skip_region_validation": True,
                "skip_credential_validation": True,
                "skip_metadata_api_check": True,
                "source_ami_filter": {
                    "filters": {"name": "debian-12-amd64-*"},
                    "owners": [DEBIAN],
                    "most_recent": True,
                },
                "instance_type": "t3.micro",
                "ssh_username": "admin",
                "ssh_interface": "public_ip",
                "ami_name": "packer-baked",
            }
        ],
        "provisioners": [{"type": "shell", "inline": ["echo from-packer | sudo tee /etc/packer-marker"]}],
    }
    (tmp_path / "t.json").write_text(json.dumps(template))
    # Anything that is not for the local EC2 goes to a proxy that is not there: nothing leaves
    # the loopback range.
    env = dict(os.environ, HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               NO_PROXY="127.0.0.0/8,localhost", CHECKPOINT_DISABLE="1", PACKER_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run(["packer", "build", "-color=false", "t.json"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    ec2 = local_ec2.client("ec2")
    (image,) = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["packer-baked"]}])["Images"]
    assert containers(str(local_ec2.pid)) == []  # packer terminated its instance
    (inst,) = run(ec2, image["ImageId"], import_key(ec2, key))
    p = ssh(key, inst["PublicIpAddress"], "cat /etc/packer-marker")
    assert p.stdout.strip() == "from-packer", p.stderr


def test_a_machine_that_powers_off_stops_its_instance(local_ec2, key):
    ec2 = local_ec2.client("ec2")
    (inst,) = run(ec2, source_ami(ec2), import_key(ec2, key))
    iid = inst["InstanceId"]
    assert ssh(key, inst["PublicIpAddress"], "true").returncode == 0
    ssh_once(key, inst["PublicIpAddress"], "sudo systemctl poweroff")
    deadline = time.monotonic() + 30
    while describe(ec2, iid)["State"]["Name"] != "stopped":
        assert time.monotonic() < deadline, "the instance did not stop"
        time.sleep(0.5)
    ec2.start_instances(InstanceIds=[iid])
    assert ssh(key, inst["PublicIpAddress"], "true").returncode == 0


def assumed(local_ec2, service: str, role: str, region: str = "us-east-1"):
    """A client of `service` with the credentials of `role` (STS AssumeRole): its account."""
    import boto3

    creds = local_ec2.client("sts").assume_role(RoleArn=role, RoleSessionName="test")["Credentials"]
    return boto3.client(
        service,
        endpoint_url=local_ec2.endpoint,
        region_name=region,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def test_another_account_launches_an_ami_only_once_it_is_shared(local_ec2, key):
    # The bake account's AMI (from one of its instances) and its snapshot.
    ec2 = local_ec2.client("ec2")
    (baked,) = run(ec2, local_ec2.source_ami, import_key(ec2, key))
    ami = ec2.create_image(InstanceId=baked["InstanceId"], Name="shared-one")["ImageId"]
    snaps = [
        b["Ebs"]["SnapshotId"]
        for b in ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"]
        if "Ebs" in b
    ]
    assert snaps, "the AMI has a snapshot"
    other = "210987654321"
    prod = assumed(local_ec2, "ec2", f"arn:aws:iam::{other}:role/pipe-promote")
    assert assumed(local_ec2, "sts", f"arn:aws:iam::{other}:role/pipe-promote").get_caller_identity()["Account"] == other

    # Not shared: the other account's instance of it fails to launch, as on AWS.
    prod.import_key_pair(KeyName="k", PublicKeyMaterial=(key.parent / (key.name + ".pub")).read_bytes())
    (refused,) = run(prod, ami, "k")
    deadline = time.monotonic() + 30
    while describe(prod, refused["InstanceId"])["State"]["Name"] != "terminated":
        assert time.monotonic() < deadline, describe(prod, refused["InstanceId"])
        time.sleep(0.5)
    assert "not shared with account" in describe(prod, refused["InstanceId"])["StateReason"]["Message"]

    # Shared (launch permission on the AMI, create-volume permission on its snapshots, both
    # read back): it runs the baked machine.
    ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": other}]})
    for s in snaps:
        ec2.modify_snapshot_attribute(
            SnapshotId=s, Attribute="createVolumePermission", OperationType="add", UserIds=[other]
        )
        perms = ec2.describe_snapshot_attribute(SnapshotId=s, Attribute="createVolumePermission")
        assert perms["CreateVolumePermissions"] == [{"UserId": other}]
    assert ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")["LaunchPermissions"] == [
        {"UserId": other}
    ]
    (launched,) = run(prod, ami, "k")
    deadline = time.monotonic() + 60
    while describe(prod, launched["InstanceId"])["State"]["Name"] != "running" or not any(
        m["instance_id"] == launched["InstanceId"] for m in local_ec2.instances()
    ):
        assert describe(prod, launched["InstanceId"])["State"]["Name"] in ("pending", "running")
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_sns_delivers_to_a_subscribed_sqs_queue(local_ec2):
    sns, sqs = local_ec2.client("sns"), local_ec2.client("sqs")
    topic = sns.create_topic(Name="releases")["TopicArn"]
    queue = sqs.create_queue(QueueName="releases")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    sns.publish(TopicArn=topic, Subject="baked", Message=json.dumps({"ami": "ami-1"}))
    (m,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(m["Body"])
    assert body["Subject"] == "baked"
    assert json.loads(body["Message"]) == {"ami": "ami-1"}
    assert [r["action"] for r in local_ec2.requests(action="Publish")] == ["Publish"]


def test_an_encrypted_copy_says_so_and_a_plain_one_does_not(local_ec2):
    ec2 = local_ec2.client("ec2")
    west = local_ec2.client("ec2", "us-west-2")
    plain = west.copy_image(SourceImageId=local_ec2.source_ami, SourceRegion="us-east-1", Name="plain")["ImageId"]
    sealed = west.copy_image(
        SourceImageId=local_ec2.source_ami,
        SourceRegion="us-east-1",
        Name="sealed",
        Encrypted=True,
        KmsKeyId="alias/prod-amis",
    )["ImageId"]

    def ebs(ami):
        (m,) = [m for m in west.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"] if "Ebs" in m]
        return m["Ebs"]

    assert ebs(plain)["Encrypted"] is False
    assert ebs(sealed)["Encrypted"] is True
    assert ebs(sealed)["KmsKeyId"] == "alias/prod-amis"
    snap = west.describe_snapshots(SnapshotIds=[ebs(sealed)["SnapshotId"]])["Snapshots"][0]
    assert snap["Encrypted"] is True
    assert ec2.describe_images(ImageIds=[local_ec2.source_ami])["Images"][0]["State"] == "available"
