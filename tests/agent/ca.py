"""A throwaway PKI for agent tests: root, intermediate, server certificate, CSR signing.

Shaped like the control plane's: the root is the trust anchor in the seed, the intermediate
issues the node API's server certificate and the nodes' client certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class TestPki:
    """Root and intermediate CAs plus a server certificate for 127.0.0.1 and localhost."""

    __test__ = False  # not a test class, despite its name

    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    intermediate_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    server_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        now = _now()
        ca_usage = x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        self.root = (
            x509.CertificateBuilder()
            .subject_name(_name("test root"))
            .issuer_name(_name("test root"))
            .public_key(self.root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(ca_usage, critical=True)
            .sign(self.root_key, hashes.SHA256())
        )
        self.intermediate = (
            x509.CertificateBuilder()
            .subject_name(_name("test intermediate"))
            .issuer_name(self.root.subject)
            .public_key(self.intermediate_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ca_usage, critical=True)
            .sign(self.root_key, hashes.SHA256())
        )
        self.server = (
            x509.CertificateBuilder()
            .subject_name(_name("node-api"))
            .issuer_name(self.intermediate.subject)
            .public_key(self.server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.intermediate_key, hashes.SHA256())
        )

    @property
    def root_pem(self) -> str:
        return _pem(self.root)

    @property
    def intermediate_pem(self) -> str:
        return _pem(self.intermediate)

    def write_server_files(self, directory: Path) -> tuple[Path, Path]:
        """(certificate chain file, key file) for the server's ssl context."""
        chain = directory / "server-chain.pem"
        key = directory / "server-key.pem"
        chain.write_text(_pem(self.server) + self.intermediate_pem)
        key.write_text(_key_pem(self.server_key))
        return chain, key

    def sign_csr(
        self,
        csr_pem: str,
        *,
        lifetime: dt.timedelta = dt.timedelta(days=30),
        not_before: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A client certificate for the CSR's subject and SANs, issued by the intermediate."""
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        if not csr.is_signature_valid:
            raise ValueError("CSR signature invalid")
        start = not_before or _now() - dt.timedelta(seconds=2)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.intermediate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        for ext in csr.extensions:
            builder = builder.add_extension(ext.value, critical=ext.critical)
        return builder.sign(self.intermediate_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> str:
    """A certificate as PEM text."""
    return _pem(cert)


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """A private key as unencrypted PKCS#8 PEM."""
    return _key_pem(key)
