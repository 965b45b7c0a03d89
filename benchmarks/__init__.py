"""barkstream benchmarks: `python -m benchmarks [stages|service] [--quick]` (or `make bench`).

Tables go to stdout and JSON to benchmarks/out/; the recorded results, with the
machine they ran on, are in benchmarks/RESULTS.md.
"""
