"""One insurer's gateway: speaks that insurer's HTTP API dialect and streams its offer over gRPC."""
