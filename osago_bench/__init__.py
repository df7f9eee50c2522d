"""Benchmarks and the in-process mesh they (and the functional tests) run against."""
