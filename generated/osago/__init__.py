"""Generated from protos/osago (package osago)."""
