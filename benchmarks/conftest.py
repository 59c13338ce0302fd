"""Benchmarks run apart from the tests: `python -m pytest benchmarks`. Each compares dvbench's
implementation with a reference implementation measured in the same run; the ratio is the result."""
