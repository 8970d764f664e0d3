"""The benchmark harness behind ``errands bench`` (see docs/benchmarks.md)."""
