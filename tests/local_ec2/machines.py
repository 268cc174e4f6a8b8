"""Every instance moto knows is a real machine: a systemd container with sshd.

A reconcile pass compares moto's instances with the containers this server started and fixes the
difference: pending/running -> a running container (created on first sight), stopping/stopped ->
stopped, shutting-down/terminated (or gone after a reset) -> removed. The server runs it every
half second and right after every call that can change instances, so instances launched by
anything (RunInstances, Auto Scaling) get their machine.

Each instance has its own loopback address 127.0.0.x, reported by moto as both its private and
public IP; its container publishes port 22 and the service ports on that address only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass

import docker
import docker.errors

from . import patches
from .images import BUILD_LABEL, SERVER_LABEL, Images, _alive
from .log import log

INSTANCE_LABEL = "pipe.local-ec2.instance"
ADDRESS_LABEL = "pipe.local-ec2.address"

CGROUP_V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")

RUNNING = ("pending", "running")
STOPPED = ("stopping", "stopped")
GONE = ("shutting-down", "terminated")


class AddressPool:
    """127.0.0.2 upward, lowest free first, reused after terminate.

    Every local EC2 on this host claims its addresses with a lock file (flock, so a killed
    server's claims go with it): two servers never pick the same address, which a port probe
    alone cannot promise (both probe, both find it free, one of them loses at `docker run` and
    has to move the instance after RunInstances reported its address). An address whose ports
    something else holds on this host is skipped."""

    # Docker may let go of a removed container's published ports a moment after the removal
    # returns: an address released this recently is waited for rather than skipped.
    SETTLE = 1.0

    CLAIMS = os.path.join(tempfile.gettempdir(), "pipe-local-ec2-addresses")

    def __init__(self, ports: list[int], first: int = 2, last: int = 254, claims: str | None = None):
        self.ports = ports
        self.first = first
        self.last = last
        self.claims_dir = claims or self.CLAIMS
        os.makedirs(self.claims_dir, exist_ok=True)
        self.claims: dict[str, int] = {}  # address in use -> the descriptor holding its lock
        self.released: dict[str, float] = {}  # address -> when it was released
        self.lock = threading.Lock()

    def allocate(self) -> str:
        with self.lock:
            for x in range(self.first, self.last + 1):
                addr = f"127.0.0.{x}"
                if addr in self.claims or not self._claim(addr):
                    continue
                settle_until = self.released.get(addr, 0) + self.SETTLE
                while not self._free(addr):
                    if time.monotonic() >= settle_until:
                        break
                    time.sleep(0.05)
                else:
                    return addr
                self._unclaim(addr)
                log(f"{addr}: skipped, one of its ports is taken on this host")
        raise RuntimeError("no free loopback address left in 127.0.0.2-254")

    def release(self, addr: str | None) -> None:
        if addr:
            with self.lock:
                if addr in self.claims:
                    self.released[addr] = time.monotonic()
                self._unclaim(addr)

    def clear(self) -> None:
        with self.lock:
            now = time.monotonic()
            for addr in list(self.claims):
                self.released[addr] = now
                self._unclaim(addr)

    def _claim(self, addr: str) -> bool:
        """Take the address's lock file, or False when another local EC2 holds it."""
        fd = os.open(os.path.join(self.claims_dir, addr), os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.claims[addr] = fd
        return True

    def _unclaim(self, addr: str) -> None:
        fd = self.claims.pop(addr, None)
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def _free(self, addr: str) -> bool:
        for port in self.ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port))
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
            finally:
                s.close()
        return True


@dataclass
class Machine:
    instance_id: str
    container_id: str
    name: str
    address: str
    image: str
    running: bool = True
    rebooting: bool = False


def moto_instances():
    """(account, region, instance) for every instance moto holds, in every account and region."""
    from moto.ec2.models import ec2_backends

    out = []
    for _ in range(5):
        try:
            out = []
            for account, per_account in list(ec2_backends.items()):
                for region, backend in list(per_account.items()):
                    for reservation in list(backend.reservations.values()):
                        for inst in list(reservation.instances):
                            out.append((account, region, inst))
            return out
        except RuntimeError:  # changed size during iteration: moto is busy, look again
            time.sleep(0.01)
    return out


def find_ami(account: str, ami_id: str):
    """The AMI `ami_id` as `account` sees it: its own, or one another account shares with it
    (launch permission for that account or for everyone), which AWS lets it launch."""
    from moto.ec2.models import ec2_backends

    for region, backend in list(ec2_backends[account].items()):
        ami = backend.amis.get(ami_id)
        if ami is not None:
            return ami
    for other, per_account in list(ec2_backends.items()):
        if other == account:
            continue
        for region, backend in list(per_account.items()):
            ami = backend.amis.get(ami_id)
            if ami is not None and shared_with(ami, account):
                return ami
    return None


def shared_with(ami, account: str) -> bool:
    perms = getattr(ami, "launch_permissions", [])
    return {"UserId": account} in perms or {"Group": "all"} in perms


def owner_elsewhere(account: str, ami_id: str) -> str | None:
    """The other account that owns `ami_id`, if one does."""
    from moto.ec2.models import ec2_backends

    for other, per_account in list(ec2_backends.items()):
        if other != account and any(ami_id in b.amis for b in list(per_account.values())):
            return other
    return None


class Machines:
    def __init__(
        self,
        client: docker.DockerClient,
        server_id: str,
        images: Images,
        pool: AddressPool,
        meta_root: str,
    ):
        self.client = client
        self.server_id = server_id
        self.images = images
        self.pool = pool
        self.ports = pool.ports
        self.meta_root = meta_root
        self.lock = threading.RLock()
        self.machines: dict[str, Machine] = {}
        self.errors: dict[str, str] = {}  # instance id -> why it has no machine

    # --- reconcile ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        with self.lock:
            seen = set()
            for account, region, inst in moto_instances():
                iid = inst.id
                seen.add(iid)
                state = inst.state
                m = self.machines.get(iid)
                try:
                    if state in RUNNING:
                        if m is None:
                            if iid not in self.errors:
                                self._create(account, region, inst)
                        elif not m.running:
                            self.client.api.start(m.container_id)
                            m.running = True
                    elif state in STOPPED:
                        if m is not None and m.running:
                            self.client.api.stop(m.container_id, timeout=10)
                            m.running = False
                    elif state in GONE:
                        if m is not None:
                            self._remove(m)
                        if getattr(inst, "local_ec2_address", None):
                            self.pool.release(inst.local_ec2_address)
                            inst.local_ec2_address = None
                            nic = inst.nics.get(0)
                            if nic is not None:
                                nic.public_ip = None
                except Exception as e:
                    self.errors[iid] = str(e)
                    log(f"error: instance {iid}: {e}")
                    if m is None and state in RUNNING:
                        self._fail_launch(inst, e)
            for iid in [i for i in self.machines if i not in seen]:
                self._remove(self.machines[iid])
            for iid in [i for i in self.errors if i not in seen]:
                del self.errors[iid]

    def check_containers(self) -> None:
        """Machines that stopped on their own: a container that exited (`poweroff` inside, or
        killed) makes its instance stop, or terminate when its shutdown behaviour says so; a
        container removed behind our back terminates it."""
        with self.lock:
            if not self.machines:
                return
            states = {
                c.id: c.status
                for c in self.client.containers.list(
                    all=True, filters={"label": f"{SERVER_LABEL}={self.server_id}"}
                )
            }
            by_id = {inst.id: inst for _, _, inst in moto_instances()}
            for m in list(self.machines.values()):
                inst = by_id.get(m.instance_id)
                if inst is None or inst.state not in RUNNING or not m.running:
                    continue
                status = states.get(m.container_id)
                if status in ("running", "created", "restarting", "paused") or m.rebooting:
                    continue  # paused: being committed (CreateImage)
                if status is None:
                    log(f"{m.instance_id}: its container is gone: terminating the instance")
                    self._fail_launch(inst, RuntimeError("the machine disappeared"))
                    self._remove(m)
                elif inst.instance_initiated_shutdown_behavior == "terminate":
                    log(f"{m.instance_id}: its container exited: terminating the instance")
                    inst.terminate()
                    self._remove(m)
                else:
                    log(f"{m.instance_id}: its container exited: the instance is stopped")
                    inst.stop()
                    m.running = False

    def _create(self, account: str, region: str, inst) -> None:
        iid = inst.id
        addr = getattr(inst, "local_ec2_address", None)
        if not addr:
            raise RuntimeError("instance has no loopback address")

        # AWS refuses to launch another account's AMI that is not shared with this one.
        if find_ami(account, inst.image_id) is None:
            owner = owner_elsewhere(account, inst.image_id)
            if owner is not None:
                raise RuntimeError(f"AMI {inst.image_id} of account {owner} is not shared with account {account}")

        def source_of(ami_id: str):
            ami = find_ami(account, ami_id)
            return getattr(ami, "local_ec2_source", None) if ami else None

        image = self.images.image_for(inst.image_id, source_of)
        if image is None:
            log(f"warning: {iid}: AMI {inst.image_id} maps to no image; using the source image")
            image = self.images.wait_source(600)

        meta = os.path.join(self.meta_root, iid)
        os.makedirs(meta, exist_ok=True)
        files = {
            "instance-id": iid,
            "local-ipv4": addr,
            "public-ipv4": addr,
            "ami-id": inst.image_id,
            "region": region,
            "instance-type": inst.instance_type,
            "authorized_keys": self._public_key(account, region, inst),
            "user-data": self._user_data(inst),
        }
        for name, text in files.items():
            with open(os.path.join(meta, name), "w") as f:
                f.write(text)

        name = f"pipe-local-ec2-{self.server_id}-{iid}"
        for attempt in range(5):
            try:
                c = self._run(image, name, addr, meta, iid)
                break
            except docker.errors.APIError as e:
                text = str(e).lower()
                if attempt == 4 or not ("already in use" in text or "already allocated" in text):
                    raise
                # Another server took the address between our probe and the run: pick another,
                # and tell moto.
                self._force_remove(name)
                taken, addr = addr, self.pool.allocate()
                self.pool.release(taken)
                patches.set_address(inst, addr)
                for fname in ("local-ipv4", "public-ipv4"):
                    with open(os.path.join(meta, fname), "w") as f:
                        f.write(addr)
                log(f"{iid}: address taken, moving to {addr}")
        self.machines[iid] = Machine(iid, c.id, name, addr, image, True)
        log(f"{iid}: machine {name} on {addr} from {image}")

    def _run(self, image: str, name: str, addr: str, meta: str, iid: str):
        # systemd as PID 1 without --privileged. cgroup v1 (this project's machines): the host's
        # hierarchy read-only is enough. cgroup v2 needs it writable in the host's namespace
        # (the usual recipe; not exercised on the v1 machines the tests run on).
        extra = {}
        cgroup_mode = "ro"
        if CGROUP_V2:
            cgroup_mode = "rw"
            extra["cgroupns"] = "host"
        return self.client.containers.run(
            image,
            detach=True,
            name=name,
            hostname="ip-" + addr.replace(".", "-"),
            labels={SERVER_LABEL: self.server_id, INSTANCE_LABEL: iid, ADDRESS_LABEL: addr},
            tmpfs={"/run": "", "/run/lock": ""},
            volumes={
                "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": cgroup_mode},
                meta: {"bind": "/etc/local-ec2", "mode": "ro"},
            },
            **extra,
            ports={f"{p}/tcp": (addr, p) for p in self.ports},
            stop_signal="SIGRTMIN+3",
            environment={"container": "docker"},
            command=["/sbin/init"],
        )

    def _force_remove(self, name: str) -> None:
        try:
            self.client.api.remove_container(name, force=True)
        except docker.errors.NotFound:
            pass

    def _fail_launch(self, inst, error: Exception) -> None:
        """An instance that cannot have a machine ends as on AWS: terminated, with the reason."""
        from moto.ec2.models.instances import StateReason

        try:
            inst.terminate()
            inst.state_reason = StateReason(
                f"Server.InternalError: local EC2: {error}"[:255], "Server.InternalError"
            )
        except Exception as e:  # moto's own bookkeeping: the error above is what matters
            log(f"warning: terminating {inst.id}: {e}")
        self.pool.release(getattr(inst, "local_ec2_address", None))
        inst.local_ec2_address = None
        nic = inst.nics.get(0)
        if nic is not None:
            nic.public_ip = None

    def _public_key(self, account: str, region: str, inst) -> str:
        if not inst.key_name:
            return ""
        from moto.ec2.models import ec2_backends

        kp = ec2_backends[account][region].key_pairs.get(inst.key_name)
        if kp is None:
            return ""
        pub = kp.material_public
        if isinstance(pub, bytes):
            pub = pub.decode()
        return pub.strip() + "\n"

    @staticmethod
    def _user_data(inst) -> str:
        ud = inst.user_data
        if isinstance(ud, list):
            ud = ud[0] if ud else None
        if not ud:
            return ""
        if hasattr(ud, "decode") and not isinstance(ud, bytes):
            try:
                return ud.decode()  # moto's Base64EncodedString
            except Exception:
                return ""
        if isinstance(ud, bytes):
            return ud.decode(errors="replace")
        return str(ud)

    def _remove(self, m: Machine) -> None:
        try:
            self.client.api.remove_container(m.container_id, force=True)
        except docker.errors.NotFound:
            pass
        self.machines.pop(m.instance_id, None)
        self.pool.release(m.address)
        shutil.rmtree(os.path.join(self.meta_root, m.instance_id), ignore_errors=True)
        log(f"{m.instance_id}: machine removed")

    # --- operations ----------------------------------------------------------------------------

    def get(self, iid: str) -> Machine | None:
        with self.lock:
            return self.machines.get(iid)

    def reboot(self, iids: list[str]) -> None:
        """RebootInstances: restart the containers, in the background (the call returns at once,
        as on AWS)."""
        with self.lock:
            ms = [m for i in iids if (m := self.machines.get(i)) and m.running]
            for m in ms:
                m.rebooting = True

        def run() -> None:
            for m in ms:
                try:
                    self.client.api.restart(m.container_id, timeout=10)
                except docker.errors.APIError as e:
                    log(f"warning: reboot {m.instance_id}: {e}")
                finally:
                    m.rebooting = False

        threading.Thread(target=run, name="reboot", daemon=True).start()

    def cut_ssh(self, iid: str, seconds: float) -> None:
        """Drops the instance's SSH sessions and refuses new ones for `seconds`."""
        m = self.get(iid)
        if m is None:
            raise KeyError(f"no machine for instance {iid}")
        c = self.client.containers.get(m.container_id)
        c.exec_run(
            ["sh", "-c", "systemctl stop ssh.service ssh.socket 2>/dev/null; pkill -f 'sshd:' || true"]
        )

        def restore() -> None:
            try:
                self.client.containers.get(m.container_id).exec_run(
                    ["systemctl", "start", "ssh.service"]
                )
            except docker.errors.APIError:
                pass

        t = threading.Timer(seconds, restore)
        t.daemon = True
        t.start()

    def remove_all(self) -> None:
        """Every container of this server, known or not."""
        with self.lock:
            for m in list(self.machines.values()):
                self._remove(m)
            self.errors.clear()
            for label in (SERVER_LABEL, BUILD_LABEL):
                for c in self.client.containers.list(
                    all=True, filters={"label": f"{label}={self.server_id}"}
                ):
                    try:
                        c.remove(force=True)
                    except docker.errors.NotFound:
                        pass

    def sweep_dead(self) -> None:
        """Containers left by servers that no longer run."""
        found = {}
        for label in (SERVER_LABEL, BUILD_LABEL):
            for c in self.client.containers.list(all=True, filters={"label": label}):
                sid = (c.labels or {}).get(label, "")
                if sid:  # images pass labels on: an empty value is not an owner
                    found[c.id] = (c, sid)
        for c, sid in found.values():
            if sid and sid != self.server_id and not _alive(sid):
                log(f"removing {c.name}, left by a local EC2 that no longer runs")
                try:
                    c.remove(force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as e:
                    # Another server (or Docker itself) is removing it already: not ours to fail on.
                    log(f"warning: removing {c.name}: {e}")

    def to_json(self) -> list[dict]:
        with self.lock:
            return [
                {
                    "instance_id": m.instance_id,
                    "container": m.name,
                    "container_id": m.container_id,
                    "address": m.address,
                    "image": m.image,
                    "running": m.running,
                }
                for m in self.machines.values()
            ] + [{"instance_id": i, "error": e} for i, e in self.errors.items()]
