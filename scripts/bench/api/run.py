"""Benchmark: legacy API ``send/message`` requests per second, beside a bare
Pyramid-on-waitress hello-world measured the same way in the same run.

    .venv/bin/python scripts/bench/api/run.py [--duration 10] [--connections 10] [--threads 5]
                                              [--processes N]
                                              [--database-url mysql+pymysql://root@127.0.0.1:3306]

Both servers run as their own processes with the same number of waitress
threads: the hello-world as one process of plain waitress (OS threads), the
baseline; postald's web server (whose waitress threads are greenlets on a
gevent hub) once as one process and once with ``web_server.processes`` =
``--processes`` (default: the number of CPU cores).  The load comes from ``wrk`` (Debian package ``wrk``) with
``post.lua``, or from a small threaded Python client when wrk is not
installed.  Every ``send/message`` stores and queues one message (SQLite in a
temporary directory by default; a MariaDB server URL to use fresh databases
there instead).  The figures printed are requests per second for each, the
CPU time the server's processes spent per request, and the ratio to
hello-world (the target is send/message at one third of hello-world or more).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.support.dns_server import DNSServer  # noqa: E402
from tests.support.processes import (children_of, free_port, listens_on, stop_process,  # noqa: E402
                                     wait_for_port, wait_until)
WEB_HOST = "postal.bench"


# -- the Postal side --------------------------------------------------------------------

def bench_environ(data_dir: str, port: int, threads: int, database_url: str | None,
                  dns_port: int) -> tuple[dict, str | None]:
    environ = {
        "POSTAL_DATA_DIR": data_dir,
        "POSTAL_SIGNING_KEY_PATH": os.path.join(data_dir, "signing.key"),
        "SILENCE_POSTAL_CONFIG_MESSAGES": "true",
        "POSTAL_WEB_HOSTNAME": WEB_HOST,
        "DNS_RETURN_PATH_DOMAIN": "rp.postal.bench",
        # A loopback DNS server answering NXDOMAIN: the Received header's PTR lookup fails at once.
        "DNS_NAMESERVERS": f"127.0.0.1:{dns_port}",
        "DNS_TIMEOUT": "1",
        "LOGGING_ENABLED": "false",
        "PORT": str(port),
        "BIND_ADDRESS": "127.0.0.1",
        "HEALTH_SERVER_PORT": str(free_port()),
        "WEB_SERVER_MAX_THREADS": str(threads),
    }
    prefix = None
    if database_url:
        prefix = "bench" + secrets.token_hex(3)
        environ["MAIN_DB_URL"] = f"{database_url}/{prefix}_main?charset=utf8mb4"
        environ["MESSAGE_DB_URL"] = database_url + "/{database}?charset=utf8mb4"
        environ["MESSAGE_DB_DATABASE_NAME_PREFIX"] = prefix
    return environ, prefix


def prepare(environ: dict) -> tuple[object, int, str, str]:
    """Migrate, then create a server with a verified domain and an API key."""
    from postald.config import load
    from postald.services import credentials, domains, organizations, servers
    from schema.migrate import upgrade_main
    from schema.session import Database

    database = Database(load(path=None, environ=environ))
    upgrade_main(database)
    with database.unit_of_work() as session:
        organization = organizations.create(session, "Bench")
        server = servers.create(session, database, organization, "Bench")
        domains.create(session, server, "bench.example", verified=True)
        key = credentials.create(session, server, "API", "bench").key
        server_id = server.id
    return database, server_id, key, "sender@bench.example"


def drop_databases(database_url: str, prefix: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url + "/")
    with engine.begin() as conn:
        names = [row[0] for row in conn.execute(
            text("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE :p"), {"p": prefix + "%"})]
        for name in names:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    engine.dispose()


# -- load generation ------------------------------------------------------------------------

def run_wrk(url: str, duration: int, connections: int, body: str | None = None, key: str | None = None) -> dict:
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency"]
    env = dict(os.environ)
    if body is not None:
        command += ["-s", str(HERE / "post.lua")]
        env.update(BENCH_BODY=body, BENCH_KEY=key or "", BENCH_HOST=WEB_HOST)
    output = subprocess.run(command + [url], capture_output=True, text=True, env=env, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    errors = re.search(r"non-2xx-or-errors: (\d+)", output)
    p99 = re.search(r"99%\s+([\d.]+\w+)", output)
    return {"rate": rate, "requests": total, "errors": int(errors.group(1)) if errors else 0,
            "p99": p99.group(1) if p99 else "?"}


def run_python_client(port: int, path: str, duration: int, connections: int, body: str | None = None,
                      key: str | None = None) -> dict:
    """A keep-alive client per thread, for machines without wrk."""
    deadline = time.monotonic() + duration
    counts, errors = [0] * connections, [0] * connections
    headers = {"Host": WEB_HOST}
    if body is not None:
        headers.update({"Content-Type": "application/json", "X-Server-API-Key": key or ""})

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            counts[index] += 1
            errors[index] += response.status >= 300
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {"rate": sum(counts) / elapsed, "requests": sum(counts), "errors": sum(errors), "p99": "n/a"}


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process so far (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_cpu(pids: list[int], run) -> tuple[dict, float | None]:
    """``run()``'s result and the milliseconds of CPU the processes ``pids`` spent per request."""
    before = [cpu_seconds(pid) for pid in pids]
    result = run()
    after = [cpu_seconds(pid) for pid in pids]
    if None in before or None in after or not result["requests"]:
        return result, None
    return result, (sum(after) - sum(before)) * 1000 / result["requests"]


def measure(port: int, path: str, args, body: str | None = None, key: str | None = None) -> dict:
    if shutil.which("wrk") and not args.python_client:
        return run_wrk(f"http://127.0.0.1:{port}{path}", args.duration, args.connections, body, key)
    return run_python_client(port, path, args.duration, args.connections, body, key)


# -- main ---------------------------------------------------------------------------------------

def run_api(environ: dict, data_dir: str, processes: int, args, body: str, key: str) -> tuple[dict, float | None]:
    """Start the web server with ``processes`` processes, load it; the result and its CPU per request."""
    env = {**os.environ, **environ, "WEB_SERVER_PROCESSES": str(processes)}
    api = subprocess.Popen([sys.executable, "-m", "pyramid_app.server"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=data_dir)
    port = int(environ["PORT"])
    try:
        wait_for_port(port, api)
        if processes > 1:  # every process up and listening, not only the first
            wait_until(lambda: len(children_of(api.pid)) == processes
                       and all(listens_on(pid, port) for pid in children_of(api.pid)),
                       timeout=60, what="the web server processes")
        measure(port, "/api/v1/send/message", argparse.Namespace(**{**vars(args), "duration": 1}), body, key)
        return measure_cpu([api.pid, *children_of(api.pid)],
                           lambda: measure(port, "/api/v1/send/message", args, body, key))
    finally:
        stop_process(api)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per server (default 10)")
    parser.add_argument("--connections", type=int, default=10, help="concurrent connections (default 10)")
    parser.add_argument("--threads", type=int, default=5, help="waitress threads of each server (default 5)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="web_server.processes of the second send/message run (default: CPU cores)")
    parser.add_argument("--database-url", help="a MariaDB server URL, e.g. mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument("--python-client", action="store_true", help="use the Python client even if wrk is installed")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="postald-bench-")
    api_port, hello_port = free_port(), free_port()
    dns_server = DNSServer({}).start()
    environ, prefix = bench_environ(data_dir, api_port, args.threads, args.database_url, dns_server.port)
    database, server_id, key, sender = prepare(environ)
    body = json.dumps({"to": ["rcpt@example.org"], "from": f"Bench <{sender}>", "subject": "Benchmark",
                       "plain_body": "Hello from the benchmark.\n" * 20, "html_body": "<p>Hello</p>",
                       "tag": "bench"})
    hello = subprocess.Popen([sys.executable, str(HERE / "hello_app.py"), str(hello_port), str(args.threads)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backend = "MariaDB" if args.database_url else "SQLite"
    client = "wrk" if shutil.which("wrk") and not args.python_client else "python client"
    print(f"load: {client}, {args.connections} connections, {args.duration}s each; "
          f"waitress threads: {args.threads}; database: {backend}")
    runs = [1] + ([args.processes] if args.processes > 1 else [])
    try:
        wait_for_port(hello_port, hello)
        measure(hello_port, "/", argparse.Namespace(**{**vars(args), "duration": 1}))  # warm-up
        hello_result, hello_cpu = measure_cpu([hello.pid], lambda: measure(hello_port, "/", args))
    finally:
        stop_process(hello)
    results = []
    stored_before = database.message_db(server_id).count_messages()
    for processes in runs:
        results.append((processes, *run_api(environ, data_dir, processes, args, body, key)))
    stored = database.message_db(server_id).count_messages() - stored_before

    def cpu(value: float | None) -> str:
        return f"{value:.3f} ms" if value is not None else "n/a"

    print(f"hello-world (Pyramid on waitress, 1 process): {hello_result['rate']:9.1f} requests/s   "
          f"p99 {hello_result['p99']}   errors {hello_result['errors']}   CPU/request {cpu(hello_cpu)}")
    for processes, result, cpu_per_request in results:
        label = f"send/message, {processes} process{'es' if processes > 1 else ''}:"
        print(f"{label:46s} {result['rate']:9.1f} requests/s   p99 {result['p99']}   errors {result['errors']}   "
              f"CPU/request {cpu(cpu_per_request)}   ratio {result['rate'] / hello_result['rate']:.2f}")
    print("target: send/message at >= 0.33 of hello-world (send/message = stored + queued before the reply)")
    completed = sum(result["requests"] for _, result, _ in results)
    print(f"messages stored during the runs: {stored} for {completed} completed requests (and the warm-ups)")
    database.dispose()
    if prefix:
        drop_databases(args.database_url, prefix)
    shutil.rmtree(data_dir, ignore_errors=True)
    dns_server.stop()
    errors = sum(result["errors"] for _, result, _ in results)
    return 0 if stored >= completed and errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
