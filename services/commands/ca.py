"""`vallum ca`: create the internal CA, issue, revoke, publish CRLs, inspect certificates.

A thin front end over `shared.pki`: it parses arguments, calls the library, and turns
every failure into one `vallum ca: ...` line on stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from cryptography import x509

from shared import pki
from shared.pki.files import PUBLIC_MODE, write_file

Action = Callable[[argparse.Namespace], int]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = subparsers.add_parser(
        "ca",
        help="manage Vallum's internal certificate authority",
        description="Create the internal CA and issue, revoke and inspect certificates.",
    )
    ca.set_defaults(handler=handle)
    sub = ca.add_subparsers(dest="ca_command", metavar="COMMAND", required=True)

    init = sub.add_parser("init", help="create a new root CA (never overwrites one)")
    _dir_arg(init)
    init.add_argument("--cn", default=pki.DEFAULT_CA_NAME, help="root common name")
    _key_args(init, default_rsa_bits=3072)
    init.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    init.set_defaults(ca_action=_init)

    issue = sub.add_parser("issue", help="issue a service, server or client certificate")
    _dir_arg(issue)
    kind = issue.add_mutually_exclusive_group(required=True)
    kind.add_argument("--service", metavar="NAME", help="Vallum service (server+client mTLS)")
    kind.add_argument("--server", metavar="NAME", nargs="+", help="route host names or IPs")
    kind.add_argument("--client", metavar="EMAIL", help="user client certificate")
    issue.add_argument(
        "--trust-domain", help=f"SPIFFE trust domain (default {pki.DEFAULT_TRUST_DOMAIN})"
    )
    issue.add_argument("--dns", nargs="+", action="extend", default=[], help="extra DNS SANs")
    issue.add_argument("--ip", nargs="+", action="extend", default=[], help="extra IP SANs")
    issue.add_argument(
        "--no-loopback",
        action="store_true",
        help="service certificates: leave out localhost, 127.0.0.1 and ::1",
    )
    issue.add_argument("--out", type=Path, default=Path("."), help="output directory")
    issue.add_argument("--name", help="file name stem (default: derived from the subject)")
    issue.add_argument("--pkcs12", action="store_true", help="also write <name>.p12")
    issue.add_argument("--password", default=pki.DEFAULT_PKCS12_PASSWORD, help="PKCS#12 password")
    issue.add_argument("--days", type=int, default=365, help="validity (default 365)")
    _key_args(issue, default_rsa_bits=2048)
    issue.add_argument("--force", action="store_true", help="replace existing output files")
    issue.set_defaults(ca_action=_issue)

    revoke = sub.add_parser("revoke", help="record a certificate as revoked")
    _dir_arg(revoke)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", metavar="HEX", help="serial number in hex")
    which.add_argument("--cert", metavar="FILE", type=Path, help="the certificate (PEM)")
    revoke.add_argument("--reason", choices=pki.REASONS, default="unspecified")
    revoke.set_defaults(ca_action=_revoke)

    crl = sub.add_parser("crl", help="sign a CRL of every revoked certificate")
    _dir_arg(crl)
    crl.add_argument("--out", type=Path, help="write here instead of stdout")
    crl.add_argument("--days", type=int, default=7, help="until nextUpdate (default 7)")
    crl.set_defaults(ca_action=_crl)

    show = sub.add_parser("show", help="describe the certificates in a PEM, DER or PKCS#12 file")
    show.add_argument("file", type=Path)
    show.add_argument("--password", help="PKCS#12 password (default for .p12/.pfx: changeit)")
    show.set_defaults(ca_action=_show)


def _dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, required=True, help="CA directory")


def _key_args(parser: argparse.ArgumentParser, *, default_rsa_bits: int) -> None:
    parser.add_argument("--key-type", choices=pki.KEY_TYPES, default="ecdsa")
    parser.add_argument("--rsa-bits", type=int, choices=pki.RSA_KEY_SIZES, default=default_rsa_bits)


def handle(args: argparse.Namespace) -> int:
    action: Action = args.ca_action
    try:
        return action(args)
    except pki.PKIError as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")


def _fail(message: str) -> int:
    print(f"vallum ca: {message}", file=sys.stderr)
    return 1


def _init(args: argparse.Namespace) -> int:
    ca = pki.init_ca(
        args.dir,
        common_name=args.cn,
        key_type=args.key_type,
        rsa_bits=args.rsa_bits,
        days=args.days,
    )
    info = pki.describe_certificate(ca.certificate)
    print(f"created CA {info.subject!r} ({info.key_type}), valid until {_date(info.not_after)}")
    print(f"wrote {ca.cert_path} (CA certificate: give it to clients and services)")
    print(f"wrote {ca.key_path} (CA private key, mode 0600: keep it secret, back it up)")
    print(f"SHA-256 fingerprint {info.fingerprint_sha256}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    if args.trust_domain is not None and args.service is None:
        raise pki.PKIError("--trust-domain only applies to --service")
    if args.no_loopback and args.service is None:
        raise pki.PKIError("--no-loopback only applies to --service")
    ca = pki.load_ca(args.dir)
    key_type: pki.KeyType = args.key_type
    rsa_bits: int = args.rsa_bits
    if args.service is not None:
        issued = pki.issue_service(
            ca,
            args.service,
            args.trust_domain or pki.DEFAULT_TRUST_DOMAIN,
            args.dns,
            args.ip,
            args.days,
            include_loopback=not args.no_loopback,
            key_type=key_type,
            rsa_bits=rsa_bits,
        )
        kind, default_name = "service", args.service
    elif args.server is not None:
        issued = pki.issue_server(
            ca, [*args.server, *args.dns, *args.ip], args.days, key_type=key_type, rsa_bits=rsa_bits
        )
        kind, default_name = "server", args.server[0].replace("*", "_wildcard")
        for name in pki.second_level_wildcards(args.server + args.dns):
            print(
                f"vallum ca: note: OpenSSL, curl and browsers do not match wildcard {name!r} "
                "(one label after '*.'); also list the exact host names",
                file=sys.stderr,
            )
    else:
        if args.dns or args.ip:
            raise pki.PKIError("--dns and --ip do not apply to --client certificates")
        issued = pki.issue_client(ca, args.client, args.days, key_type=key_type, rsa_bits=rsa_bits)
        kind, default_name = "client", args.client
    paths = pki.write_issued(
        issued,
        args.out,
        args.name or default_name,
        pkcs12=args.pkcs12,
        password=args.password,
        force=args.force,
    )
    info = pki.describe_certificate(issued.certificate)
    print(f"issued {kind} certificate {info.subject or '(empty subject)'}, serial {info.serial}")
    print(f"  SANs: {', '.join(str(s) for s in info.sans)}")
    print(f"  valid until {_date(info.not_after)}")
    print(f"wrote {paths.cert} (certificate)")
    print(f"wrote {paths.key} (private key, mode 0600)")
    if paths.pkcs12 is not None:
        print(f"wrote {paths.pkcs12} (PKCS#12 with certificate, key and CA; mode 0600)")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    ca = pki.load_ca(args.dir)
    target: str | x509.Certificate
    if args.cert is not None:
        target = pki.load_certificates(_read(args.cert), source=str(args.cert))[0]
    else:
        target = args.serial
    before = {r.serial for r in pki.revoked(ca)}
    entry = pki.revoke(ca, target, args.reason)
    if entry.serial in before:
        print(
            f"serial {entry.serial_hex} was already revoked on {_date(entry.revoked_at)} "
            f"({entry.reason.value}); nothing changed"
        )
        return 0
    print(f"revoked serial {entry.serial_hex} ({entry.reason.value})")
    print(f"wrote {ca.dir / pki.REVOKED_FILE}")
    print(f"publish it: vallum ca crl --dir {ca.dir} --out crl.pem")
    return 0


def _crl(args: argparse.Namespace) -> int:
    ca = pki.load_ca(args.dir)
    pem = pki.make_crl(ca, days=args.days)
    crl = x509.load_pem_x509_crl(pem)
    summary = (
        f"CRL #{pki.crl_number(pem)} with {len(crl)} revoked certificate(s), "
        f"next update {_date(crl.next_update_utc)}"
    )
    if args.out is None:
        sys.stdout.write(pem.decode("ascii"))
        # Status goes to stderr so stdout stays a clean PEM for redirection.
        print(summary, file=sys.stderr)
        return 0
    write_file(args.out, pem, mode=PUBLIC_MODE, overwrite=True)
    print(f"wrote {args.out} ({summary})")
    return 0


def _show(args: argparse.Namespace) -> int:
    path: Path = args.file
    data = _read(path)
    key: pki.PrivateKey | None = None
    if args.password is not None or path.suffix.lower() in (".p12", ".pfx"):
        bundle = pki.load_pkcs12(
            data, args.password or pki.DEFAULT_PKCS12_PASSWORD, source=str(path)
        )
        certs, key = bundle.certificates(), bundle.private_key
    else:
        try:
            certs = pki.load_certificates(data, source=str(path))
        except pki.PKIError as exc:
            if b"-----BEGIN" in data:
                raise
            # Binary and not a DER certificate: perhaps a PKCS#12 with an odd name.
            try:
                bundle = pki.load_pkcs12(data, pki.DEFAULT_PKCS12_PASSWORD, source=str(path))
            except pki.PKIError:
                raise pki.PKIError(f"{exc}; if it is PKCS#12, pass --password") from exc
            certs, key = bundle.certificates(), bundle.private_key
    if not certs:
        raise pki.PKIError(f"{path}: contains no certificates")
    _print_certs(certs, key, path, sys.stdout)
    return 0


def _print_certs(
    certs: list[x509.Certificate], key: pki.PrivateKey | None, path: Path, out: TextIO
) -> None:
    now = dt.datetime.now(dt.UTC)
    for index, cert in enumerate(certs, start=1):
        info = pki.describe_certificate(cert)
        if index > 1:
            out.write("\n")
        rows = [
            ("subject", info.subject or "(empty)"),
            ("issuer", info.issuer),
            ("serial", info.serial),
            ("SANs", ", ".join(str(s) for s in info.sans) or "(none)"),
            ("key", info.key_type),
            ("CA", "yes" if info.is_ca else "no"),
            ("SHA-256", info.fingerprint_sha256),
            ("SPKI SHA-256", info.spki_sha256),
            ("not before", _date(info.not_before)),
            ("not after", f"{_date(info.not_after)} ({_expiry(info, now)})"),
        ]
        if key is not None and index == 1:
            match = "matches" if pki.key_matches_certificate(key, cert) else "DOES NOT match"
            rows.append(("private key", f"present, {match} this certificate"))
        out.write(f"{path}: certificate {index} of {len(certs)}\n")
        for label, value in rows:
            out.write(f"  {label + ':':<14}{value}\n")


def _expiry(info: pki.CertInfo, now: dt.datetime) -> str:
    if now < info.not_before:
        return "not yet valid"
    if info.not_after <= now:
        return f"EXPIRED {(now - info.not_after).days} day(s) ago"
    return f"expires in {(info.not_after - now).days} day(s)"


def _date(value: dt.datetime | None) -> str:
    return "never" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise pki.PKIError(f"cannot read {path}: {exc.strerror}") from exc
