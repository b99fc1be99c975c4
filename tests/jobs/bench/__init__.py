"""Tests of the benchmarks (:mod:`jobs.bench`)."""
