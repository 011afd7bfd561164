"""Shared helpers for benchmarks: timing, RSS, result tables and JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def peak_rss_mb() -> float:
    """Peak resident set size of this process image, in MiB.

    Reads VmHWM, which (unlike ru_maxrss) does not carry the parent's peak over fork+exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_bytes(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def timed(fn, *args, **kwargs) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def run_worker(script: str, *args: str) -> dict[str, Any]:
    """Run ``script --worker ...`` in a fresh process (so its peak RSS is its own) and parse its JSON."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def print_targets(ratios: dict[str, float], targets: dict[str, bool]) -> None:
    """The closing table every benchmark prints: its ratios, then each target met or missed."""
    print_table(
        "Ratios and targets",
        [{"metric": k, "value": v} for k, v in ratios.items()]
        + [{"metric": k, "value": "met" if v else "MISSED"} for k, v in targets.items()],
        ["metric", "value"],
    )


def write_json(name: str, payload: dict[str, Any], path: str | None = None) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = path or os.path.join(RESULTS_DIR, f"{name}.json")
    payload = {
        "benchmark": name,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        **payload,
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"\nwrote {path}")
    return path
