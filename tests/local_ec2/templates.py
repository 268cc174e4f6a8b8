"""What moto lacks for a promotion, patched into its models at start:

- CreateLaunchTemplateVersion honours `SourceVersion`: the new version is the source version's
  data with the request's fields on top (AWS's behaviour; moto starts from nothing).
- DeleteLaunchTemplateVersions (moto lacks it): a deleted version is gone from describes and
  cannot be launched from; the default version cannot be deleted
  (`launchTemplateVersionDefaultVersionCannotBeDeleted`, as on AWS). Numbers are never reused.
- Enable/DisableImageDeregistrationProtection: an AMI can be protected, and DeregisterImage
  refuses a protected AMI (`OperationNotPermitted`), as on AWS. DescribeImages shows the state
  as `DeregistrationProtection` (`enabled` / `disabled`).
"""

from __future__ import annotations


def apply() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.responses.amis import AmisResponse
    from moto.ec2.responses.launch_templates import LaunchTemplates

    if getattr(LaunchTemplates, "_local_ec2_templates", False):
        return

    create_version = LaunchTemplates.create_launch_template_version

    def create_launch_template_version(self):
        source = self._get_param("SourceVersion")
        if not source:
            return create_version(self)
        name = self._get_param("LaunchTemplateName")
        tid = self._get_param("LaunchTemplateId")
        template = (
            self.ec2_backend.get_launch_template(tid)
            if tid
            else self.ec2_backend.get_launch_template_by_name(name)
        )
        base = dict(template.get_version(source).data)
        make = template.create_version

        def merged(data, description):
            return make({**base, **(data or {})}, description)

        template.create_version = merged
        try:
            return create_version(self)
        finally:
            del template.create_version

    LaunchTemplates.create_launch_template_version = create_launch_template_version

    def set_protection(self, enabled: bool):
        ami_id = self._get_param("ImageId")
        self.error_on_dryrun()
        ami = self.ec2_backend.describe_images(ami_ids=[ami_id])[0]
        ami.local_ec2_protected = enabled
        ami.deregistration_protection = "enabled" if enabled else "disabled"
        return ActionResult({"Return": ami.deregistration_protection})

    from moto.ec2.models.launch_templates import LaunchTemplate

    get_version = LaunchTemplate.get_version

    def live_latest(self):
        gone = getattr(self, "local_ec2_deleted", set())
        return next(v for v in reversed(self.versions) if v.number not in gone)

    LaunchTemplate.latest_version = live_latest

    def live_get_version(self, num):
        if str(num).lower() == "$latest":
            return live_latest(self)
        version = get_version(self, num)
        if version.number in getattr(self, "local_ec2_deleted", set()):
            from moto.ec2.exceptions import InvalidLaunchTemplateVersionNotFound

            raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=num)
        return version

    LaunchTemplate.get_version = live_get_version

    describe_versions = LaunchTemplates.describe_launch_template_versions

    def describe_launch_template_versions(self):
        result = describe_versions(self)
        deleted = {
            (t.id, n)
            for t in self.ec2_backend.launch_templates.values()
            for n in getattr(t, "local_ec2_deleted", set())
        }
        data = getattr(result, "result", None) or getattr(result, "_result", None)
        if isinstance(data, dict) and deleted:
            data["LaunchTemplateVersions"] = [
                v
                for v in data["LaunchTemplateVersions"]
                if (v["LaunchTemplateId"], v["VersionNumber"]) not in deleted
            ]
        return result

    LaunchTemplates.describe_launch_template_versions = describe_launch_template_versions

    def delete_launch_template_versions(self):
        name = self._get_param("LaunchTemplateName")
        tid = self._get_param("LaunchTemplateId")
        numbers = self._get_param("Versions") or self._get_param("LaunchTemplateVersion") or []
        self.error_on_dryrun()
        template = (
            self.ec2_backend.get_launch_template(tid)
            if tid
            else self.ec2_backend.get_launch_template_by_name(name)
        )
        deleted = template.__dict__.setdefault("local_ec2_deleted", set())
        ok, failed = [], []
        for raw in numbers:
            n = int(raw)
            entry = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name, "VersionNumber": n}
            if n == template.default_version_number:
                failed.append({**entry, "ResponseError": {"Code": "launchTemplateVersionDefaultVersionCannotBeDeleted", "Message": "the default version cannot be deleted"}})
            elif n < 1 or n > len(template.versions) or n in deleted:
                failed.append({**entry, "ResponseError": {"Code": "launchTemplateVersionDoesNotExist", "Message": f"version {n} does not exist"}})
            else:
                deleted.add(n)
                ok.append(entry)
        return ActionResult(
            {
                "SuccessfullyDeletedLaunchTemplateVersions": ok,
                "UnsuccessfullyDeletedLaunchTemplateVersions": failed,
            }
        )

    LaunchTemplates.delete_launch_template_versions = delete_launch_template_versions

    AmisResponse.enable_image_deregistration_protection = lambda self: set_protection(self, True)
    AmisResponse.disable_image_deregistration_protection = lambda self: set_protection(
        self, False
    )

    deregister = AmiBackend.deregister_image

    def deregister_image(self, ami_id: str) -> None:
        ami = self.amis.get(ami_id)
        if ami is not None and getattr(ami, "local_ec2_protected", False):
            raise EC2ClientError(
                "OperationNotPermitted",
                f"Image {ami_id} is protected from deregistration; disable the protection first",
            )
        deregister(self, ami_id)

    AmiBackend.deregister_image = deregister_image
    LaunchTemplates._local_ec2_templates = True
