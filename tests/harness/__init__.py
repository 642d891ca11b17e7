"""What the host, VM and end-to-end suites and the benchmarks run against.

Import it as ``tests.harness.<module>`` with the repository root as the
current directory (pytest and ``python -m benchmarks.<name>`` do that); the
programs below run as ``python -m tests.harness.<program>`` the same way.

agent              `Agent`: the real CLI (`otel-fsnotify run --backend B
                   --output jsonl|otlp`) as a process, read back from its
                   jsonl file and its exit stats line; `cli()`.
collector          `Rotel`: a real rotel-agent OTLP collector on loopback,
                   and what it received (`Record`s, uids, metric names).
listeners          Real tracers as processes: `start_listener` (the fanotify
                   listener below), `start_inotifywait`, `start_inotify_reader`
                   (the counting reader below), `stop`.
actors             Real tracees (`touch`, `run`, `cat` under a permission
                   listener: `cat_under_verdict`, `blocked_cat`) and what
                   every backend must report for them.
poll               `until`, `until_stable`, `until_still`, `lines`: waiting on other processes.
fanotify_listener  Program: a fanotify listener (notify, perm-allow,
                   perm-deny, stall) that prints what it reads.
inotify_reader     Program: an inotify reader that counts what it reads.
vm                 Boots Debian's kernel under qemu and runs a script in it
                   (the VM suite and bench_exact).
"""
