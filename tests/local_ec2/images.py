"""Docker images behind AMIs.

The source AMI (Debian's owner id, `debian-12-amd64-...`) maps to `pipe-local-ec2/debian-12-cloud`,
derived once from pipe's debian-12 box (cached by the box's image id in a label): systemd as PID 1,
sshd, user `admin` with passwordless sudo, and a first-boot unit that, like cloud-init on EC2,
makes fresh SSH host keys and installs the launch key pair for every new instance id. CreateImage
commits an instance's container; CopyImage maps to the source AMI's image.
"""

from __future__ import annotations

import fcntl
import glob
import io
import os
import tarfile
import threading
import time

import docker
import docker.errors

from .log import log

BOX_IMAGE = os.environ.get("PIPE_LOCAL_EC2_BOX", "pipe-box/debian-12:latest")
CLOUD_REPO = "pipe-local-ec2/debian-12-cloud"
CLOUD_TAG = "latest"
BOX_LABEL = "pipe.local-ec2.box"
SERVER_LABEL = "pipe.local-ec2"
AMI_LABEL = "pipe.local-ec2.ami"
# On the container that builds the instance image (its value: the server id).
BUILD_LABEL = "pipe.local-ec2.build"
# Bump when the build below changes: images made by an older recipe are rebuilt.
RECIPE = "2"
RECIPE_LABEL = "pipe.local-ec2.recipe"

DEBIAN_OWNER = "136693071363"
SOURCE_AMI_ID = "ami-0deb1200000000001"
SOURCE_AMI_NAME = "debian-12-amd64-20260101-1"

CA_DIR = "/usr/local/share/ca-certificates"
BUILD_CA_DIR = "/usr/local/share/ca-certificates/local-ec2-build"

# The first-boot unit: per instance id (like cloud-init's per-instance modules).
FIRSTBOOT = r"""#!/bin/sh
# Runs before sshd at every boot; does the per-instance part once per instance id.
# /etc/local-ec2 is bind-mounted read-only by the local EC2: instance-id, authorized_keys,
# user-data, local-ipv4, public-ipv4, ami-id, region, instance-type.
set -eu
meta=/etc/local-ec2
state=/var/lib/local-ec2
[ -r "$meta/instance-id" ] || { ssh-keygen -A; exit 0; }
id=$(cat "$meta/instance-id")
mkdir -p "$state"
if [ "$(cat "$state/instance-id" 2>/dev/null || true)" != "$id" ]; then
  rm -f /etc/ssh/ssh_host_*
  if [ -s "$meta/authorized_keys" ]; then
    install -d -m 0700 -o admin -g admin /home/admin/.ssh
    touch /home/admin/.ssh/authorized_keys
    while IFS= read -r key; do
      [ -n "$key" ] || continue
      grep -qxF "$key" /home/admin/.ssh/authorized_keys || printf '%s\n' "$key" >> /home/admin/.ssh/authorized_keys
    done < "$meta/authorized_keys"
    chown admin:admin /home/admin/.ssh/authorized_keys
    chmod 0600 /home/admin/.ssh/authorized_keys
  fi
  rm -f "$state/user-data-done"
  echo "$id" > "$state/instance-id"
fi
ssh-keygen -A
"""

USER_DATA = r"""#!/bin/sh
# Runs the instance's user data once per instance id, if it is a script (starts with #!).
set -eu
meta=/etc/local-ec2
state=/var/lib/local-ec2
[ -s "$meta/user-data" ] || exit 0
[ ! -e "$state/user-data-done" ] || exit 0
touch "$state/user-data-done"
head -c2 "$meta/user-data" | grep -q '^#!' || exit 0
install -m 0700 "$meta/user-data" "$state/user-data"
exec "$state/user-data" > /var/log/user-data.log 2>&1
"""

UNITS = {
    "local-ec2-firstboot.service": """[Unit]
Description=Local EC2: per-instance setup (host keys, launch key pair)
DefaultDependencies=no
After=local-fs.target
Before=ssh.service sysinit.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/local-ec2-firstboot
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
""",
    "local-ec2-user-data.service": """[Unit]
Description=Local EC2: instance user data
After=network.target ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/local-ec2-user-data
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
""",
}

BUILD_SCRIPT = r"""set -e
export DEBIAN_FRONTEND=noninteractive
if ls /usr/local/share/ca-certificates/local-ec2-build/*.crt >/dev/null 2>&1; then
  update-ca-certificates >/dev/null 2>&1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends systemd-sysv dbus openssh-server sudo procps >/dev/null
id admin >/dev/null 2>&1 || useradd -m -s /bin/bash admin
echo 'admin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/admin
chmod 0440 /etc/sudoers.d/admin
install -d -m 0700 -o admin -g admin /home/admin/.ssh
rm -f /etc/ssh/ssh_host_*
chmod 0755 /usr/local/sbin/local-ec2-firstboot /usr/local/sbin/local-ec2-user-data
systemctl enable ssh.service local-ec2-firstboot.service local-ec2-user-data.service >/dev/null 2>&1
# Units that make no sense in a container, and would fail or wait for devices.
systemctl mask systemd-udevd.service systemd-udev-trigger.service systemd-udevd-control.socket \
  systemd-udevd-kernel.socket getty.target console-getty.service systemd-modules-load.service \
  systemd-remount-fs.service sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
  systemd-firstboot.service systemd-resolved.service >/dev/null 2>&1 || true
# A real machine starts services that packages install: the box's Docker-only policy says no.
rm -f /usr/sbin/policy-rc.d
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -rf /usr/local/share/ca-certificates/local-ec2-build
update-ca-certificates --fresh >/dev/null 2>&1
apt-get clean
rm -rf /var/lib/apt/lists/*
"""


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = mode
            info.mtime = int(time.time())
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _proxy_env() -> dict[str, str]:
    env = {}
    for k, v in os.environ.items():
        if k.upper() in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
            env[k] = v
    return env


class Images:
    def __init__(self, client: docker.DockerClient, server_id: str):
        self.client = client
        self.server_id = server_id
        self.lock = threading.Lock()
        self.amis: dict[str, str] = {}  # AMI id -> image reference
        # AMIs that run the instance image: the start-up source AMI and registered newer ones.
        self.source_ids: set[str] = {SOURCE_AMI_ID}
        self.source_image: str | None = None
        self.ready = threading.Event()
        self.error: str | None = None

    # --- the source image ----------------------------------------------------------------------

    def build_source_in_background(self, wait_box: float) -> None:
        def run() -> None:
            try:
                self.source_image = self.ensure_source_image(wait_box)
            except Exception as e:  # reported by /_local_ec2/health and launches
                self.error = str(e)
                log(f"error: the source image: {e}")
            finally:
                self.ready.set()

        threading.Thread(target=run, name="source-image", daemon=True).start()

    def wait_source(self, timeout: float | None = None) -> str:
        if not self.ready.wait(timeout):
            raise RuntimeError("the source image is still being built")
        if self.source_image is None:
            raise RuntimeError(f"no source image: {self.error}")
        return self.source_image

    def _box_id(self, wait_box: float) -> str:
        deadline = time.monotonic() + wait_box
        announced = False
        while True:
            try:
                return self.client.images.get(BOX_IMAGE).id
            except docker.errors.ImageNotFound:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"Docker image {BOX_IMAGE} not found: build the box first "
                        "(`pipe box build debian-12`, or any test that uses it)"
                    ) from None
                if not announced:
                    log(f"waiting for {BOX_IMAGE} (up to {wait_box:.0f} s)")
                    announced = True
                time.sleep(2)

    def ensure_source_image(self, wait_box: float) -> str:
        box_id = self._box_id(wait_box)
        ref = f"{CLOUD_REPO}:{CLOUD_TAG}"
        # One build per machine, even with several servers starting at once.
        with open(os.path.join("/tmp", "pipe-local-ec2-image.lock"), "w") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            try:
                img = self.client.images.get(ref)
                labels = img.labels or {}
                if labels.get(BOX_LABEL) == box_id and labels.get(RECIPE_LABEL) == RECIPE:
                    return ref
            except docker.errors.ImageNotFound:
                pass
            try:
                previous = self.client.images.get(ref).id
            except docker.errors.ImageNotFound:
                previous = None
            log(f"building {ref} from {BOX_IMAGE} (once per box image; about 20 s)")
            started = time.monotonic()
            self._build(box_id, ref)
            log(f"built {ref} in {time.monotonic() - started:.0f} s")
            if previous and previous != self.client.images.get(ref).id:
                try:  # made from an older box: of no further use (unless something still runs it)
                    self.client.images.remove(previous)
                except docker.errors.APIError:
                    pass
            return ref

    def _build(self, box_id: str, ref: str) -> None:
        c = self.client.containers.run(
            BOX_IMAGE,
            ["sleep", "infinity"],
            detach=True,
            labels={BUILD_LABEL: self.server_id},
            name=f"pipe-local-ec2-build-{self.server_id}",
        )
        try:
            files: dict[str, tuple[bytes, int]] = {}
            for crt in sorted(glob.glob(os.path.join(CA_DIR, "*.crt"))):
                with open(crt, "rb") as f:
                    files[f"{BUILD_CA_DIR}/{os.path.basename(crt)}"] = (f.read(), 0o644)
            files["/usr/local/sbin/local-ec2-firstboot"] = (FIRSTBOOT.encode(), 0o755)
            files["/usr/local/sbin/local-ec2-user-data"] = (USER_DATA.encode(), 0o755)
            for name, text in UNITS.items():
                files[f"/etc/systemd/system/{name}"] = (text.encode(), 0o644)
            c.put_archive("/", _tar(files))
            code, out = c.exec_run(["sh", "-c", BUILD_SCRIPT], environment=_proxy_env())
            if code != 0:
                raise RuntimeError(
                    f"building {ref} failed (exit {code}): {out.decode(errors='replace')[-2000:]}"
                )
            c.commit(
                repository=CLOUD_REPO,
                tag=CLOUD_TAG,
                changes=[
                    'CMD ["/sbin/init"]',
                    "ENV container=docker",
                    f"LABEL {BOX_LABEL}={box_id} {RECIPE_LABEL}={RECIPE}",
                    # Labels are inherited through commits: the build container's must go, and
                    # the box's must not make this image look like the box (pipe does the same).
                    f'LABEL {BUILD_LABEL}="" pipe.box="" pipe.box.digest=""',
                ],
            )
        finally:
            c.remove(force=True)

    # --- AMIs ----------------------------------------------------------------------------------

    def image_for(self, ami_id: str, resolve_source=None) -> str | None:
        """The image an instance of `ami_id` runs; `resolve_source(ami)` gives a copy's source."""
        seen = set()
        cur = ami_id
        while cur and cur not in seen:
            seen.add(cur)
            with self.lock:
                if cur in self.amis:
                    return self.amis[cur]
                is_source = cur in self.source_ids
            if is_source:
                return self.wait_source(600)
            cur = resolve_source(cur) if resolve_source else None
        return None

    def add_source(self, ami_id: str) -> None:
        """Instances of `ami_id` run the instance image, like the start-up source AMI's."""
        with self.lock:
            self.source_ids.add(ami_id)

    def drop_sources(self, ami_ids: set[str]) -> None:
        with self.lock:
            self.source_ids -= ami_ids - {SOURCE_AMI_ID}

    def commit(self, container_id: str, ami_id: str) -> str:
        """CreateImage: the instance's container becomes the AMI's image."""
        c = self.client.containers.get(container_id)
        repo = "pipe-local-ec2/ami"
        c.commit(
            repository=repo,
            tag=ami_id,
            changes=[f"LABEL {SERVER_LABEL}={self.server_id} {AMI_LABEL}={ami_id}"],
        )
        ref = f"{repo}:{ami_id}"
        with self.lock:
            self.amis[ami_id] = ref
        return ref

    def map(self, ami_id: str, ref: str) -> None:
        with self.lock:
            self.amis[ami_id] = ref

    def remove_committed(self, server_id: str | None = None) -> None:
        sid = server_id or self.server_id
        for img in self.client.images.list(filters={"label": f"{SERVER_LABEL}={sid}"}):
            try:
                self.client.images.remove(img.id, force=True)
            except docker.errors.APIError as e:
                log(f"warning: removing image {img.id[:19]}: {e}")
        if sid == self.server_id:
            with self.lock:
                self.amis.clear()

    def sweep_dead(self) -> None:
        """Images committed by servers that no longer run."""
        for img in self.client.images.list(filters={"label": SERVER_LABEL}):
            sid = (img.labels or {}).get(SERVER_LABEL, "")
            if sid and sid != self.server_id and not _alive(sid):
                try:
                    self.client.images.remove(img.id, force=True)
                except docker.errors.APIError:
                    pass


def _alive(server_id: str) -> bool:
    """Whether the local EC2 with this id (its pid) still runs."""
    if not server_id.isdigit():
        return False
    try:
        with open(f"/proc/{server_id}/cmdline", "rb") as f:
            return b"local_ec2" in f.read()
    except OSError:
        return False
