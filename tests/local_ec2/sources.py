"""Debian source AMIs: the one every server starts with, and newer ones a test registers.

Debian publishes a new `debian-12-amd64-*` AMI now and then; a bake that resolves its box by
`ami_filter` must then re-bake its base from it. `POST /_local_ec2/source_amis` plays that
release: a new AMI owned by Debian's account (136693071363), public, with a newer CreationDate
and a newer name, in every region (the same id everywhere, like the first one), running the
same instance image. A reset forgets the registered ones; the start-up one stays.
"""

from __future__ import annotations

import copy
import datetime
import re
import threading

from . import patches
from .images import DEBIAN_OWNER, SOURCE_AMI_ID, SOURCE_AMI_NAME, Images

FIRST_DATE = datetime.date(2026, 1, 1)
KNOWN_KEYS = {"name", "creation_date", "description"}


def source_ami(ami_id: str, name: str, creation_date: str, description: str) -> dict:
    """An entry of moto's AMI list (as MOTO_AMIS_PATH holds them) for a Debian source AMI."""
    return {
        "ami_id": ami_id,
        "name": name,
        "description": description,
        "owner_id": DEBIAN_OWNER,
        "public": True,
        "state": "available",
        "architecture": "x86_64",
        "virtualization_type": "hvm",
        "hypervisor": "xen",
        "root_device_type": "ebs",
        "root_device_name": "/dev/xvda",
        "image_type": "machine",
        "image_location": f"{DEBIAN_OWNER}/{name}",
        "sriov": "simple",
        "creation_date": creation_date,
    }


def first() -> dict:
    """The source AMI every server starts with."""
    return source_ami(
        SOURCE_AMI_ID, SOURCE_AMI_NAME, f"{FIRST_DATE.isoformat()}T00:00:00.000Z", "Debian 12 (20260101-1)"
    )


class SourceAmis:
    def __init__(self, images: Images):
        self.images = images
        self.lock = threading.Lock()
        self.registered: list[dict] = []

    def to_json(self) -> list[dict]:
        with self.lock:
            entries = [first(), *self.registered]
        return [self._shown(e) for e in entries]

    @staticmethod
    def _shown(entry: dict) -> dict:
        created = entry["creation_date"]
        if isinstance(created, datetime.datetime):
            created = created.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return {
            "image_id": entry["ami_id"],
            "name": entry["name"],
            "owner_id": entry["owner_id"],
            "creation_date": created,
        }

    def register(self, spec: dict) -> dict:
        """A newer Debian source AMI in every region; `spec` may set its name, creation date
        (ISO 8601) and description. The defaults follow Debian's naming, a day after the last."""
        from moto.ec2.models import amis as moto_amis
        from moto.ec2.models import ec2_backends

        if not isinstance(spec, dict):
            raise ValueError("the body is a JSON object")
        unknown = set(spec) - KNOWN_KEYS
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)} (known: {sorted(KNOWN_KEYS)})")
        with self.lock:
            n = len(self.registered) + 2
            day = FIRST_DATE + datetime.timedelta(days=n - 1)
            ami_id = f"ami-0deb12{n:011d}"
            name = spec.get("name") or f"debian-12-amd64-{day:%Y%m%d}-{n}"
            created = spec.get("creation_date") or f"{day.isoformat()}T00:00:00.000Z"
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9()\[\]./\-'@_ ]{3,128}", name):
                raise ValueError(f"not an AMI name: {name!r}")
            if not isinstance(created, str):
                raise ValueError("creation_date is an ISO 8601 string")
            try:
                datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"creation_date is not ISO 8601: {created!r}") from None
            entry = source_ami(ami_id, name, created, spec.get("description") or f"Debian 12 ({name})")
            # Before the AMI exists: the patched constructor must see a source AMI (Debian's
            # owner, no `pending`), and instances of it run the source image.
            patches.Hooks.source_ami_ids.add(ami_id)
            self.images.add_source(ami_id)
            # Regions whose backend moto makes later load it from the list; those that exist
            # get it now.
            moto_amis.AMIS.append(entry)
            for per_account in list(ec2_backends.values()):
                for backend in list(per_account.values()):
                    loaded = copy.deepcopy(entry)
                    loaded["owner_alias"] = "amazon"  # as moto's loader does; the patch clears it
                    loaded["creation_date"] = _parse(created)
                    backend.amis[ami_id] = moto_amis.Ami(backend, **loaded)
            self.registered.append(entry)
            return self._shown(entry)

    def reset(self) -> None:
        """Forgets the registered source AMIs (moto's reset then drops them from its models)."""
        from moto.ec2.models import amis as moto_amis

        with self.lock:
            ids = {e["ami_id"] for e in self.registered}
            moto_amis.AMIS[:] = [a for a in moto_amis.AMIS if a["ami_id"] not in ids]
            patches.Hooks.source_ami_ids.difference_update(ids)
            self.images.drop_sources(ids)
            self.registered.clear()


def _parse(text: str):
    from moto.core.parse import default_timestamp_parser

    return default_timestamp_parser(text)
