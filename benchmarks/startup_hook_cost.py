"""What the start-up hook costs a Python process that never imports mteb.

The hook (``mteb_finegrain.pth``) runs in every Python process of the environment, so it must
cost nothing measurable there. This compares interpreter start-up (``python -c pass``) with the
hook installed against the same with the hook's module pre-empted (an empty module of the same
name first on ``PYTHONPATH``; an empty folder takes that place for the runs with the hook), over
interleaved runs, and reports the median of each and their
ratio. It also counts the modules of mteb, this package, torch, numpy and yaml that such a
process imports: the hook's own module must be the only one it adds.

    python benchmarks/startup_hook_cost.py [--runs 40]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from measurement import Figure, argument_parser, record

HEAVY = ("mteb", "mteb_finegrain", "torch", "numpy", "yaml")
LIST_HEAVY = f"import sys; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=40, help="interpreter starts with and without the hook (default: 40 each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as empty_dir, tempfile.TemporaryDirectory() as stub_dir:
        open(os.path.join(stub_dir, "mteb_finegrain_autoload.py"), "w").close()  # a no-op stand-in
        # Both put one folder first on the path, so the only difference is the hook's module.
        with_hook = {**os.environ, "PYTHONPATH": empty_dir}
        without_hook = {**os.environ, "PYTHONPATH": stub_dir}
        times = {"with hook": [], "without hook": []}
        for _ in range(args.runs):
            for label, env in (("with hook", with_hook), ("without hook", without_hook)):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
                times[label].append(time.perf_counter() - start)
        modules = subprocess.run([sys.executable, "-c", LIST_HEAVY], env=with_hook, capture_output=True, text=True, check=True).stdout.split()
    a, b = statistics.median(times["with hook"]), statistics.median(times["without hook"])
    print(f"python -c pass: {a * 1000:.1f} ms with the hook, {b * 1000:.1f} ms without: {a / b:.3f}x ({(a - b) * 1000:+.1f} ms)")
    print(f"modules of {', '.join(HEAVY)} in such a process: {modules or 'none'}")
    if not args.no_record:
        record(__file__, "default", [
            Figure("with_hook_ms", round(a * 1000, 1), "ms", about=f"median start-up of `python -c pass`, {args.runs} runs"),
            Figure("without_hook_ms", round(b * 1000, 1), "ms", about="the same with an empty stand-in for the hook"),
            Figure("ratio", round(a / b, 3), "x", about="with / without"),
            Figure("heavy_modules_imported", len(modules), target="== 0", about=f"modules of {', '.join(HEAVY)} in such a process"),
        ], results_dir=args.results_dir)


if __name__ == "__main__":
    main()
