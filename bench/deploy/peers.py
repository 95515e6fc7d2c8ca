#!/usr/bin/env python3
"""bench/deploy/peers.py: what Podman itself does in place of the agent.

    peers.py api SOCKET PREFIX N    create and start N containers through
                                    Podman's REST API (libpod, over the socket)
    peers.py cli PREFIX N           the same with a loop of `podman run -d`
    peers.py healthcheck PREFIX N   N runs of `podman healthcheck run` on the
                                    container PREFIX-001 (made when missing)
                                    whose health command is the agent's http
                                    check of the same service: GET / with
                                    busybox wget, from inside the container

Each container has the spec the agent gives a service of bench/deploy's
definitions (see definition.container_spec): the test image with
`httpd -f -p 8080 -h /www`, a published port on 127.0.0.1 and $PORT, the
service's bind mount /srv/NAME, four labels, user 0:0, init, no restart
policy, a 10 s stop timeout. The labels say bench.peer=true instead of
mcp.managed=true, so that the agent leaves them alone. Ports and the bind
mounts' directories are prepared before the clock starts (the agent's time
includes choosing ports and making directories; both are small).

Prints one JSON object: seconds of wall time for the N creates and starts,
and the names; for healthcheck, the CPU seconds per check of podman and the
children it waited for (user + system, getrusage), which leaves out conmon
(it detaches) and so favours Podman. The cli and healthcheck modes need the
environment of the test Podman (DIR/env.sh) in their own environment. Exits
1 when one failed.
"""
import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.parse

IMAGE = "localhost/mcp-test:1.0"
CMD = ["httpd", "-f", "-p", "8080", "-h", "/www"]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def free_ports(n, start=30000):
    """n ports free on 127.0.0.1 now, from start upwards."""
    out, port = [], start
    while len(out) < n and port < 40000:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            out.append(port)
        except OSError:
            pass
        finally:
            s.close()
        port += 1
    if len(out) < n:
        sys.exit("peers.py: not enough free ports in 30000-39999")
    return out


def spec(name, port):
    return {
        "name": name,
        "image": IMAGE,
        "command": CMD,
        "env": {"PORT": str(port)},
        "labels": {"bench.peer": "true", "mcp.service": name, "mcp.component": "web",
                   "mcp.revision": "r1"},
        "portmappings": [{"container_port": 8080, "host_port": port,
                          "host_ip": "127.0.0.1", "protocol": "tcp"}],
        "mounts": [{"type": "bind", "source": "/srv/" + name,
                    "destination": "/srv/" + name}],
        "user": "0:0",
        "restart_policy": "no",
        "init": True,
        "stop_timeout": 10,
    }


def call(conn, method, path, body=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, "/v4.0.0/libpod" + path,
                 body=json.dumps(body) if body is not None else None, headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"peers.py: {method} {path}: {r.status} {data[:300]!r}")
    return data


def cli_args(s, port):
    name = s["name"]
    args = ["podman", "run", "-d", "--name", name, "--init", "--user", s["user"],
            "--restart", "no", "--stop-timeout", "10",
            "-p", f"127.0.0.1:{port}:8080", "-e", f"PORT={port}",
            "-v", f"/srv/{name}:/srv/{name}"]
    for k, v in s["labels"].items():
        args += ["--label", f"{k}={v}"]
    return args


def run_or_exit(args, what):
    r = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"peers.py: {what}: {r.stderr.strip()}")


def healthcheck(prefix, n):
    name = f"{prefix}-001"
    exists = subprocess.run(["podman", "container", "exists", name]).returncode == 0
    if not exists:
        port = free_ports(1)[0]
        os.makedirs("/srv/" + name, mode=0o750, exist_ok=True)
        # No timer: this environment has no systemd, and the checks are run here.
        args = cli_args(spec(name, port), port) + [
            "--health-cmd", "wget -q -O /dev/null http://127.0.0.1:8080/",
            "--health-interval", "disable"]
        run_or_exit(args + [IMAGE] + CMD, "podman run " + name)
        time.sleep(0.5)
    run_or_exit(["podman", "healthcheck", "run", name], "podman healthcheck run (warm-up)")
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for _ in range(n):
        run_or_exit(["podman", "healthcheck", "run", name], "podman healthcheck run")
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"mode": "healthcheck", "checks": n, "container": name,
                      "check": "podman healthcheck run: busybox wget -q -O /dev/null "
                               "http://127.0.0.1:8080/ inside the container",
                      "cpu_seconds": round(cpu, 4),
                      "cpu_seconds_per_check": round(cpu / n, 6),
                      "wall_ms_per_check": round(wall / n * 1000, 2)}))


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "healthcheck" and len(sys.argv) == 4:
        return healthcheck(sys.argv[2], int(sys.argv[3]))
    if mode == "api" and len(sys.argv) == 5:
        sock, prefix, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
    elif mode == "cli" and len(sys.argv) == 4:
        sock, prefix, n = None, sys.argv[2], int(sys.argv[3])
    else:
        sys.exit(__doc__)
    names = [f"{prefix}-{i:03d}" for i in range(1, n + 1)]
    ports = free_ports(n)
    for name in names:
        os.makedirs("/srv/" + name, mode=0o750, exist_ok=True)
    t0 = time.perf_counter()
    if mode == "api":
        conn = UnixHTTPConnection(sock)
        for name, port in zip(names, ports):
            call(conn, "POST", "/containers/create", spec(name, port))
            call(conn, "POST", "/containers/" + urllib.parse.quote(name) + "/start")
        conn.close()
    else:
        for name, port in zip(names, ports):
            run_or_exit(cli_args(spec(name, port), port) + [IMAGE] + CMD, "podman run " + name)
    seconds = time.perf_counter() - t0
    print(json.dumps({"mode": mode, "containers": n, "seconds": round(seconds, 4),
                      "names": names}))


if __name__ == "__main__":
    main()
