"""Launch template versions made from a source version, and AMI deregistration protection."""

import pytest
from botocore.exceptions import ClientError

from .test_local_ec2 import source_ami


def test_a_version_from_a_source_version_keeps_its_fields(local_ec2):
    ec2 = local_ec2.client("ec2")
    ami = source_ami(ec2)
    t = ec2.create_launch_template(
        LaunchTemplateName="web",
        LaunchTemplateData={"ImageId": ami, "InstanceType": "t3.small", "UserData": "ZWNobyBoaQ=="},
    )["LaunchTemplate"]
    v2 = ec2.create_launch_template_version(
        LaunchTemplateId=t["LaunchTemplateId"],
        SourceVersion="1",
        VersionDescription="new image",
        LaunchTemplateData={"ImageId": "ami-0000000000000000b"},
    )["LaunchTemplateVersion"]
    assert v2["VersionNumber"] == 2
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=t["LaunchTemplateId"], Versions=["2"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == "ami-0000000000000000b"
    assert data["InstanceType"] == "t3.small"
    assert data["UserData"] == "ZWNobyBoaQ=="
    # Without a source version, only what is given.
    ec2.create_launch_template_version(
        LaunchTemplateId=t["LaunchTemplateId"], LaunchTemplateData={"ImageId": ami}
    )
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=t["LaunchTemplateId"], Versions=["3"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert "InstanceType" not in data


def test_a_protected_ami_cannot_be_deregistered(local_ec2):
    ec2 = local_ec2.client("ec2")
    copy = ec2.copy_image(SourceImageId=source_ami(ec2), SourceRegion="us-east-1", Name="protected-copy")["ImageId"]
    ec2.enable_image_deregistration_protection(ImageId=copy)
    with pytest.raises(ClientError) as e:
        ec2.deregister_image(ImageId=copy)
    assert e.value.response["Error"]["Code"] == "OperationNotPermitted"
    ec2.disable_image_deregistration_protection(ImageId=copy)
    ec2.deregister_image(ImageId=copy)
    assert ec2.describe_images(Filters=[{"Name": "name", "Values": ["protected-copy"]}])["Images"] == []


def test_deleted_versions_are_gone_and_the_default_stays(local_ec2):
    ec2 = local_ec2.client("ec2")
    ami = source_ami(ec2)
    tid = ec2.create_launch_template(LaunchTemplateName="del", LaunchTemplateData={"ImageId": ami})[
        "LaunchTemplate"
    ]["LaunchTemplateId"]
    for _ in range(2):
        ec2.create_launch_template_version(LaunchTemplateId=tid, LaunchTemplateData={"ImageId": ami})
    out = ec2.delete_launch_template_versions(LaunchTemplateId=tid, Versions=["2", "1", "9"])
    assert [v["VersionNumber"] for v in out["SuccessfullyDeletedLaunchTemplateVersions"]] == [2]
    codes = {v["VersionNumber"]: v["ResponseError"]["Code"] for v in out["UnsuccessfullyDeletedLaunchTemplateVersions"]}
    assert codes == {1: "launchTemplateVersionDefaultVersionCannotBeDeleted", 9: "launchTemplateVersionDoesNotExist"}
    left = ec2.describe_launch_template_versions(LaunchTemplateId=tid)["LaunchTemplateVersions"]
    assert sorted(v["VersionNumber"] for v in left) == [1, 3]
    # $Latest is the newest version left.
    ec2.delete_launch_template_versions(LaunchTemplateId=tid, Versions=["3"])
    latest = ec2.describe_launch_template_versions(LaunchTemplateId=tid, Versions=["$Latest"])
    assert latest["LaunchTemplateVersions"][0]["VersionNumber"] == 1
    assert ec2.describe_launch_templates(LaunchTemplateIds=[tid])["LaunchTemplates"][0]["LatestVersionNumber"] == 1
    # A new version gets a new number; the deleted one is never reused.
    v = ec2.create_launch_template_version(LaunchTemplateId=tid, LaunchTemplateData={"ImageId": ami})
    assert v["LaunchTemplateVersion"]["VersionNumber"] == 4
