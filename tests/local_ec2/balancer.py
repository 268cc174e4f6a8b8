"""Load balancers that really forward HTTP.

Each HTTP listener moto holds gets its own server on 127.0.0.1 and a free port (port 80 may be
taken on this host, and two listeners may both say 80): `GET /_local_ec2/load_balancers` tells
which URL serves which listener. A request is forwarded as an ALB does:

- the listener's default action decides: `forward` (one target group, or weighted target groups
  picked at random by weight), `fixed-response`; other actions answer 501;
- within a target group, targets take turns (round robin) among the healthy ones; with none
  healthy, among all registered ones that are not draining (an ALB fails open); with no target
  at all, 503;
- upstream, one request per connection to the target's 127.0.0.x and port, with
  X-Forwarded-For/-Proto/-Port; a refused or broken connection is a 502, no answer within the
  load balancer's idle timeout a 504, as an ALB answers (never retried).

Clients may keep connections open (HTTP/1.1 keep-alive) or not; the answer always carries a
Content-Length. A draining target gets no new request; a request in flight to it when the
deregistration delay ends has its connection cut (targets.py).
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .log import log
from .targets import Targets, loopback

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
MAX_BODY = 64 * 1024 * 1024


def _error_page(status: int, text: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{status} {text}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {text}</h1></center>\r\n</body>\r\n</html>\r\n"
    ).encode()


@dataclass
class Listener:
    arn: str
    lb_arn: str
    lb_name: str
    port: int  # the listener's port on AWS
    protocol: str
    actions: list = field(default_factory=list)
    idle_timeout: float = 60.0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}" if self.server else ""

    def to_json(self) -> dict:
        return {
            "listener_arn": self.arn,
            "load_balancer_arn": self.lb_arn,
            "load_balancer_name": self.lb_name,
            "protocol": self.protocol,
            "listener_port": self.port,
            "url": self.url,
        }


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def _handler(listener: Listener, targets: Targets):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "awselb/2.0"
        sys_version = ""
        timeout = listener.idle_timeout

        def log_message(self, *args) -> None:
            pass

        def _body(self) -> bytes | None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
                    if len(out) > MAX_BODY:
                        raise ValueError("body too large")
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                raise ValueError("body too large")
            return self.rfile.read(n) if n else None

        def _answer(self, status: int, reason: str, headers: list, body: bytes, length: str | None = None) -> None:
            """`length`: what a HEAD answer reports (the body a GET would get)."""
            self.send_response(status, reason)
            for k, v in headers:
                self.send_header(k, v)
            if status not in (204, 304) and not 100 <= status < 200:
                self.send_header("Content-Length", length if length is not None else str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _error(self, status: int, text: str) -> None:
            self._answer(status, text, [("Content-Type", "text/html")], _error_page(status, text))

        def _forward(self) -> None:
            try:
                body = self._body()
            except ValueError:
                self.close_connection = True
                return self._error(400, "Bad Request")
            action = _choose_action(listener.actions)
            kind = (action or {}).get("Type")
            if kind == "fixed-response":
                cfg = action.get("FixedResponseConfig") or {}
                status = int(cfg.get("StatusCode") or 200)
                text = (cfg.get("MessageBody") or "").encode()
                ctype = cfg.get("ContentType") or "text/plain"
                return self._answer(status, http.client.responses.get(status, ""), [("Content-Type", ctype)], text)
            if kind != "forward":
                return self._error(501, "Not Implemented")
            tg_arn = _choose_target_group(action)
            target = targets.pick(tg_arn) if tg_arn else None
            if target is None:
                return self._error(503, "Service Temporarily Unavailable")
            address = loopback(target.address)
            if address is None:
                return self._error(502, "Bad Gateway")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            xff = self.headers.get("X-Forwarded-For")
            client = self.client_address[0]
            headers["X-Forwarded-For"] = f"{xff}, {client}" if xff else client
            headers["X-Forwarded-Proto"] = "http"
            headers["X-Forwarded-Port"] = str(listener.port)
            headers["Connection"] = "close"
            conn = http.client.HTTPConnection(address, target.port, timeout=listener.idle_timeout)
            try:
                conn.connect()
                if not targets.begin(target, conn.sock):
                    conn.close()
                    return self._error(502, "Bad Gateway")
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    status, reason, out = r.status, r.reason, r.getheaders()
                finally:
                    targets.end(target, conn.sock)
            except socket.timeout:
                return self._error(504, "Gateway Time-out")
            except (OSError, http.client.HTTPException):
                return self._error(502, "Bad Gateway")
            finally:
                conn.close()
            kept = [(k, v) for k, v in out if k.lower() not in HOP_BY_HOP]
            length = None
            if self.command == "HEAD":
                length = next((v for k, v in out if k.lower() == "content-length"), "0")
            self._answer(status, reason, kept, data, length)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward

    return Handler


def _choose_action(actions: list) -> dict | None:
    ordered = sorted(actions, key=lambda a: int(a.get("Order") or 0))
    for a in ordered:  # authenticate-* actions would come first; not modelled
        if a.get("Type") in ("forward", "fixed-response", "redirect"):
            return a
    return ordered[0] if ordered else None


def _choose_target_group(action: dict) -> str | None:
    groups = [g for g in (action.get("ForwardConfig") or {}).get("TargetGroups") or [] if g.get("TargetGroupArn")]
    if groups:
        weights = [max(0, int(g.get("Weight", 1))) for g in groups]
        if sum(weights) == 0:
            return None
        return random.choices(groups, weights=weights)[0]["TargetGroupArn"]
    return action.get("TargetGroupArn")


class Balancers:
    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self.lock = threading.Lock()
        self.listeners: dict[str, Listener] = {}

    def sync(self, backends) -> None:
        """A reconcile pass (under the world lock): one server per HTTP(S) listener moto holds.
        HTTPS listeners are served as plain HTTP (no certificates here)."""
        wanted: dict[str, dict] = {}
        for backend in backends:
            for lb in list(backend.load_balancers.values()):
                idle = float((getattr(lb, "attrs", None) or {}).get("idle_timeout.timeout_seconds", 60) or 60)
                for listener in list(lb.listeners.values()):
                    if listener.protocol not in ("HTTP", "HTTPS"):
                        continue
                    wanted[listener.arn] = {
                        "lb_arn": lb.arn,
                        "lb_name": lb.name,
                        "port": int(listener.port),
                        "protocol": listener.protocol,
                        "actions": [dict(getattr(a, "data", a)) for a in listener.default_actions],
                        "idle_timeout": idle,
                    }
        stopping = []
        with self.lock:
            for arn in [a for a in self.listeners if a not in wanted]:
                stopping.append(self.listeners.pop(arn))
            for arn, spec in wanted.items():
                cur = self.listeners.get(arn)
                if cur is not None:
                    cur.actions = spec["actions"]  # read per request: replaced, never mutated
                    continue
                listener = Listener(arn, spec["lb_arn"], spec["lb_name"], spec["port"], spec["protocol"], spec["actions"], spec["idle_timeout"])
                listener.server = Server(("127.0.0.1", 0), _handler(listener, self.targets))
                threading.Thread(
                    target=listener.server.serve_forever, kwargs={"poll_interval": 0.2}, name="lb", daemon=True
                ).start()
                self.listeners[arn] = listener
                log(f"load balancer {spec['lb_name']}: listener :{spec['port']} on {listener.url}")
        for listener in stopping:
            threading.Thread(target=_close, args=(listener,), daemon=True).start()

    def clear(self) -> None:
        with self.lock:
            stopping = list(self.listeners.values())
            self.listeners.clear()
        for listener in stopping:
            _close(listener)

    def to_json(self) -> list[dict]:
        with self.lock:
            return [listener.to_json() for listener in self.listeners.values()]


def _close(listener: Listener) -> None:
    if listener.server is not None:
        listener.server.shutdown()
        listener.server.server_close()
        log(f"load balancer {listener.lb_name}: listener :{listener.port} closed")
