"""Generated from protos/osago/v1 (package osago.v1)."""
