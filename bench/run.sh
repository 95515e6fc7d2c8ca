#!/bin/sh
# bench/run.sh: what `make bench` runs. Every benchmark of the agent beside
# its peer, measured in one run on this machine, so that the machine's noise
# cancels in the ratios; writes bench/results/latest.md (the table) and
# bench/results/latest.json (the same with every run's raw numbers).
#
#   1-3, 5 (peer)  bench/deploy/bench.lua: one real Podman, one agent, 100
#                  services: API reads (bench/api), deploy cost (bench/deploy),
#                  memory (bench/memory), Podman's own health check
#   4              bench/reload/run.sh   reload time, failed requests under wrk
#   5              bench/health/run.sh   agent CPU per 1000 http checks (x3)
#   6              bench/policy          ns per call from C into a policy hook
#   7              bench/toml/run.sh     10 MB TOML against Python's tomllib
#
# Needs `make` (make bench builds first), root (the test environment's
# Podman, tests/env/podman-env.sh) and the packages of `make deps`. Takes
# about 7 minutes on 2 cores. Each step's output goes to build/bench/logs/;
# a step that fails is reported and the others still run; the exit code is
# then 1. Knobs: the variables of each step's script (see their headers;
# HEALTH_BENCH_SECONDS defaults to 10 here), HEALTH_BENCH_REPEAT (3),
# POLICY_BENCH_CALLS (1000000), POLICY_BENCH_RUNS (5). Nothing here asserts
# a time.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

die() { echo "bench: $*" >&2; exit 1; }
[ -x build/mcp-agent ] || die "run make first (or make bench)"
[ "$(id -u)" = 0 ] || die "needs root: the test environment's Podman runs as root"
for tool in luajit python3 wrk nginx curl podman cc; do
    command -v "$tool" >/dev/null || die "$tool is missing (make deps)"
done

work=$(mktemp -d /tmp/mcp-bench.XXXXXX)
chmod 755 "$work"
logs=build/bench/logs             # each step's output, kept after the run
rm -rf "$logs" && mkdir -p "$logs"
export BENCH_CLEANUP="$work/cleanup"

# What bench/deploy/bench.lua started and had not stopped when this script
# was interrupted: it stops its own on an error (LuaJIT makes a Ctrl-C one),
# not when it is killed. A pid is signalled only while it is still the
# program that was noted.
cleanup_interrupted() {
    [ -f "$BENCH_CLEANUP" ] || return 0
    while read -r kind arg; do
        case $kind in
        pid)
            comm=$(cat "/proc/$arg/comm" 2>/dev/null || true)
            case $comm in mcp-agent|nginx) kill "$arg" 2>/dev/null ;; esac ;;
        podman-env) tests/env/podman-env.sh stop "$arg" >/dev/null 2>&1 ;;
        dir) case $arg in /tmp/mcp-agent-test.*) rm -rf "$arg" ;; esac ;;
        srv) rmdir "/srv/$arg" 2>/dev/null ;;
        esac
    done < "$BENCH_CLEANUP"
}
trap 'rm -rf "$work"' EXIT
trap 'echo "bench: interrupted; cleaning up" >&2; cleanup_interrupted; exit 130' INT TERM HUP

started=$(date +%s)
failed=""
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# step NAME COMMAND...: runs one benchmark with its output in $logs/NAME.log,
# prints one line, and the log's end when it failed.
step() {
    name=$1
    shift
    t0=$(date +%s)
    printf 'bench: %-8s ' "$name"
    if "$@" >"$logs/$name.log" 2>&1; then
        echo "done in $(( $(date +%s) - t0 )) s"
        echo "$name ok $(( $(date +%s) - t0 ))" >> "$work/steps"
    else
        echo "FAILED after $(( $(date +%s) - t0 )) s; the end of $logs/$name.log:"
        tail -n 25 "$logs/$name.log" | sed 's/^/    /'
        echo "$name failed $(( $(date +%s) - t0 ))" >> "$work/steps"
        failed="$failed $name"
    fi
}

bench_build() {
    make -s -f Makefile -f bench/policy/bench.mk build/bench/policy_bench &&
    cc -std=c11 -O2 -Wall -Wextra -Werror -o build/bench/loadgen bench/api/loadgen.c
}

bench_policy() {
    build/bench/policy_bench "${POLICY_BENCH_CALLS:-1000000}" "${POLICY_BENCH_RUNS:-5}" \
        > "$work/policy.json"
}

bench_toml() {
    sh bench/toml/run.sh && cp bench/results/toml.json "$work/toml.json"
}

bench_node() {
    # The library the agent runs, copied (as bench/reload does): edits in the
    # checkout while the bench runs must not reload the agent.
    lib="$work/lib"
    mkdir -p "$lib" && cp -r lua policies "$lib/" &&
    BENCH_REPO=$repo BENCH_LOADGEN=$repo/build/bench/loadgen MCP_ROOT=$lib \
    MCP_AGENT=$repo/build/mcp-agent MCP_CLI=$repo/build/mcp \
    luajit -e "package.path='$repo/?.lua;$repo/lua/?.lua;$repo/lua/?/init.lua;'..package.path;
               package.cpath='$repo/build/lua/?.so;'..package.cpath" \
        bench/deploy/bench.lua "$work/node.json"
}

bench_reload() {
    sh bench/reload/run.sh && cp bench/results/reload.json "$work/reload.json"
}

bench_health() {
    i=1
    while [ "$i" -le "${HEALTH_BENCH_REPEAT:-3}" ]; do
        echo "health run $i"
        HEALTH_BENCH_SECONDS=${HEALTH_BENCH_SECONDS:-10} sh bench/health/run.sh &&
            cp bench/results/health.json "$work/health-$i.json" || return 1
        i=$((i + 1))
    done
}

step build bench_build
[ -z "$failed" ] || exit 1
step policy bench_policy
step toml bench_toml
step node bench_node
step reload bench_reload
step health bench_health

WORK=$work STARTED=$started LOAD_BEFORE=$load_before python3 - <<'PY'
import glob, json, os, platform, statistics, subprocess, time

work = os.environ["WORK"]
out_json, out_md = "bench/results/latest.json", "bench/results/latest.md"


def load(name):
    try:
        with open(os.path.join(work, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def sh(cmd):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    return r.stdout.strip().splitlines()[0] if r.stdout.strip() else ""


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def given(median, lo, hi, n):
    """Stats a benchmark computed itself (over n samples)."""
    return {"median": median, "min": lo, "max": hi, "samples": n}


steps = {}
with open(os.path.join(work, "steps")) as f:
    for line in f:
        name, status, secs = line.split()
        steps[name] = {"ok": status == "ok", "seconds": int(secs)}

meminfo = {}
with open("/proc/meminfo") as f:
    for line in f:
        k, v = line.split(":", 1)
        meminfo[k] = int(v.split()[0])
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
machine = {
    "cores": os.cpu_count(),
    "cpu": cpu,
    "memory_gib": round(meminfo["MemTotal"] / 1024 / 1024, 1),
    "kernel": platform.release(),
    "load_before": os.environ["LOAD_BEFORE"],
    "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
    "podman": sh("podman --version"),
    "luajit": sh("luajit -v"),
    "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
    "wrk": sh("wrk -v 2>&1 | head -1"),
    "python": platform.python_version(),
}

node, policy, toml, reload = load("node.json"), load("policy.json"), load("toml.json"), \
    load("reload.json")
healths = [load(os.path.basename(p))
           for p in sorted(glob.glob(os.path.join(work, "health-*.json")))]
healths = [h for h in healths if h]

rows = []   # what, unit, agent stats, peer name, peer stats, note


def row(section, what, unit, agent, peer_name, peer, note=""):
    rows.append({"section": section, "what": what, "unit": unit, "agent": agent,
                 "peer_name": peer_name, "peer": peer, "note": note,
                 "ratio": (agent["median"] / peer["median"]
                           if agent and peer and peer["median"] else None)})


if node:
    a = node.get("api")
    if a:
        s = a["series"]
        # A run without an answer has no latency (and counts as 0 req/s).
        pick = lambda name, f: stats([f(r) for r in s.get(name, [])
                                      if r["requests"] > 0 or f is rps])
        rps = lambda r: r["rps"]
        p50 = lambda r: r["latency_ms"]["p50"]
        p99 = lambda r: r["latency_ms"]["p99"]
        sec = f"1. API reads: {a['containers']} containers, {a['connections']} connections"
        row(sec, "GET /v1/ps vs Podman's list of the same containers, requests/s "
            "(same client: loadgen)", "req/s", pick("agent_loadgen", rps),
            "Podman libpod containers/json", pick("podman_loadgen", rps))
        row(sec, "  p50 latency", "ms", pick("agent_loadgen", p50), "Podman",
            pick("podman_loadgen", p50))
        row(sec, "  p99 latency", "ms", pick("agent_loadgen", p99), "Podman",
            pick("podman_loadgen", p99))
        row(sec, "  p50 latency on one connection: the agent's own cost per request", "ms",
            pick("agent_loadgen_1", p50), "Podman", pick("podman_loadgen_1", p50))
        row(sec, "  p99 latency on one connection", "ms", pick("agent_loadgen_1", p99),
            "Podman", pick("podman_loadgen_1", p99))
        row(sec, "GET /v1/ps (wrk) vs nginx serving the same JSON as a static file, "
            "requests/s", "req/s", pick("agent_wrk", rps), "nginx (1 worker), wrk",
            pick("nginx_wrk", rps))
        row(sec, "  p50 latency (wrk)", "ms", pick("agent_wrk", p50), "nginx",
            pick("nginx_wrk", p50))
        row(sec, "  p99 latency (wrk)", "ms", pick("agent_wrk", p99), "nginx",
            pick("nginx_wrk", p99))
        row(sec, "  requests/s, loadgen", "req/s", pick("agent_loadgen", rps), "nginx, loadgen",
            pick("nginx_loadgen", rps))
    d = node.get("deploy")
    if d:
        sec = f"2. Deploy cost: {d['services']} services, create and start, no health wait"
        agent = stats(d["seconds"]["agent"])
        row(sec, f"deploy {d['services']} through the agent vs Podman's API by a script",
            "s", agent, "Podman REST API", stats(d["seconds"]["podman_api"]))
        row(sec, f"deploy {d['services']} through the agent vs a loop of podman run -d", "s",
            agent, "podman run -d", stats(d["seconds"]["podman_run"]))
    m = node.get("memory", {})
    sec = "3. Memory: resident (VmRSS), agent vs the podman system service process"
    for key, label in (("idle_0", "idle, 0 services"), ("idle_100", "idle, 100 services"),
                       ("after_api_100", "100 services, after the API load")):
        if key in m:
            mib = lambda v: [x / 1024 for x in v]
            row(sec, "RSS " + label, "MiB", stats(mib(m[key]["agent_kib"])),
                "podman system service", stats(mib(m[key]["podman_kib"])))

if reload:
    sec = "4. Reload: shipped library + 50 definitions + 10 policies"
    t = reload["reload"]["took_ms"]
    row(sec, f"one reload (agent's took_ms, {t['n']} reloads)", "ms",
        given(t["median"], t["min"], t["max"], t["n"]), "", None,
        note="no peer: Podman has no reload of this kind")
    u = reload["under_load"]
    row(sec, f"failed GET /v1/ps during {u['reloads']} reloads under wrk (must be 0)",
        "requests", given(u["ps_failed"], u["ps_failed"], u["ps_failed"], 1),
        "the same wrk without reloads",
        given(u["baseline"]["ps_failed"], u["baseline"]["ps_failed"],
              u["baseline"]["ps_failed"], 1))
    row(sec, "GET /v1/ps requests/s during the reloads vs without", "req/s",
        given(u["ps_requests_per_second"], u["ps_requests_per_second"],
              u["ps_requests_per_second"], 1), "without reloads",
        given(u["baseline"]["ps_requests_per_second"], u["baseline"]["ps_requests_per_second"],
              u["baseline"]["ps_requests_per_second"], 1))

if healths or (node and node.get("health_peer")):
    sec = "5. Health checks: CPU per 1000 http checks"
    hp = node.get("health_peer") if node else None
    row(sec, "agent CPU s per 1000 http checks (500 targets, 1 s interval) vs "
        "podman healthcheck run", "CPU s",
        stats([h["cpu_seconds_per_1000_checks"] for h in healths]),
        "podman healthcheck run (wget in the container)",
        stats(hp["cpu_seconds_per_1000_checks"]) if hp else None)

if policy:
    sec = "6. Policy call: C into a hook and back, ns per call"
    meth = policy["methods"]
    st = lambda k: stats(meth[k]["runs_ns"]) if k in meth else None
    calls = meth["sandboxed_runtime_pcall"]["calls_per_run"]
    row(sec, f"sandboxed hook (JIT off) via runtime_pcall vs plain lua_pcall of a JIT-on "
        f"function ({calls} calls a run)", "ns", st("sandboxed_runtime_pcall"),
        "lua_pcall, JIT on", st("plain_lua_pcall"))
    row(sec, "  the sandboxed hook (JIT off) via a bare lua_pcall: the sandbox's share", "ns",
        st("sandboxed_lua_pcall"), "lua_pcall, JIT on", st("plain_lua_pcall"))
    row(sec, "  runtime_pcall of the plain hook (JIT on): the entry's share", "ns",
        st("plain_runtime_pcall"), "lua_pcall, JIT on", st("plain_lua_pcall"))
    row(sec, "  the hook as a task with the [lua] limits (task_spawn, loop) vs lua_pcall",
        "ns", st("task_with_limits"), "lua_pcall, JIT on", st("plain_lua_pcall"))
    row(sec, "  through sandbox.isolate from a task (the deploy executor's way)", "ns",
        st("sandbox_isolate"), "lua_pcall, JIT on", st("plain_lua_pcall"))

if toml:
    sec = "7. TOML: parse a 10 MB file"
    c, p = toml["c_toml_parse"], toml["python_tomllib"]
    row(sec, f"parse {toml['file']['bytes'] / 1e6:.1f} MB: the agent's C parser vs "
        "Python's tomllib", "ms", given(c["median_ms"], c["min_ms"], c["max_ms"], c["runs"]),
        "tomllib", given(p["median_ms"], p["min_ms"], p["max_ms"], p["runs"]))

result = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "seconds": int(time.time()) - int(os.environ["STARTED"]),
    "machine": machine,
    "steps": steps,
    "table": rows,
    "raw": {"node": node, "policy": policy, "toml": toml, "reload": reload, "health": healths},
}
with open(out_json, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
    f.write("\n")


def num(v):
    a = abs(v)
    if a == 0 or a >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3g}"


def fmt(s):
    if not s:
        return "—"
    if s["min"] == s["max"]:
        return num(s["median"])
    return f"{num(s['median'])} ({num(s['min'])}–{num(s['max'])})"


def ratio(r):
    v = r["ratio"]
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"


lines = [
    "# mcp-agent benchmarks: the agent beside its peers, in one run",
    "",
    f"Written by `make bench` ({result['date']}, {result['seconds']} s). Each figure is the "
    "median with the min and max of its runs; the ratio is the agent's median divided by "
    "the peer's (so below 1 is better for times, latencies, memory and CPU; above 1 for "
    "requests/s). The machine is shared and noisy: compare the ratios, not the absolute "
    "figures. Raw numbers of every run: [latest.json](latest.json).",
    "",
    f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB memory, "
    f"Linux {machine['kernel']}; load average {machine['load_before']} before, "
    f"{machine['load_after']} after. {machine['podman']}, {machine['luajit'].split(' -- ')[0]}, "
    f"{machine['nginx'].replace('nginx version: ', '')}, {machine['wrk'].split(' [')[0]}.",
    "",
]
section = None
for r in rows:
    if r["section"] != section:
        section = r["section"]
        lines += ["", f"### {section}", "",
                  "| what | agent | peer | peer's figure | ratio |",
                  "|---|---:|---|---:|---:|"]
    unit = f" {r['unit']}"
    agent = fmt(r["agent"])
    peer = fmt(r["peer"])
    lines.append(f"| {r['what']}{' — ' + r['note'] if r['note'] else ''} | "
                 f"{agent}{unit if r['agent'] else ''} | {r['peer_name'] or '—'} | "
                 f"{peer}{unit if r['peer'] else ''} | {ratio(r)} |")
lines += ["", "### How these were measured", ""]
notes = []
if node and node.get("api"):
    a = node["api"]
    n = lambda k: sum(r["requests"] for r in a["series"].get(k, []))
    fewest = min((r["requests"] for k in ("podman_loadgen", "agent_loadgen",
                                          "podman_loadgen_1", "agent_loadgen_1")
                  for r in a["series"].get(k, [])), default=0)
    notes.append(
        f"API reads: {a['rounds']} rounds; in each, {a['seconds']} s (after {a['warmup']} s "
        f"of warm-up) per measurement of the agent and Podman, longer (up to "
        f"{a['max_seconds']} s) until {a['min_requests']} answers came "
        f"({a['min_requests'] // 2} on one connection), and {a['ceiling_seconds']} s for "
        "nginx. Podman is measured on the request with which the agent asks it for the "
        "managed containers (`" + a["podman_request"] + "`): the same containers; "
        "bodies: agent " + f"{a['bytes']['agent']:,}" +
        " bytes, Podman " + f"{a['bytes']['podman']:,}" + " bytes. Podman's list costs "
        "about a millisecond per container here (for each it takes file locks, the test "
        "environment's `lock_type = \"file\"`, and reads its database): over all rounds "
        f"{n('podman_loadgen')} requests to Podman and {n('agent_loadgen')} to the agent at "
        f"{a['connections']} connections, {n('podman_loadgen_1')} and "
        f"{n('agent_loadgen_1')} on one connection"
        + (f"; with {fewest} in the smallest run, a p99 there is close to the max. "
           if fewest < 100 else ". ") + "loadgen "
        "(bench/api/loadgen.c: HTTP/1.1 keep-alive, one thread) measures Podman over its "
        "unix socket and the agent and nginx over TCP; wrk (one thread) measures the agent "
        "and nginx. nginx serves the agent's own answer from a private config with one "
        "worker.")
if node and node.get("deploy"):
    d = node["deploy"]
    notes.append(
        f"Deploy: {d['rounds']} rounds, the order of the three rotating each round; the "
        "agent's deploys are sequential POST /v1/services/NAME/deploy with an operator "
        "policy that creates and starts without a health wait; the peers create the same "
        "spec (" + d["spec"] + ") through Podman's REST API from a Python script, and with "
        "`podman run -d` (bench/deploy/peers.py).")
if node and node.get("memory"):
    notes.append("Memory: VmRSS from /proc of the agent and of the `podman system service` "
                 "process, " + str(len(node['memory']['idle_0']['agent_kib'])) +
                 " samples 0.5 s apart at each point. Podman's figure leaves out its conmon "
                 "per container. The agent's Lua heap, for reference: " + ", ".join(
                     f"{k} {node['memory'][k]['agent_lua_kib'] / 1024:.1f} MiB"
                     for k in ("idle_0", "idle_100", "after_api_100")
                     if node['memory'].get(k, {}).get('agent_lua_kib')) + ".")
if healths:
    notes.append(f"Health: bench/health run {len(healths)} times (each: "
                 f"{healths[0]['setup']['targets']} targets at {healths[0]['setup']['interval']}, "
                 f"{healths[0]['loaded']['wall_seconds']:.0f} s measured). The peer is "
                 "`podman healthcheck run` of a container whose health command is the same "
                 "check (busybox wget of / inside the container): CPU of podman and the "
                 "children it waits for, without conmon.")
if policy:
    notes.append("Policy call: bench/policy/policy_bench.c links the core, sets up the "
                 "agent's runtime (agent_setup) and compiles the hook with lua/mcp/sandbox.lua "
                 "as policies are (JIT off); runtime_pcall is the agent's protected entry with "
                 "its traceback handler. sandbox.isolate is how the agent's Lua calls a "
                 "policy hook: a task of its own with the limits, waited for by polling "
                 "with mcp.sleep (1 ms first), which sets its floor.")
lines += [f"- {n}" for n in notes]
bad = [k for k, v in steps.items() if not v["ok"]]
if bad:
    lines += ["", "**Steps that failed in this run: " + ", ".join(bad) +
              "** (their rows are missing or show —).", ""]
lines += ["", "Reproduce: `make deps && make bench` as root on a Debian 12 host "
          "(bench/run.sh; about 7 minutes). Every step's script can also run alone; see "
          "the header of bench/run.sh.", ""]
with open(out_md, "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
PY
report=$?
echo "bench: wrote bench/results/latest.md and latest.json in $(( $(date +%s) - started )) s"
[ -z "$failed" ] || { echo "bench: failed:$failed" >&2; exit 1; }
exit "$report"
