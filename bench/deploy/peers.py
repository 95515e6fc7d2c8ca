#!/usr/bin/env python3
"""bench/deploy/peers.py: the peers of a deploy through the agent.

    peers.py api SOCKET PREFIX N    create and start N containers through
                                    Podman's REST API (libpod, over the socket)
    peers.py cli PREFIX N           the same with a loop of `podman run -d`

Each container has the spec the agent gives a service of bench/deploy's
definitions (see definition.container_spec): the test image with
`httpd -f -p 8080 -h /www`, a published port on 127.0.0.1 and $PORT, the
service's bind mount /srv/NAME, four labels, user 0:0, init, no restart
policy, a 10 s stop timeout. The labels say bench.peer=true instead of
mcp.managed=true, so that the agent leaves them alone. Ports and the bind
mounts' directories are prepared before the clock starts (the agent's time
includes choosing ports and making directories; both are small).

Prints one JSON object: seconds of wall time for the N creates and starts,
and the names. The CLI mode needs the environment of the test Podman
(DIR/env.sh) in its own environment. Exits 1 when one failed.
"""
import http.client
import json
import os
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


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
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
            s = spec(name, port)
            args = ["podman", "run", "-d", "--name", name, "--init", "--user", s["user"],
                    "--restart", "no", "--stop-timeout", "10",
                    "-p", f"127.0.0.1:{port}:8080", "-e", f"PORT={port}",
                    "-v", f"/srv/{name}:/srv/{name}"]
            for k, v in s["labels"].items():
                args += ["--label", f"{k}={v}"]
            r = subprocess.run(args + [IMAGE] + CMD, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                sys.exit(f"peers.py: podman run {name}: {r.stderr.strip()}")
    seconds = time.perf_counter() - t0
    print(json.dumps({"mode": mode, "containers": n, "seconds": round(seconds, 4),
                      "names": names}))


if __name__ == "__main__":
    main()
