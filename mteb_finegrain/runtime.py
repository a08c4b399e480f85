"""Where and how a run's numbers were computed: device, precision, threads, CPU, BLAS, cache use.

Not part of the protocol (a result's settings say what was computed; this says on what). Kept
because the last bits of a score can depend on it: torch's intra-op threads and the BLAS library
change the order of floating-point sums.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from mteb_finegrain.coarse_tuning import training_precision

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``, else ``platform.processor()``)."""
    try:
        for line in CPUINFO.read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def blas_libraries() -> list[dict]:
    """The BLAS libraries loaded in this process, as threadpoolctl describes them (no file paths)."""
    from threadpoolctl import threadpool_info

    return [
        {"internal_api": info.get("internal_api"), "version": info.get("version"), "architecture": info.get("architecture"), "threads": info.get("num_threads")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]


def runtime_record(encoder: Any, embeddings: dict[str, dict], convergence_warnings: dict[str, int]) -> dict:
    """``runtime`` of one subset's result.

    Parameters
    ----------
    encoder : LayerEncoder
        The pretrained model's encoder (its device and dtype are those of every stage).
    embeddings : dict
        Stage -> how its embeddings and scores were obtained (texts encoded, cache, seconds).
    convergence_warnings : dict
        Stage -> probe fits that stopped at the iteration cap.

    Returns
    -------
    dict
        ``device``, ``encoding_dtype``, ``coarse_training_precision`` (None without hidden
        states, or without the coarse_tuned stage), ``torch_threads``, ``embeddings``, ``cpu``,
        ``blas``, ``convergence_warnings``.
    """
    # torch's intra-op threads change the order of floating-point sums: the same run on another
    # thread count can differ in the last bits, and so, rarely, in a score.
    runtime = {"device": None, "encoding_dtype": None, "coarse_training_precision": None, "torch_threads": torch.get_num_threads(), "embeddings": embeddings}
    if encoder.has_hidden_states:
        runtime.update(device=str(encoder.device), encoding_dtype=str(encoder.dtype).removeprefix("torch."))
        if "coarse_tuned" in embeddings:
            runtime["coarse_training_precision"] = training_precision(encoder.device)
    runtime["cpu"] = cpu_model()
    runtime["blas"] = blas_libraries()
    runtime["convergence_warnings"] = dict(convergence_warnings)
    return runtime
