"""TLS certificates and SuperNode keys for a Flower deployment, made with `cryptography`.

A deployment needs three kinds of key material:

- a certificate authority (CA) that every SuperNode and the operator's `flwr` trust
  (``--root-certificates``, ``root-certificates`` in the connection config);
- the SuperLink's server certificate, signed by that CA, whose subject alternative names
  cover every name or address the SuperLink is reached by (TLS checks the name the client
  dialled against them);
- one ECDSA key pair per SuperNode for node authentication: the private key in OpenSSH
  format (what ``flower-supernode --auth-supernode-private-key`` loads with
  ``load_ssh_private_key``) and the public key as an OpenSSH line (what
  ``flwr supernode register KEY.pub`` loads with ``load_ssh_public_key``; it must be on a
  NIST curve).

Keys come from the operating system's CSPRNG, never from a seed: a reproducible private key
is a published one.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
# Flower's own key helpers use P-384 (flwr.supercore.primitives.asymmetric.generate_key_pairs).
NODE_KEY_CURVE = ec.SECP384R1()
TLS_KEY_CURVE = ec.SECP256R1()
CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 825  # the longest validity browsers and many TLS stacks still accept

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


class CertificateError(ValueError):
    """A host name or key file given to this module is not usable (the message says why)."""


@dataclass(frozen=True)
class KeyAndCertificate:
    """A private key and the certificate for its public key."""

    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def certificate_pem(self) -> bytes:
        """Return the certificate in PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        """Return the private key in PEM (PKCS#8, unencrypted)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_ca(common_name: str = "Sandflower deployment CA") -> KeyAndCertificate:
    """Return a self-signed certificate authority that may sign server certificates (path length 0).

    Parameters
    ----------
    common_name : the CA's subject common name.
    """
    private_key = ec.generate_private_key(TLS_KEY_CURVE)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    public_key = private_key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    return KeyAndCertificate(private_key, certificate)


def subject_alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Return the SAN entries for ``hosts``: an IPAddress entry for an IP, a DNSName otherwise.

    Raises
    ------
    CertificateError
        ``hosts`` is empty, or one of them is neither an IP address nor a DNS name.
    """
    if not hosts:
        raise CertificateError("hosts: expected at least one host name or IP address, given none")
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _is_dns_name(host):
            raise CertificateError(
                f"host {host!r}: expected an IP address or a DNS name "
                "(letters, digits, '-' and '.', no scheme or port)"
            )
        names.append(x509.DNSName(host.lower()))
    return names


def generate_server_certificate(
    ca: KeyAndCertificate, hosts: Sequence[str] = DEFAULT_HOSTS
) -> KeyAndCertificate:
    """Return a TLS server certificate signed by ``ca`` whose SANs cover ``hosts``.

    Parameters
    ----------
    ca : the signing certificate authority (from :func:`generate_ca`).
    hosts : every DNS name and IP address clients use to reach the SuperLink.
    """
    san = subject_alternative_names(hosts)
    private_key = ec.generate_private_key(TLS_KEY_CURVE)
    public_key = private_key.public_key()
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0].strip())]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
        .sign(ca.private_key, hashes.SHA256())
    )
    return KeyAndCertificate(private_key, certificate)


def generate_node_key() -> ec.EllipticCurvePrivateKey:
    """Return a fresh SuperNode authentication key (ECDSA on NIST P-384)."""
    return ec.generate_private_key(NODE_KEY_CURVE)


def node_private_key_openssh(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return the private key as ``flower-supernode --auth-supernode-private-key`` loads it."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def node_public_key_openssh(private_key: ec.EllipticCurvePrivateKey, comment: str = "") -> bytes:
    """Return the public key as one OpenSSH line (``ecdsa-sha2-nistp384 AAAA... comment``)."""
    line = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    if comment:
        line += b" " + comment.encode("ascii")
    return line + b"\n"


def load_node_private_key(path: str | os.PathLike) -> ec.EllipticCurvePrivateKey:
    """Read a SuperNode key the way flower-supernode does; raise CertificateError if unusable."""
    try:
        key = serialization.load_ssh_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise CertificateError(f"node key {path}: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(
            f"node key {path}: expected an ECDSA (EC) key, given {type(key).__name__}"
        )
    return key


def write_private_file(path: str | os.PathLike, data: bytes) -> Path:
    """Create ``path`` with mode 0600 and write ``data``; refuse to overwrite.

    The mode is given to ``os.open`` so the file never exists with looser permissions, and
    ``O_EXCL`` refuses an existing file (whose permissions we would otherwise inherit).

    Raises
    ------
    FileExistsError
        ``path`` exists already.
    """
    path = Path(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return path


def write_public_file(path: str | os.PathLike, data: bytes) -> Path:
    """Create ``path`` (mode 0644) with ``data``; refuse to overwrite."""
    path = Path(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PUBLIC_FILE_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _is_dns_name(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    labels = host.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(char.isascii() and (char.isalnum() or char == "-") for char in label)
        for label in labels
    )
