"""Multi-host start-up: jax.distributed from explicit flags, a SLURM job step, or JAX's own detection
of a Cloud TPU pod (the GCE metadata server on TPU VMs, the environment on GKE)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping, Sequence

import jax
from absl import logging

FLAGS, SLURM, TPU = "flags", "slurm", "tpu"


class DistributedError(RuntimeError):
    """jax.distributed could not be set up from the flags and the environment (reported in one line)."""


def plan(environ: Mapping[str, str], coordinator_address: str | None = None, num_processes: int | None = None,
         process_id: int | None = None, local_device_ids: Sequence[int] | None = None
         ) -> tuple[str, dict[str, Any] | None]:
    """How this process joins a multi-host run: (why, the kwargs of jax.distributed.initialize), or
    (why, None) for a single process. In order:

    - flags: --coordinator_address (or JAX_COORDINATOR_ADDRESS; JAX fills a missing --num_processes /
      --process_id from a SLURM step or a TPU pod);
    - slurm: inside a job step of several tasks (srun), JAX reads the layout from SLURM_*. A bare
      allocation (an salloc shell, the batch script itself, srun -n 1) is one process;
    - tpu: where the TPU runtime is installed (libtpu, or TPU_LIBRARY_PATH) and JAX_PLATFORMS allows
      it, JAX's own cluster detection: the GCE metadata server on a Cloud TPU VM, the TPU_* variables
      on GKE. Where it finds no pod, one process;
    - otherwise one process.
    """
    coordinator_address = coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator_address:
        kwargs: dict[str, Any] = dict(coordinator_address=coordinator_address)
        if num_processes is not None:
            kwargs["num_processes"] = num_processes
        if process_id is not None:
            kwargs["process_id"] = process_id
        if local_device_ids is not None:
            kwargs["local_device_ids"] = list(local_device_ids)
        return FLAGS, kwargs
    if num_processes is not None or process_id is not None:
        raise DistributedError("--num_processes/--process_id need --coordinator_address=HOST:PORT of process 0")
    if "SLURM_JOB_ID" in environ:
        tasks = environ.get("SLURM_STEP_NUM_TASKS", "")
        if tasks.isdigit() and int(tasks) > 1:
            return SLURM, {}
        return "a SLURM allocation without a job step of several tasks (start them with srun)", None
    if _tpu_runtime(environ):
        return TPU, {}
    return "no --coordinator_address, SLURM job step or TPU runtime", None


def _tpu_runtime(environ: Mapping[str, str]) -> bool:
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms and "tpu" not in platforms:
        return False
    library = environ.get("TPU_LIBRARY_PATH", "")
    return bool(library and os.path.isfile(library)) or importlib.util.find_spec("libtpu") is not None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> None:
    """jax.distributed.initialize as `plan` decides; raises DistributedError when it cannot start."""
    why, kwargs = plan(os.environ, coordinator_address, num_processes, process_id, local_device_ids)
    if kwargs is None:
        logging.info("one process: %s", why)
        return
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, TypeError) as e:  # JAX could not work out the layout
        if why != TPU:
            raise DistributedError(f"jax.distributed ({why}) cannot start: {e} Pass --coordinator_address=HOST:PORT, "
                                   "--num_processes and --process_id") from e
        # The TPU runtime is installed but JAX found no pod here (a CPU machine, a single TPU host).
        logging.info("one process: JAX found no TPU pod (%s)", e)
        if jax.process_count() > 1:
            raise DistributedError(f"{jax.process_count()} processes, but JAX found no pod to start jax.distributed "
                                   "from; pass --coordinator_address, --num_processes and --process_id") from e
        return
    except (RuntimeError, OSError) as e:  # the metadata server or the coordinator did not answer
        raise DistributedError(f"jax.distributed ({why}) cannot start: {type(e).__name__}: {e}") from e
    logging.info(
        "jax.distributed (%s): process %d of %d, %d local / %d global devices",
        why, jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
    )
