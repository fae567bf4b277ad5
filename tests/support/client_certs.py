"""Client certificates for the downstream mTLS tests, made with the real tools.

- Debian's `mkcert` (its CA in a private CAROOT, never `-install`): ordinary user
  certificates as PEM pairs and as PKCS#12 (`changeit`, mkcert's fixed password);
- the project's own CA through its CLI (`vallum ca init/issue/revoke/crl`);
- `openssl ca` for a CRL over mkcert's CA (a throwaway openssl.cnf and index.txt);
- the `cryptography` package for what neither tool makes: expired and not-yet-valid
  certificates, a leaf under an intermediate, serverAuth-only, odd SANs (DNS, URI, IP,
  a Microsoft UPN otherName), a broken signature, and CAs with distinct names.

mkcert names every CA it makes "mkcert <user>@<host>": a second CAROOT on the same
machine has the same subject as the first, with another key. That twin is kept on
purpose (a look-alike CA must still be untrusted); CAs whose names must differ (the
per-route CA names a server sends) come from the project's CA or `cryptography`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import shutil
import ssl
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from tests.support.procs import vallum_once
from tests.support.tools import require_tool

# mkcert writes every PKCS#12 file with this password (its docs say so).
CHANGEIT = "changeit"
# Microsoft's User Principal Name otherName (szOID_NT_PRINCIPAL_NAME).
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
# An extension nobody implements (the private-enterprise arc of RFC 5612's example).
UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.32473.1.1")


def run(argv: list[str], *, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{argv} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout + result.stderr


@dataclass(frozen=True)
class ClientCert:
    """A client certificate as a client presents it: `cert` holds the leaf, then any
    intermediates it sends; `p12`, when there is one, holds the same key and leaf."""

    name: str
    cert: Path
    key: Path
    p12: Path | None = None
    p12_password: str = CHANGEIT

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.cert.read_bytes())[0]

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of the leaf's DER, computed here independently of Vallum."""
        return hashlib.sha256(self.leaf.public_bytes(serialization.Encoding.DER)).hexdigest()

    @property
    def spki_hash(self) -> str:
        spki = self.leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def context(self, server_ca: Path | None = None) -> ssl.SSLContext:
        """A client context presenting this certificate; trusting `server_ca` (hostname
        checked) or, without one, not checking the server at all."""
        if server_ca is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=str(server_ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def _write_pair(
    out: Path, name: str, chain: list[x509.Certificate], key: CertificateIssuerPrivateKeyTypes
) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}.pem", out / f"{name}-key.pem"
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# -- mkcert ----------------------------------------------------------------------


@dataclass(frozen=True)
class MkcertCA:
    caroot: Path

    @property
    def root(self) -> Path:
        return self.caroot / "rootCA.pem"

    @property
    def root_key(self) -> Path:
        return self.caroot / "rootCA-key.pem"

    def _mkcert(self, *args: str) -> None:
        # CAROOT picks the CA; without -install mkcert only reads the trust stores.
        run([require_tool("mkcert"), *args], env={"CAROOT": str(self.caroot)})

    def client(self, out: Path, name: str, email: str) -> ClientCert:
        """`mkcert -client` as a PEM pair (mkcert's key is PKCS#8 RSA)."""
        out.mkdir(parents=True, exist_ok=True)
        cert, key = out / f"{name}.pem", out / f"{name}-key.pem"
        self._mkcert("-client", "-cert-file", str(cert), "-key-file", str(key), email)
        return ClientCert(name, cert, key)

    def client_p12(self, out: Path, name: str, email: str) -> ClientCert:
        """`mkcert -client -pkcs12`; the PEM pair beside it is read back out of the .p12
        so that tests can name its fingerprint. mkcert's .p12 uses RC2-40 and 3DES,
        which OpenSSL 3 reads only with its legacy provider (see `legacy_openssl_conf`)."""
        out.mkdir(parents=True, exist_ok=True)
        p12 = out / f"{name}.p12"
        self._mkcert("-client", "-pkcs12", "-p12-file", str(p12), email)
        # It holds the key, the leaf and mkcert's root.
        key, leaf, _ = pkcs12.load_key_and_certificates(p12.read_bytes(), CHANGEIT.encode())
        assert leaf is not None and key is not None
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        cert_path, key_path = _write_pair(out, name, [leaf], key)
        return ClientCert(name, cert_path, key_path, p12=p12)

    def signer(self) -> Signer:
        """mkcert's own root as a `cryptography` signer, for the certificates mkcert
        cannot make but that must still come from this CA."""
        cert = x509.load_pem_x509_certificate(self.root.read_bytes())
        key = serialization.load_pem_private_key(self.root_key.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        return Signer(cert, key, self.root)


def mkcert_ca(caroot: Path, out: Path) -> MkcertCA:
    """A new mkcert CA in `caroot` (mkcert makes one on its first run there); `out`
    takes the throwaway server certificate of that first run."""
    out.mkdir(parents=True, exist_ok=True)
    ca = MkcertCA(caroot)
    ca._mkcert(
        "-cert-file",
        str(out / "bootstrap.pem"),
        "-key-file",
        str(out / "bootstrap-key.pem"),
        "bootstrap.invalid",
    )
    return ca


def legacy_openssl_conf(path: Path) -> Path:
    """An OPENSSL_CONF that loads OpenSSL 3's legacy provider beside the default one:
    what a user of curl needs for mkcert's RC2-40 PKCS#12 files."""
    path.write_text(
        "openssl_conf = openssl_init\n"
        "[openssl_init]\nproviders = provider_sect\n"
        "[provider_sect]\ndefault = default_sect\nlegacy = legacy_sect\n"
        "[default_sect]\nactivate = 1\n[legacy_sect]\nactivate = 1\n"
    )
    return path


# -- cryptography --------------------------------------------------------------------


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def upn(name: str) -> x509.OtherName:
    """A UPN otherName SAN; its value is the DER of a UTF8String."""
    raw = name.encode()
    assert len(raw) < 128
    return x509.OtherName(UPN_OID, bytes([0x0C, len(raw)]) + raw)


@dataclass(frozen=True)
class Signer:
    """A CA certificate and its key (a new root, an intermediate, or mkcert's root)."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    path: Path  # the CA certificate as PEM

    @classmethod
    def new_root(cls, out: Path, name: str) -> Signer:
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        path, _ = _write_pair(out, _stem(name), [cert], key)
        return cls(cert, key, path)

    def _builder(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> x509.CertificateBuilder:
        issuer_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
                critical=False,
            )
        )

    def intermediate(self, out: Path, name: str) -> Signer:
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            self._builder(subject, key, now - dt.timedelta(days=1), now + dt.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        path, _ = _write_pair(out, _stem(name), [cert], key)
        return Signer(cert, key, path)

    def issue(
        self,
        out: Path,
        name: str,
        sans: list[x509.GeneralName],
        *,
        usages: tuple[ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        send_chain: tuple[Signer, ...] = (),
        break_signature: bool = False,
        unknown_critical: bool = False,
    ) -> ClientCert:
        """A leaf; `send_chain` are the intermediates written after it in the PEM file
        (what the client sends); `break_signature` flips the signature's last byte;
        `unknown_critical` adds a critical extension no verifier knows."""
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            self._builder(
                subject,
                key,
                not_before or now - dt.timedelta(hours=1),
                not_after or now + dt.timedelta(days=30),
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if unknown_critical:
            # RFC 5280 §4.2: a verifier must reject a certificate with a critical
            # extension it does not recognise. (An OID under the documentation arc.)
            unknown = x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00")
            builder = builder.add_extension(unknown, critical=True)
        leaf = builder.sign(self.key, hashes.SHA256())
        if break_signature:
            der = bytearray(leaf.public_bytes(serialization.Encoding.DER))
            der[-1] ^= 0x01  # the signature is the last field of the DER
            leaf = x509.load_der_x509_certificate(bytes(der))
        cert_path, key_path = _write_pair(out, name, [leaf, *(s.cert for s in send_chain)], key)
        return ClientCert(name, cert_path, key_path)

    def crl(self, out: Path, revoked: tuple[ClientCert, ...] = ()) -> Path:
        """A current CRL of this CA listing `revoked` (an empty one still matters: a
        verifier checking CRLs for every CA in a chain needs one for this CA)."""
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=7))
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.leaf.serial_number)
                .revocation_date(now - dt.timedelta(minutes=1))
                .build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        path = out / f"{_stem(self.cert.subject.rfc4514_string())}.crl.pem"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


# -- openssl ca ----------------------------------------------------------------------


class OpenSSLCA:
    """A CA run by `openssl` alone: `openssl ca` with a throwaway openssl.cnf and
    index.txt revokes and signs CRLs; `create` also makes the root (`openssl req
    -x509`) and issues client certificates (`openssl req` + `openssl ca`)."""

    def __init__(self, work: Path, cert: Path, key: Path) -> None:
        """Over an existing CA certificate and key (revoke and CRLs only)."""
        self.work, self.root, self.root_key = work, cert, key
        work.mkdir(parents=True, exist_ok=True)
        (work / "index.txt").write_text("")
        (work / "index.txt.attr").write_text("unique_subject = no\n")
        (work / "crlnumber").write_text("1000\n")
        (work / "newcerts").mkdir(exist_ok=True)
        self.config = work / "openssl.cnf"
        self.config.write_text(
            "[ca]\ndefault_ca = CA_default\n"
            "[CA_default]\n"
            f"dir = {work}\n"
            f"database = {work}/index.txt\n"
            f"new_certs_dir = {work}/newcerts\n"
            f"certificate = {cert}\n"
            f"private_key = {key}\n"
            f"crlnumber = {work}/crlnumber\n"
            "rand_serial = yes\n"
            "default_md = sha256\n"
            "default_days = 30\n"
            "default_crl_days = 7\n"
            "copy_extensions = copy\n"
            "policy = policy_any\n"
            "[policy_any]\ncommonName = supplied\n"
            "[req]\ndistinguished_name = req_dn\nprompt = no\n"
            "[req_dn]\nCN = unused\n"
            "[v3_ca]\n"
            "basicConstraints = critical,CA:TRUE\n"
            "keyUsage = critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier = hash\n"
            "[client_ext]\n"
            "basicConstraints = critical,CA:FALSE\n"
            "keyUsage = critical,digitalSignature\n"
            "extendedKeyUsage = clientAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n"
        )

    @classmethod
    def create(cls, work: Path, name: str) -> OpenSSLCA:
        """A new P-256 root that may sign certificates and CRLs."""
        cert, key = work / "ca.pem", work / "ca-key.pem"
        ca = cls(work, cert, key)
        ca._openssl(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "365",
            "-subj", f"/CN={name}", "-extensions", "v3_ca",
        )  # fmt: skip
        return ca

    def _openssl(self, *args: str) -> str:
        return run([require_tool("openssl"), *args, "-config", str(self.config)])

    def client(self, out: Path, name: str, email: str) -> ClientCert:
        """A key and request from `openssl req` (the e-mail SAN in the request), signed
        by `openssl ca` with clientAuth."""
        out.mkdir(parents=True, exist_ok=True)
        cert, key, csr = out / f"{name}.pem", out / f"{name}-key.pem", out / f"{name}.csr"
        self._openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={email}", "-addext", f"subjectAltName=email:{email}",
        )  # fmt: skip
        self._openssl(
            "ca", "-batch", "-notext", "-extensions", "client_ext",
            "-in", str(csr), "-out", str(cert),
        )  # fmt: skip
        return ClientCert(name, cert, key)

    def revoke(self, cert: Path) -> None:
        # A certificate this CA's database never saw is added to it, then revoked.
        self._openssl("ca", "-batch", "-revoke", str(cert))

    def crl(self, out: Path) -> Path:
        self._openssl("ca", "-batch", "-gencrl", "-out", str(out))
        return out


# -- the project's CA (its CLI) ------------------------------------------------------


def vallum_ca(*args: str) -> str:
    result = vallum_once("ca", *args)
    if result.returncode != 0:
        raise AssertionError(f"vallum ca {args} failed:\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


@dataclass(frozen=True)
class ProjectCA:
    directory: Path

    @classmethod
    def init(cls, directory: Path, name: str) -> ProjectCA:
        vallum_ca("init", "--dir", str(directory), "--cn", name)
        return cls(directory)

    @property
    def root(self) -> Path:
        return self.directory / "ca.pem"

    def client(self, out: Path, name: str, email: str) -> ClientCert:
        vallum_ca(
            "issue",
            "--dir",
            str(self.directory),
            "--client",
            email,
            "--out",
            str(out),
            "--name",
            name,
            "--pkcs12",
            "--password",
            CHANGEIT,
        )
        return ClientCert(
            name, out / f"{name}.pem", out / f"{name}-key.pem", p12=out / f"{name}.p12"
        )

    def revoke(self, cert: ClientCert) -> None:
        vallum_ca("revoke", "--dir", str(self.directory), "--cert", str(cert.cert))

    def crl(self, out: Path) -> Path:
        vallum_ca("crl", "--dir", str(self.directory), "--out", str(out))
        return out


# -- everything the downstream mTLS tests present ------------------------------------


def concat(out: Path, *parts: Path) -> Path:
    out.write_bytes(b"".join(p.read_bytes().rstrip(b"\n") + b"\n" for p in parts))
    return out


def replace_file(src: Path, dst: Path) -> None:
    """Atomically, as a deployment tool would: a watcher never sees half a file."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


@dataclass(frozen=True)
class Material:
    out: Path
    mkcert: MkcertCA  # CA1: the organisation's mkcert CA
    twin: MkcertCA  # another mkcert CA: same subject name as CA1, other key
    project: ProjectCA  # CA2: the project's own CA ("Vallum Test Users CA")
    other: Signer  # CA3: "Other Users CA", distinct name
    chain_root: Signer  # a root whose intermediate issues `chained`
    chain_inter: Signer
    ossl: OpenSSLCA  # CA4: "OpenSSL Users CA", run by `openssl` alone

    # mkcert, CA1
    user: ClientCert  # user@example.com
    bob: ClientCert  # bob@example.com
    p12user: ClientCert  # p12user@example.com, with mkcert's .p12
    outsider: ClientCert  # eve@elsewhere.test (no SAN that match_subject_alt_names takes)
    revoked: ClientCert  # revoked@example.com, in `mkcert_root_crl`
    # cryptography, signed by CA1's key
    expired: ClientCert
    not_yet_valid: ClientCert
    server_only: ClientCert  # EKU serverAuth only
    bad_signature: ClientCert  # the signature does not verify with CA1's key
    unknown_critical: ClientCert  # an unrecognised critical extension
    san_dns: ClientCert  # DNS svc.example.com
    san_uri: ClientCert  # URI spiffe://example.com/device/7
    san_ip: ClientCert  # IP 10.1.2.3
    san_upn: ClientCert  # UPN alice@corp.example.com (and no other SAN)
    san_partial: ClientCert  # email user@example.com.evil.test, DNS svc.example.com.evil.test
    # other CAs
    chained: ClientCert  # leaf ← chain_inter ← chain_root; the file holds leaf + intermediate
    chained_revoked: ClientCert  # the same shape, listed in `inter_crl`
    twin_user: ClientCert  # user@example.com from the twin mkcert CA
    stranger: ClientCert  # user@example.com from CA3
    project_user: ClientCert  # user@example.com from CA2, PEM and .p12
    project_revoked: ClientCert  # from CA2, revoked with `vallum ca revoke`
    ossl_user: ClientCert  # ossl-user@example.com from CA4
    ossl_revoked: ClientCert  # from CA4, in `ossl_crl` from the start
    victim: ClientCert  # victim@example.com from CA4, revoked by a test while Vallum runs

    # mkcert's root may sign certificates only (keyUsage keyCertSign, no cRLSign), so a
    # CRL that `openssl ca` signs with it is one that RFC 5280 §6.3.3 (f) says not to
    # use: a verifier cannot check CA1's certificates against it. Revocation tests use
    # CA2's and CA4's CRLs; this one tests that Vallum then fails closed.
    mkcert_root_crl: Path  # `openssl ca -gencrl` over CA1's root, revoking `revoked`
    project_crl: Path  # `vallum ca crl`
    ossl_crl: Path  # `openssl ca -gencrl` over CA4
    chain_crl: Path  # chain_root's CRL, which revokes nothing
    # chain_inter's CRL, revoking `chained_revoked`: chain_inter is not in any CA
    # bundle; clients send it, and OpenSSL checks the CRL against it.
    inter_crl: Path
    legacy_openssl_conf: Path

    def usable_crls(self, out: Path) -> Path:
        """One file with every CRL a verifier can use (all but `mkcert_root_crl`)."""
        return concat(out, self.project_crl, self.ossl_crl, self.chain_crl)


def make_material(base: Path) -> Material:
    """Everything above, in a few seconds: the tools run side by side (each is a
    process), the `cryptography` certificates in between."""
    out = base / "out"
    out.mkdir(parents=True)
    with ThreadPoolExecutor(max_workers=8) as pool:
        mk_f = pool.submit(mkcert_ca, base / "mkcert", out / "ca1")
        twin_f = pool.submit(mkcert_ca, base / "twin", out / "twin")
        project_f = pool.submit(ProjectCA.init, base / "project", "Vallum Test Users CA")
        ossl_f = pool.submit(OpenSSLCA.create, base / "openssl-ca", "OpenSSL Users CA")
        other = Signer.new_root(base / "other", "Other Users CA")
        chain_root = Signer.new_root(base / "chain", "Chain Root CA")
        chain_inter = chain_root.intermediate(base / "chain", "Chain Intermediate CA")
        mk, twin, project, ossl = (
            mk_f.result(),
            twin_f.result(),
            project_f.result(),
            ossl_f.result(),
        )

        def mkcert_client(name: str, email: str) -> Future[ClientCert]:
            return pool.submit(mk.client, out, name, email)

        user = mkcert_client("user", "user@example.com")
        bob = mkcert_client("bob", "bob@example.com")
        outsider = mkcert_client("outsider", "eve@elsewhere.test")
        revoked = mkcert_client("revoked", "revoked@example.com")
        p12user = pool.submit(mk.client_p12, out, "p12user", "p12user@example.com")
        twin_user = pool.submit(twin.client, out, "twin-user", "user@example.com")
        project_user = pool.submit(project.client, out, "project-user", "user@example.com")
        project_revoked = pool.submit(project.client, out, "project-revoked", "gone@example.com")
        # `openssl ca` keeps one database: its certificates one after another.
        ossl_certs = pool.submit(
            lambda: [
                ossl.client(out, name, f"{name}@example.com")
                for name in ("ossl-user", "ossl-revoked", "victim")
            ]
        )

        signer = mk.signer()
        now = dt.datetime.now(dt.UTC)
        email = x509.RFC822Name
        made = {
            "expired": signer.issue(
                out,
                "expired",
                [email("user@example.com")],
                not_before=now - dt.timedelta(days=30),
                not_after=now - dt.timedelta(days=1),
            ),
            "not_yet_valid": signer.issue(
                out,
                "not-yet-valid",
                [email("user@example.com")],
                not_before=now + dt.timedelta(days=1),
                not_after=now + dt.timedelta(days=30),
            ),
            "server_only": signer.issue(
                out,
                "server-only",
                [email("user@example.com")],
                usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
            ),
            "bad_signature": signer.issue(
                out, "bad-signature", [email("user@example.com")], break_signature=True
            ),
            "unknown_critical": signer.issue(
                out, "unknown-critical", [email("user@example.com")], unknown_critical=True
            ),
            "san_dns": signer.issue(out, "san-dns", [x509.DNSName("svc.example.com")]),
            "san_uri": signer.issue(
                out, "san-uri", [x509.UniformResourceIdentifier("spiffe://example.com/device/7")]
            ),
            "san_ip": signer.issue(
                out, "san-ip", [x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]
            ),
            "san_upn": signer.issue(out, "san-upn", [upn("alice@corp.example.com")]),
            "san_partial": signer.issue(
                out,
                "san-partial",
                [email("user@example.com.evil.test"), x509.DNSName("svc.example.com.evil.test")],
            ),
            "chained": chain_inter.issue(
                out, "chained", [email("user@example.com")], send_chain=(chain_inter,)
            ),
            "chained_revoked": chain_inter.issue(
                out, "chained-revoked", [email("user@example.com")], send_chain=(chain_inter,)
            ),
            "stranger": other.issue(out, "stranger", [email("user@example.com")]),
        }
        chain_crl = chain_root.crl(out)
        inter_crl = chain_inter.crl(out, (made["chained_revoked"],))

        def mkcert_root_crl() -> Path:
            over_mkcert = OpenSSLCA(base / "openssl-over-mkcert", mk.root, mk.root_key)
            over_mkcert.revoke(revoked.result().cert)
            return over_mkcert.crl(out / "mkcert-root-crl.pem")

        def project_crl() -> Path:
            project.revoke(project_revoked.result())
            return project.crl(out / "project-crl.pem")

        def ossl_crl() -> Path:
            ossl.revoke(ossl_certs.result()[1].cert)
            return ossl.crl(out / "ossl-crl.pem")

        crls = pool.submit(mkcert_root_crl), pool.submit(project_crl), pool.submit(ossl_crl)
        ossl_user, ossl_revoked, victim = ossl_certs.result()
        return Material(
            out=out,
            mkcert=mk,
            twin=twin,
            project=project,
            other=other,
            chain_root=chain_root,
            chain_inter=chain_inter,
            ossl=ossl,
            user=user.result(),
            bob=bob.result(),
            p12user=p12user.result(),
            outsider=outsider.result(),
            revoked=revoked.result(),
            twin_user=twin_user.result(),
            project_user=project_user.result(),
            project_revoked=project_revoked.result(),
            ossl_user=ossl_user,
            ossl_revoked=ossl_revoked,
            victim=victim,
            mkcert_root_crl=crls[0].result(),
            project_crl=crls[1].result(),
            ossl_crl=crls[2].result(),
            chain_crl=chain_crl,
            inter_crl=inter_crl,
            legacy_openssl_conf=legacy_openssl_conf(out / "openssl-legacy.cnf"),
            **made,
        )
