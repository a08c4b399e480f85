"""What the start-up hook costs a Python process that never imports mteb.

Compares interpreter start-up (``python -c pass``) with the hook installed against the same with
the hook's module pre-empted (an empty module of the same name first on ``PYTHONPATH``), over
interleaved runs; prints the median of each and the ratio. Also checks that such a process imports
neither mteb nor this package.

    python benchmarks/startup_hook_cost.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = 40


def main() -> None:
    with tempfile.TemporaryDirectory() as stub_dir:
        open(os.path.join(stub_dir, "mteb_finegrain_autoload.py"), "w").close()  # a no-op stand-in
        with_hook = {**os.environ}
        without_hook = {**os.environ, "PYTHONPATH": stub_dir}
        times = {"with hook": [], "without hook": []}
        for _ in range(RUNS):
            for label, env in (("with hook", with_hook), ("without hook", without_hook)):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
                times[label].append(time.perf_counter() - start)
        modules = subprocess.run([sys.executable, "-c", "import sys; print(sorted(m for m in sys.modules if 'mteb' in m))"], env=with_hook, capture_output=True, text=True, check=True).stdout.strip()
    a, b = statistics.median(times["with hook"]), statistics.median(times["without hook"])
    print(f"python -c pass: {a * 1000:.1f} ms with the hook, {b * 1000:.1f} ms without: {a / b:.3f}x ({(a - b) * 1000:+.1f} ms)")
    print(f"modules with 'mteb' in their name in such a process: {modules}")


if __name__ == "__main__":
    main()
