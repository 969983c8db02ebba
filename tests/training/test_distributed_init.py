"""Multi-host start-up (training/distributed.py) against JAX's own cluster detection: on a simulated
Cloud TPU VM pod (the metadata server's answers that JAX reads) and inside a SLURM job step, the
program calls jax.distributed.initialize so that JAX resolves the layout the environment describes;
a bare SLURM allocation, srun -n 1 and a plain machine stay one process. jax.distributed.initialize
is replaced by a recorder that resolves its arguments with JAX's detection, as the real one does
first, and connects nothing. The simulation uses JAX internals (jax._src.clusters); where this JAX
has them in another shape, those tests skip."""

import os
import subprocess
import sys

import jax
import pytest

from bert_vs_transformer.config_args import REPO_ROOT
from bert_vs_transformer.training import distributed

try:
    from jax._src import clusters as jax_clusters
    from jax._src.clusters import cloud_tpu_cluster
except ImportError:  # another JAX layout
    jax_clusters = cloud_tpu_cluster = None

# A v4-32 pod as `gcloud compute tpus tpu-vm create` makes it, seen from worker 2: the instance
# attributes JAX's GceTpuCluster reads (worker-network-endpoints in its name:id:ip form).
POD_METADATA = {
    "agent-worker-number": "2",
    "worker-network-endpoints": "w-0:0:10.130.0.4,w-1:1:10.130.0.5,w-2:2:10.130.0.6,w-3:3:10.130.0.7",
    "accelerator-type": "v4-32",
    "tpu-env": "ACCELERATOR_TYPE: 'v4-32'\nTOPOLOGY: '2x2x4'\nWORKER_ID: '2'\n",
}
CLUSTER_VARS = ("SLURM_", "OMPI_", "TPU_", "MEGASCALE_", "KUBERNETES_SERVICE_HOST", "JAX_COORDINATOR_ADDRESS",
                "JAX_PLATFORMS", "JAX_LOCAL_DEVICE_IDS", "JAX_COORDINATOR_PORT")


def _need_jax_detection():
    needed = [(cloud_tpu_cluster, "get_metadata"), (cloud_tpu_cluster, "GceTpuCluster"),
              (jax_clusters, "ClusterEnv")]
    if cloud_tpu_cluster is None or not all(hasattr(m, a) for m, a in needed) or not hasattr(
            jax_clusters.ClusterEnv, "auto_detect_unset_distributed_params"):
        pytest.skip(f"jax {jax.__version__} detects clusters through other internals than this test simulates")


@pytest.fixture
def recorded(monkeypatch):
    """Calls to jax.distributed.initialize: (its kwargs, the layout JAX's detection resolves them to)."""
    for key in list(os.environ):
        if key.startswith(CLUSTER_VARS):
            monkeypatch.delenv(key)
    calls = []

    def initialize(**kwargs):
        resolved = None
        if jax_clusters is not None and hasattr(jax_clusters.ClusterEnv, "auto_detect_unset_distributed_params"):
            try:
                resolved = jax_clusters.ClusterEnv.auto_detect_unset_distributed_params(
                    coordinator_address=kwargs.get("coordinator_address"), num_processes=kwargs.get("num_processes"),
                    process_id=kwargs.get("process_id"), local_device_ids=kwargs.get("local_device_ids"),
                    cluster_detection_method=None, initialization_timeout=5)
            except TypeError:
                pytest.skip(f"jax {jax.__version__}'s cluster detection takes other arguments")
        calls.append((kwargs, resolved))

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    return calls


def _simulate_cloud_tpu_vm(monkeypatch, tmp_path, metadata):
    """What JAX sees on a Cloud TPU VM: the TPU runtime, TPU chips (its running_in_cloud_tpu_vm flag)
    and the GCE metadata server's instance attributes."""
    _need_jax_detection()
    libtpu = tmp_path / "libtpu.so"
    libtpu.write_bytes(b"")
    monkeypatch.setenv("TPU_LIBRARY_PATH", str(libtpu))
    for module in (cloud_tpu_cluster, sys.modules.get("jax._src.clusters.cluster")):
        if module is not None and hasattr(module, "running_in_cloud_tpu_vm"):
            monkeypatch.setattr(module, "running_in_cloud_tpu_vm", True)
    queried = []

    def get_metadata(key):
        queried.append(key)
        return (metadata[key], 200) if key in metadata else ("", 404)

    monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", get_metadata)
    if not cloud_tpu_cluster.GceTpuCluster.is_env_present():
        pytest.skip(f"jax {jax.__version__} recognises a Cloud TPU VM through other internals than this test sets")
    queried.clear()
    return queried


def test_cloud_tpu_vm_pod_initialises_from_the_metadata_server(recorded, monkeypatch, tmp_path):
    queried = _simulate_cloud_tpu_vm(monkeypatch, tmp_path, POD_METADATA)
    distributed.initialize_distributed()
    assert len(recorded) == 1, recorded
    kwargs, (coordinator, num_processes, process_id, local_device_ids) = recorded[0]
    assert kwargs == {}  # nothing the program passes overrides JAX's detection
    # worker 0's address (JAX's fixed port 8482), 4 workers, this one worker 2; TPU devices are not narrowed
    assert (coordinator, num_processes, process_id, local_device_ids) == ("10.130.0.4:8482", 4, 2, None)
    assert {"agent-worker-number", "worker-network-endpoints"} <= set(queried)


def test_jax_platforms_without_tpu_skips_the_pod(recorded, monkeypatch, tmp_path):
    """JAX_PLATFORMS=cpu on a TPU VM (testing on its CPU): one process, the metadata server untouched."""
    queried = _simulate_cloud_tpu_vm(monkeypatch, tmp_path, POD_METADATA)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    distributed.initialize_distributed()
    assert recorded == [] and queried == []


def test_tpu_runtime_without_a_pod_is_one_process(tmp_path):
    """libtpu installed on a machine that is no TPU VM: the real jax.distributed.initialize finds no
    cluster and raises before connecting; the run goes on as one process."""
    libtpu = tmp_path / "libtpu.so"
    libtpu.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARS)}
    env["TPU_LIBRARY_PATH"] = str(libtpu)
    driver = ("import os, jax; from bert_vs_transformer.training import distributed as d; "
              "assert d.plan(os.environ)[0] == d.TPU; d.initialize_distributed(); "
              "print(jax.distributed.is_initialized(), jax.process_count())")
    proc = subprocess.run([sys.executable, "-c", driver], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "1"]


# A job step of `srun --nodes=2 --ntasks-per-node=4`, seen from task 5 (node002's second task).
SRUN_STEP = {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node[001-002]", "SLURM_NTASKS": "8",
             "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NUM_NODES": "2",
             "SLURM_STEP_NODELIST": "node[001-002]", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}


def test_slurm_job_step_initialises_from_slurm(recorded, monkeypatch):
    _need_jax_detection()
    for key, value in SRUN_STEP.items():
        monkeypatch.setenv(key, value)
    distributed.initialize_distributed()
    # JAX's port for job 77: 61440 + 77 % 4096; this task's GPU is its local id
    assert recorded == [({}, ("node001:61517", 8, 5, [1]))]
    recorded.clear()
    distributed.initialize_distributed("node001:20077")  # the sbatch script names the coordinator
    assert recorded == [({"coordinator_address": "node001:20077"}, ("node001:20077", 8, 5, [1]))]


@pytest.mark.parametrize("env", [
    {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node[001-002]", "SLURM_NTASKS": "8", "SLURM_NNODES": "2"},  # salloc
    {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node001", "SLURM_NTASKS": "8", "SLURM_PROCID": "0",
     "SLURM_LOCALID": "0"},  # the batch script
    dict(SRUN_STEP, SLURM_STEP_NUM_TASKS="1", SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0"),  # srun -n 1
], ids=["salloc_shell", "batch_script", "srun_one_task"])
def test_slurm_without_a_multi_task_step_stays_one_process(recorded, monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    distributed.initialize_distributed()
    assert recorded == []


def test_explicit_flags_and_a_plain_machine(recorded):
    distributed.initialize_distributed()
    assert recorded == []  # no cluster, no TPU runtime here: one process, nothing started
    distributed.initialize_distributed("host0:1234", 2, 1, [0, 1])
    assert recorded[0][0] == {"coordinator_address": "host0:1234", "num_processes": 2, "process_id": 1,
                              "local_device_ids": [0, 1]}
    with pytest.raises(distributed.DistributedError, match="need --coordinator_address"):
        distributed.initialize_distributed(None, 2, 1)


def test_main_reports_an_incomplete_layout_in_one_line(tmp_path):
    """The real jax.distributed.initialize, given a coordinator but no process count outside any
    cluster: one line, exit 2, nothing written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARS)}
    env["JAX_PLATFORMS"] = "cpu"
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bert_vs_transformer.main", "--config=configs/transformer.py:tiny",
                           f"--workdir={workdir}", "--coordinator_address=localhost:12399"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: jax.distributed (flags) cannot start:") and "--num_processes" in last, last
    assert "Traceback" not in proc.stderr and not workdir.exists()
