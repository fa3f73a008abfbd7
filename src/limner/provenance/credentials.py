"""The key and certificate chain pictures are signed with: the operator's, or a pair this
server makes for itself at first start under `DATA_DIR/c2pa/` (0600).

C2PA readers refuse a self-signed end-entity certificate, so the pair made here is a small
chain: a local CA (its key thrown away once it has signed) and a signing certificate with
the `digitalSignature` use and the email-protection purpose C2PA's certificate profile asks
for. A reader that does not trust that CA reports such pictures `valid` (the signature
holds), not `trusted`.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CHAIN_FILE = "signer-chain.pem"
KEY_FILE = "signer-key.pem"
CA_FILE = "local-ca.pem"
VALID_YEARS = 10


@dataclass(frozen=True)
class Credentials:
    chain_pem: bytes
    """The signing certificate first, then the certificates up to (not always including)
    a root."""
    key_pem: bytes
    self_made: bool
    """Made by this server: its CA is in `DATA_DIR/c2pa/local-ca.pem`, trusted by no one
    unless told."""

    @property
    def issuer(self) -> str:
        """The signer's organisation (else its common name), as readers name the issuer."""
        cert = x509.load_pem_x509_certificate(self.chain_pem)
        for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME):
            names = cert.subject.get_attributes_for_oid(oid)
            if names:
                return str(names[0].value)
        return cert.subject.rfc4514_string()


def load(cert: Path | None, key: Path | None, folder: Path,
         organization: str | None = None) -> Credentials:
    """The operator's pair when both paths are given; else this server's own, made once."""
    if (cert is None) != (key is None):
        raise ValueError("provenance_cert and provenance_key are given together, or neither")
    if cert is not None and key is not None:
        return Credentials(cert.read_bytes(), key.read_bytes(), self_made=False)
    chain, private = folder / CHAIN_FILE, folder / KEY_FILE
    if not (chain.is_file() and private.is_file()):
        _make(folder, organization or "limner")
    return Credentials(chain.read_bytes(), private.read_bytes(), self_made=True)


def _make(folder: Path, organization: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} local CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    ca = (_base(ca_name, ca_name, ca_key.public_key(), now)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_usage(sign_certs=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} image server"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    leaf = (_base(name, ca_name, key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(sign_certs=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write(folder / KEY_FILE, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    _write(folder / CA_FILE, ca.public_bytes(pem))
    _write(folder / CHAIN_FILE, leaf.public_bytes(pem) + ca.public_bytes(pem))


def _base(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
          now: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365 * VALID_YEARS)))


def _usage(sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not sign_certs, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=sign_certs, crl_sign=sign_certs, encipher_only=False,
                         decipher_only=False)


def _write(path: Path, data: bytes) -> None:
    """Written 0600 from the start, atomically: a reader never sees half a key."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
