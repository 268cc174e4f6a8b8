"""Start and drive a local EC2 from Python (the pytest suite uses this; so can scripts).

    with LocalEc2.start() as ec2:
        client = ec2.client("ec2")
        ...
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "local-ec2"
SERVER_LABEL = "pipe.local-ec2"


class LocalEc2:
    def __init__(self, proc: subprocess.Popen, ready: dict):
        self.proc = proc
        self.ready = ready
        self.endpoint: str = ready["endpoint"]
        self.pid: int = ready["pid"]
        self.source_ami: str = ready["source_ami"]

    @classmethod
    def start(cls, *args: str, timeout: float = 600) -> "LocalEc2":
        """Starts scripts/local-ec2 and waits for its ready line (the first run on a machine
        builds the instance image: about a minute)."""
        proc = subprocess.Popen(
            [str(LAUNCHER), "--port", "0", "--exit-with-parent", *args],
            stdout=subprocess.PIPE,
            stderr=None,  # the server's log goes to ours
            text=True,
        )
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 0.5)
            if r:
                line = proc.stdout.readline()
                break
            if proc.poll() is not None:
                break
        if not line:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"local EC2 did not become ready (exit {proc.returncode})")
        return cls(proc, json.loads(line))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60, sweep: bool = True) -> int:
        """Signals the server and waits; with `sweep`, then removes any container it left."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if sweep:
            remove_containers(str(self.pid))
        return self.proc.returncode

    def __enter__(self) -> "LocalEc2":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- AWS clients -----------------------------------------------------------------------------

    def client(self, service: str, region: str = "us-east-1", retries: int = 1):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(
                retries={"mode": "standard", "total_max_attempts": retries},
                s3={"addressing_style": "path"},
            ),
        )

    # --- control API -----------------------------------------------------------------------------

    def control(self, method: str, path: str, body: object | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.endpoint}/_local_ec2{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        self.control("POST", "/reset")

    def faults(self, spec: object) -> dict:
        return self.control("POST", "/faults", spec)

    def requests(self, contains: str | None = None, action: str | None = None) -> list[dict]:
        q = []
        if contains:
            q.append("contains=" + urllib.request.quote(contains))
        if action:
            q.append("action=" + urllib.request.quote(action))
        return self.control("GET", "/requests" + ("?" + "&".join(q) if q else ""))["requests"]

    def instances(self) -> list[dict]:
        return self.control("GET", "/instances")["instances"]

    def load_balancers(self) -> list[dict]:
        """One entry per HTTP listener: listener_arn, load_balancer_name, listener_port, url."""
        return self.control("GET", "/load_balancers")["listeners"]

    def listener_url(self, listener_arn: str) -> str:
        """http://127.0.0.1:PORT that serves the listener."""
        return next(e["url"] for e in self.load_balancers() if e["listener_arn"] == listener_arn)

    def timing(self, **knobs) -> dict:
        """Sets timing knobs (scale, refresh_timeout, ...); returns them all."""
        return self.control("POST", "/timing", knobs)


def containers(server_id: str | None = None, all: bool = True) -> list[str]:
    """Names of the containers a local EC2 (any, or the one with this pid) started."""
    label = SERVER_LABEL + (f"={server_id}" if server_id else "")
    out = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}", "--filter", f"label={label}"] + (["-a"] if all else []),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [n for n in out.split() if n]


def remove_containers(server_id: str) -> None:
    names = containers(server_id)
    if names:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True)


def ssh(key: os.PathLike, address: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `command` as admin on the instance at `address` (127.0.0.x), retrying the connection
    until `timeout` (an instance boots in a few seconds)."""
    assert address.startswith("127."), f"not a loopback address: {address}"
    deadline = time.monotonic() + timeout
    while True:
        p = ssh_once(key, address, command)
        if p.returncode != 255 or time.monotonic() >= deadline:
            return p
        time.sleep(0.5)


def ssh_once(key: os.PathLike, address: str, command: str) -> subprocess.CompletedProcess:
    assert address.startswith("127."), f"not a loopback address: {address}"
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            f"admin@{address}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
