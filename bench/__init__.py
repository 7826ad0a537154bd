"""Benchmarks, run by `make bench` (never by the tests). Each prints its figures as ratios against a
baseline measured in the same run, so numbers from different machines stay comparable."""
