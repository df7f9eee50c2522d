"""Code shared by the services: clock, the dev insurer catalogue, tariff, validation, settings, gRPC helpers."""
