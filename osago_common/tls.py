"""TLS on the project's gRPC links, read the same way by every service: one certificate and key
per service (PEM files, e.g. mounted from a Kubernetes Secret) and the CA that issued its peers'.

| variable | meaning |
|---|---|
| `OSAGO_TLS_CERT` / `OSAGO_TLS_KEY` | this service's certificate chain and private key: its server certificate, and its client certificate toward the services it calls |
| `OSAGO_TLS_CA` | the CA certificates that peers' certificates must chain to (servers verify clients', clients verify servers') |
| `OSAGO_TLS_SERVER_NAME` | the name a client expects in the servers' certificates, when it is not the host of the target (IP targets, replicas listed by address) |
| `OSAGO_TLS_ALLOWED_PEERS` | the only client identities (certificate SAN or CN) a server accepts, comma-separated; empty: any certificate the CA issued |
| `OSAGO_DEV_INSECURE` | `true`: plaintext and no authentication, for a development mesh on one machine only (`osago up`); every service logs a warning |

Either the three files are given, or `OSAGO_DEV_INSECURE=true`: a service refuses to start with
neither, so a production deployment cannot fall back to plaintext by a forgotten setting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from osago_common.env import SettingsError, env_flag

log = logging.getLogger(__name__)

DEV_WARNING = "DEV MODE (OSAGO_DEV_INSECURE): plaintext gRPC and no authentication; never use it in production"


@dataclass(frozen=True)
class TlsFiles:
    """This service's certificate and key, and the CA its peers' certificates chain to."""

    cert: Path
    key: Path
    ca: Path
    # Overrides the name checked in servers' certificates (clients only).
    server_name: str = ""
    # Client identities a server accepts (empty: any certificate the CA issued).
    allowed_peers: tuple[str, ...] = ()

    def _read(self) -> tuple[bytes, bytes, bytes]:
        try:
            return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        except OSError as error:
            raise SettingsError(f"OSAGO_TLS_*: cannot read {error.filename}: {error.strerror}") from None

    def server_credentials(self, *, require_client_cert: bool = True) -> grpc.ServerCredentials:
        """The server side: this certificate; with `require_client_cert` (mTLS) every client must
        present a certificate the CA issued, or the handshake fails."""
        cert, key, ca = self._read()
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=ca if require_client_cert else None,
            require_client_auth=require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The client side: servers verified against the CA, this certificate presented."""
        cert, key, ca = self._read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def own_name(self) -> str:
        """A name this certificate is issued for (its first DNS name, else IP address, else common
        name; a wildcard's first label filled in): what a client reaching this service through a
        loopback address must expect in its certificate. Empty when it names nothing."""
        cert = x509.load_pem_x509_certificate(self._read()[0])
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            names = None
        if names is not None:
            dns = names.get_values_for_type(x509.DNSName)
            if dns:
                return "self." + dns[0][2:] if dns[0].startswith("*.") else dns[0]
            addresses = names.get_values_for_type(x509.IPAddress)
            if addresses:
                return str(addresses[0])
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(common[0].value) if common else ""

    def channel_options(self) -> tuple[tuple[str, str], ...]:
        return (("grpc.ssl_target_name_override", self.server_name),) if self.server_name else ()


def tls_from_env(env: Mapping[str, str]) -> TlsFiles | None:
    """The TLS files, or None in the dev mode; SettingsError when neither is configured (or
    only some of the files are)."""
    names = ("OSAGO_TLS_CERT", "OSAGO_TLS_KEY", "OSAGO_TLS_CA")
    given = [env.get(name, "") for name in names]
    dev = env_flag(env, "OSAGO_DEV_INSECURE")
    if not any(given):
        if dev:
            return None
        raise SettingsError(
            "TLS is required: set OSAGO_TLS_CERT, OSAGO_TLS_KEY and OSAGO_TLS_CA"
            " (or OSAGO_DEV_INSECURE=true for a development mesh on one machine)"
        )
    missing = [name for name, value in zip(names, given, strict=True) if not value]
    if missing:
        raise SettingsError(f"{', '.join(missing)} must be set too: TLS needs a certificate, its key and the CA")
    if dev:
        raise SettingsError("OSAGO_DEV_INSECURE and OSAGO_TLS_* exclude each other")
    allowed = tuple(p.strip() for p in env.get("OSAGO_TLS_ALLOWED_PEERS", "").split(",") if p.strip())
    files = TlsFiles(Path(given[0]), Path(given[1]), Path(given[2]), env.get("OSAGO_TLS_SERVER_NAME", ""), allowed)
    files._read()  # fail at start-up, naming the file, rather than at the first call
    return files


def warn_if_insecure(tls: TlsFiles | None) -> None:
    if tls is None:
        log.warning(DEV_WARNING)
