"""Certificates and node keys: what Flower loads, and a real TLS handshake against them."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from simulations.deploy import certs


@pytest.fixture(scope="module")
def ca() -> certs.KeyAndCertificate:
    return certs.generate_ca()


@pytest.fixture(scope="module")
def server(ca) -> certs.KeyAndCertificate:
    return certs.generate_server_certificate(ca, ("127.0.0.1", "localhost", "::1", "coord.lan"))


def test_ca_is_a_self_signed_certificate_authority(ca):
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    assert ca.certificate.subject == ca.certificate.issuer
    ca.certificate.verify_directly_issued_by(ca.certificate)


def test_server_certificate_is_signed_by_the_ca_and_only_for_servers(ca, server):
    server.certificate.verify_directly_issued_by(ca.certificate)
    constraints = server.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca is False
    usage = server.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]


def test_server_certificate_names_cover_every_host(server):
    san = server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "coord.lan"}


def test_default_hosts_are_this_machines_loopback_names(ca):
    default = certs.generate_server_certificate(ca)
    san = default.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


@pytest.mark.parametrize("host", ["https://coord.lan", "coord.lan:9092", "bad host", "-x.lan", ""])
def test_a_bad_host_is_refused_by_name(host):
    with pytest.raises(certs.CertificateError, match="host"):
        certs.subject_alternative_names([host])


def test_no_hosts_is_refused():
    with pytest.raises(certs.CertificateError, match="at least one"):
        certs.subject_alternative_names([])


def _serve_once(server: certs.KeyAndCertificate, tmp_path: Path) -> int:
    """A one-shot TLS server on 127.0.0.1 with ``server``'s key; returns its port."""
    cert_file = tmp_path / "server.crt"
    key_file = tmp_path / "server.key"
    cert_file.write_bytes(server.certificate_pem())
    certs.write_private_file(key_file, server.private_key_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        with listener:
            connection, _ = listener.accept()
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # the client refused us: that is what some tests want

    threading.Thread(target=accept, daemon=True).start()
    return port


def _client_context(ca: certs.KeyAndCertificate) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.certificate_pem().decode())
    return context


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "coord.lan"])
def test_a_client_trusting_the_ca_completes_a_handshake(ca, server, tmp_path, name):
    port = _serve_once(server, tmp_path)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with _client_context(ca).wrap_socket(raw, server_hostname=name) as tls:
            assert tls.recv(2) == b"ok"


def test_a_name_not_in_the_certificate_fails_the_handshake(ca, server, tmp_path):
    port = _serve_once(server, tmp_path)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            _client_context(ca).wrap_socket(raw, server_hostname="elsewhere.lan")


def test_another_ca_is_not_trusted(server, tmp_path):
    port = _serve_once(server, tmp_path)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            _client_context(certs.generate_ca()).wrap_socket(raw, server_hostname="localhost")


def test_node_key_files_load_the_way_flower_loads_them(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes, uses_nist_ec_curve

    key = certs.generate_node_key()
    private_path = certs.write_private_file(
        tmp_path / "supernode-0", certs.node_private_key_openssh(key)
    )
    public_path = certs.write_public_file(
        tmp_path / "supernode-0.pub", certs.node_public_key_openssh(key, "supernode-0")
    )
    # flower-supernode --auth-supernode-private-key: load_ssh_private_key, must be EC
    loaded = serialization.load_ssh_private_key(private_path.read_bytes(), None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert isinstance(loaded.curve, ec.SECP384R1)
    assert uses_nist_ec_curve(loaded.public_key())
    # flwr supernode register KEY.pub: the bytes it sends are those of our public key
    assert try_load_public_key(public_path) == public_key_to_bytes(key.public_key())
    assert public_path.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert public_path.read_text().rstrip().endswith(" supernode-0")
    assert certs.load_node_private_key(private_path).public_key() == key.public_key()


def test_load_node_private_key_refuses_a_non_key(tmp_path):
    path = tmp_path / "not-a-key"
    path.write_text("hello")
    with pytest.raises(certs.CertificateError, match="not-a-key"):
        certs.load_node_private_key(path)


def test_private_files_are_created_0600_even_with_an_open_umask(tmp_path):
    previous = os.umask(0)
    try:
        path = certs.write_private_file(tmp_path / "secret", b"key")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"key"


def test_private_files_are_never_overwritten(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"old")
    path.chmod(0o644)
    with pytest.raises(FileExistsError):
        certs.write_private_file(path, b"new")
    assert path.read_bytes() == b"old"


def test_pem_private_keys_are_unencrypted_pkcs8(server):
    pem = server.private_key_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert serialization.load_pem_private_key(pem, None).public_key() == (
        server.private_key.public_key()
    )
