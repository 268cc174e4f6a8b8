"""WSGI middleware around moto's app: control API, recording, faults, machines.

Per request: the control API (`/_local_ec2/...`) is answered here; anything else is recorded,
may get an injected error instead of reaching moto, and moto's answer may be rewritten
(`pending` states). Calls that change instances run a reconcile before the answer goes out, so
when RunInstances returns, the instance's container exists.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import threading
import time
import traceback
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any, Callable

from . import world
from .faults import Faults, error_response
from .log import log

CONTROL = "/_local_ec2"
MAX_RECORDED_BODY = 4 * 1024 * 1024

# Calls after which moto's instances may differ from the machines.
EC2_MUTATING = {"RunInstances", "StartInstances", "StopInstances", "TerminateInstances"}


def _credential_scope(environ: dict, query: dict) -> tuple[str | None, str | None]:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.search(r"Credential=[^/,]+/\d{8}/([^/]+)/([^/]+)/aws4_request", auth)
    if not m:
        cred = query.get("X-Amz-Credential", "")
        m = re.search(r"/\d{8}/([^/]+)/([^/]+)/aws4_request", cred)
    if m:
        return m.group(2).lower(), m.group(1)
    return None, None


def _s3_action(method: str, path: str, query: dict) -> str:
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "ListBuckets"
    if len(parts) == 1:
        return {
            "PUT": "CreateBucket",
            "HEAD": "HeadBucket",
            "DELETE": "DeleteBucket",
        }.get(method, "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects")
    return {
        "PUT": "PutObject",
        "HEAD": "HeadObject",
        "DELETE": "DeleteObject",
        "POST": "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload",
    }.get(method, "GetObject")


def _flat(qs: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in urllib.parse.parse_qsl(qs, keep_blank_values=True):
        out[k] = v
    return out


def _decoded_values(params: dict[str, str]) -> list[str]:
    """Parameter values that are base64 of text (UserData, ...), decoded."""
    out = []
    for v in params.values():
        if len(v) < 8 or len(v) % 4 != 0 or not re.fullmatch(r"[A-Za-z0-9+/=]+", v):
            continue
        try:
            text = base64.b64decode(v, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
        out.append(text)
    return out


def parse_request(environ: dict, body: bytes) -> dict:
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")
    query_string = environ.get("QUERY_STRING", "")
    query = _flat(query_string)
    service, region = _credential_scope(environ, query)
    params = dict(query)
    ctype = environ.get("CONTENT_TYPE", "")
    text = body[:MAX_RECORDED_BODY].decode("utf-8", errors="replace")
    if "x-www-form-urlencoded" in ctype:
        params.update(_flat(text))
    action = params.get("Action")
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        action = target.rsplit(".", 1)[-1]
        if service is None:
            service = target.split("_")[0].split(".")[0].lower()
    if service == "s3" and not action:
        action = _s3_action(method, path, query)
    return {
        "method": method,
        "path": path,
        "query": query_string,
        "service": service,
        "region": region,
        "action": action,
        "params": params,
        "decoded": _decoded_values(params),
        "headers": {
            k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")
        },
        "body": text,
        "body_truncated": len(body) > MAX_RECORDED_BODY,
    }


def _haystack(rec: dict) -> str:
    parts = [
        rec["path"],
        rec["query"],
        urllib.parse.unquote_plus(rec["query"]),
        rec["body"],
        urllib.parse.unquote_plus(rec["body"]),
        *rec["decoded"],
        *rec["headers"].values(),
        *rec["params"].values(),
    ]
    return "\n".join(p for p in parts if p)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[dict] = []
        self.seq = 0

    def add(self, rec: dict) -> None:
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            rec["time"] = time.time()
            self.records.append(rec)

    def clear(self) -> None:
        with self.lock:
            self.records.clear()

    def query(self, contains: str | None = None, since: int = 0, action: str | None = None) -> list[dict]:
        with self.lock:
            recs = list(self.records)
        out = []
        for r in recs:
            if r["seq"] <= since:
                continue
            if action and r["action"] != action:
                continue
            if contains and contains not in _haystack(r):
                continue
            out.append(r)
        return out


# --- EC2 response rewriting -----------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _items(root: ET.Element, set_name: str):
    for el in root.iter():
        if _local(el.tag) == set_name:
            for item in el:
                if _local(item.tag) == "item":
                    yield item


def rewrite_ec2(body: bytes, action: str, pending: Callable[[str], bool]) -> bytes:
    """RunInstances answers `pending` (as AWS does); describes show `pending` while armed."""
    if action not in ("RunInstances", "DescribeInstances", "DescribeImages"):
        return body
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return body
    ns_match = re.match(r"\{([^}]*)\}", root.tag)
    if ns_match:
        ET.register_namespace("", ns_match.group(1))
    changed = False
    if action in ("RunInstances", "DescribeInstances"):
        for item in _items(root, "instancesSet"):
            iid = _child(item, "instanceId")
            state = _child(item, "instanceState")
            if iid is None or state is None:
                continue
            name = _child(state, "name")
            if name is None or name.text != "running":
                continue
            if action == "RunInstances" or pending(iid.text or ""):
                code = _child(state, "code")
                if code is not None:
                    code.text = "0"
                name.text = "pending"
                changed = True
    else:
        for item in _items(root, "imagesSet"):
            iid = _child(item, "imageId")
            state = _child(item, "imageState")
            if iid is None or state is None or state.text != "available":
                continue
            if pending(iid.text or ""):
                state.text = "pending"
                changed = True
    if not changed:
        return body
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


# --- the middleware ---------------------------------------------------------------------------------


class LocalEc2App:
    def __init__(self, moto_app, faults: Faults, recorder: Recorder, machines, images, on_reset, info, sources, after_call=None, routes=None):
        self.moto_app = moto_app
        self.faults = faults
        self.recorder = recorder
        self.machines = machines
        self.images = images
        self.on_reset = on_reset  # clears everything and resets moto
        self.info = info  # () -> dict for /_local_ec2/health
        self.after_call = after_call  # (service, action) -> None: reconcile what the call changed
        # More control calls: path -> (method, body) -> JSON answer (GET, or POST with a body).
        self.routes = routes or {}
        self.sources = sources  # Debian source AMIs (sources.SourceAmis)

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO", "")
        try:
            if path == CONTROL or path.startswith(CONTROL + "/"):
                return self.control(environ, start_response)
            if path.startswith("/moto-api/reset"):
                if environ.get("REQUEST_METHOD") == "POST":
                    self.on_reset()
                    return self._json(start_response, 200, {"status": "ok"})
            return self.aws(environ, start_response)
        except Exception as e:
            log(f"error: {environ.get('REQUEST_METHOD')} {path}: {e}\n{traceback.format_exc()}")
            return self._json(start_response, 500, {"error": str(e)})

    # --- AWS calls ----------------------------------------------------------------------------

    def aws(self, environ: dict, start_response):
        body = self._read_body(environ)
        req = parse_request(environ, body)
        self.recorder.add(req)
        service, action = req["service"] or "", req["action"]

        failure = self.faults.take_failure(service, action)
        if failure is not None:
            log(f"fault: {service} {action} -> {failure.code} ({failure.status})")
            err = error_response(service, failure.code, failure.status, failure.message)
            return self._respond(start_response, err.status, err.headers, err.body)

        if service == "ec2" and action == "RebootInstances":
            ids = [v for k, v in req["params"].items() if k.startswith("InstanceId")]
            self.machines.reboot(ids)

        status, headers, out = self._call_moto(environ)

        if status.startswith("200"):
            if service == "ec2":
                if action in EC2_MUTATING:
                    self.machines.reconcile()
                rewritten = rewrite_ec2(out, action or "", self.faults.take_pending)
                if rewritten is not out:
                    out = rewritten
                    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                    headers.append(("Content-Length", str(len(out))))
            if self.after_call is not None and service in ("autoscaling", "elasticloadbalancing") and action:
                self.after_call(service, action)
        # Otherwise moto's headers go out as they are (HEAD answers carry the object's length).
        start_response(status, headers)
        return [out]

    def _read_body(self, environ: dict) -> bytes:
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH") or ""
        if environ.get("wsgi.input_terminated") or environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            body = stream.read()
        elif length.isdigit():
            body = stream.read(int(length))
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = True
        return body

    def _call_moto(self, environ: dict) -> tuple[str, list, bytes]:
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []

        def sr(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = list(headers)
            return chunks.append

        with world.lock:  # moto's models have no lock of their own
            it = self.moto_app(environ, sr)
            try:
                for c in it:
                    chunks.append(c)
            finally:
                if hasattr(it, "close"):
                    it.close()
        return captured["status"], captured["headers"], b"".join(chunks)

    # --- control API --------------------------------------------------------------------------

    def control(self, environ: dict, start_response):
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")[len(CONTROL):].rstrip("/")
        query = _flat(environ.get("QUERY_STRING", ""))
        body = self._read_body(environ)
        try:
            spec = json.loads(body) if body.strip() else {}
        except json.JSONDecodeError as e:
            return self._json(start_response, 400, {"error": f"the body is not JSON: {e}"})

        try:
            if path in ("", "/health") and method == "GET":
                return self._json(start_response, 200, self.info())
            if path == "/reset" and method == "POST":
                self.on_reset()
                return self._json(start_response, 200, {"status": "ok"})
            if path == "/faults":
                if method == "GET":
                    return self._json(start_response, 200, self.faults.to_json())
                if method == "DELETE":
                    self.faults.clear()
                    return self._json(start_response, 200, self.faults.to_json())
                if method == "POST":
                    self._apply_faults(spec)
                    return self._json(start_response, 200, self.faults.to_json())
            if path == "/requests":
                if method == "GET":
                    recs = self.recorder.query(
                        contains=query.get("contains"),
                        since=int(query.get("since", "0") or 0),
                        action=query.get("action"),
                    )
                    return self._json(start_response, 200, {"requests": recs})
                if method == "DELETE":
                    self.recorder.clear()
                    return self._json(start_response, 200, {"status": "ok"})
            if path == "/source_amis":
                if method == "GET":
                    return self._json(start_response, 200, {"source_amis": self.sources.to_json()})
                if method == "POST":
                    return self._json(start_response, 200, self.sources.register(spec))
            if path == "/instances" and method == "GET":
                return self._json(start_response, 200, {"instances": self.machines.to_json()})
            if path in self.routes and method in ("GET", "POST"):
                return self._json(start_response, 200, self.routes[path](method, spec))
            if path == "/reconcile" and method == "POST":
                self.machines.reconcile()
                return self._json(start_response, 200, {"instances": self.machines.to_json()})
        except (ValueError, KeyError, TypeError) as e:
            return self._json(start_response, 400, {"error": str(e)})
        return self._json(start_response, 404, {"error": f"no such control call: {method} {CONTROL}{path}"})

    def _apply_faults(self, spec: dict | list) -> None:
        specs = spec if isinstance(spec, list) else [spec]
        for s in specs:
            if not isinstance(s, dict):
                raise ValueError("each fault is a JSON object")
            unknown = set(s) - {"fail", "pending", "cut_ssh"}
            if unknown:
                raise ValueError(f"unknown fault kinds: {sorted(unknown)} (known: fail, pending, cut_ssh)")
            fails = s.get("fail")
            for f in fails if isinstance(fails, list) else [fails] if fails else []:
                self.faults.add_failure(f)
            if s.get("pending"):
                self.faults.arm_pending(s["pending"])
            cut = s.get("cut_ssh")
            if cut:
                self.machines.cut_ssh(cut["instance_id"], float(cut.get("seconds", 10)))

    @staticmethod
    def _respond(start_response, status: int, headers: list, body: bytes):
        reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}
        headers = [h for h in headers if h[0].lower() != "content-length"] + [("Content-Length", str(len(body)))]
        start_response(f"{status} {reasons.get(status, 'Error')}", headers)
        return [body]

    def _json(self, start_response, status: int, obj: Any):
        return self._respond(
            start_response, status, [("Content-Type", "application/json")], json.dumps(obj).encode()
        )
