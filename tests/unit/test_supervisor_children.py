"""Which children the supervisor makes, and which ports proxy workers share."""

from __future__ import annotations

import sys

from services.supervisor import make_children
from services.topology import proxy_listeners
from shared.config import parse_config

SERVICES = ["authenticate", "authorize", "proxy"]
OVERRIDES = {"proxy": {"CERTIFICATE_FILE": "/data/pki/proxy-server.pem"}}


def test_one_proxy_child_by_default() -> None:
    children = make_children(SERVICES, "c.yaml", OVERRIDES, {"HOME": "/root"})
    assert [c.name for c in children] == SERVICES
    proxy = children[-1]
    assert proxy.argv == [
        sys.executable, "-m", "services", "run", "--services", "proxy", "--config", "c.yaml",
    ]  # fmt: skip
    assert proxy.env == {"HOME": "/root", "CERTIFICATE_FILE": "/data/pki/proxy-server.pem"}


def test_each_worker_is_its_own_child_of_the_proxy_service() -> None:
    children = make_children(SERVICES, "c.yaml", OVERRIDES, {"HOME": "/root"}, 3)
    assert [c.name for c in children] == [
        "authenticate", "authorize", "proxy#1", "proxy#2", "proxy#3",
    ]  # fmt: skip
    workers = children[2:]
    assert {c.service for c in workers} == {"proxy"}
    for number, child in enumerate(workers, 1):
        assert child.argv[-4:] == ["--worker", str(number), "--config", "c.yaml"]
        assert child.env["CERTIFICATE_FILE"] == "/data/pki/proxy-server.pem"
    # Each keeps its own state: a restart of one never touches another's.
    assert workers[0].env is not workers[1].env
    assert workers[0].ready is not workers[1].ready


def test_workers_without_a_config_file() -> None:
    (child,) = make_children(["proxy"], None, {}, {}, 1)
    assert child.argv[-2:] == ["--services", "proxy"]
    first, _ = make_children(["proxy"], None, {}, {}, 2)
    assert first.argv[-2:] == ["--worker", "1"]


def test_the_listeners_workers_share() -> None:
    config = parse_config({"address": "127.0.0.1:8443"}, {}, "/")
    assert proxy_listeners(config) == [("127.0.0.1:8443", "address")]
    config = parse_config({"address": ":443", "http_redirect_addr": ":80"}, {}, "/")
    assert proxy_listeners(config) == [
        ("0.0.0.0:443", "address"),
        ("0.0.0.0:80", "http_redirect_addr"),
    ]
    # Plain HTTP has no redirect listener (the proxy does not open one).
    config = parse_config({"insecure_server": True, "http_redirect_addr": ":80"}, {}, "/")
    assert proxy_listeners(config) == [("0.0.0.0:443", "address")]
