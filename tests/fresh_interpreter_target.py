"""A module run by tests/test_fresh_interpreter.py as ``python -m``: it prints what a fresh interpreter is."""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
from pathlib import Path

if __name__ == "__main__":
    done = Path(os.environ["FRESH_TARGET_ATEXIT"])
    atexit.register(done.write_text, "exit functions ran")
    print("noise on stderr", file=sys.stderr)
    print(
        json.dumps(
            {
                "name": __name__,
                "argv": sys.argv[1:],
                "cwd": os.getcwd(),
                "sys_path": sys.path,
                "env": {k: v for k, v in os.environ.items() if k.startswith("FRESH_TARGET")},
                "stdin": sys.stdin.read(),
                "session_leader": os.getsid(0) == os.getpid(),
                "umask": re.search(r"^Umask:\s*(\d+)", Path("/proc/self/status").read_text(), re.M).group(1),
                "parent_marker": "fresh_interpreter_parent_marker" in sys.modules,
                "this_package": sorted(m for m in sys.modules if m.split(".")[0] == "pytest_layername"),
            }
        )
    )
    if sys.argv[1:] == ["sleep"]:
        import time

        time.sleep(600)
    raise SystemExit(int(os.environ.get("FRESH_TARGET_EXIT", "0")))
