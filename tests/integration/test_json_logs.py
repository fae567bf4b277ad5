"""`log_format: json`: every line the all-in-one writes is one JSON object, and the
request id a user sees is a field of the proxy's log lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.stack import all_in_one, route_host, upstream

pytestmark = pytest.mark.integration

REQUIRED = ("time", "level", "logger", "message", "service")


def test_every_line_is_json_with_the_request_id_as_a_field(tmp_path: Path) -> None:
    port = free_port()
    with upstream() as app:
        routes = [
            {
                "from": route_host("app", port),
                "to": app.url,
                "allow_public_unauthenticated_access": True,
                "policy": [{"deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}}],
            }
        ]
        with all_in_one(tmp_path, routes, port, log_format="json", proxy_workers=2) as v:
            ok = v.request("GET", "app.localhost", "/héllo")
            assert ok.status_code == 200
            allowed_id = ok.headers["x-request-id"]
            denied = v.request("GET", "app.localhost", "/admin")
            assert denied.status_code == 403
            denied_id = denied.json()["request_id"]
            v.proc.wait_for(denied_id)
            proc = v.proc
    lines = proc.lines
    assert proc.process.returncode == 0
    entries: list[dict[str, Any]] = []
    for line in lines:
        entry = json.loads(line)  # every line, from start-up to "stopped"
        assert isinstance(entry, dict)
        for key in REQUIRED:
            assert isinstance(entry[key], str), (key, line)
        assert entry["time"].endswith("Z") and len(entry["time"]) == len("2026-01-02T03:04:05.678Z")
        entries.append(entry)
    services = {e["service"] for e in entries}
    assert {"vallum", "authenticate", "authorize", "proxy#1", "proxy#2"} <= services
    assert any(e["message"] == "stopped" and e["service"] == "vallum" for e in entries)

    access = [e for e in entries if e.get("request_id") == allowed_id]
    assert len(access) == 1
    found = access[0]
    assert found["logger"] == "vallum.proxy.access" and found["service"].startswith("proxy#")
    assert found["message"] == "request"
    assert found["status"] == 200 and found["path"] == "/h%C3%A9llo"
    assert found["method"] == "GET" and isinstance(found["ms"], float)

    # The denied request: the proxy's access line and authorize's decision line.
    denied_lines = [e for e in entries if e.get("request_id") == denied_id]
    by_logger = {e["logger"]: e for e in denied_lines}
    assert by_logger["vallum.proxy.access"]["status"] == 403
    decision = by_logger["vallum.authorize.decision"]
    assert decision["service"] == "authorize" and decision["decision"] == "deny"
