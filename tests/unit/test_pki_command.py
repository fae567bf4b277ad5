"""`vallum ca` end to end through its argparse handler (no sockets, no subprocesses)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cryptography import x509

from services.commands import ca as ca_command
from shared import pki


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vallum")
    ca_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result = args.handler(args)
    assert isinstance(result, int)
    return result


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vallum ca: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "ca"
    assert run(["ca", "init", "--dir", str(path)]) == 0
    capsys.readouterr()
    return path


def test_init_reports_files_and_refuses_a_second_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ca"
    argv = ["ca", "init", "--dir", str(path), "--cn", "Acme Root", "--days", "100"]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote {path / 'ca.pem'}" in out
    assert f"wrote {path / 'ca-key.pem'}" in out
    assert pki.load_ca(path).certificate.subject.rfc4514_string() == "CN=Acme Root"
    before = (path / "ca.pem").read_bytes()

    assert run(argv) == 1
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    assert "refusing to overwrite existing CA file" in line and "ca.pem" in line
    assert captured.out == ""
    assert (path / "ca.pem").read_bytes() == before


def test_issue_each_kind(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    common = ["--dir", str(ca_dir), "--out", str(out)]
    assert run(["ca", "issue", *common, "--service", "authorize", "--dns", "authz.svc"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out / 'authorize.pem'}" in text
    assert f"wrote {out / 'authorize-key.pem'}" in text
    cert = pki.load_certificates((out / "authorize.pem").read_bytes())[0]
    assert pki.spiffe_ids(cert) == ["spiffe://vallum.internal/authorize"]

    args = ["ca", "issue", *common, "--server", "*.localhost", "localhost", "--ip", "127.0.0.1"]
    assert run(args) == 0
    captured = capsys.readouterr()
    assert "_wildcard.localhost.pem" in captured.out
    assert "do not match wildcard '*.localhost'" in captured.err
    (info,) = pki.describe((out / "_wildcard.localhost.pem").read_bytes())
    assert [str(s) for s in info.sans] == ["DNS:*.localhost", "DNS:localhost", "IP:127.0.0.1"]

    args = ["ca", "issue", *common, "--client", "alice@example.com", "--name", "alice",
            "--pkcs12", "--password", "pw", "--key-type", "rsa"]  # fmt: skip
    assert run(args) == 0
    text = capsys.readouterr().out
    assert f"wrote {out / 'alice.p12'}" in text
    bundle = pki.load_pkcs12((out / "alice.p12").read_bytes(), "pw")
    assert bundle.certificate is not None
    assert pki.describe_certificate(bundle.certificate).key_type == "RSA 2048"

    assert run(["ca", "issue", *common, "--service", "proxy", "--trust-domain", "acme.test",
                "--no-loopback"]) == 0  # fmt: skip
    cert = pki.load_certificates((out / "proxy.pem").read_bytes())[0]
    assert pki.spiffe_ids(cert) == ["spiffe://acme.test/proxy"]
    assert "localhost" not in str(pki.describe_certificate(cert).sans)


def test_issue_refuses_overwrite_unless_forced(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ca", "issue", "--dir", str(ca_dir), "--out", str(tmp_path), "--client", "a@b.test"]
    assert run(argv) == 0
    first = (tmp_path / "a@b.test.pem").read_bytes()
    capsys.readouterr()
    assert run(argv) == 1
    assert "--force" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "a@b.test.pem").read_bytes() == first
    assert run([*argv, "--force"]) == 0
    assert (tmp_path / "a@b.test.pem").read_bytes() != first


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--client", "not-an-email"], "invalid email address"),
        (["--client", "a@b.test", "--dns", "x.test"], "do not apply to --client"),
        (["--client", "a@b.test", "--trust-domain", "x"], "only applies to --service"),
        (["--server", "bad name"], "invalid DNS name"),
        (["--service", "Bad"], "invalid service name"),
        (["--server", "ok.test", "--days", "0"], "validity"),
        (["--server", "ok.test", "--pkcs12", "--password", ""], "must not be empty"),
    ],
)
def test_issue_errors_are_one_line(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    assert run(["ca", "issue", "--dir", str(ca_dir), "--out", str(tmp_path), *extra]) == 1
    assert match in one_error_line(capsys.readouterr().err)
    assert not any(tmp_path.glob("*.pem"))


def test_issue_without_a_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ca", "issue", "--dir", str(tmp_path / "none"), "--client", "a@b.test"]) == 1
    assert "vallum ca init" in one_error_line(capsys.readouterr().err)


def test_revoke_and_crl(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = pki.load_ca(ca_dir)
    a = pki.issue_client(ca, "a@b.test")
    pki.write_issued(a, tmp_path, "a")
    b = pki.issue_client(ca, "b@b.test")

    assert run(["ca", "revoke", "--dir", str(ca_dir), "--cert", str(tmp_path / "a.pem"),
                "--reason", "keyCompromise"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert f"wrote {ca_dir / 'revoked.json'}" in text
    assert format(a.certificate.serial_number, "x") in text
    serial = format(b.certificate.serial_number, "X")
    assert run(["ca", "revoke", "--dir", str(ca_dir), "--serial", serial]) == 0
    assert run(["ca", "revoke", "--dir", str(ca_dir), "--serial", serial]) == 0
    assert "already revoked" in capsys.readouterr().out

    crl_path = tmp_path / "crl.pem"
    assert run(["ca", "crl", "--dir", str(ca_dir), "--out", str(crl_path), "--days", "2"]) == 0
    assert f"wrote {crl_path}" in capsys.readouterr().out
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert {r.serial_number for r in crl} == {
        a.certificate.serial_number,
        b.certificate.serial_number,
    }
    assert run(["ca", "crl", "--dir", str(ca_dir)]) == 0
    captured = capsys.readouterr()
    assert pki.crl_number(captured.out.encode()) == 2
    assert "CRL #2 with 2 revoked" in captured.err


def test_revoke_errors(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ca", "revoke", "--dir", str(ca_dir), "--serial", "nothex"]) == 1
    assert "invalid serial" in one_error_line(capsys.readouterr().err)
    assert run(["ca", "revoke", "--dir", str(ca_dir), "--cert", str(tmp_path / "no.pem")]) == 1
    assert "cannot read" in one_error_line(capsys.readouterr().err)


def test_show(ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = pki.load_ca(ca_dir)
    issued = pki.issue_service(ca, "proxy")
    paths = pki.write_issued(issued, tmp_path, "proxy", pkcs12=True)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(issued.cert_pem() + ca.cert_pem())

    assert run(["ca", "show", str(bundle)]) == 0
    out = capsys.readouterr().out
    info = pki.describe_certificate(issued.certificate)
    for expected in [
        "certificate 1 of 2",
        "certificate 2 of 2",
        "subject:      CN=proxy",
        "issuer:       CN=Vallum Internal CA",
        f"serial:       {info.serial}",
        "URI:spiffe://vallum.internal/proxy, DNS:proxy",
        f"SHA-256:      {info.fingerprint_sha256}",
        f"SPKI SHA-256: {info.spki_sha256}",
        "expires in 364 day(s)",
        "CA:           yes",
    ]:
        assert expected in out

    assert paths.pkcs12 is not None
    assert run(["ca", "show", str(paths.pkcs12)]) == 0
    assert "private key:  present, matches this certificate" in capsys.readouterr().out
    renamed = tmp_path / "bundle.bin"
    renamed.write_bytes(paths.pkcs12.read_bytes())
    assert run(["ca", "show", str(renamed)]) == 0
    assert "CN=proxy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "extra", "match"),
    [
        (b"garbage", [], "if it is PKCS#12, pass --password"),
        (b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", [], "no PEM cert"),
        (b"garbage", ["--password", "x"], "cannot open as PKCS#12"),
    ],
)
def test_show_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    extra: list[str],
    match: str,
) -> None:
    path = tmp_path / "thing"
    path.write_bytes(content)
    assert run(["ca", "show", str(path), *extra]) == 1
    assert match in one_error_line(capsys.readouterr().err)
