"""The local EC2: moto's EC2, STS, SSM, S3, SNS, SQS, Auto Scaling and ELBv2 APIs on 127.0.0.1,
where every instance is a real machine (see machines.py). Run it with scripts/local-ec2.

Prints one JSON line on stdout once it is ready:
  {"endpoint": "http://127.0.0.1:PORT", "pid": ..., "source_ami": "ami-...", ...}
SIGTERM or SIGINT removes every container and image it made, then it exits.
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

from .log import log

DEFAULT_PORTS = "22,80,8080"


def _parse_ports(text: str) -> list[int]:
    ports = []
    for p in text.split(","):
        p = p.strip()
        if not p:
            continue
        n = int(p)
        if not 0 < n < 65536:
            raise argparse.ArgumentTypeError(f"not a port: {p}")
        ports.append(n)
    if 22 not in ports:
        ports.insert(0, 22)
    return ports


def _write_amis(path: str) -> None:
    """moto's default AMIs plus the Debian source AMI (moto reads MOTO_AMIS_PATH on import)."""
    from importlib import resources

    from .sources import first

    amis = []
    try:
        data = (resources.files("moto") / "ec2/resources/amis.json.gz").read_bytes()
        amis = json.loads(gzip.decompress(data))
    except (FileNotFoundError, OSError):
        pass
    amis.append(first())
    with open(path, "w") as f:
        json.dump(amis, f)


def _sweep_state_dirs(server_id: str) -> None:
    """State folders of servers that were killed (the instances' metadata, the AMI list)."""
    import glob
    import re

    from .images import _alive

    for d in glob.glob(os.path.join(tempfile.gettempdir(), "pipe-local-ec2-*-*")):
        m = re.match(r"pipe-local-ec2-(\d+)-", os.path.basename(d))
        if m and m.group(1) != server_id and os.path.isdir(d) and not _alive(m.group(1)):
            shutil.rmtree(d, ignore_errors=True)


def _alive_parent(ppid: int) -> bool:
    return os.getppid() == ppid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="local-ec2", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback only)")
    ap.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    ap.add_argument(
        "--ports",
        type=_parse_ports,
        default=_parse_ports(os.environ.get("PIPE_LOCAL_EC2_PORTS", DEFAULT_PORTS)),
        help=f"ports every instance publishes on its 127.0.0.x (default {DEFAULT_PORTS}, env PIPE_LOCAL_EC2_PORTS)",
    )
    ap.add_argument(
        "--wait-box",
        type=float,
        default=float(os.environ.get("PIPE_LOCAL_EC2_WAIT_BOX", "0")),
        help="seconds to wait for the pipe-box/debian-12 image to appear (default 0)",
    )
    ap.add_argument(
        "--no-wait-image",
        action="store_true",
        help="print the ready line before the instance image is built (launches wait for it)",
    )
    ap.add_argument(
        "--time-scale",
        type=float,
        default=float(os.environ.get("PIPE_LOCAL_EC2_TIME_SCALE", "1")),
        help="multiplies health check intervals, grace periods, warm-ups and draining delays "
        "(default 1, env PIPE_LOCAL_EC2_TIME_SCALE; the control API's /timing changes it later)",
    )
    ap.add_argument("--verbose", action="store_true", help="log every HTTP request")
    ap.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop (and clean up) when the process that started this one exits",
    )
    args = ap.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        ap.error("--host must be a loopback address (127.0.0.0/8)")

    server_id = str(os.getpid())
    parent = os.getppid()
    state_dir = tempfile.mkdtemp(prefix=f"pipe-local-ec2-{server_id}-")
    amis_path = os.path.join(state_dir, "amis.json")
    _write_amis(amis_path)
    os.environ["MOTO_AMIS_PATH"] = amis_path
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")

    import docker
    import docker.errors
    from moto.moto_api._internal.models import moto_api_backend
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    from . import moto_asg, moto_elb, patches, world
    from .autoscaling import Groups
    from .balancer import Balancers
    from .faults import Faults
    from .images import SOURCE_AMI_ID, Images
    from .machines import AddressPool, Machines
    from .middleware import LocalEc2App, Recorder
    from .reconcile import Reconciler
    from .refresh import Refreshes
    from .targets import Targets
    from .timing import Timing
    from .sources import SourceAmis

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as e:
        log(f"error: no Docker engine answers ({e}); scripts/setup starts dockerd")
        shutil.rmtree(state_dir, ignore_errors=True)
        return 1
    images = Images(client, server_id)
    pool = AddressPool(args.ports)
    meta_root = os.path.join(state_dir, "instances")
    os.makedirs(meta_root)
    machines = Machines(client, server_id, images, pool, meta_root)
    faults = Faults()
    recorder = Recorder()
    timing = Timing(args.time_scale)
    targets = Targets(timing)
    groups = Groups(machines, targets, timing)
    refreshes = Refreshes(timing)
    groups.refreshes = refreshes
    balancers = Balancers(targets)
    reconciler = Reconciler(machines, targets, groups, refreshes, balancers, timing)
    sources = SourceAmis(images)

    # What dead servers left is swept best-effort: a sweep that fails (a container another
    # server is removing right now) must not keep this one from starting.
    for sweep in (machines.sweep_dead, images.sweep_dead, lambda: _sweep_state_dirs(server_id)):
        try:
            sweep()
        except Exception as e:  # noqa: BLE001
            log(f"warning: sweeping what dead servers left: {e}")
    images.build_source_in_background(args.wait_box)

    def on_image_from_instance(ami, instance) -> None:
        # CreateImage: commit the instance's container before the call returns.
        machines.reconcile()
        m = machines.get(instance.id)
        if m is not None:
            images.commit(m.container_id, ami.id)
            log(f"{ami.id}: committed from {instance.id}")
        else:
            # Nothing to commit (the machine failed): the AMI runs what the instance's AMI runs.
            ami.local_ec2_source = instance.image_id
            log(f"warning: {ami.id}: instance {instance.id} has no machine to commit")

    patches.Hooks.allocate_address = pool.allocate
    patches.Hooks.on_instance_created = lambda inst: faults.on_created("instance", inst.id)
    patches.Hooks.on_image_created = lambda ami: faults.on_created("image", ami.id)
    patches.Hooks.on_image_from_instance = on_image_from_instance
    patches.Hooks.source_ami_ids = {SOURCE_AMI_ID}
    patches.apply()
    moto_elb.install(targets)
    moto_asg.install(groups, refreshes, targets)
    targets.start()

    reset_lock = threading.Lock()

    def reset() -> None:
        with reset_lock, world.lock, machines.lock:
            reconciler.reset()
            faults.clear()
            recorder.clear()
            machines.remove_all()
            images.remove_committed()
            pool.clear()
            sources.reset()
            moto_api_backend.reset()
            log("reset")

    started = time.time()

    def info() -> dict:
        return {
            "ok": True,
            "pid": os.getpid(),
            "image_ready": images.source_image is not None,
            "image_error": images.error,
            "source_ami": SOURCE_AMI_ID,
            "ports": args.ports,
            "uptime": round(time.time() - started, 1),
        }

    app = LocalEc2App(
        DomainDispatcherApplication(create_backend_app),
        faults,
        recorder,
        machines,
        images,
        reset,
        info,
        sources,
        reconciler.after_call,
        {
            "/load_balancers": lambda method, spec: {"listeners": balancers.to_json()},
            "/targets": lambda method, spec: {"targets": targets.to_json()},
            "/timing": lambda method, spec: (timing.update(spec) if method == "POST" else None) or timing.to_json(),
        },
    )
    class Handler(MotoRequestHandler):
        def log_request(self, code="-", size="-") -> None:
            if args.verbose:
                super().log_request(code, size)

    httpd = make_server(args.host, args.port, app, threaded=True, request_handler=Handler)
    port = httpd.server_port
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log(f"signal {signum}: stopping")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()

    def reconcile_loop() -> None:
        n = 0
        while not stop.wait(0.25):
            n += 1
            try:
                reconciler.run()
                if n % 8 == 0:  # asks Docker: every 2 s is enough
                    machines.check_containers()
            except Exception as e:  # keep going: the next pass may do better
                log(f"error: reconcile: {e}")
            if args.exit_with_parent and not _alive_parent(parent):
                log("the parent process exited: stopping")
                stop.set()

    loop = threading.Thread(target=reconcile_loop, name="reconcile", daemon=True)
    loop.start()

    code = 0
    try:
        if not args.no_wait_image:
            while not images.ready.wait(0.2):
                if stop.is_set():
                    break
            if images.source_image is None and not stop.is_set():
                log(f"error: {images.error}")
                code = 1
                stop.set()
        if not stop.is_set():
            endpoint = f"http://{args.host}:{port}"
            print(
                json.dumps(
                    {
                        "endpoint": endpoint,
                        "pid": os.getpid(),
                        "source_ami": SOURCE_AMI_ID,
                        "image_ready": images.source_image is not None,
                        "ports": args.ports,
                    }
                ),
                flush=True,
            )
            log(f"ready on {endpoint}")
            # stdout carries the ready line only: whatever else prints (moto does, now and then)
            # goes to the log, and cannot fill a pipe nobody reads.
            sys.stdout = sys.stderr
        while not stop.wait(1):
            pass
    finally:
        httpd.shutdown()
        loop.join(timeout=5)
        targets.stop.set()
        balancers.clear()
        with machines.lock:
            machines.remove_all()
            images.remove_committed()
        shutil.rmtree(state_dir, ignore_errors=True)
        log("stopped; containers removed")
    return code


if __name__ == "__main__":
    sys.exit(main())
