"""Benchmarks: print figures, last line one JSON object; toy-size runs live in tests/bench."""
