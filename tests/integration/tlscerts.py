"""Test certificates for the TLS tests, made at run time with the `openssl` command line.

    certs = generate(directory)      # a TlsCerts; every key file is mode 0600

What is made (EC P-256 keys unless noted; every leaf has SKI/AKI, key usage and EKU, so strict
verifiers accept the good ones):
    ca                    the test CA that tetherd is told to trust (tls_ca)
    localhost             server cert, SANs DNS:localhost, IP:127.0.0.1 and IP:::1, signed by ca
    wrong_name            server cert for DNS:wrong.example only, signed by ca
    expired               like localhost, but its validity ended yesterday (made with `openssl ca`,
                          which takes explicit start and end dates: stock OpenSSL 3.0 has no
                          -not_before/-not_after in `openssl x509`)
    other_ca              a second, unrelated CA
    untrusted             server cert for localhost/127.0.0.1 signed by other_ca
    client_ca             the CA the upstream requires client certificates from
    client                client cert CN=tether-client-1, signed by client_ca
    client2               client cert CN=tether-client-2 (RSA 2048), signed by client_ca
"""

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "openssl"
DAY = 86400

_CONFIG = """\
[req]
distinguished_name = dn
[dn]

[ca]
default_ca = test_ca
[test_ca]
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
commonName = supplied
organizationName = optional

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_localhost]
{leaf}
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1

[server_wrong]
{leaf}
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example

[client]
{leaf}
extendedKeyUsage = clientAuth
"""

_LEAF = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always"""


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path
    common_name: str


@dataclass(frozen=True)
class TlsCerts:
    directory: Path
    ca: Pair
    localhost: Pair
    wrong_name: Pair
    expired: Pair
    other_ca: Pair
    untrusted: Pair
    client_ca: Pair
    client: Pair
    client2: Pair


class _Maker:
    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "openssl.cnf"
        self.config.write_text(_CONFIG.format(dir=self.dir, leaf=_LEAF))
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        self.serial = 0x2000

    def run(self, *args):
        result = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True,
                                timeout=60, cwd=self.dir)
        if result.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{result.stderr}")

    def key(self, name, rsa=False):
        path = self.dir / f"{name}.key"
        if rsa:
            self.run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                     "-out", path)
        else:
            self.run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-out", path)
        os.chmod(path, 0o600)
        return path

    def ca(self, name, common_name):
        key = self.key(name)
        cert = self.dir / f"{name}.pem"
        self.run("req", "-x509", "-new", "-config", self.config, "-key", key,
                 "-subj", f"/O=Tether Tests/CN={common_name}", "-days", "3650",
                 "-extensions", "v3_ca", "-sha256", "-out", cert)
        return Pair(cert, key, common_name)

    def _csr(self, name, common_name, rsa):
        key = self.key(name, rsa)
        csr = self.dir / f"{name}.csr"
        self.run("req", "-new", "-config", self.config, "-key", key,
                 "-subj", f"/O=Tether Tests/CN={common_name}", "-out", csr)
        return key, csr

    def leaf(self, name, common_name, issuer, extensions, rsa=False):
        key, csr = self._csr(name, common_name, rsa)
        cert = self.dir / f"{name}.pem"
        self.serial += 1
        self.run("x509", "-req", "-in", csr, "-CA", issuer.cert, "-CAkey", issuer.key,
                 "-set_serial", self.serial, "-days", "365", "-sha256",
                 "-extfile", self.config, "-extensions", extensions, "-out", cert)
        return Pair(cert, key, common_name)

    def expired_leaf(self, name, common_name, issuer, extensions):
        """Validity from 30 days ago until yesterday: `openssl ca` takes explicit dates."""
        key, csr = self._csr(name, common_name, False)
        cert = self.dir / f"{name}.pem"
        now = time.time()
        start, end = (time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now - days * DAY))
                      for days in (30, 1))
        self.run("ca", "-batch", "-config", self.config, "-name", "test_ca", "-notext",
                 "-cert", issuer.cert, "-keyfile", issuer.key, "-in", csr, "-out", cert,
                 "-startdate", start, "-enddate", end, "-extfile", self.config,
                 "-extensions", extensions)
        return Pair(cert, key, common_name)


def generate(directory):
    """Makes every certificate in `directory` (created if needed); returns a TlsCerts."""
    make = _Maker(directory)
    ca = make.ca("ca", "Tether Test CA")
    other_ca = make.ca("other-ca", "Unrelated Test CA")
    client_ca = make.ca("client-ca", "Tether Client CA")
    return TlsCerts(
        directory=make.dir,
        ca=ca,
        localhost=make.leaf("localhost", "localhost", ca, "server_localhost"),
        wrong_name=make.leaf("wrong-name", "wrong.example", ca, "server_wrong"),
        expired=make.expired_leaf("expired", "localhost", ca, "server_localhost"),
        other_ca=other_ca,
        untrusted=make.leaf("untrusted", "localhost", other_ca, "server_localhost"),
        client_ca=client_ca,
        client=make.leaf("client", "tether-client-1", client_ca, "client"),
        client2=make.leaf("client2", "tether-client-2", client_ca, "client", rsa=True),
    )


if __name__ == "__main__":
    import sys

    print(generate(sys.argv[1]))
