"""The live page's TLS: a real asyncio TLS server on 127.0.0.1 with the context server_context
makes, a real client handshake that checks the certificate it is served; the kept self-signed
certificate (reused, renewed, its key's mode); the user's own certificate and its errors."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swapstream.core.errors import ConfigError
from swapstream.stages.sinks.tls import CERT_FILE, KEY_FILE, TlsSettings, server_context


def _served(context: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> bytes:
    """The DER certificate a client gets from a TLS server using `context` on 127.0.0.1, after a
    request and its answer went through the encrypted connection."""

    async def main() -> bytes:
        async def answer(reader, writer):
            writer.write(b"echo " + await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=server_hostname), 5)
            writer.write(b"hello\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"echo hello\n"
            tls = writer.get_extra_info("ssl_object")
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            der = tls.getpeercert(binary_form=True)
            writer.close()
            return der

    return asyncio.run(main())


def _sha256(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _trusting(cert_path: Path) -> ssl.SSLContext:
    """A client that trusts only this certificate and checks the host name against it."""
    return ssl.create_default_context(cafile=str(cert_path))


def _no_check() -> ssl.SSLContext:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    return client


def test_self_signed_is_served_kept_and_renewed(tmp_path):
    hosts = ["192.168.1.20", "swapstream.local"]
    tls = server_context(TlsSettings(), tmp_path, hosts)
    assert tls.self_signed and tls.cert_path == tmp_path / "tls" / CERT_FILE
    assert len(tls.fingerprint) == 32 * 3 - 1 and tls.fingerprint == tls.fingerprint.upper()

    der = _served(tls.context, _no_check(), "127.0.0.1")
    assert _sha256(der) == tls.fingerprint

    # the certificate verifies (trusted as itself) for every host asked for and the local ones
    for name in ["localhost", "127.0.0.1", "::1", *hosts]:
        assert _sha256(_served(tls.context, _trusting(tls.cert_path), name)) == tls.fingerprint
    with pytest.raises(ssl.SSLCertVerificationError):
        _served(tls.context, _trusting(tls.cert_path), "192.168.1.21")

    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "swapstream live"
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=825)

    folder = tmp_path / "tls"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / KEY_FILE).st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == sorted([CERT_FILE, KEY_FILE])  # no temp left

    again = server_context(TlsSettings(), tmp_path, list(reversed(hosts)))
    assert again.fingerprint == tls.fingerprint  # kept, not made anew
    assert _sha256(_served(again.context, _no_check(), "localhost")) == tls.fingerprint
    assert server_context(TlsSettings(), tmp_path, ["swapstream.local"]).fingerprint == tls.fingerprint

    wider = server_context(TlsSettings(), tmp_path, [*hosts, "10.0.0.7"])
    assert wider.fingerprint != tls.fingerprint  # a host the kept one does not name: a new one
    assert _sha256(_served(wider.context, _trusting(wider.cert_path), "10.0.0.7")) == wider.fingerprint
    assert server_context(TlsSettings(), tmp_path, ["10.0.0.7"]).fingerprint == wider.fingerprint
    assert stat.S_IMODE(os.stat(folder / KEY_FILE).st_mode) == 0o600


def _pair(folder: Path, name: str, days: float = 30, hosts=("localhost",)) -> tuple[Path, Path]:
    """A certificate and key made with cryptography, written as PEM: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_a_kept_certificate_about_to_expire_or_broken_is_replaced(tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir(mode=0o700)
    cert, key = _pair(tmp_path, "old", days=3, hosts=("localhost", "127.0.0.1", "::1"))
    os.replace(cert, folder / CERT_FILE)
    os.replace(key, folder / KEY_FILE)
    old = _sha256(x509.load_pem_x509_certificate((folder / CERT_FILE).read_bytes())
                  .public_bytes(serialization.Encoding.DER))
    tls = server_context(TlsSettings(), tmp_path, [])
    assert tls.fingerprint != old

    (folder / KEY_FILE).write_bytes(b"-----BEGIN PRIVATE KEY-----\nhalf")  # a half-written key
    fixed = server_context(TlsSettings(), tmp_path, [])
    assert fixed.fingerprint != tls.fingerprint
    assert _sha256(_served(fixed.context, _no_check(), "localhost")) == fixed.fingerprint


def test_user_certificate_is_served(tmp_path):
    cert, key = _pair(tmp_path, "mine", hosts=("localhost", "my.example"))
    tls = server_context(TlsSettings(cert=str(cert), key=str(key)), tmp_path / "cache", ["0.0.0.0"])
    assert not tls.self_signed and tls.cert_path == cert
    assert not (tmp_path / "cache").exists()  # nothing made for a user's own certificate
    assert _sha256(_served(tls.context, _trusting(cert), "my.example")) == tls.fingerprint
    expected = x509.load_pem_x509_certificate(cert.read_bytes()).fingerprint(hashes.SHA256())
    assert tls.fingerprint == ":".join(f"{b:02X}" for b in expected)


def _error(tmp_path, cert, key) -> str:
    with pytest.raises(ConfigError) as err:
        server_context(TlsSettings(cert=cert and str(cert), key=key and str(key)), tmp_path / "c", [])
    message = str(err.value)
    assert "\n" not in message and message
    return message


def test_user_certificate_errors_are_one_line(tmp_path):
    cert, key = _pair(tmp_path, "mine")
    _, other_key = _pair(tmp_path, "other")

    message = _error(tmp_path, cert, other_key)
    assert "does not match" in message and str(other_key) in message and str(cert) in message

    message = _error(tmp_path, cert, None)
    assert "give both --tls-cert and --tls-key, or neither for a self-signed certificate" in message
    assert "--tls-cert" in _error(tmp_path, None, key)

    message = _error(tmp_path, tmp_path / "absent.crt", key)
    assert "absent.crt" in message and "no such file" in message

    der = tmp_path / "mine.der"
    der.write_bytes(x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER))
    message = _error(tmp_path, der, key)
    assert str(der) in message and "not a PEM certificate" in message

    message = _error(tmp_path, cert, cert)  # the certificate given as the key
    assert str(cert) in message and "not a PEM private key" in message
