"""What the host, VM and end-to-end suites and the benchmarks run against.

Import it as ``tests.harness.<module>`` with the repository root as the
current directory (pytest and ``python -m benchmarks.<name>`` do that).

collector          `Rotel`: a real rotel-agent OTLP collector on loopback,
                   and what it received (`Record`s, uids, metric names).
"""
