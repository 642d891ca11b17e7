"""A minimal inotify tracer that counts what it reads:
`python -m tests.harness.inotify_reader DIR [PAUSE_MS]` (from the repository root).

Prints READY once the watch is in place; on SIGTERM prints `READ <events> OVERFLOW <n>`
and exits. The VM storm test and bench_exact use it to know exactly how many
events a tracer read. PAUSE_MS: a sleep after each read, so that events pile
up and each read takes many (a slow tracer's reads span several ring records).
"""

import ctypes
import os
import signal
import struct
import sys
import time

IN_ALL_EVENTS = 0x00000FFF
IN_Q_OVERFLOW = 0x4000
HEADER = struct.Struct("iIII")  # struct inotify_event without the name

libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
if fd < 0 or libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_ALL_EVENTS) < 0:
    sys.exit(f"inotify: {os.strerror(ctypes.get_errno())}")
pause_s = int(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0
count = overflow = 0
stopping = False


def on_term(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_term)
print("READY", flush=True)
while not stopping:
    try:
        buf = os.read(fd, 65536)
    except InterruptedError:
        continue
    pos = 0
    while pos < len(buf):
        _wd, mask, _cookie, length = HEADER.unpack_from(buf, pos)
        pos += HEADER.size + length
        count += 1
        overflow += bool(mask & IN_Q_OVERFLOW)
    if pause_s:
        time.sleep(pause_s)
print(f"READ {count} OVERFLOW {overflow}", flush=True)
