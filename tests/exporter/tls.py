"""A throwaway CA, server and client certificate for the TLS tests (made with `cryptography`)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Certificates:
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write(directory: Path, stem: str, key: ec.EllipticCurvePrivateKey,
           certificate: x509.Certificate) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           issuer_key: ec.EllipticCurvePrivateKey, is_ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if not is_ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(directory: Path) -> Certificates:
    """A CA plus a server cert for 127.0.0.1/localhost and a client cert, all signed by the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiinfra test CA")])
    ca_cert = _issue("aiinfra test CA", ca_key, ca_name, ca_key, is_ca=True)
    ca_file, _ = _write(directory, "ca", ca_key, ca_cert)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert, server_key_path = _write(directory, "server", server_key,
                                          _issue("127.0.0.1", server_key, ca_name, ca_key, False))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert, client_key_path = _write(directory, "client", client_key,
                                          _issue("scraper", client_key, ca_name, ca_key, False))
    return Certificates(ca_file, server_cert, server_key_path, client_cert, client_key_path)


def write_web_config(directory: Path, username: str, password: str) -> tuple[Path, Certificates]:
    """A web config (exporter-toolkit format) with TLS from fresh certificates and one basic
    auth user (bcrypt at the lowest cost, to keep tests fast)."""
    import bcrypt

    certificates = make_certificates(directory / "certs")
    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = directory / "web.yml"
    web_config.write_text(f"tls_server_config:\n  cert_file: {certificates.server_cert}\n"
                          f"  key_file: {certificates.server_key}\n"
                          f"basic_auth_users:\n  {username}: '{password_hash}'\n")
    return web_config, certificates
