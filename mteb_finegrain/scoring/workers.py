"""The worker processes a stage's scoring runs in, and starting them ahead of time.

Scoring runs one job per (layer, level) on every core this process was given, in joblib's
reusable loky worker processes (each job limited to one thread; see ``runner.score_stage``).
Starting a worker (a fresh interpreter importing numpy, SciPy and scikit-learn) takes a second or
two, which a run whose embeddings are all cached would otherwise wait for before its first score:
``start_scoring_workers`` starts them while the caller goes on loading the model.
"""

from __future__ import annotations

import atexit

import joblib
from joblib import Parallel, delayed

# The pending warm-up (a joblib generator): kept so that it is not collected, which would abort it
# and stop the workers it started; consumed by ``wait_for_scoring_workers``.
_warming = None


def n_scoring_jobs() -> int:
    """The cores this process was given: torch's intra-op threads (set by OMP_NUM_THREADS or a sweep
    job's --threads-per-job), at most the CPUs it may use (affinity, cgroup quota)."""
    import torch

    return max(1, min(joblib.cpu_count(), torch.get_num_threads()))


def worker_ready() -> bool:
    # Importing the job module is the work: the worker then holds every library a scoring job needs.
    import mteb_finegrain.scoring.layer_level  # noqa: F401

    return True


def start_scoring_workers() -> None:
    """Start ``n_scoring_jobs()`` workers in the background and return at once (nothing with one core).

    ``score_stage``'s jobs then run on the same reusable workers. Without this call the workers
    start when the first stage is scored; the scores are the same either way.
    """
    global _warming
    n_jobs = n_scoring_jobs()
    if n_jobs < 2 or _warming is not None:
        return
    _warming = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(delayed(worker_ready)() for _ in range(n_jobs))


def wait_for_scoring_workers() -> None:
    """Finish the warm-up that ``start_scoring_workers`` began (if any) before scoring submits its jobs."""
    global _warming
    if _warming is not None:
        warming, _warming = _warming, None
        list(warming)


def shutdown_scoring_workers() -> None:
    """Stop the scoring worker processes and wait until they have exited.

    A pending warm-up is collected first. Scoring after this starts new workers. Called at exit
    (and by the test suite at its end), so that no worker outlives the process that started it.
    """
    wait_for_scoring_workers()
    # joblib's loky backend keeps one reusable executor in this module-level slot; looking it up
    # (rather than calling get_reusable_executor) never creates or resizes one.
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)


# A run that ends before scoring (an error, nothing left to run) would leave the warm-up to be
# collected at exit, which joblib reports as unused results: it is collected, then the workers
# are stopped.
atexit.register(shutdown_scoring_workers)
