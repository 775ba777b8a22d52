"""Benchmarks: one command each, bounded in time, printing a table and writing JSON + PNG.

Performance is measured here and never by timed tests. See bench/README.md and
docs/BENCHMARKS.md for the commands and the latest results.
"""
