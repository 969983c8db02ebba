#!/bin/bash
# Device lease entry point (run from the repo root): unpack, install, prebuild data, run driver.py.
# bash launch/gpu_lease/run.sh: the scripts come from the tree the lease copies (always current);
# .device/ (carried, git-ignored: prepare.sh) holds only the wheels and the payload.
set -u
T=$(date +%s)
export W=${W:-/tmp/w}; mkdir -p $W
if [ -z "${LOCAL:-}" ]; then . .device/device/install.sh || exit 1; fi
rm -rf /tmp/p && mkdir -p /tmp/p && xz -dc .device/payload.tar.xz | tar xf - -C /tmp/p || exit 1
if [ -d /tmp/p/minilm ]; then python3 launch/gpu_lease/expand_minilm.py /tmp/p/minilm /tmp/minilm /tmp/stub || exit 1; fi
# a pretrained model carried by prepare.sh (PT_HF=DIR): bert6 fine-tunes it instead of pretraining
if [ -d /tmp/p/pt ]; then export PT_HF=$(ls -d /tmp/p/pt/*); echo "carried model: PT_HF=$PT_HF"; fi
export PYTHONPATH=$PWD:/tmp/stub${PYTHONPATH:+:$PYTHONPATH} BVT_DATA_DIR=/tmp/p/data TFDS_DATA_DIR=/tmp/p/tfds \
  XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache PYTHONUNBUFFERED=1
(nvidia-smi; python3 -c "import jax, flax, orbax.checkpoint as o; print(jax.devices(), jax.__version__, flax.__version__)"; nproc) 2>&1 | tee $W/env.txt
(nvidia-smi dmon -s um -d 5 > $W/dmon.txt 2>&1 &)
for ds in ${DATASETS:-multi30k sst2 cola rte}; do
  python3 -m bert_vs_transformer.cli.data inspect --dataset=$ds --split=train --show=0 ${PT_HF:+--vocab_path=$PT_HF/vocab.txt} 2>&1 | tail -1 | cut -c1-160
done
echo "setup took $(( $(date +%s) - T ))s"
# PICK_FLAGS=1: time the candidates' pretraining step first, export the fastest's XLA_FLAGS and PT_STEPS
# (a later call on the same machine, without PICK_FLAGS, reads the choice back from $W/pick_flags/exports.sh)
if [ -n "${PICK_FLAGS:-}" ]; then eval "$(python3 launch/gpu_lease/pick_flags.py)"; echo "XLA_FLAGS='${XLA_FLAGS:-}' PT_STEPS=${PT_STEPS:-default} after $(( $(date +%s) - T ))s"
elif [ -f $W/pick_flags/exports.sh ]; then . $W/pick_flags/exports.sh; echo "from an earlier call: XLA_FLAGS='${XLA_FLAGS:-}'"; fi
DEADLINE=$(( ${TOTAL:-470} - ($(date +%s) - T) )) python3 launch/gpu_lease/driver.py
