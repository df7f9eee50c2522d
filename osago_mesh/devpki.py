"""A throwaway PKI for a secure dev mesh (`osago up --secure`) and the tests: a CA made for this
run (trustme, a development dependency), a certificate per service for `localhost` and
127.0.0.1, an ES256 key pair for core-app's bearer tokens with its JWKS, and the key of the
customers' access tokens. Written into a directory that lives as long as the mesh; nothing is
ever reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aggregator.access import AccessKeys
from osago_common.service_tokens import jwks

# The identities of the mesh's services (each certificate's first name): the gateways accept
# only the aggregator; the aggregator anyone the CA issued a certificate to.
SERVICES = ("aggregator", "gateway", "web-bridge", "envoy", "core-app")
JWT_KEY_ID = "dev-1"


@dataclass(frozen=True)
class DevPki:
    root: Path
    access_keys: str

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    def cert(self, service: str) -> Path:
        return self.root / f"{service}.pem"

    def key(self, service: str) -> Path:
        return self.root / f"{service}.key"

    def env(self, service: str) -> dict[str, str]:
        """OSAGO_TLS_* of one service."""
        return {
            "OSAGO_TLS_CERT": str(self.cert(service)),
            "OSAGO_TLS_KEY": str(self.key(service)),
            "OSAGO_TLS_CA": str(self.ca),
        }

    def channel_credentials(self, service: str = "core-app") -> grpc.ChannelCredentials:
        """mTLS as `service` toward the mesh's servers."""
        return grpc.ssl_channel_credentials(
            self.ca.read_bytes(), self.key(service).read_bytes(), self.cert(service).read_bytes()
        )

    @property
    def jwks(self) -> Path:
        return self.root / "jwks.json"

    @property
    def jwt_signing_key(self) -> Path:
        return self.root / "core-app-jwt.key"

    def client_env(self) -> dict[str, str]:
        """What a core-app process (`osago quote`) sets to call the aggregator: mTLS with the
        core-app certificate."""
        return {
            "OSAGO_TLS_CA": str(self.ca),
            "OSAGO_TLS_CERT": str(self.cert("core-app")),
            "OSAGO_TLS_KEY": str(self.key("core-app")),
        }

    def write_client_env(self) -> Path:
        """`client.env`: the client's variables, for `set -a; . client.env; set +a`."""
        path = self.root / "client.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.client_env().items()), encoding="utf-8")
        return path


def make_dev_pki(root: Path) -> DevPki:
    """Creates the CA, the certificates and the keys under `root` (an existing directory)."""
    import trustme  # noqa: PLC0415 - a development dependency, needed by `--secure` only

    ca = trustme.CA(organization_name="osago dev mesh")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    for service in SERVICES:
        issued = ca.issue_cert(service, "localhost", "127.0.0.1", common_name=service)
        issued.private_key_pem.write_to_path(str(root / f"{service}.key"))
        with (root / f"{service}.pem").open("wb") as chain:
            for blob in issued.cert_chain_pems:
                chain.write(blob.bytes())
    private = ec.generate_private_key(ec.SECP256R1())
    (root / "core-app-jwt.key").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (root / "jwks.json").write_text(jwks({JWT_KEY_ID: private.public_key()}), encoding="utf-8")
    for path in root.iterdir():
        path.chmod(0o600)
    return DevPki(root, AccessKeys.generate().spec())
