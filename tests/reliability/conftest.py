from __future__ import annotations

import json
import os

from .helpers import FIGURES, LONG


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES:
        return
    terminalreporter.section(f"tensordb reliability figures ({'long' if LONG else 'CI'} mode)")
    for key in sorted(FIGURES):
        terminalreporter.write_line(f"{key:<40} {FIGURES[key]}")
    out = os.environ.get("TENSORDB_FIGURES_FILE")
    if out:
        with open(out, "w") as f:
            json.dump(dict(sorted(FIGURES.items())), f, indent=1)
