"""The deployment artefacts in deploy/ agree with the code they deploy.

No container engine runs here, so nothing in deploy/ is started by this test.
Instead every file is parsed and checked against the real code: each `vallum ...`
command line is parsed by the real CLI parser (services/cli.py); each config.yaml
(compose's, the Kubernetes ConfigMap's) is parsed by the real config parser with
each container's own environment; every environment variable must be a real
top-level key's variable; every port a container declares must be one the parsed
config listens on, and every file the config names must lie under something
mounted into that container.

`parse_config_partial` reads no files (load.py does), so the certificate and
secret files that exist only inside the containers cannot cause a problem here;
every problem it reports fails the test. tests/integration/test_deploy_pki.py runs
the compose pki one-shot for real and loads the configs with the files it made.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.cli import build_parser
from services.topology import authenticate_http_address, grpc_listen_address, proxy_listeners
from shared.config import Config
from shared.config.mtls import DOWNSTREAM_MTLS_KEYS
from shared.config.parse import TOP_KEYS, env_name, parse_config_partial
from shared.config.routes import ROUTE_KEYS
from shared.config.schema import FileMode, Key

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IMAGE = "vallum:latest"
CONFIG_PATH = "/etc/vallum/config.yaml"
DATA_VOLUME = "/var/lib/vallum"  # the Dockerfile's VOLUME
VALLUM_SERVICES = ("authenticate", "authorize", "proxy")
# Variables on Vallum containers that are not configuration keys.
NOT_CONFIG_VARIABLES = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})


# --- checkers: pure functions, each returning the problems it found ------------------

ENV_KEYS: dict[str, Key] = {env_name(name): key for key in TOP_KEYS for name in key.names()}


def env_problems(environ: Mapping[str, str]) -> list[str]:
    """Every variable must be the upper-cased name of a top-level key that the
    environment may set (shared/config/parse.py `_apply_environment`)."""
    problems = []
    for name in environ:
        if name in NOT_CONFIG_VARIABLES:
            continue
        key = ENV_KEYS.get(name)
        if key is None:
            problems.append(f"{name}: no Vallum key has this variable")
        elif not key.env:
            problems.append(f"{name}: {key.name} cannot come from the environment")
    return problems


def parse_config(raw: Any, environ: Mapping[str, str]) -> tuple[Config, list[str]]:
    config, problems = parse_config_partial(raw, environ, "/etc/vallum")
    return config, [str(p) for p in problems]


def cli_problems(argv: list[str]) -> list[str]:
    """What the real `vallum` parser says about argv (arguments after `vallum`)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        return [f"vallum {shlex.join(argv)}: {stderr.getvalue().strip() or e}"]
    return []


def config_files(config: Config) -> dict[str, str]:
    """Every file path the parsed config names, by key."""
    files: dict[str, str] = {}
    for key in TOP_KEYS:
        if key.file is FileMode.SOURCE:
            source = getattr(config, key.field)
            if source is not None and source.path is not None:
                files[key.file_key] = source.path
        elif key.file in (FileMode.SECRET, FileMode.TEXT):
            path = getattr(config, key.file_key)
            if path is not None:
                files[key.file_key] = path
    nested: list[tuple[str, Any, tuple[Key, ...]]] = [
        ("downstream_mtls", config.downstream_mtls, DOWNSTREAM_MTLS_KEYS)
    ]
    nested += [(f"routes[{i}]", r, ROUTE_KEYS) for i, r in enumerate(config.routes)]
    for where, value, keys in nested:
        for key in keys:
            if key.file is FileMode.SOURCE:
                source = getattr(value, key.field)
                if source is not None and source.path is not None:
                    files[f"{where}.{key.file_key}"] = source.path
    return files


def under(path: str, mounts: list[str]) -> bool:
    path = posixpath.normpath(path)
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def mount_problems(files: Mapping[str, str], mounts: list[str]) -> list[str]:
    return [
        f"{key}: {path} is under no mounted volume ({', '.join(sorted(mounts))})"
        for key, path in files.items()
        if not under(path, mounts)
    ]


def listen_ports(config: Config) -> dict[str, int]:
    """What this config's services listen on, by what sets it."""
    ports: dict[str, int] = {}
    if "proxy" in config.services:
        for address, key in proxy_listeners(config):
            ports[key] = int(address.rpartition(":")[2])
    if "authorize" in config.services:
        ports["authorize grpc_address"] = int(
            grpc_listen_address(config, "authorize").rpartition(":")[2]
        )
        ports["authorize_check_port"] = config.authorize_check_port
    if "authenticate" in config.services:
        ports["authenticate grpc_address"] = int(
            grpc_listen_address(config, "authenticate").rpartition(":")[2]
        )
        http = authenticate_http_address(config)
        if http is not None and config.idp_provider_url:
            ports["authenticate sign-in pages"] = int(http[0].rpartition(":")[2])
    if config.metrics_address is not None:
        ports["metrics_address"] = config.metrics_address.port
    return ports


def dialled(config: Config) -> list[tuple[str, str, int, str]]:
    """(key, host, port, Vallum service there) of every internal URL a service dials."""
    found = []
    for key, service in (
        ("authorize_service_url", "authorize"),
        ("databroker_service_url", "authenticate"),
    ):
        for url in getattr(config, key):
            parts = urlsplit(url)
            found.append((key, parts.hostname or "", parts.port or 443, service))
    if config.authenticate_internal_service_url:
        parts = urlsplit(config.authenticate_internal_service_url)
        host = parts.hostname or ""
        found.append(("authenticate_internal_service_url", host, parts.port or 443, "authenticate"))
    return found


def vallum_argv(words: list[str]) -> list[str] | None:
    """The arguments after `vallum` when `words` runs it (`/opt/vallum/bin/vallum ...`)."""
    if words and posixpath.basename(words[0]) == "vallum":
        return words[1:]
    return None


# --- the negative self-checks: the checkers above do catch mistakes -----------------


def test_checker_flags_a_misspelled_config_key() -> None:
    _, problems = parse_config({"adress": ":8443", "routes": []}, {})
    assert problems == ['adress: unknown key (did you mean "address"?)']


def test_checker_flags_a_misspelled_or_fileless_variable() -> None:
    problems = env_problems(
        {"AUTHORIZE_SERVICE_ULR": "https://a:1", "ROUTES": "x", "SHARED_SECRET_FILE": "/s"}
    )
    assert problems == [
        "AUTHORIZE_SERVICE_ULR: no Vallum key has this variable",
        "ROUTES: routes cannot come from the environment",
    ]


def test_checker_flags_a_bad_command_line_and_an_unmounted_file() -> None:
    assert cli_problems(["run", "--confg", CONFIG_PATH])
    assert cli_problems(["health", "--service", "database"])
    assert not cli_problems(["health", "--config", CONFIG_PATH, "--service", "proxy"])
    assert mount_problems({"shared_secret_file": "/etc/vallumx/s"}, ["/etc/vallum"])
    assert not mount_problems({"shared_secret_file": "/etc/vallum/s"}, ["/etc/vallum"])


# --- the Dockerfile -------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def instruction(name: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == name]


def test_dockerfile_base_user_volume_and_commands() -> None:
    bases = instruction("FROM")
    final = bases[-1].split()[0].replace("${PYTHON_VERSION}", _arg("PYTHON_VERSION"))
    match = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", final)
    assert match and int(match.group(1)) >= 11, final
    assert instruction("USER") == ["vallum"]
    assert json.loads(instruction("VOLUME")[-1]) == [DATA_VOLUME]
    assert Config().data_dir == DATA_VOLUME
    entrypoint = json.loads(instruction("ENTRYPOINT")[-1])
    assert entrypoint == ["vallum"]
    cmd = json.loads(instruction("CMD")[-1])
    assert cmd == ["run", "--config", CONFIG_PATH]
    assert cli_problems(cmd) == []
    health = instruction("HEALTHCHECK")[-1]
    options, _, command = health.partition("CMD ")
    assert "--timeout=" in options
    argv = vallum_argv(json.loads(command))
    assert argv is not None and argv[0] == "health", health
    assert cli_problems(argv) == []
    for source in instruction("COPY"):
        if source.startswith("--from"):
            continue
        for name in source.split()[:-1]:
            assert (ROOT / name).exists(), f"COPY {name}: not in the repository"
    # BuildKit reads deploy/Dockerfile.dockerignore: it must let those files in.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for name in ("pyproject.toml", "README.md", "shared/", "services/"):
        assert f"!{name}" in ignore


def _arg(name: str) -> str:
    for rest in instruction("ARG"):
        key, _, value = rest.partition("=")
        if key == name:
            return value
    raise AssertionError(f"ARG {name} has no default")


# --- compose --------------------------------------------------------------------------


@dataclass
class Container:
    name: str
    spec: dict[str, Any]
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def vallum(self) -> bool:
        return self.spec.get("image") == IMAGE

    def mounts(self) -> list[str]:
        targets = [v.split(":")[1] for v in self.spec.get("volumes", [])]
        return [*targets, DATA_VOLUME] if self.vallum else targets

    def command_lines(self) -> list[list[str]]:
        """Every `vallum` argument list this container runs: its command (the image's
        ENTRYPOINT is `vallum`) or its entrypoint script, and its health check."""
        lines: list[list[str]] = []
        entrypoint = self.spec.get("entrypoint")
        if entrypoint is None:
            lines.append(list(self.spec.get("command", [])))
        elif entrypoint[:1] == ["/bin/sh"] and len(entrypoint) == 2:
            script = self.host_file(entrypoint[1])
            lines += script_commands(script.read_text())
        test = self.spec.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD":
            argv = vallum_argv(test[1:])
            if argv is not None:
                lines.append(argv)
        return lines

    def host_file(self, container_path: str) -> Path:
        for volume in self.spec.get("volumes", []):
            source, target = volume.split(":")[:2]
            if target == container_path:
                return DEPLOY / str(source)
        raise AssertionError(f"{self.name}: {container_path} is not mounted from deploy/")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def containers() -> dict[str, Container]:
    found = {}
    for name, spec in compose()["services"].items():
        env = spec.get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        found[name] = Container(name, spec, {k: str(v) for k, v in env.items()})
    return found


def compose_config() -> Any:
    return yaml.safe_load((DEPLOY / "compose" / "config.yaml").read_text())


def script_commands(text: str) -> list[list[str]]:
    """The `vallum` invocations of a POSIX shell script, with its NAME=value
    assignments (`${NAME:-default}`: the default) substituted."""
    variables: dict[str, str] = {}
    for name, value in re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.MULTILINE):
        default = re.fullmatch(r"\$\{[A-Z_]+:-(.*)\}", value)
        variables[name] = default.group(1) if default else value

    def expand(line: str) -> str:
        return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables.get(m.group(1), m.group(0)), line)

    lines = []
    for line in text.replace("\\\n", " ").splitlines():
        if re.match(r"\s*vallum\s", line):
            argv = vallum_argv(shlex.split(expand(line), comments=True))
            assert argv is not None
            lines.append(argv)
    return lines


def test_compose_commands_parse_with_the_real_cli() -> None:
    seen: dict[str, list[list[str]]] = {}
    for c in containers().values():
        if c.vallum:
            seen[c.name] = c.command_lines()
            for argv in seen[c.name]:
                assert cli_problems(argv) == [], c.name
    assert ["demo-idp", "--config", CONFIG_PATH] in seen["demo-idp"]
    assert ["demo-app", "--config", CONFIG_PATH] in seen["app"]
    pki = seen["pki"]
    assert pki[0][:2] == ["ca", "init"]
    issued = {a[a.index("--service") + 1] for a in pki if "--service" in a}
    assert issued == set(VALLUM_SERVICES)
    for service in VALLUM_SERVICES:
        assert ["health", "--config", CONFIG_PATH, "--service", service] in seen[service]


def test_compose_configs_parse_with_each_containers_environment() -> None:
    raw = compose_config()
    for c in containers().values():
        if not c.vallum or c.name == "pki":
            continue
        assert env_problems(c.environ) == [], c.name
        config, problems = parse_config(raw, c.environ)
        assert problems == [], c.name
        expected = {c.name} if c.name in VALLUM_SERVICES else set(VALLUM_SERVICES)
        assert config.services == expected, c.name


def test_compose_ports_are_the_ones_the_config_listens_on() -> None:
    raw = compose_config()
    all_containers = containers()
    for name in VALLUM_SERVICES:
        c = all_containers[name]
        config, _ = parse_config(raw, c.environ)
        ports = listen_ports(config)
        assert config.authorize_check_port != 0
        assert {int(p) for p in c.spec["expose"]} == set(ports.values()), (name, ports)
        # Everything it dials is a compose service that listens there.
        for key, host, port, service in dialled(config):
            assert host == service, f"{name} {key}: {host} is not the {service} container"
            peer, _ = parse_config(raw, all_containers[service].environ)
            assert port in listen_ports(peer).values(), f"{name} {key}: port {port}"
    app = all_containers["app"]
    config, _ = parse_config(raw, app.environ)
    target = urlsplit(config.routes[0].to[0].url)
    assert target.hostname == "app" and str(target.port) in app.spec["expose"]


def test_compose_files_are_under_mounted_volumes() -> None:
    raw = compose_config()
    for c in containers().values():
        if not c.vallum or c.name == "pki":
            continue
        config, _ = parse_config(raw, c.environ)
        mounts = c.mounts()
        assert CONFIG_PATH in mounts, c.name
        assert mount_problems(config_files(config), mounts) == [], c.name
        if c.name in VALLUM_SERVICES:
            assert under(config.data_dir, mounts), c.name
        for volume in c.spec["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{c.name}: {source} does not exist"
    # The demo pieces find their material in data_dir/pki (services/commands/demo.py).
    for name, file in (("demo-idp", "demo-idp.pem"), ("app", "ca.pem")):
        c = containers()[name]
        config, _ = parse_config(raw, c.environ)
        assert under(f"{config.data_dir}/pki/{file}", c.mounts()), name


def test_compose_proxy_scales_behind_the_load_balancer() -> None:
    services = compose()["services"]
    proxy = services["proxy"]
    assert "container_name" not in proxy, "a fixed name stops `--scale proxy=N`"
    assert "ports" not in proxy, "a fixed host port stops `--scale proxy=N`"
    lb = services["lb"]
    assert lb["image"].startswith("haproxy:")
    assert "/usr/local/etc/haproxy/haproxy.cfg" in [v.split(":")[1] for v in lb["volumes"]]
    config, _ = parse_config(compose_config(), containers()["proxy"].environ)
    published = {int(p.split(":")[1]) for p in lb["ports"]}
    assert config.address.port in published


def test_compose_pki_and_secrets_come_from_the_one_shot() -> None:
    c = containers()
    pki = c["pki"]
    assert pki.spec["restart"] == "no"
    for name in ("authenticate", "authorize", "proxy", "postgres", "demo-idp", "app"):
        depends = c[name].spec["depends_on"]
        assert depends["pki"]["condition"] == "service_completed_successfully", name
    assert c["authenticate"].spec["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert c["authenticate"].environ["DATABROKER_STORAGE_TYPE"] == "postgres"
    text = (DEPLOY / "compose" / "config.yaml").read_text() + (DEPLOY / "compose.yaml").read_text()
    for inline in ("shared_secret:", "cookie_secret:", "signing_key:", "idp_client_secret:"):
        assert f"\n{inline}" not in text, f"{inline} inline: secrets come from files"
    assert "POSTGRES_PASSWORD:" not in text


# --- haproxy --------------------------------------------------------------------------


def haproxy_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in (DEPLOY / "haproxy.cfg").read_text().splitlines():
        text = line.split("#", 1)[0].rstrip()
        if not text.strip():
            continue
        if not text[0].isspace():
            current = text.strip()
            sections[current] = []
        else:
            sections[current].append(text.strip())
    return sections


def test_haproxy_passes_tcp_through_to_every_proxy_replica() -> None:
    sections = haproxy_sections()
    assert "mode tcp" in sections["defaults"]
    config, _ = parse_config(compose_config(), containers()["proxy"].environ)
    frontend = sections["frontend vallum"]
    assert f"bind :{config.address.port}" in frontend
    assert not any(" ssl " in f" {line} " for line in frontend), "TLS must end at Vallum"
    backend = sections["backend proxies"]
    assert "balance roundrobin" in backend
    template = next(line for line in backend if line.startswith("server-template"))
    words = template.split()
    assert words[3] == f"proxy:{config.address.port}", "the compose service and its address"
    assert "resolvers" in words and "docker" in words
    nameserver = sections["resolvers docker"]
    assert "nameserver dns 127.0.0.11:53" in nameserver


def test_haproxy_relays_the_demo_idp_port() -> None:
    sections = haproxy_sections()
    config, _ = parse_config(compose_config(), containers()["authenticate"].environ)
    assert config.idp_provider_url is not None
    issuer = urlsplit(config.idp_provider_url)
    assert f'bind "${{LB_ADDR}}:{issuer.port}"' in sections["frontend demo_idp"]
    # The demo IdP listens on 127.0.0.1 at the issuer's port (services/commands/demo.py).
    assert f"server idp 127.0.0.1:{issuer.port}" in sections["backend demo_idp"]
    services = compose()["services"]
    assert services["demo-idp"]["network_mode"] == "service:lb"
    assert issuer.hostname in services["lb"]["networks"]["default"]["aliases"]
    assert "LB_ADDR=" in " ".join(services["lb"]["entrypoint"])
    assert issuer.port in {int(p.split(":")[1]) for p in services["lb"]["ports"]}


# --- Kubernetes -----------------------------------------------------------------------


def k8s_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_documents() if d.get("kind") == kind}


def k8s_config() -> Any:
    return yaml.safe_load(k8s("ConfigMap")["vallum-config"]["data"]["config.yaml"])


def deployment_env(container: Mapping[str, Any]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: only literal values are checked here"
        env[item["name"]] = str(item["value"])
    return env


def test_k8s_documents_and_kustomization() -> None:
    kinds = [(name, d["kind"]) for name, d in k8s_documents()]
    assert ("proxy.yaml", "HorizontalPodAutoscaler") in kinds
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")}
    assert set(kustomization["resources"]) == files - {"kustomization.yaml", "secrets.yaml"}
    assert k8s("Deployment")["authenticate"]["spec"]["replicas"] == 2
    hpa = k8s("HorizontalPodAutoscaler")["proxy"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "proxy"}
    assert hpa["minReplicas"] >= 2


def test_k8s_every_deployment_against_the_configmap() -> None:
    raw = k8s_config()
    configmaps = k8s("ConfigMap")
    secrets = k8s("Secret")
    services = k8s("Service")
    deployments = k8s("Deployment")
    assert set(deployments) == set(VALLUM_SERVICES)
    configs = {}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == IMAGE
        environ = deployment_env(container)
        assert env_problems(environ) == [], name
        config, problems = parse_config(raw, environ)
        assert problems == [], name
        assert config.services == {name}
        configs[name] = config
        assert cli_problems(container["args"]) == [], name
        assert container["args"][container["args"].index("--config") + 1] == CONFIG_PATH

        # Ports: declared = listened on.
        ports = listen_ports(config)
        declared = {p["containerPort"] for p in container["ports"]}
        assert declared == set(ports.values()), (name, ports)
        assert pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"] is True

        # Mounts: every file the config names, from a volume that exists.
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mount_problems(config_files(config), list(mounts)) == [], name
        assert under(config.data_dir, list(mounts)) and under("/tmp/x", list(mounts))
        for path in [*config_files(config).values(), CONFIG_PATH]:
            mount_path = max((m for m in mounts if under(path, [m])), key=len)
            mount = mounts[mount_path]
            volume = volumes[mount["name"]]
            item = mount.get("subPath") or posixpath.relpath(path, mount_path)
            if "secret" in volume:
                secret = secrets[volume["secret"]["secretName"]]
                assert item in secret["stringData"], f"{name}: {path} not in the Secret"
            elif "configMap" in volume:
                assert item in configmaps[volume["configMap"]["name"]]["data"], path

        # Probes.
        for probe in ("readinessProbe", "livenessProbe"):
            spec = container[probe]
            if name == "proxy":
                assert spec["httpGet"]["scheme"] == "HTTPS"
                assert spec["httpGet"]["port"] == config.address.port
                assert spec["httpGet"]["path"] in ("/ping", "/healthz")
            else:
                argv = vallum_argv(spec["exec"]["command"])
                assert argv is not None and cli_problems(argv) == [], name
                assert argv[:3] == ["health", "--config", CONFIG_PATH]
                assert argv[argv.index("--service") + 1] == name

        # Services: each targetPort is a declared container port.
        for service in services.values():
            if service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]:
                for port in service["spec"]["ports"]:
                    assert port["targetPort"] in declared, (service["metadata"]["name"], port)

    # What each service dials is a Service on a port that reaches the listener.
    for name, config in configs.items():
        for key, host, port, peer in dialled(config):
            if name == peer:
                continue  # its own URL; it listens where its env says
            service = services[host]
            assert service["spec"]["selector"]["app.kubernetes.io/name"] == peer, (name, key)
            by_port = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
            assert by_port.get(port) in listen_ports(configs[peer]).values(), (name, key)
    check_port = configs["authorize"].authorize_check_port
    assert check_port != 0
    assert check_port in {p["port"] for p in services["authorize"]["spec"]["ports"]}
    public = services["proxy"]["spec"]
    assert public["type"] == "LoadBalancer"
    assert public["ports"][0]["targetPort"] == configs["proxy"].address.port


def test_k8s_secrets_are_placeholders() -> None:
    for name, secret in k8s("Secret").items():
        for key, value in secret["stringData"].items():
            assert value.startswith("PLACEHOLDER"), f"{name}.{key}: commit no real secret"
    assert "databroker_storage_connection_string_file" not in k8s_config()
    pod = k8s("Deployment")["authenticate"]["spec"]["template"]["spec"]
    environ = deployment_env(pod["containers"][0])
    assert environ["DATABROKER_STORAGE_TYPE"] == "postgres"


# --- systemd --------------------------------------------------------------------------


def unit() -> dict[str, list[str]]:
    """key -> values (a key may repeat) of the [Service] section, and the others'."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in (DEPLOY / "systemd" / "vallum.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


def test_systemd_unit_runs_the_all_in_one() -> None:
    u = unit()
    (start,) = u["Service.ExecStart"]
    argv = vallum_argv(shlex.split(start))
    assert argv == ["run", "--config", CONFIG_PATH]
    assert cli_problems(argv) == []
    assert u["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert u["Service.User"] == ["vallum"]
    (state,) = u["Service.StateDirectory"]
    assert f"/var/lib/{state}" == Config().data_dir, "data_dir's default is the state dir"
    assert u["Service.RestartPreventExitStatus"] == ["78"]  # runtime.EXIT_CONFIG
    for option in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert option in {k.split(".", 1)[1] for k in u}, option


def test_exit_config_code_is_78() -> None:
    from services import runtime

    assert runtime.EXIT_CONFIG == 78


@pytest.mark.parametrize("path", sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml")))
def test_k8s_files_are_valid_yaml(path: str) -> None:
    assert list(yaml.safe_load_all((DEPLOY / "k8s" / path).read_text()))
