"""Multi-host start-up: jax.distributed from explicit flags or the cluster's environment."""

from __future__ import annotations

import os
from typing import Sequence

import jax
from absl import logging

# Environment variables by which jax.distributed recognises a cluster it can auto-configure.
CLUSTER_ENV_VARS = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID",
                    "MEGASCALE_COORDINATOR_ADDRESS")


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> None:
    """jax.distributed.initialize from explicit flags, else auto-detection (TPU pods, SLURM).

    Single-process runs (no flags and no cluster environment) are left alone.
    """
    explicit = coordinator_address is not None
    on_cluster = any(k in os.environ for k in CLUSTER_ENV_VARS)
    if not explicit and not on_cluster:
        return
    kwargs = {}
    if explicit:
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
        if local_device_ids is not None:
            kwargs["local_device_ids"] = list(local_device_ids)
    jax.distributed.initialize(**kwargs)
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
    )
