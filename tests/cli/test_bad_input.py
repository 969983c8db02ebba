"""Bad input to every command: a non-zero exit, one `error: ...` line (the last on stderr) naming the file,
field or value, no traceback; bvt-train leaves its workdir as it was. --verbose adds the traceback."""

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RAW = os.path.abspath(os.environ.get("BVT_DATA_DIR") or os.path.join(REPO, "..", "shared", "data"))
MAIN, CLI = "bert_vs_transformer.main", "bert_vs_transformer.cli."
TINY_CFG = "--config=configs/transformer.py:tiny"
TINY_RUN = [TINY_CFG, "--config.data.dataset=synthetic", "--config.num_train_steps=2",
            "--config.checkpoint_every_steps=2", "--config.eval_every_steps=2", "--config.model.d_model=32",
            "--config.model.d_ff=64", "--config.model.vocab_size=96", "--config.data.max_len=12",
            "--config.data.batch_size=16"]
EIGHT = {"JAX_NUM_CPU_DEVICES": "8",
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()}
NO_DATA = {"BVT_DATA_DIR": "{empty}", "TFDS_DATA_DIR": "{tfds}"}

# (id, [module, args...], env ("<stdin>": a file to read from), expected text of the error line, exit status).
# {name} is a path of the fixtures (see make_fixtures); {new} and {tfds} folders that do not exist yet. Cases
# whose id ends in "*" need the tiny trained run ({run}, and {corrupt}: its copy with truncated arrays).
CASES = [
    ("train: config file missing", [MAIN, "--config=configs/nope.py", "--workdir={new}"], {},
     "--config=configs/nope.py: config file not loaded ([Errno 2] No such file", 2),
    ("train: config variant missing", [MAIN, "--config=configs/bert.py:huge", "--workdir={new}"], {},
     "--config=configs/bert.py:huge: ValueError: unknown bert variant 'huge'", 2),
    ("train: wrong type", [MAIN, TINY_CFG, "--config.num_train_steps=abc", "--workdir={new}"], {},
     "--config.num_train_steps=abc: invalid literal for int()", 2),
    ("train: unknown field", [MAIN, TINY_CFG, "--config.nope=1", "--workdir={new}"], {}, "no such field 'nope'", 2),
    ("train: raw data missing", [MAIN, TINY_CFG, "--workdir={new}"], NO_DATA,
     "multi30k/train.en: not found at {empty}/multi30k/train.en", 2),
    ("train: raw data truncated", [MAIN, TINY_CFG, "--workdir={new}"], dict(NO_DATA, BVT_DATA_DIR="{bad_data}"),
     "multi30k/train.de: sha256 mismatch for {bad_data}/multi30k/train.de", 2),
    ("train: mesh of 3 on 8 devices", [MAIN, TINY_CFG, "--config.mesh.data=3", "--workdir={new}"], EIGHT,
     "config.mesh={'data': 3, 'fsdp': 1, 'tensor': 1} has 3 devices but 8 are available", 2),
    ("train: batch 12 on 8 devices", [MAIN, TINY_CFG, "--config.data.batch_size=12", "--workdir={new}"], EIGHT,
     "config.data.batch_size=12 is not divisible by the data-parallel size 8", 2),
    ("train: another model's workdir*", [MAIN, *TINY_RUN, "--config.model.d_model=64", "--workdir={run}"], {},
     "workdir {run} holds a checkpoint (step 2) of a different model", 2),
    ("translate: --input missing", [CLI + "translate", "--workdir={empty}", "--input={empty}/nope.txt"], {},
     "--input={empty}/nope.txt: No such file or directory", 2),
    ("translate: --input empty", [CLI + "translate", "--workdir={empty}", "--input={empty_file}"], {},
     "{empty_file} is empty: nothing to translate", 2),
    ("translate: --input not UTF-8", [CLI + "translate", "--workdir={empty}", "--input={latin1}"], {},
     "{latin1}:2: not UTF-8 (byte 0xe4 at column 2)", 2),
    ("translate: stdin not UTF-8", [CLI + "translate", "--workdir={empty}"], {"<stdin>": "{latin1}"},
     "<stdin>:2: not UTF-8 (byte 0xe4 at column 2)", 2),
    ("translate: --workdir missing", [CLI + "translate", "--workdir={empty}/nope", "--input={text}"], {},
     "workdir {empty}/nope does not exist", 2),
    ("translate: empty --workdir", [CLI + "translate", "--workdir={empty}", "--input={text}"], {},
     "no checkpoints directory {empty}/checkpoints", 2),
    ("translate: no checkpoint", [CLI + "translate", "--workdir={no_ckpt}", "--input={text}"], {},
     "no complete checkpoint in {no_ckpt}/checkpoints", 2),
    ("translate: truncated checkpoint*", [CLI + "translate", "--workdir={corrupt}", "--input={text}"], {},
     "checkpoint step 2 of {corrupt} cannot be read", 2),
    ("translate: --evaluate_files not a pair", [CLI + "translate", "--workdir={empty}", "--evaluate_files={text}"],
     {}, "--evaluate_files={text}: expected SRC,REF", 2),
    ("translate: --evaluate_files misaligned",
     [CLI + "translate", "--workdir={empty}", "--evaluate_files={text},{bad_data}/multi30k/train.de"], {},
     "--evaluate_files: {text} has 1 lines but {bad_data}/multi30k/train.de has 100", 2),
    ("export_hf: no checkpoint", [CLI + "export_hf", "--workdir={no_ckpt}", "--output={new}"], {},
     "no complete checkpoint in {no_ckpt}/checkpoints", 2),
    ("export_hf: truncated checkpoint*", [CLI + "export_hf", "--workdir={corrupt}", "--output={new}"], {},
     "checkpoint step 2 of {corrupt} cannot be read", 2),
    ("average_checkpoints: no checkpoint", [CLI + "average_checkpoints", "--workdir={no_ckpt}"], {},
     "no complete checkpoint in {no_ckpt}/checkpoints", 2),
    ("data inspect: raw data missing", [CLI + "data", "inspect", "--dataset=multi30k", "--tfds_data_dir={tfds}"],
     NO_DATA, "multi30k/train.en: not found at {empty}/multi30k/train.en", 2),
    ("data throughput: config file missing", [CLI + "data", "throughput", "--config=configs/nope.py"], {},
     "--config=configs/nope.py: config file not loaded", 2),
    ("glue_grid: --init folder missing", [CLI + "glue_grid", "--init={empty}/nope", "--root={new}", "--dry_run"],
     {}, "--init / --arch folder(s) ['{empty}/nope'] do not exist", 2),
    ("benchmark: config variant missing", [CLI + "benchmark", "--config=configs/bert.py:huge"], {},
     "--config=configs/bert.py:huge: ValueError: unknown bert variant 'huge'", 2),
    ("compare: config file missing", [CLI + "compare", "--bert=configs/nope.py"], {},
     "--bert=configs/nope.py: config file 'configs/nope.py' not found", 2),
]


def make_fixtures(tmp: str) -> dict[str, str]:
    """The files and folders CASES name (all but {run} and {corrupt}, which train_run makes)."""
    paths = {k: os.path.join(tmp, k) for k in ("empty", "no_ckpt", "bad_data", "run", "corrupt")}
    paths.update(empty_file=os.path.join(tmp, "empty.txt"), latin1=os.path.join(tmp, "latin1.txt"),
                 text=os.path.join(tmp, "text.txt"))
    os.makedirs(paths["empty"])
    os.makedirs(os.path.join(paths["no_ckpt"], "checkpoints"))
    for name, data in (("empty_file", b""), ("latin1", "ein Hund\nMädchen\n".encode("latin-1")),
                       ("text", b"a dog runs .\n")):
        with open(paths[name], "wb") as f:
            f.write(data)
    if os.path.isdir(os.path.join(RAW, "multi30k")):  # the real files, with train.de cut to 100 lines
        os.makedirs(os.path.join(paths["bad_data"], "multi30k"))
        for name in os.listdir(os.path.join(RAW, "multi30k")):
            os.symlink(os.path.join(RAW, "multi30k", name), os.path.join(paths["bad_data"], "multi30k", name))
        de = os.path.join(paths["bad_data"], "multi30k", "train.de")
        with open(de, "rb") as f:
            head = b"".join(f.readlines()[:100])
        os.remove(de)
        with open(de, "wb") as f:
            f.write(head)
    return paths


def train_run(paths: dict[str, str]) -> None:
    """{run}: two steps of a tiny synthetic Transformer; {corrupt}: a copy whose array files are cut in half."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ.get("BVT_JAX_CACHE_DIR", os.path.join(REPO, ".jax_cache")))
    proc = subprocess.run([sys.executable, "-m", MAIN, *TINY_RUN, f"--workdir={paths['run']}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(paths["run"], paths["corrupt"])
    state = os.path.join(paths["corrupt"], "checkpoints", "2", "state")
    for root, _, files in os.walk(state):
        if os.path.basename(root) == "d":
            for name in files:
                path = os.path.join(root, name)
                os.truncate(path, os.path.getsize(path) // 2)


def listing(path: str) -> dict[str, tuple[int, int]] | None:
    """relative path -> (size, mtime_ns) of every file under path; None if it does not exist."""
    if not os.path.exists(path):
        return None
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), path)] = (st.st_size, st.st_mtime_ns)
    return out


def fill_in(text: str, fill: dict[str, str]) -> str:
    for key, value in fill.items():
        text = text.replace("{" + key + "}", value)
    return text


def run_case(case, paths: dict[str, str]) -> dict:
    """Runs one case; -> its exit status, stderr, and its workdir's listing before and after."""
    name, argv, env, _, _ = case
    tmp, k = os.path.dirname(paths["empty"]), CASES.index(case)
    fill = dict(paths, new=os.path.join(tmp, f"new-{k}"), tfds=os.path.join(tmp, f"tfds-{k}"))
    argv = [fill_in(a, fill) for a in argv]
    env = {k: fill_in(v, fill) for k, v in env.items()}
    stdin = env.pop("<stdin>", None)
    workdir = next((a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")), None)
    before = listing(workdir) if argv[0] == MAIN else None
    start = time.time()
    with open(stdin or os.devnull, "rb") as f:
        proc = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, stdin=f, capture_output=True, timeout=300,
                              env=dict(os.environ, JAX_PLATFORMS="cpu", **env))
    after = listing(workdir) if argv[0] == MAIN else None
    return {"status": proc.returncode, "stderr": proc.stderr.decode("utf-8", "replace"), "before": before,
            "after": after, "fill": fill, "seconds": time.time() - start, "argv": argv}


def run_all(tmp: str, workers: int = 3) -> dict[str, dict]:
    """Every case's run_case result, by id (the cases that need the trained run start once it exists)."""
    paths = make_fixtures(tmp)
    with ThreadPoolExecutor(workers) as pool:
        training = pool.submit(train_run, paths)
        futures = {c[0]: pool.submit(run_case, c, paths) for c in CASES if not c[0].endswith("*")}
        training.result()
        futures.update({c[0]: pool.submit(run_case, c, paths) for c in CASES if c[0].endswith("*")})
        return {name: f.result() for name, f in futures.items()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_all(str(tmp_path_factory.mktemp("bad_input")))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, results):
    name, argv, _, expected, status = case
    res = results[name]
    if "{bad_data}" in expected and not os.path.isdir(os.path.join(RAW, "multi30k")):
        pytest.skip(f"no raw Multi30k files under {RAW}")
    lines = res["stderr"].rstrip("\n").splitlines()
    assert res["status"] == status, res["stderr"][-3000:]
    assert "Traceback" not in res["stderr"], res["stderr"][-3000:]
    assert lines and lines[-1].startswith("error: "), res["stderr"][-3000:]
    assert sum(line.startswith("error: ") for line in lines) == 1, res["stderr"][-3000:]
    assert fill_in(expected, res["fill"]) in lines[-1]
    if argv[0] == MAIN:  # nothing written: a new workdir is not created, an existing one is unchanged
        assert res["after"] == res["before"]


def test_verbose_shows_the_traceback():
    proc = subprocess.run([sys.executable, "-m", CLI + "compare", "--bert=configs/nope.py", "--verbose"], cwd=REPO,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error: --bert=configs/nope.py: config file")
