"""Callgrind the whole uvicorn process for a fixed number of requests.

usage (from the repository root): python benchmarks/callgrind/uvicorn_requests.py MODE N LABEL
Prints total instructions of the server process. Run twice (N1, N2) and difference.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())
from benchmarks.web import HOST, _free_port, _Minter, _passwords, _users

from tokenflow import Flow, KeyRing
from tokenflow.stores import SQLiteStore

mode, n, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
http, loop = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else ("httptools", "uvloop")
tool = os.environ.get("TOOL", "callgrind")
tmp = tempfile.mkdtemp()
db = os.path.join(tmp, "s.db")
ring = KeyRing.generate()
store = SQLiteStore(db)
flow = Flow(ring, store, _users(4), passwords=_passwords(4))
secret = bytes(range(32))
minter = _Minter(flow, secret)
env = {
    **os.environ,
    "TF_BENCH_KEYS": ring.serialize(),
    "TF_BENCH_DB": db,
    "TF_BENCH_USERS": "4",
    "TF_BENCH_SECRET": secret.hex(),
    "TF_BENCH_MODE": mode,
    "PYTHONHASHSEED": "0",
}
port = _free_port()
out = os.path.join(os.environ.get("OUT_DIR", tempfile.gettempdir()), f"http-{label}-{n}.out")
cmd = [
    sys.executable,
    "-m",
    "uvicorn",
    "benchmarks._asgi_server:app",
    "--host",
    "127.0.0.1",
    "--port",
    str(port),
    "--workers",
    "1",
    "--http",
    http,
    "--loop",
    loop,
    "--no-access-log",
    "--log-level",
    "warning",
    "--lifespan",
    "off",
]
if tool == "callgrind":
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd]
elif tool == "none":
    pass
t_start = time.monotonic()
errors = open(out + ".err", "w")  # noqa: SIM115 - the server writes it until stopped
proc = subprocess.Popen(cmd, env=env, stderr=errors)  # noqa: S603
deadline = time.monotonic() + 900
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        break
    except OSError:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("server did not start") from None
        time.sleep(0.2)
header = minter.access_header()
request = (f"GET / HTTP/1.1\r\nHost: {HOST}\r\nCookie: {header}\r\n\r\n").encode()
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
statuses = {}
t0 = time.monotonic()


def one(sock):
    sock.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("closed")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        body += sock.recv(65536)
    statuses[status] = statuses.get(status, 0) + 1
    return head


# pipelining-free, round robin over 4 keep-alive connections, 4 in flight
for i in range(n):
    head = one(conns[i % 4])
elapsed = time.monotonic() - t0
for c in conns:
    c.close()
time.sleep(0.5)
proc.send_signal(signal.SIGINT)
proc.wait(timeout=120)
if tool == "callgrind":
    with open(out) as report:
        lines = list(report)
    for line in lines:
        if line.startswith(("summary:", "totals:")):
            print(
                label, n, line.split()[1], statuses, f"{elapsed:.1f}s", f"start {t0 - t_start:.0f}s"
            )
            break
else:
    print(label, n, statuses, f"{elapsed:.2f}s", f"{n / elapsed:.0f} req/s")
print(head.decode(errors="replace"))
