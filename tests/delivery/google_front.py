"""Google's HTTPS endpoints on loopback: a CONNECT proxy that ends TLS for `*.googleapis.com`.

What runs against Google itself (google-auth and `requests` in `make preflight`) reaches a fake at
Google's own addresses, unchanged: only the proxy variables and the CA bundle are set.
"""

from __future__ import annotations

import datetime
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@contextmanager
def google_front(upstream: str, directory: Path) -> Iterator[dict[str, str]]:
    """Google's HTTPS endpoints (`https://*.googleapis.com`) answered by `upstream` (http://).

    Yields the environment that sends a process's `requests` there unchanged: HTTPS_PROXY, through
    which requests tunnels every https URL with CONNECT, and REQUESTS_CA_BUNDLE, the CA it then
    trusts (https://requests.readthedocs.io/en/latest/user/advanced/, "Proxies" and "SSL Cert
    Verification"). The proxy ends TLS with a certificate for `*.googleapis.com` from a CA made
    here, and relays the plain HTTP to `upstream`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, chain_file, key_file = _test_ca(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file, key_file)
    target = upstream.removeprefix("http://").rstrip("/")
    host, port = target.rsplit(":", 1)

    class Tunnel(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = self.rfile.readline(65537).decode("latin-1").split()
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            if len(request) != 3 or request[0] != "CONNECT":
                self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if not request[1].rsplit(":", 1)[0].endswith(".googleapis.com"):
                self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            try:
                with (
                    context.wrap_socket(self.connection, server_side=True) as tls,
                    socket.create_connection((host, int(port))) as plain,
                ):
                    _relay(tls, plain)
            except (OSError, ssl.SSLError):
                pass  # the client went away

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Tunnel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"HTTPS_PROXY": proxy, "https_proxy": proxy, "REQUESTS_CA_BUNDLE": str(ca_file)}
    finally:
        server.shutdown()
        server.server_close()


def _relay(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """Copy both ways until one side closes (the fake answers HTTP/1.0: one request, then EOF)."""
    while True:
        ready = [tls] if tls.pending() else select.select([tls, plain], [], [], 60)[0]
        if not ready:
            return
        for source in ready:
            data = source.recv(65536)
            if not data:
                return
            (plain if source is tls else tls).sendall(data)


def _test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for `*.googleapis.com`: (CA file, chain file, key file)."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None, ca: bool
    ) -> x509.CertificateBuilder:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        certificate("flightpipe guide test CA", ca_key, None, True)
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
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        certificate("*.googleapis.com", key, ca_cert.subject, False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("*.googleapis.com")]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, chain_file, key_file = (
        directory / "ca.pem",
        directory / "chain.pem",
        directory / "key.pem",
    )
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    chain_file.write_bytes(leaf.public_bytes(pem) + ca_cert.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, chain_file, key_file
