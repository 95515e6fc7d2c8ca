#!/bin/sh
# Times the TOML parser against Python 3's tomllib on the same generated
# file, in the same run, and writes bench/results/toml.json.
#
#   TOML_BENCH_MB     size of the generated file in MB (default 10)
#   TOML_BENCH_RUNS   parses timed for the C parser (default 10)
#   TOML_BENCH_PYRUNS parses timed for tomllib (default 3; it is slow)
#   CC                compiler for the bench program (default cc)
#
# Medians are what to compare; min and max show the noise. Nothing here
# asserts a time: the figures are for people and for docs/toml.md.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
mb=${TOML_BENCH_MB:-10}
runs=${TOML_BENCH_RUNS:-10}
pyruns=${TOML_BENCH_PYRUNS:-3}
out=build/bench
mkdir -p "$out" bench/results
file=$out/toml-fleet-${mb}mb.toml
[ -f "$file" ] || python3 bench/toml/gen.py "$file" "$mb"
${CC:-cc} -std=c11 -Wall -Wextra -Werror -O2 core/toml.c bench/toml/toml_bench.c -lm \
    -o "$out/toml_bench"

c_json=$("$out/toml_bench" "$file" "$runs")
py_json=$(python3 - "$file" "$pyruns" <<'PY'
import json, sys, time, tomllib, statistics
path, runs = sys.argv[1], int(sys.argv[2])
with open(path, "rb") as f:
    data = f.read()
ms = []
for _ in range(runs):
    t0 = time.perf_counter()
    tomllib.loads(data.decode("utf-8"))
    ms.append((time.perf_counter() - t0) * 1e3)
print(json.dumps({"runs": runs, "median_ms": round(statistics.median(ms), 2),
                  "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2)}))
PY
)

C_JSON=$c_json PY_JSON=$py_json FILE=$file CCNAME=${CC:-cc} python3 - <<'PY'
import datetime, json, os, platform, subprocess
c = json.loads(os.environ["C_JSON"])
py = json.loads(os.environ["PY_JSON"])
cpu = ""
try:
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
except OSError:
    pass
cc = subprocess.run([os.environ["CCNAME"], "--version"], capture_output=True, text=True)
ratio = py["median_ms"] / c["median_ms"] if c["median_ms"] > 0 else None
result = {
    "benchmark": "toml-parse",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "file": {"path": os.environ["FILE"], "bytes": c["bytes"],
             "generator": "bench/toml/gen.py"},
    "c_toml_parse": {k: c[k] for k in ("runs", "median_ms", "min_ms", "max_ms")},
    "python_tomllib": py,
    "speedup_median": round(ratio, 1) if ratio else None,
    "c_mb_per_s": round(c["bytes"] / 1e6 / (c["median_ms"] / 1e3), 1),
    "env": {"cpu": cpu, "cpus": os.cpu_count(),
            "cc": cc.stdout.splitlines()[0] if cc.stdout else "",
            "cflags": "-O2", "python": platform.python_version()},
}
with open("bench/results/toml.json", "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
mb = c["bytes"] / 1e6
print(f"toml parse, {mb:.1f} MB: C median {c['median_ms']:.1f} ms "
      f"(min {c['min_ms']:.1f}, max {c['max_ms']:.1f}, {c['runs']} runs); "
      f"tomllib median {py['median_ms']:.1f} ms "
      f"(min {py['min_ms']:.1f}, max {py['max_ms']:.1f}, {py['runs']} runs); "
      f"ratio {ratio:.1f}x")
print("wrote bench/results/toml.json")
PY
