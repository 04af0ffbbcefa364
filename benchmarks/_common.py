"""Helpers shared by the benchmark scripts: machine info, seed lists, child processes, tables, results.

Not part of the asyncdqn package; imported as `_common` by the scripts in this folder (a script's own folder
is first on sys.path when it is run as `python benchmarks/<script>.py`).

Result protocol of every script: a human-readable table, then one final line holding a JSON object (the
headline figures plus machine info), and with `--out PATH` the full result (per-run details) as a JSON file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """What the figures depend on. Versions are read from package metadata, so nothing heavy is imported."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "gymnasium": _version("gymnasium"),
        "stable_baselines3": _version("stable-baselines3"),
        "asyncdqn": _version("asyncdqn"),
        "platform": platform.platform(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def parse_seeds(text: str) -> list[int]:
    """'0..4' or '0-4' (inclusive ranges) and/or '0,3,7'."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        for sep in ("..", "-"):
            if sep in part.lstrip("-"):
                lo, hi = part.split(sep, 1)
                seeds.extend(range(int(lo), int(hi) + 1))
                break
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def median(xs) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def run_child(script: Path, spec: dict, timeout: float | None = None, python: str | None = None) -> dict:
    """Run `script --child SPEC --result-file F` in a fresh interpreter and return the dict it wrote to F.

    A fresh process per run keeps import state, torch thread pools and allocator caches from leaking
    between runs. The child's stdout/stderr are captured and shown only when it fails. `python`: the
    interpreter (default: this one), e.g. another venv's for a system that cannot live in the project's.
    """
    with tempfile.TemporaryDirectory(prefix="asyncdqn-bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [python or sys.executable, str(script), "--child", json.dumps(spec), "--result-file",
               str(result_file)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not result_file.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise RuntimeError(f"child run {spec} failed (exit {proc.returncode}):\n{tail}")
        return json.loads(result_file.read_text())


def fmt(value, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, spec)
    return str(value)


def print_table(title: str, columns: list[tuple[str, str]], rows: list[dict]) -> None:
    """columns: (key, format spec); a row's missing key prints '-'."""
    cells = [[fmt(row.get(key), spec) for key, spec in columns] for row in rows]
    widths = [max([len(key)] + [len(c[i]) for c in cells]) for i, (key, _) in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(key.rjust(w) for (key, _), w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def finish(result: dict, headline: dict, out: str | None) -> None:
    """Write the full result to `out` (if given) and print the headline as the final JSON line."""
    result.setdefault("machine", {})["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nfull result written to {path}")
    line = {"benchmark": result["benchmark"], "quick": result["quick"], **headline, "machine": result["machine"]}
    print(json.dumps(line, separators=(",", ":")))


def write_child_result(path: str, data: dict) -> None:
    Path(path).write_text(json.dumps(data))
