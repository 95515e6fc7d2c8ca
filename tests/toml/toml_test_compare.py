"""The comparison half of run-toml-test.sh: runs each case and checks it.

Kept in Python because comparing JSON trees with the suite's rules (floats as
numbers, date-times normalised) is a few lines here and a page in C."""
import json
import math
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

SUITE = os.environ["TOML_TEST_DIR"]
DECODER = shlex.split(os.environ["MCP_AGENT"]) + ["toml-decode"]

DT = re.compile(r"^(\d{4}-\d{2}-\d{2})?[Tt ]?(\d{2}:\d{2}:\d{2})?(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")


def norm_datetime(text):
    m = DT.match(text)
    if not m:
        return ("unparsable", text)
    date, time, frac, off = m.groups()
    frac = Decimal("0" + frac) if frac else Decimal(0)
    off = "+00:00" if off in ("Z", "z", "-00:00") else off
    return (date, time, frac.normalize(), off)


def is_leaf(v):
    return (isinstance(v, dict) and set(v) == {"type", "value"}
            and isinstance(v["type"], str) and isinstance(v["value"], str))


def leaf_equal(want, got):
    if want["type"] != got["type"]:
        return False
    t, a, b = want["type"], want["value"], got["value"]
    if t == "float":
        try:
            fa, fb = float(a), float(b)
        except ValueError:
            return False
        return (math.isnan(fa) and math.isnan(fb)) or fa == fb
    if t == "integer":
        return int(a) == int(b)
    if t in ("datetime", "datetime-local", "date-local", "time-local"):
        return norm_datetime(a) == norm_datetime(b)
    return a == b


def diff(want, got, path="$"):
    """Returns a description of the first difference, or None."""
    if is_leaf(want):
        if not is_leaf(got) or not leaf_equal(want, got):
            return f"{path}: want {json.dumps(want)}, got {json.dumps(got)}"
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or is_leaf(got):
            return f"{path}: want a table, got {json.dumps(got)[:80]}"
        if set(want) != set(got):
            return f"{path}: keys differ: want {sorted(want)}, got {sorted(got)}"
        for k in want:
            d = diff(want[k], got[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(want) != len(got):
            return f"{path}: want an array of {len(want)}, got {json.dumps(got)[:80]}"
        for i, (a, b) in enumerate(zip(want, got)):
            d = diff(a, b, f"{path}[{i}]")
            if d:
                return d
        return None
    return f"{path}: unexpected {json.dumps(want)} in the expected JSON"


def run(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        p = subprocess.run(DECODER, input=data, capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None, b"", b"timed out"
    return p.returncode, p.stdout, p.stderr


def check(case):
    kind, rel = case
    path = os.path.join(SUITE, rel)
    rc, out, err = run(path)
    first = err.decode("utf-8", "replace").strip().splitlines()[:1]
    if kind == "invalid":
        if rc == 1:
            return None
        return f"FAIL {rel}: want exit 1, got {rc}" + (f" ({first[0]})" if first else "")
    if rc != 0:
        return f"FAIL {rel}: exit {rc}" + (f": {first[0]}" if first else "")
    try:
        got = json.loads(out)
    except ValueError as e:
        return f"FAIL {rel}: output is not JSON ({e})"
    with open(path[:-5] + ".json", encoding="utf-8") as f:
        want = json.load(f)
    d = diff(want, got)
    return f"FAIL {rel}: {d}" if d else None


def cases():
    for kind in ("valid", "invalid"):
        root = os.path.join(SUITE, kind)
        for dirpath, _, files in os.walk(root):
            for name in files:
                if name.endswith(".toml"):
                    rel = os.path.relpath(os.path.join(dirpath, name), SUITE)
                    yield kind, rel


def main():
    todo = sorted(cases())
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(check, todo))
    failed = [r for r in results if r]
    for r in failed:
        print(r)
    print(f"toml-test: {len(todo) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
