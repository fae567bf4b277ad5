"""load_config: the YAML file, the environment and every file the config names."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from shared.config import ConfigError, Source, load_config
from shared.config.load import MAX_FILE_BYTES

CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nMIGHfake\n-----END PRIVATE KEY-----\n"
SECRET = bytes(range(32))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ or {})
    return [str(p) for p in caught.value.problems]


def test_loads_yaml_and_fills_in_every_referenced_file(tmp_path: Path) -> None:
    write(tmp_path / "tls/cert.pem", CERT_PEM)
    write(tmp_path / "tls/key.pem", KEY_PEM)
    write(tmp_path / "tls/extra.pem", CERT_PEM)
    write(tmp_path / "ca.pem", CERT_PEM)
    write(tmp_path / "secrets/shared", base64.b64encode(SECRET).decode() + "\n")
    config_path = write(
        tmp_path / "config.yaml",
        """
services: all
shared_secret_file: secrets/shared
certificate_file: tls/cert.pem
certificate_key_file: tls/key.pem
certificates:
  - cert: tls/extra.pem
    key: tls/key.pem
routes:
  - from: https://app.example.com
    to: http://app:8080
    tls_custom_ca_file: ca.pem
""",
    )
    config = load_config(str(config_path), {})
    assert config.source_path == str(config_path)
    assert config.base_dir == str(tmp_path)
    assert config.shared_secret == SECRET
    assert config.shared_secret_file == str(tmp_path / "secrets/shared")
    # The path stays next to the bytes so TLS code can reload the file on change.
    assert config.certificate == Source(str(tmp_path / "tls/cert.pem"), CERT_PEM)
    assert config.certificate_key == Source(str(tmp_path / "tls/key.pem"), KEY_PEM)
    assert config.certificates[0].cert == Source(str(tmp_path / "tls/extra.pem"), CERT_PEM)
    assert config.certificates[0].key.data == KEY_PEM
    assert config.routes[0].tls_custom_ca == Source(str(tmp_path / "ca.pem"), CERT_PEM)


def test_relative_paths_are_resolved_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "etc/cert.pem", CERT_PEM)
    write(tmp_path / "etc/key.pem", KEY_PEM)
    config_path = write(
        tmp_path / "etc/config.yaml",
        "certificate_file: cert.pem\ncertificate_key_file: ./key.pem\ndata_dir: state\n",
    )
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/config.yaml", {})
    assert config.certificate is not None
    assert config.certificate.path == str(tmp_path / "etc/cert.pem")
    assert config.data_dir == str(tmp_path / "etc/state")
    assert config.source_path == str(config_path)


def test_missing_file_is_named_with_its_key_and_path(tmp_path: Path) -> None:
    write(tmp_path / "key.pem", KEY_PEM)
    config_path = write(
        tmp_path / "config.yaml",
        "certificate_file: /nonexistent/y.pem\ncertificate_key_file: key.pem\n",
    )
    assert problems(config_path) == [
        "certificate_file: cannot read /nonexistent/y.pem: No such file or directory"
    ]


def test_file_problems_are_reported_with_the_other_problems(tmp_path: Path) -> None:
    write(tmp_path / "not-a-cert.pem", KEY_PEM)
    write(tmp_path / "weak", base64.b64encode(b"short").decode())
    config_path = write(
        tmp_path / "config.yaml",
        f"""
log_level: chatty
cookie_secret_file: weak
certificates:
  - cert: not-a-cert.pem
    key: missing-key.pem
routes:
  - from: https://app.example.com
    to: http://app
  - from: https://b.example.com
    to: http://b
    tls_client_cert_file: gone.pem
    tls_client_key: {base64.b64encode(KEY_PEM).decode()}
""",
    )
    found = problems(config_path)
    assert found == [
        "log_level: must be one of debug, info, warn, warning, error; got 'chatty'",
        f"cookie_secret_file: {tmp_path}/weak: must decode to at least 32 bytes, got 5 "
        "(generate one with: head -c32 /dev/urandom | base64)",
        f"certificates[0].cert: {tmp_path}/not-a-cert.pem: holds no PEM certificate "
        "(found PRIVATE KEY)",
        f"certificates[0].key: cannot read {tmp_path}/missing-key.pem: No such file or directory",
        f"routes[1].tls_client_cert_file: cannot read {tmp_path}/gone.pem: "
        "No such file or directory",
    ]


def test_file_named_by_the_environment_is_blamed_on_the_variable(tmp_path: Path) -> None:
    config_path = write(tmp_path / "config.yaml", "")
    environ = {"CERTIFICATE_AUTHORITY_FILE": "/nonexistent/ca.pem"}
    found = problems(config_path, environ)
    assert found[0].startswith("internal_certificate: required when certificate_authority")
    assert found[1].startswith("internal_certificate_key: required when certificate_authority")
    assert found[2:] == [
        "CERTIFICATE_AUTHORITY_FILE (environment): cannot read /nonexistent/ca.pem: "
        "No such file or directory"
    ]


def test_all_in_one_message_for_partial_internal_tls(tmp_path: Path) -> None:
    config_path = write(tmp_path / "config.yaml", "internal_certificate_file: svc.pem\n")
    write(tmp_path / "svc.pem", CERT_PEM)
    hint = (
        " is set (give all of certificate_authority, internal_certificate, "
        "internal_certificate_key, or none to let all-in-one mode create them)"
    )
    assert problems(config_path) == [
        "certificate_authority: required when internal_certificate" + hint,
        "internal_certificate_key: required when internal_certificate" + hint,
    ]


def test_secret_file_contents_never_appear_in_messages(tmp_path: Path) -> None:
    secret_text = base64.b64encode(b"x" * 20).decode()
    write(tmp_path / "secret", secret_text)
    config_path = write(tmp_path / "config.yaml", "shared_secret_file: secret\n")
    (message,) = problems(config_path)
    assert secret_text not in message
    assert message.startswith("shared_secret_file: ")


def test_pem_file_must_hold_pem(tmp_path: Path) -> None:
    write(tmp_path / "cert.der", b"\x30\x82\x01\x0a")
    write(tmp_path / "key.pem", KEY_PEM)
    config_path = write(
        tmp_path / "config.yaml", "certificate_file: cert.der\ncertificate_key_file: key.pem\n"
    )
    assert problems(config_path) == [
        f"certificate_file: {tmp_path}/cert.der: holds no PEM data (expected -----BEGIN ...-----)"
    ]


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "big.pem", b"-----BEGIN CERTIFICATE-----\n" + b"A" * MAX_FILE_BYTES)
    config_path = write(tmp_path / "config.yaml", "certificate_authority_file: big.pem\n")
    environ = {"INTERNAL_CERTIFICATE": base64.b64encode(CERT_PEM).decode()}
    environ["INTERNAL_CERTIFICATE_KEY"] = base64.b64encode(KEY_PEM).decode()
    (message,) = problems(config_path, environ)
    assert message.startswith(f"certificate_authority_file: {tmp_path}/big.pem is larger than")


def test_yaml_syntax_error_is_one_problem_with_line_and_column(tmp_path: Path) -> None:
    config_path = write(tmp_path / "config.yaml", "log_level: info\nroutes: [\n  - from: x\n")
    (message,) = problems(config_path)
    assert message.startswith(f"{config_path}: line 3, column 3: invalid YAML: ")


def test_bad_indentation_reports_its_line(tmp_path: Path) -> None:
    config_path = write(tmp_path / "config.yaml", "address: :443\n  log_level: info\n")
    (message,) = problems(config_path)
    assert f"{config_path}: line 2, column" in message


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "string"), ("42\n", "integer")]
)
def test_top_level_that_is_not_a_mapping_is_a_problem(tmp_path: Path, text: str, kind: str) -> None:
    config_path = write(tmp_path / "config.yaml", text)
    assert problems(config_path) == [
        f"{config_path}: the top level must be a mapping of keys to values, got {kind}"
    ]


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path / "config.yaml", "# nothing yet\n")), {})
    assert config.all_in_one
    assert config.routes == ()


def test_missing_config_file_is_a_problem(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [
        f"{tmp_path}/nope.yaml: cannot read config file: No such file or directory"
    ]


def test_no_file_means_environment_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {"LOG_LEVEL": "debug", "DATA_DIR": "d"})
    assert config.log_level == "debug"
    assert config.source_path is None
    assert config.data_dir == os.path.join(str(tmp_path), "d")


def test_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "error")
    config_path = write(tmp_path / "config.yaml", "log_level: debug\n")
    assert load_config(str(config_path)).log_level == "error"
    assert load_config(str(config_path), {}).log_level == "debug"
