"""Changes to moto's models, applied once at start (after MOTO_AMIS_PATH is set).

- Every new instance takes a loopback address 127.0.0.x as its private AND public IP.
- The source AMI is not owned by "amazon" (moto aliases every loaded AMI so).
- An AMI remembers the AMI it was copied from (so CopyImage maps to the same Docker image), and
  CreateImage commits the instance's container before the call returns.
- An AMI made by CreateImage is EBS-backed (root device type `ebs` on the instance AMI's root
  device name), as on AWS, where only EBS-backed instances can be imaged (moto says `standard`,
  which Packer's amazon-ebs refuses as a source); a copy keeps its source's.
- New instances and images get the armed number of `pending` describes.
- CopyImage with `Encrypted` (and `KmsKeyId`) makes the copy's snapshot encrypted with that
  key, and DescribeImages reports `Encrypted` on an AMI's EBS mapping (moto ignores both).
"""

from __future__ import annotations

from typing import Callable

from .images import DEBIAN_OWNER


class Hooks:
    """What the patched constructors call; the server fills these in."""

    allocate_address: Callable[[], str] | None = None
    on_instance_created: Callable[[object], None] | None = None
    on_image_created: Callable[[object], None] | None = None
    on_image_from_instance: Callable[[object, object], None] | None = None
    source_ami_ids: set[str] = set()


def set_address(inst, addr: str) -> None:
    """`addr` becomes the instance's private and public IP, as moto reports them."""
    from moto.ec2.utils import generate_dns_from_ip

    inst.local_ec2_address = addr
    nic = inst.nics.get(0)
    if nic is None:
        return
    old = nic.private_ip_address
    nic.private_ip_address = addr
    nic.private_ip_addresses = [
        {**a, "PrivateIpAddress": addr} if a.get("PrivateIpAddress") == old else a
        for a in nic.private_ip_addresses
    ] or [{"Primary": True, "PrivateIpAddress": addr}]
    if getattr(nic, "private_dns_name", None):
        nic.private_dns_name = generate_dns_from_ip(addr)
        for a in nic.private_ip_addresses:
            if a.get("PrivateIpAddress") == addr and a.get("Primary"):
                a["PrivateDnsName"] = nic.private_dns_name
    # The address stays across stop/start: the machine keeps its published ports.
    nic.public_ip_auto_assign = False
    nic.public_ip = addr


def apply() -> None:
    from moto.ec2.models.amis import Ami
    from moto.ec2.models.instances import Instance
    if getattr(Instance, "_local_ec2_patched", False):
        return

    instance_init = Instance.__init__

    def patched_instance_init(self, *args, **kwargs):
        instance_init(self, *args, **kwargs)
        self.local_ec2_address = None
        if Hooks.allocate_address is None:
            return
        set_address(self, Hooks.allocate_address())
        if Hooks.on_instance_created is not None:
            Hooks.on_instance_created(self)

    Instance.__init__ = patched_instance_init

    ami_init = Ami.__init__

    def patched_ami_init(self, ec2_backend, ami_id, instance=None, source_ami=None, **kwargs):
        ami_init(self, ec2_backend, ami_id, instance=instance, source_ami=source_ami, **kwargs)
        self.local_ec2_source = source_ami.id if source_ami is not None else None
        if instance is not None:
            self.root_device_type = "ebs"
            parent = ec2_backend.amis.get(instance.image_id)
            self.root_device_name = getattr(parent, "root_device_name", None) or "/dev/xvda"
        elif source_ami is not None:
            self.root_device_type = source_ami.root_device_type
            self.root_device_name = source_ami.root_device_name
        if ami_id in Hooks.source_ami_ids:
            if self.owner_id == DEBIAN_OWNER:
                self.owner_alias = None
            return
        if instance is not None and Hooks.on_image_from_instance is not None:
            Hooks.on_image_from_instance(self, instance)
        if Hooks.on_image_created is not None:
            Hooks.on_image_created(self)

    Ami.__init__ = patched_ami_init
    _encrypted_copies()
    Instance._local_ec2_patched = True

    from . import templates

    templates.apply()


def _encrypted_copies() -> None:
    from moto.ec2.models.amis import Ami
    from moto.ec2.responses.amis import AmisResponse

    mappings = Ami.block_device_mappings

    def block_device_mappings(self):
        out = mappings.fget(self)
        snap = getattr(self, "ebs_snapshot", None)
        for m in out:
            if "Ebs" in m and snap is not None:
                m["Ebs"]["Encrypted"] = bool(snap.encrypted)
                if snap.kms_key_id:
                    m["Ebs"]["KmsKeyId"] = snap.kms_key_id
        return out

    Ami.block_device_mappings = property(block_device_mappings)

    copy_image = AmisResponse.copy_image

    def patched_copy_image(self):
        result = copy_image(self)
        if str(self._get_param("Encrypted", "false")).lower() == "true":
            ami = self.ec2_backend.amis[result.result["ImageId"]]
            ami.ebs_snapshot.encrypted = True
            ami.ebs_snapshot.kms_key_id = self._get_param("KmsKeyId") or "alias/aws/ebs"
        return result

    AmisResponse.copy_image = patched_copy_image
