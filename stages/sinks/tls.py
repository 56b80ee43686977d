"""HTTPS for the live web page: the TLS context its server listens with.

Why: browsers give the camera and microphone (getUserMedia) only to a *secure context*: a page
served over https, or from localhost. A phone or laptop opening the page at http://192.168.x.y
gets no camera at all, so the page is served over TLS.

Two ways to get a certificate:

- Your own (`TlsSettings(cert=..., key=...)`, the `--tls-cert` and `--tls-key` options): a PEM
  certificate (or full chain, leaf first) and its unencrypted PEM private key. mkcert
  (`mkcert -install; mkcert 192.168.1.20 myhost.local localhost`) makes one that your own browsers
  trust without a warning; Let's Encrypt's `fullchain.pem` and `privkey.pem` serve a public DNS name
  that points at this machine. Whatever is wrong with them is a ConfigError of one line naming the
  file and the fix.
- Neither (the default): a self-signed certificate, made once and kept in `<cache>/tls/`
  (`cert.pem`, and `key.pem` with mode 0600, the folder 0700; `<cache>` is the swapstream cache
  folder, swapstream.engines.cache.cache_root(): $SWAPSTREAM_CACHE, else
  $XDG_CACHE_HOME/swapstream, else ~/.cache/swapstream). It is an EC P-256 key and a certificate
  valid 825 days (the most Apple's browsers accept) for every host the page is served on plus
  localhost, 127.0.0.1 and ::1. The next run reuses it while it is valid for more than 7 more days
  and names every host asked for; otherwise a new one replaces it (and browsers ask again). The
  key is written to a temporary name and renamed into place, so a crash never leaves half a key;
  a kept pair that does not load or match is replaced.

A self-signed certificate makes the browser warn once ("Your connection is not private" /
"Warning: Potential Security Risk Ahead"). Before you accept it, check that it is this machine's:
swapstream prints the certificate's SHA-256 fingerprint when it starts; in the browser click the
"Not secure" (or lock) icon left of the address -> "Certificate is not valid" / "Connection not
secure" -> "More information" / "View Certificate", and compare the "SHA-256 Fingerprint" shown
there with the printed one (`Tls.fingerprint`, uppercase hex pairs joined by ':', as Chromium and
Firefox show it). A different fingerprint means someone on the network is between you and
swapstream: do not go on.

`server_context(settings, cache_dir, hosts)` -> `Tls` (the server's ssl.SSLContext, TLS 1.2 or
newer; the fingerprint; the certificate's path; whether it is self-signed). It prints nothing:
the caller says which certificate it uses.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swapstream.core.errors import ConfigError

TLS_FOLDER = "tls"  # under the cache folder
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
COMMON_NAME = "swapstream live"
VALID_DAYS = 825  # Apple's limit for TLS server certificates
RENEW_DAYS = 7  # a kept certificate expiring sooner than this is replaced
ALWAYS = ("localhost", "127.0.0.1", "::1")

_BOTH = "give both --tls-cert and --tls-key, or neither for a self-signed certificate"


@dataclass
class TlsSettings:
    """The user's own certificate and key (PEM files); neither: a self-signed one."""

    cert: str | None = None
    key: str | None = None


@dataclass
class Tls:
    """What the server listens with, and what the caller tells the user."""

    context: ssl.SSLContext
    fingerprint: str  # SHA-256 of the certificate's DER: "AB:CD:..." as browsers show it
    cert_path: Path
    self_signed: bool


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER as uppercase hex pairs joined by ':'."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def server_context(settings: TlsSettings, cache_dir: Path, hosts: list[str]) -> Tls:
    """The TLS context for the page's server: the user's certificate if given, else the kept
    self-signed one for `hosts` (made, or made anew, in `cache_dir`/tls). ConfigError of one line
    for anything the user can fix."""
    if settings.cert and settings.key:
        return _user(Path(settings.cert).expanduser(), Path(settings.key).expanduser())
    if settings.cert or settings.key:
        given = "--tls-cert" if settings.cert else "--tls-key"
        raise ConfigError(f"only {given} was given ({settings.cert or settings.key}); {_BOTH}")
    return _self_signed(Path(cache_dir).expanduser() / TLS_FOLDER, _names(hosts))


def _new_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


# ---- the user's own certificate ------------------------------------------------------------------


def _read(path: Path, what: str, option: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file; give the path of a PEM file with {option}, "
                          f"or {_BOTH}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder; give the path of a PEM file with {option}") from None
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot read it ({err.strerror or err}); make it readable "
                          f"to you, or give another file with {option}") from None


def _user(cert_path: Path, key_path: Path) -> Tls:
    cert_data = _read(cert_path, "TLS certificate", "--tls-cert")
    key_data = _read(key_path, "TLS key", "--tls-key")
    try:
        cert = x509.load_pem_x509_certificates(cert_data)[0]  # a full chain: the leaf comes first
    except ValueError:
        raise ConfigError(f"TLS certificate {cert_path} is not a PEM certificate (no valid '-----BEGIN "
                          f"CERTIFICATE-----' block); convert it with `openssl x509 -in {cert_path} "
                          "-out cert.pem` and give that with --tls-cert") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:  # encrypted
        raise ConfigError(f"TLS key {key_path} is protected by a passphrase; give an unencrypted copy "
                          f"(`openssl pkey -in {key_path} -out key.pem`, then chmod 600 key.pem) "
                          "with --tls-key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"TLS key {key_path} is not a PEM private key (no valid '-----BEGIN ... "
                          f"PRIVATE KEY-----' block); convert it with `openssl pkey -in {key_path} "
                          "-out key.pem` and give that with --tls-key") from None
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise ConfigError(f"TLS key {key_path} does not match the certificate {cert_path}; give the "
                          "key that certificate was made for with --tls-key")
    try:
        context = _new_context(cert_path, key_path)
    except ssl.SSLError as err:
        raise ConfigError(f"TLS certificate {cert_path} and key {key_path}: OpenSSL refuses them "
                          f"({err.reason or err}); give an RSA or EC certificate and key in PEM") from None
    return Tls(context, fingerprint(cert), cert_path, self_signed=False)


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


# ---- the kept self-signed certificate ------------------------------------------------------------


def _names(hosts: list[str]) -> tuple[set[str], set[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """The DNS names (lowercase, IDNA) and IP addresses the certificate must name: `hosts` plus
    localhost, 127.0.0.1 and ::1. Unspecified addresses (0.0.0.0, ::, "listen everywhere") and
    empty strings name no host and are left out."""
    dns: set[str] = set()
    ips: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for host in (*hosts, *ALWAYS):
        host = host.strip().strip("[]").rstrip(".")
        if not host:
            continue
        try:
            ip = ipaddress.ip_address(host.split("%")[0])  # fe80::1%eth0: the zone is no part of it
        except ValueError:
            try:
                dns.add(host.encode("idna").decode("ascii").lower())
            except UnicodeError:
                raise ConfigError(f"host name {host!r} is not a valid DNS name for a TLS certificate; "
                                  "give the page's host as an IP address or a plain DNS name") from None
            continue
        if not ip.is_unspecified:
            ips.add(ip)
    return dns, ips


def _folder(path: Path) -> Path:
    """`path` created with mode 0700 (and its parents), or checked: a folder of the user's own,
    which only the user can enter (tightened to 0700 if it was looser)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as err:
        fix = "set SWAPSTREAM_CACHE to a folder of your own, or give --tls-cert and --tls-key"
        raise ConfigError(f"TLS folder {path}: cannot create it ({err.strerror or err}); {fix}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"TLS folder {path} is not a plain folder (a symbolic link or a file); remove "
                          "it (swapstream makes a new one), or give --tls-cert and --tls-key")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConfigError(f"TLS folder {path} belongs to user id {st.st_uid}, not to you ({os.getuid()}); "
                          "whoever owns it holds the page's key: set SWAPSTREAM_CACHE to a folder of "
                          "your own, or give --tls-cert and --tls-key")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def _kept(folder: Path, dns: set[str], ips: set) -> Tls | None:
    """The kept certificate if it loads, matches its key, is valid for more than RENEW_DAYS more
    days and names every host; None otherwise (a new one is made)."""
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        now = datetime.datetime.now(datetime.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc - datetime.timedelta(RENEW_DAYS):
            return None
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        named_dns = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
        named_ips = set(san.get_values_for_type(x509.IPAddress))
        if not (dns <= named_dns and ips <= named_ips) or _spki(cert.public_key()) != _spki(key.public_key()):
            return None
        if stat.S_IMODE(os.stat(key_path).st_mode) & 0o077:
            os.chmod(key_path, 0o600)
        context = _new_context(cert_path, key_path)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, x509.ExtensionNotFound, ssl.SSLError):
        return None
    return Tls(context, fingerprint(cert), cert_path, self_signed=True)


def _make(dns: set[str], ips: set) -> tuple[bytes, bytes]:
    """A new EC P-256 key and a self-signed certificate naming `dns` and `ips`: (cert, key) PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)  # clock skew
    alt = [x509.DNSName(n) for n in sorted(dns)] + [x509.IPAddress(ip) for ip in sorted(ips, key=str)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=False, crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _temp(folder: Path, data: bytes, mode: int) -> Path:
    """`data` in a new file of `folder` (created with mode 0600, so never readable by others),
    synced to disk, then given `mode`."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".new-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, mode)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _self_signed(folder: Path, names: tuple[set[str], set]) -> Tls:
    folder = _folder(folder)
    dns, ips = names
    kept = _kept(folder, dns, ips)
    if kept is not None:
        return kept
    cert_pem, key_pem = _make(dns, ips)
    cert_path = folder / CERT_FILE
    written: list[Path] = []
    try:
        written.append(new_key := _temp(folder, key_pem, 0o600))
        written.append(new_cert := _temp(folder, cert_pem, 0o644))
        # loaded from this run's own files: another run replacing the kept pair at the same moment
        # cannot give this one a mismatched pair (and a mismatched kept pair is replaced next run)
        context = _new_context(new_cert, new_key)
        os.replace(new_key, folder / KEY_FILE)
        os.replace(new_cert, cert_path)
        written.clear()
    except OSError as err:
        raise ConfigError(f"TLS folder {folder}: cannot write the certificate ({err.strerror or err}); "
                          "free some space or set SWAPSTREAM_CACHE to a folder of your own, or give "
                          "--tls-cert and --tls-key") from None
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    return Tls(context, fingerprint(x509.load_pem_x509_certificate(cert_pem)), cert_path, self_signed=True)
