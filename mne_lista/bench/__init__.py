"""Benchmarks: scripts printing figures (a table and JSON), not tests."""
