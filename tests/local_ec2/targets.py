"""Target groups' targets: registration, real health checks, draining.

moto keeps which targets a target group has; this module keeps what an ALB knows about each of
them, and answers DescribeTargetHealth from it (patches.py routes moto's `health_for` here):

- `initial` (Elb.RegistrationInProgress, then Elb.InitialHealthChecking) from registration until
  HealthyThresholdCount checks in a row pass (-> `healthy`) or UnhealthyThresholdCount fail
  (-> `unhealthy`, with Target.FailedHealthChecks, Target.Timeout or
  Target.ResponseCodeMismatch);
- `draining` (Target.DeregistrationInProgress) from deregistration for the target group's
  `deregistration_delay.timeout_seconds`: no new requests, requests in flight go on; when the
  delay ends the target is gone, and connections still open to it are cut (as AWS does);
- `unused`: the target group is behind no listener (Target.NotInUse, no health checks), or the
  instance is not running (Target.InvalidState);
- `unavailable` (Target.HealthCheckDisabled): health checks are off; traffic goes to it anyway.

Health checks are real requests: HTTP(S) GET of HealthCheckPath (or a TCP connect) on the
target's 127.0.0.x and port, every HealthCheckIntervalSeconds, each within
HealthCheckTimeoutSeconds, the answer's status matched against the Matcher; all scaled by the
timing knobs. Only loopback addresses are ever probed.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .log import log

ROUTABLE = ("healthy", "unavailable")
CHECKED = ("initial", "healthy", "unhealthy")

REASONS = {
    "registering": ("initial", "Elb.RegistrationInProgress", "Target registration is in progress"),
    "checking": ("initial", "Elb.InitialHealthChecking", "Initial health checks in progress"),
    "draining": ("draining", "Target.DeregistrationInProgress", "Target deregistration is in progress"),
    "not_in_use": (
        "unused",
        "Target.NotInUse",
        "Target group is not configured to receive traffic from the load balancer",
    ),
    "disabled": ("unavailable", "Target.HealthCheckDisabled", "Health checks are disabled"),
}


@dataclass(frozen=True)
class Check:
    """A target group's health check settings (copied from moto under the world lock)."""

    enabled: bool
    protocol: str
    port: str  # "traffic-port" or a number
    path: str
    interval: float
    timeout: float
    healthy: int
    unhealthy: int
    matcher: str


@dataclass
class Target:
    tg_arn: str
    id: str
    port: int
    address: str | None
    state: str = "initial"
    reason: str | None = REASONS["registering"][1]
    description: str | None = REASONS["registering"][2]
    ok: int = 0  # consecutive passed checks
    bad: int = 0  # consecutive failed checks
    next_probe: float = 0.0
    probing: bool = False
    drain_until: float | None = None
    running: bool = True
    registered_at: float = field(default_factory=time.monotonic)
    in_flight: set = field(default_factory=set)  # upstream sockets of forwarded requests

    def set(self, key: str) -> None:
        self.state, self.reason, self.description = REASONS[key]

    def to_json(self) -> dict:
        return {
            "target_group_arn": self.tg_arn,
            "id": self.id,
            "port": self.port,
            "address": self.address,
            "state": self.state,
            "reason": self.reason,
            "description": self.description,
            "passed_in_a_row": self.ok,
            "failed_in_a_row": self.bad,
            "in_flight": len(self.in_flight),
        }


def check_of(tg) -> Check:
    matcher = (getattr(tg, "matcher", None) or {}).get("HttpCode") or "200"
    return Check(
        enabled=bool(tg.health_check_enabled),
        protocol=(tg.health_check_protocol or tg.protocol or "HTTP").upper(),
        port=str(tg.health_check_port or "traffic-port"),
        path=tg.health_check_path or "/",
        interval=float(tg.health_check_interval_seconds or 30),
        timeout=float(tg.health_check_timeout_seconds or 5),
        healthy=int(tg.healthy_threshold_count or 5),
        unhealthy=int(tg.unhealthy_threshold_count or 2),
        matcher=str(matcher),
    )


def status_matches(status: int, matcher: str) -> bool:
    for part in matcher.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            if int(lo) <= status <= int(hi):
                return True
        elif part and int(part) == status:
            return True
    return False


def loopback(address: str | None) -> str | None:
    """The address if it is on 127.0.0.0/8: nothing else is ever contacted."""
    if not address:
        return None
    try:
        return address if ipaddress.ip_address(address).is_loopback else None
    except ValueError:
        return None


def probe(address: str, port: int, check: Check, timeout: float) -> tuple[bool, str | None, str | None]:
    """One health check: (passed, reason, description) as the ALB words a failure."""
    assert loopback(address), f"not a loopback address: {address}"
    try:
        if check.protocol == "TCP":
            socket.create_connection((address, port), timeout=timeout).close()
            return True, None, None
        if check.protocol == "HTTPS":
            conn = http.client.HTTPSConnection(
                address, port, timeout=timeout, context=ssl._create_unverified_context()
            )
        else:
            conn = http.client.HTTPConnection(address, port, timeout=timeout)
        try:
            conn.request(
                "GET",
                check.path,
                headers={"User-Agent": "ELB-HealthChecker/2.0", "Connection": "close"},
            )
            r = conn.getresponse()
            r.read()
        finally:
            conn.close()
        if status_matches(r.status, check.matcher):
            return True, None, None
        return False, "Target.ResponseCodeMismatch", f"Health checks failed with these codes: [{r.status}]"
    except socket.timeout:
        return False, "Target.Timeout", "Request timed out"
    except (OSError, http.client.HTTPException):
        return False, "Target.FailedHealthChecks", "Health checks failed"


class Targets:
    def __init__(self, timing) -> None:
        self.timing = timing
        self.lock = threading.Lock()
        self.targets: dict[tuple[str, str], Target] = {}
        self.checks: dict[str, Check] = {}
        self.in_use: set[str] = set()  # target groups some listener forwards to
        self.rr: dict[str, int] = {}  # round-robin position per target group
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="health")
        self.stop = threading.Event()

    # --- what moto tells (called under the world lock) -------------------------------------------

    def on_register(self, tg, target: dict) -> None:
        tid = target["Id"]
        port = int(target.get("Port") or tg.port or 80)
        self.checks[tg.arn] = check_of(tg)
        with self.lock:
            t = self.targets.get((tg.arn, tid))
            if t is not None and t.state != "draining" and t.port == port:
                return
            if t is not None:
                self._cut(t)
            t = Target(tg.arn, tid, port, _address(tg, tid))
            t.next_probe = time.monotonic()
            self.targets[(tg.arn, tid)] = t
            if tg.arn not in self.in_use:
                t.set("not_in_use")
            elif not self.checks[tg.arn].enabled:
                t.set("disabled")

    def on_deregister(self, tg, target_id: str) -> None:
        delay = float(tg.attributes.get("deregistration_delay.timeout_seconds", 300))
        with self.lock:
            t = self.targets.get((tg.arn, target_id))
            if t is None or t.state == "draining":
                return
            t.set("draining")
            t.drain_until = time.monotonic() + self.timing.drain(delay)
            log(f"{target_id}: draining from {tg.name} for {self.timing.drain(delay):.1f} s")

    def sync(self, backends) -> None:
        """A reconcile pass: every target group moto holds (all accounts and regions)."""
        now = time.monotonic()
        seen_tgs = set()
        for backend in backends:
            in_use = _forwarded_target_groups(backend)
            for tg in list(backend.target_groups.values()):
                seen_tgs.add(tg.arn)
                self.checks[tg.arn] = check_of(tg)
                with self.lock:
                    if tg.arn in in_use:
                        self.in_use.add(tg.arn)
                    else:
                        self.in_use.discard(tg.arn)
                for tid, spec in list(tg.targets.items()):
                    if (tg.arn, tid) not in self.targets or self.targets[(tg.arn, tid)].state == "draining":
                        self.on_register(tg, spec)
                for (arn, tid), t in list(self.targets.items()):
                    if arn == tg.arn and tid not in tg.targets and t.state != "draining":
                        self.on_deregister(tg, tid)
                with self.lock:
                    for (arn, tid), t in self.targets.items():
                        if arn == tg.arn:
                            self._observe(tg, t, now)
        with self.lock:
            for key, t in list(self.targets.items()):
                if t.tg_arn not in seen_tgs or (t.state == "draining" and now >= (t.drain_until or 0)):
                    self._cut(t)
                    del self.targets[key]
                    if t.state == "draining":
                        log(f"{t.id}: deregistered from its target group (draining over)")
            self.checks = {k: v for k, v in self.checks.items() if k in seen_tgs}

    def _observe(self, tg, t: Target, now: float) -> None:
        if t.state == "draining":
            return
        inst = _instance(tg, t.id)
        t.address = _address(tg, t.id)
        t.running = inst is None or inst.state == "running"
        check = self.checks[tg.arn]
        if not t.running:
            t.state, t.reason = "unused", "Target.InvalidState"
            t.description = f"Target is in the {inst.state} state"
            t.ok = t.bad = 0
        elif tg.arn not in self.in_use:
            t.set("not_in_use")
            t.ok = t.bad = 0
        elif not check.enabled:
            t.set("disabled")
        elif t.state in ("unused", "unavailable"):
            t.set("registering")  # back in use: health checks start over
            t.ok = t.bad = 0
            t.next_probe = now

    # --- health checks ---------------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._loop, name="health-checks", daemon=True).start()

    def _loop(self) -> None:
        while not self.stop.wait(0.05):
            now = time.monotonic()
            due = []
            with self.lock:
                for t in self.targets.values():
                    check = self.checks.get(t.tg_arn)
                    if (
                        check is None
                        or not check.enabled
                        or t.state not in CHECKED
                        or t.tg_arn not in self.in_use
                        or not t.running
                        or t.probing
                        or now < t.next_probe
                        or not loopback(t.address)
                    ):
                        continue
                    t.probing = True
                    due.append((t, check))
            for t, check in due:
                self.pool.submit(self._probe, t, check)

    def _probe(self, t: Target, check: Check) -> None:
        port = t.port if check.port == "traffic-port" else int(check.port)
        # At least a second, however scaled: a busy machine must not fail checks by itself.
        timeout = max(1.0, self.timing.health_check(check.timeout))
        try:
            passed, reason, description = probe(t.address, port, check, timeout)
        except Exception as e:  # a bug here must not stop health checking
            passed, reason, description = False, "Target.FailedHealthChecks", str(e)
        with self.lock:
            t.probing = False
            t.next_probe = time.monotonic() + max(0.05, self.timing.health_check(check.interval))
            if self.targets.get((t.tg_arn, t.id)) is not t or t.state not in CHECKED:
                return
            if passed:
                t.ok, t.bad = t.ok + 1, 0
                if t.state == "initial" and t.reason == REASONS["registering"][1]:
                    t.set("checking")
                if t.state != "healthy" and t.ok >= check.healthy:
                    t.state, t.reason, t.description = "healthy", None, None
                    log(f"{t.id}: healthy in {t.tg_arn.rsplit(':', 1)[-1]}")
            else:
                t.ok, t.bad = 0, t.bad + 1
                if t.state == "initial" and t.reason == REASONS["registering"][1]:
                    t.set("checking")
                if t.bad >= check.unhealthy:
                    if t.state != "unhealthy":
                        log(f"{t.id}: unhealthy in {t.tg_arn.rsplit(':', 1)[-1]} ({reason})")
                    t.state, t.reason, t.description = "unhealthy", reason, description

    # --- what the load balancer and Auto Scaling ask ---------------------------------------------

    def pick(self, tg_arn: str) -> Target | None:
        """The next target for a request, round robin over healthy ones; when none is healthy,
        over every registered target that is not draining (an ALB fails open)."""
        with self.lock:
            mine = [t for (arn, _), t in self.targets.items() if arn == tg_arn]
            pool = [t for t in mine if t.state in ROUTABLE and loopback(t.address)]
            if not pool:
                pool = [t for t in mine if t.state in CHECKED and t.running and loopback(t.address)]
            if not pool:
                return None
            pool.sort(key=lambda t: t.id)
            n = self.rr.get(tg_arn, 0)
            self.rr[tg_arn] = n + 1
            return pool[n % len(pool)]

    def begin(self, t: Target, sock) -> bool:
        """A forwarded request's upstream connection; False if the target is gone meanwhile."""
        with self.lock:
            if self.targets.get((t.tg_arn, t.id)) is not t:
                return False
            t.in_flight.add(sock)
            return True

    def end(self, t: Target, sock) -> None:
        with self.lock:
            t.in_flight.discard(sock)

    def state_of(self, tg_arn: str, target_id: str) -> str | None:
        with self.lock:
            t = self.targets.get((tg_arn, target_id))
            return t.state if t else None

    def health(self, tg_arn: str, target_id: str) -> tuple[str, str | None, str | None] | None:
        with self.lock:
            t = self.targets.get((tg_arn, target_id))
            return (t.state, t.reason, t.description) if t else None

    def draining(self, tg_arn: str) -> list[dict]:
        with self.lock:
            return [
                {"Id": t.id, "Port": t.port}
                for (arn, _), t in self.targets.items()
                if arn == tg_arn and t.state == "draining"
            ]

    def clear(self) -> None:
        with self.lock:
            for t in self.targets.values():
                self._cut(t)
            self.targets.clear()
            self.checks.clear()
            self.in_use.clear()
            self.rr.clear()

    def to_json(self) -> list[dict]:
        with self.lock:
            return [t.to_json() for t in self.targets.values()]

    @staticmethod
    def _cut(t: Target) -> None:
        for sock in list(t.in_flight):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        t.in_flight.clear()


def _instance(tg, target_id: str):
    if not target_id.startswith("i-"):
        return None
    try:
        return tg.ec2_backend.get_instance_by_id(target_id)
    except Exception:
        return None


def _address(tg, target_id: str) -> str | None:
    """Where the target answers: an instance's 127.0.0.x, or the Id itself for ip targets."""
    inst = _instance(tg, target_id)
    if inst is None:
        return loopback(target_id)
    return loopback(getattr(inst, "local_ec2_address", None) or getattr(inst, "public_ip", None))


def _forwarded_target_groups(backend) -> set[str]:
    """Target groups that some listener's default action or rule forwards to."""
    out = set()
    for lb in list(backend.load_balancers.values()):
        for listener in list(lb.listeners.values()):
            actions = list(listener.default_actions)
            for rule in list(getattr(listener, "_non_default_rules", {}).values()):
                actions.extend(getattr(rule, "actions", []) or [])
            for a in actions:
                data = getattr(a, "data", a) or {}
                if data.get("TargetGroupArn"):
                    out.add(data["TargetGroupArn"])
                for tg in (data.get("ForwardConfig") or {}).get("TargetGroups", []) or []:
                    if tg.get("TargetGroupArn"):
                        out.add(tg["TargetGroupArn"])
    return out
