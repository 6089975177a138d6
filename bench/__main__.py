"""Run every benchmark module in its own process so one's warm caches do not flatter another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    only = set(sys.argv[1:])
    rc = 0
    for path in sorted(here.glob("bench_*.py")):
        name = path.stem
        if only and name not in only and name.removeprefix("bench_") not in only:
            continue
        print(f"# {name}", flush=True)
        proc = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=here.parent)
        rc = rc or proc.returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
