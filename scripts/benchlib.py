"""Shared pieces of the benchmark scripts: the release server, tansu, wrk, and /metrics.

Everything runs on 127.0.0.1 and stops by itself; the server's data lives in a temporary
directory.
"""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tools cache (tansu, k6, schemathesis, oha), for every script: `python3
# scripts/benchlib.py tools-dir` prints it for the shell scripts.
TOOLS = os.environ.get("STOCKROOM_TOOLS", os.path.expanduser("~/.cache/stockroom-tools"))
TOKEN = "bench-admin-token-0123456789"
SERVER = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release/stockroom")


def build_release():
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "stockroom"], cwd=ROOT, check=True)


def request(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as response:
        return response.status, response.read()


def drain(stream):
    """Keeps reading a child's output so it never blocks on a full pipe."""
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()


def start_server(data_dir, env=None, prefix=()):
    """Starts the release server on a free port; returns (process, base URL) once ready.
    `prefix` goes before the command (for example `taskset -c 0`)."""
    address_file = os.path.join(data_dir, "address")
    if os.path.exists(address_file):
        os.remove(address_file)
    full_env = dict(os.environ,
                    STOCKROOM_HTTP__BIND="127.0.0.1:0",
                    STOCKROOM_HTTP__ADDRESS_FILE=address_file,
                    STOCKROOM_STORE__DATA_DIR=data_dir,
                    STOCKROOM_ADMIN_TOKEN=TOKEN,
                    STOCKROOM_RESERVATION__MAX_HOLDS_PER_SKU="50000000",
                    # Load comes from one address (127.0.0.1): no per-client cart limit.
                    STOCKROOM_CART__CREATE_PER_MINUTE_PER_CLIENT="0",
                    RUST_LOG="warn,stockroom=info")
    full_env.update(env or {})
    server = subprocess.Popen([*prefix, SERVER], cwd=data_dir, env=full_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    drain(server.stdout)
    base = "http://" + wait_for_address(address_file, server)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if request(base, "GET", "/ready")[0] == 200:
                return server, base
        except Exception:
            time.sleep(0.05)
    sys.exit("the server did not become ready")


def wait_for_address(address_file, process, timeout=30):
    """The address the server writes to `address_file` once it listens (`http.address_file`)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(address_file) as f:
                return f.read().strip()
        except FileNotFoundError:
            if process.poll() is not None:
                sys.exit("the server exited before listening")
            time.sleep(0.02)
    sys.exit("the server did not write its address")


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_tansu():
    """Starts tansu (installed by scripts/install-tools) on a free port; returns (process, address)."""
    tools_bin = subprocess.run([os.path.join(ROOT, "scripts/install-tools")], check=True,
                               capture_output=True, text=True).stdout.strip()
    port = free_port()
    url = "tcp://127.0.0.1:%d" % port
    broker = subprocess.Popen([os.path.join(tools_bin, "tansu"), "broker", "--listener-url", url,
                               "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return broker, "127.0.0.1:%d" % port
        except OSError:
            time.sleep(0.05)
    sys.exit("tansu did not start")


def metrics(base):
    return urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()


def metric(text, name):
    """The sum of a metric's samples over all its labels (0 when absent)."""
    total = 0.0
    for match in re.finditer(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), text, re.M):
        total += float(match.group(1))
    return total


def histogram_quantile(text, name, q):
    """A quantile from a Prometheus histogram's cumulative buckets, interpolated within the
    bucket as Prometheus's histogram_quantile does. Returns seconds, or None when empty."""
    buckets = sorted((float("inf") if le == "+Inf" else float(le), float(count))
                     for le, count in re.findall(r'^%s_bucket\{le="([^"]+)"\} (\S+)$' % re.escape(name), text, re.M))
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def wrk(base, path, script, duration, connections, prefix=()):
    command = [*prefix, "wrk", "-t2", "-c%d" % connections, "-d%ds" % duration, "--latency"]
    if script:
        command += ["-s", os.path.join(ROOT, "loadtest/wrk", script)]
    output = subprocess.run(command + [base + path], env=dict(os.environ, ADMIN_TOKEN=TOKEN),
                            capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def percentile(p):
        match = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, output, re.M)
        number, unit = float(match.group(1)), match.group(2)
        return number / 1000 if unit == "us" else number * 1000 if unit == "s" else number
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {"rps": rps, "p50": percentile(50), "p99": percentile(99),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(1) if errors else "none"}


if __name__ == "__main__":
    if sys.argv[1:] == ["tools-dir"]:
        print(TOOLS)
    else:
        sys.exit("usage: benchlib.py tools-dir")
