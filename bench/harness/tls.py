"""Certificates for the TLS upstream, made at run time with the `openssl` command line tool.

A private CA (ECDSA P-256, self-signed) signs one server certificate (ECDSA P-256) for the name
`localhost` and the address 127.0.0.1 (subjectAltName DNS:localhost, IP:127.0.0.1). ECDSA P-256
is what public CAs issue by default today (Let's Encrypt / certbot since 2.0) and what most TLS
deployments serve; its signatures are much cheaper for the server than RSA 2048. Both
certificates are valid for two days and live in the run's scratch directory. Proxies verify the
upstream against the CA and the name `localhost`, like a real deployment with a private CA.
"""

from dataclasses import dataclass
from pathlib import Path

from .procs import run_bounded

OPENSSL = "/usr/bin/openssl"
SERVER_NAME = "localhost"  # in the certificate and in every proxy's SNI / verification
KEY_ALGORITHM = "ECDSA P-256"
VALIDITY_DAYS = 2
OPENSSL_TIMEOUT_S = 30

_CONFIG_TEMPLATE = f"""[req]
distinguished_name = dn
prompt = no
[dn]
CN = tether bench CA
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {{alt_names}}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA certificate proxies trust (PEM)
    cert: Path  # the upstream's certificate (PEM)
    key: Path  # the upstream's private key (PEM)
    server_name: str = SERVER_NAME


def _openssl(*args: str) -> None:
    run_bounded([OPENSSL, *args], OPENSSL_TIMEOUT_S)


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path))


def make_certificates(directory: Path, server_name: str = SERVER_NAME,
                      addresses: tuple[str, ...] = ("127.0.0.1",)) -> Certificates:
    """Creates DIR/ca.pem, DIR/server.pem and DIR/server.key for `server_name` and `addresses`
    (the certificate's subjectAltName); raises HarnessError on failure."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "openssl.cnf"
    alt_names = ", ".join([f"DNS:{server_name}"] + [f"IP:{ip}" for ip in addresses])
    config.write_text(_CONFIG_TEMPLATE.replace("{alt_names}", alt_names))
    ca_key, ca, key, csr, cert = (directory / name for name in
                                  ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    _new_key(ca_key)
    _openssl("req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", str(VALIDITY_DAYS),
             "-config", str(config), "-extensions", "ca_ext", "-out", str(ca))
    _new_key(key)
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={server_name}", "-config",
             str(config), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-set_serial", "2", "-days", str(VALIDITY_DAYS), "-sha256", "-extfile", str(config),
             "-extensions", "server_ext", "-out", str(cert))
    _openssl("verify", "-x509_strict", "-CAfile", str(ca), str(cert))
    return Certificates(ca, cert, key, server_name)
