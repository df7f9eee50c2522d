"""Code shared by the services: clock, insurer catalogue, tariff, validation, settings, gRPC helpers."""
