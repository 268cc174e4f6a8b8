"""Faults on demand: failing calls, `pending` describes, cut SSH.

Everything here is plain state behind one lock; the middleware asks it what to do with each
request, and the machines module carries out SSH cuts.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

# Status codes AWS answers with for the errors tests usually inject. Anything else: 400.
ERROR_STATUS = {
    "RequestLimitExceeded": 503,
    "InsufficientInstanceCapacity": 500,
    "ServiceUnavailable": 503,
    "Unavailable": 503,
    "InternalError": 500,
    "InternalFailure": 500,
    "Throttling": 400,
    "ThrottlingException": 400,
    "SlowDown": 503,
    "IncorrectInstanceState": 400,
    "InvalidAMIID.NotFound": 400,
    "UnauthorizedOperation": 403,
    "ConditionalRequestConflict": 409,
}

ERROR_MESSAGE = {
    "RequestLimitExceeded": "Request limit exceeded.",
    "InsufficientInstanceCapacity": "We currently do not have sufficient capacity in the Availability Zone you requested.",
    "ServiceUnavailable": "The service is unavailable. Please try again shortly.",
    "InternalError": "An internal error has occurred.",
    "ConditionalRequestConflict": "A conflicting conditional operation is currently in progress against this resource. Please try again.",
}

# Namespaces of the query-protocol services' error documents.
QUERY_NAMESPACES = {
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "autoscaling": "http://autoscaling.amazonaws.com/doc/2011-01-01/",
    "elasticloadbalancing": "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
}


@dataclass
class Failure:
    action: str
    code: str
    count: int
    status: int
    message: str
    service: str | None = None

    def to_json(self) -> dict:
        return {
            "action": self.action,
            "code": self.code,
            "count": self.count,
            "status": self.status,
            "message": self.message,
            "service": self.service,
        }


@dataclass
class ErrorResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def error_response(service: str, code: str, status: int, message: str) -> ErrorResponse:
    """The error document `service`'s protocol uses, as AWS would send it."""
    request_id = str(uuid.uuid4())
    if service == "ssm":
        body = json.dumps({"__type": code, "message": message}).encode()
        return ErrorResponse(
            status,
            [
                ("Content-Type", "application/x-amz-json-1.1"),
                ("x-amzn-ErrorType", code),
                ("x-amzn-RequestId", request_id),
            ],
            body,
        )
    if service == "s3":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        )
        return ErrorResponse(
            status,
            [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)],
            body.encode(),
        )
    if service in QUERY_NAMESPACES:
        kind = "Receiver" if status >= 500 else "Sender"
        body = (
            f'<ErrorResponse xmlns="{QUERY_NAMESPACES[service]}"><Error><Type>{kind}</Type>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return ErrorResponse(
            status,
            [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)],
            body.encode(),
        )
    # EC2 (and the fallback for anything else).
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
    )
    return ErrorResponse(status, [("Content-Type", "text/xml;charset=UTF-8")], body.encode())


@dataclass
class Faults:
    lock: threading.Lock = field(default_factory=threading.Lock)
    failures: list[Failure] = field(default_factory=list)
    # Describes a new instance / image answers `pending` for, armed for resources created later.
    pending_default: dict[str, int] = field(default_factory=lambda: {"instance": 0, "image": 0})
    # Remaining `pending` describes per resource id.
    pending: dict[str, int] = field(default_factory=dict)

    def clear(self) -> None:
        with self.lock:
            self.failures.clear()
            self.pending_default = {"instance": 0, "image": 0}
            self.pending.clear()

    def add_failure(self, spec: dict) -> Failure:
        action = spec.get("action")
        if not action or not isinstance(action, str):
            raise ValueError("fail: `action` (e.g. \"RunInstances\") is required")
        code = spec.get("code") or spec.get("error") or "ServiceUnavailable"
        status = int(spec.get("status") or ERROR_STATUS.get(code, 400))
        message = spec.get("message") or ERROR_MESSAGE.get(code, f"{code} (injected by the local EC2)")
        count = int(spec.get("count", 1))
        if count < 1:
            raise ValueError("fail: `count` must be at least 1")
        f = Failure(action, code, count, status, message, spec.get("service"))
        with self.lock:
            self.failures.append(f)
        return f

    def take_failure(self, service: str, action: str | None) -> Failure | None:
        """The failure the next call of `action` must get, counting it down."""
        if not action:
            return None
        with self.lock:
            for f in self.failures:
                if f.action == action and (f.service is None or f.service == service):
                    f.count -= 1
                    if f.count <= 0:
                        self.failures.remove(f)
                    return f
        return None

    def arm_pending(self, spec: dict) -> None:
        with self.lock:
            for kind, key in (("instance", "instances"), ("image", "images")):
                if key in spec:
                    self.pending_default[kind] = max(0, int(spec[key]))
            for rid, n in (spec.get("ids") or {}).items():
                self.pending[rid] = max(0, int(n))

    def on_created(self, kind: str, rid: str) -> None:
        """A resource was created: it starts with the armed number of `pending` describes."""
        with self.lock:
            n = self.pending_default.get(kind, 0)
            if n > 0 and rid not in self.pending:
                self.pending[rid] = n

    def take_pending(self, rid: str) -> bool:
        """Whether this describe must show `rid` as pending (and count it)."""
        with self.lock:
            n = self.pending.get(rid, 0)
            if n <= 0:
                return False
            if n == 1:
                del self.pending[rid]
            else:
                self.pending[rid] = n - 1
            return True

    def to_json(self) -> dict:
        with self.lock:
            return {
                "fail": [f.to_json() for f in self.failures],
                "pending_default": {
                    "instances": self.pending_default["instance"],
                    "images": self.pending_default["image"],
                },
                "pending": dict(self.pending),
            }
