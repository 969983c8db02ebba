"""Translation end to end: sacreBLEU/GLUE metrics, batched decoding of a split, the translate and
average_checkpoints commands.

What is checked against what: BLEU/chrF (cased, lowercased, several references) against
sacrebleu's own corpus_bleu/corpus_chrf; GLUE metrics against scikit-learn and scipy; batched,
length-sorted decoding (with padding rows and sharded parameters) against each sentence decoded
alone; on a tiny Transformer trained 40 steps on the real Multi30k: the translate command against
the library, the --evaluate_split BLEU against sacrebleu run on its own output and the raw
reference file, and the averaged checkpoint against the numpy mean of the checkpoints' parameters
(also restored through checkpoints.Checkpointer, as the training loop resumes).
"""

import json
import os
import subprocess
import sys
import threading

import flax.linen as nn
import jax
import numpy as np
import pytest
import sacrebleu
import sacremoses

from bert_vs_transformer import config_args, evaluation
from bert_vs_transformer.data import sources
from bert_vs_transformer.evaluation import bleu as bleu_metrics, metrics, translation as translation_eval
from bert_vs_transformer.models import decoding, transformer
from bert_vs_transformer.config_args import REPO_ROOT
from bert_vs_transformer.training import run_loading

# ---------------------------------------------------------------------------------------------
# Metrics.

HYPS = [
    "The cat sat on the mat.",
    "the quick brown fox jumps over the lazy dog",
    "Ein Mann fährt Fahrrad auf der Straße.",
    "Hello, World!",
]
REFS = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumped over the lazy dog.",
    "Ein Mann fährt auf der Straße Fahrrad.",
    "hello world",
]
REFS2 = [
    "A cat sat on the mat.",
    "A fast brown fox leaps over a lazy dog.",
    "Ein Mann radelt auf der Straße.",
    "Hello, world!",
]


def test_bleu_and_chrf_equal_sacrebleu():
    m = bleu_metrics.translation_metrics(HYPS, REFS)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert m["bleu_lowercase"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True).score, abs=1e-9)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    assert m["bleu_lowercase"] > m["bleu"] > 0  # "the quick", "hello world" only match lowercased
    version = sacrebleu.__version__
    assert m["bleu_signature"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{version}"
    assert m["bleu_lowercase_signature"] == f"nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:{version}"
    assert m["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no")
    score = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert m["bleu_brevity_penalty"] == pytest.approx(score.bp)
    assert (m["hyp_len"], m["ref_len"]) == (score.sys_len, score.ref_len)
    print(f"\n{m['bleu_details']}\nchrF {m['chrf']:.2f} [{m['chrf_signature']}]")


def test_several_references():
    both = [[a, b] for a, b in zip(REFS, REFS2)]
    score, sig, _ = bleu_metrics.corpus_bleu(HYPS, both)
    assert score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS, REFS2]).score, abs=1e-9)
    assert sig.startswith("nrefs:2|")
    chrf, _, _ = bleu_metrics.corpus_chrf(HYPS, both)
    assert chrf == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS, REFS2]).score, abs=1e-9)
    assert bleu_metrics.corpus_bleu(REFS, REFS)[0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="4 hypotheses but 3 references"):
        bleu_metrics.translation_metrics(HYPS, REFS[:3])


def test_glue_metrics_equal_sklearn_and_scipy():
    from scipy import stats
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    for trial in range(5):
        y = rng.integers(0, 2, 200)
        p = np.where(rng.random(200) < 0.7, y, 1 - y)
        assert metrics.accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p))
        assert metrics.matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p), abs=1e-12)
        assert metrics.f1_score(p, y) == pytest.approx(skm.f1_score(y, p), abs=1e-12)
        y3, p3 = rng.integers(0, 3, 100), rng.integers(0, 3, 100)  # multi-class MCC
        assert metrics.matthews_corrcoef(p3, y3) == pytest.approx(skm.matthews_corrcoef(y3, p3), abs=1e-12)
        a = rng.normal(size=150)
        b = a + rng.normal(size=150)
        ta, tb = np.round(a * 2) / 2, np.round(b)  # many ties: average ranks
        assert metrics.pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
        assert metrics.spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)
        assert metrics.spearman(ta, tb) == pytest.approx(stats.spearmanr(ta, tb)[0], abs=1e-12)
    # Degenerate cases, sklearn's conventions.
    y = np.array([0, 1, 1, 0])
    const = np.ones(4, int)
    assert metrics.matthews_corrcoef(const, y) == skm.matthews_corrcoef(y, const) == 0.0
    assert metrics.f1_score(np.zeros(4), np.zeros(4)) == 0.0
    assert np.isnan(metrics.pearson(const, y))
    glue = metrics.glue_metrics("mrpc", [1, 0, 1, 1], [1, 0, 0, 1])
    assert glue == {"f1": pytest.approx(0.8), "accuracy": 0.75}
    assert set(metrics.glue_metrics("stsb", [0.1, 2.0, 3.5], [0.0, 2.5, 5.0])) == {"pearson", "spearman"}
    assert set(metrics.glue_metrics("cola", [0, 1], [0, 1])) == {"mcc"}
    with pytest.raises(ValueError, match="unknown GLUE task"):
        metrics.glue_metrics("qqp", [0], [0])


# ---------------------------------------------------------------------------------------------
# Batched decoding on a small random model.

VOCAB, WIDTH = 32, 16
LENGTHS = [5, 1, 9, 3, 12, 5, 2]


@pytest.fixture(scope="module")
def random_model():
    cfg = config_args.model_config(
        "configs/transformer.py:tiny", vocab_size=VOCAB, d_model=32, num_heads=4, d_ff=64,
        num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0,
    )
    x = np.ones((1, 4), np.int32)
    p = nn.unbox(transformer.EncoderDecoder(cfg).init(jax.random.PRNGKey(0), x, x)["params"])
    p = jax.tree_util.tree_map(np.asarray, p)
    p["token_embed"]["embedding"] = p["token_embed"]["embedding"] * 0.1  # the source steers the output
    p["decoder"]["layers_1"]["ffn_norm"]["scale"] = p["decoder"]["layers_1"]["ffn_norm"]["scale"] * 40.0
    rng = np.random.default_rng(1)
    sources = [np.concatenate([rng.integers(3, VOCAB, n - 1), [1]]).astype(np.int32) for n in LENGTHS]
    # EOS: an id greedy decoding emits (after its first two steps) in some sentences, not all, so
    # outputs mix early ends with runs to the length limit.
    probe = np.asarray(decoding.greedy_decode(cfg, p, _padded(sources), eos_id=VOCAB))  # VOCAB: never emitted
    rows = np.zeros(VOCAB, int)
    for tok in range(1, VOCAB):
        hits = [np.flatnonzero(r == tok) for r in probe]
        if all(len(h) == 0 or h[0] >= 2 for h in hits):
            rows[tok] = sum(len(h) > 0 for h in hits)
    rows[rows == len(sources)] = 0
    assert rows.max() > 0, probe
    return cfg, p, sources, int(np.argmax(rows))


def _padded(sources):
    out = np.zeros((len(sources), WIDTH), np.int32)
    for i, s in enumerate(sources):
        out[i, : len(s)] = s
    return out


def test_decode_ids_sorted_batches_equal_each_sentence_alone(random_model, devices):
    """Sources of mixed lengths, batch_size 3 (a last batch with padding rows), width buckets:
    every output equals the sentence's own decode (a row's result does not depend on its batch or
    padding; tests/test_decoding.py), in input order; parameters sharded over the 8 devices give
    the same result (gathered onto one device)."""
    cfg, params, sources, eos = random_model
    mesh = jax.sharding.Mesh(np.array(devices), ("x",))
    sharded = jax.tree_util.tree_map(
        lambda a: jax.device_put(a, jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec("x") if a.ndim and a.shape[0] % 8 == 0 else jax.sharding.PartitionSpec())),
        params)
    assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
               for x in jax.tree_util.tree_leaves(sharded))
    on_device = translation_eval.params_on_device(sharded)
    assert all(len(x.devices()) == 1 for x in jax.tree_util.tree_leaves(on_device))
    seen = []
    for beam in (None, 3):
        out = translation_eval.decode_ids(cfg, on_device, sources, eos_id=eos, beam_size=beam, alpha=0.6,
                                          batch_size=3, buckets=(4, 8, WIDTH),
                                          progress=lambda d, n, s: seen.append((d, n)))
        if beam:
            ref = np.asarray(decoding.beam_search(cfg, params, _padded(sources), eos_id=eos, beam_size=beam)[0])
        else:
            ref = np.asarray(decoding.greedy_decode(cfg, params, _padded(sources), eos_id=eos))
        ended = 0
        for src, got, alone in zip(sources, out, ref):
            hits = np.flatnonzero(alone == eos)
            n = hits[0] + 1 if hits.size else len(src) + decoding.EXTRA_LENGTH
            ended += bool(hits.size)
            np.testing.assert_array_equal(got, alone[:n])
        print(f"\n{'beam' if beam else 'greedy'} (eos {eos}): {ended}/{len(sources)} outputs end in EOS; "
              f"lengths {[len(o) for o in out]}")
        assert 0 < ended < len(sources) or beam
    assert seen[:3] == [(3, 7), (6, 7), (7, 7)]


def test_decode_spread_over_processes_equals_one_process(random_model):
    """Two processes (threads here, with an all-gather that stacks what each passes): process p
    decodes sentences p, p + 2, ..., and both get every output, equal to one process's decode_ids."""
    cfg, params, sources, eos = random_model
    kw = dict(eos_id=eos, beam_size=None, batch_size=3, buckets=(4, 8, WIDTH))
    alone = translation_eval.decode_ids(cfg, params, sources, **kw)
    barrier, parts, results = threading.Barrier(2), {}, {}

    def allgather(p):
        def gather(x):
            parts[p] = x
            barrier.wait()
            stacked = np.stack([parts[0], parts[1]])
            barrier.wait()
            return stacked
        return gather

    def run(p):
        results[p] = translation_eval.decode_spread(cfg, params, sources, process_index=p, process_count=2,
                                                    allgather=allgather(p), **kw)

    threads = [threading.Thread(target=run, args=(p,)) for p in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(results) == [0, 1]
    for p in range(2):
        assert len(results[p]) == len(sources)
        for got, want in zip(results[p], alone):
            np.testing.assert_array_equal(got, want)


def _bleu_evaluator(config):
    return next(e for e in evaluation.build(config) if isinstance(e, translation_eval.BleuEvaluator))


def _context(config, params):
    return evaluation.Context(task=None, mesh=None, configs=[config], members=[0], member_params=lambda k: params,
                              params=params, loss_sums=None)


def test_bleu_evaluator_off_for_synthetic():
    config = config_args.load("configs/transformer.py:tiny")
    config.data.dataset = "synthetic"
    assert _bleu_evaluator(config).evaluate(_context(config, None)) == {0: {}}


# ---------------------------------------------------------------------------------------------
# On a tiny Transformer trained on the real Multi30k.

STEPS, EVERY = 40, 10
LINES = ["A man is riding a bicycle.", "Two dogs play in the snow.", "",
         "A woman in a red dress is walking down the street.", "Children are playing.", "A dog runs."]


def _env(tmp):
    data_dir = os.environ.get("BVT_DATA_DIR")
    assert data_dir, "set BVT_DATA_DIR to the shared datasets (CI: ../shared/data)"
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1", BVT_DATA_DIR=os.path.abspath(data_dir),
               TFDS_DATA_DIR=str(tmp / "tfds"))
    env.setdefault("BVT_JAX_CACHE_DIR", os.path.join(REPO_ROOT, ".jax_cache"))
    env["JAX_COMPILATION_CACHE_DIR"] = env["BVT_JAX_CACHE_DIR"]
    return env


def _run(args, env, timeout=300):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """configs/transformer.py:tiny, 40 steps on Multi30k, checkpoints at 20, 30, 40 (keep 3)."""
    tmp = tmp_path_factory.mktemp("m30k")
    env = _env(tmp)
    workdir = str(tmp / "run")
    _run(["bert_vs_transformer.main", "--config=configs/transformer.py:tiny", f"--workdir={workdir}",
          f"--config.num_train_steps={STEPS}", f"--config.checkpoint_every_steps={EVERY}",
          f"--config.eval_every_steps={STEPS}", "--config.log_every_steps=10", "--config.keep_checkpoints=3"],
         env, timeout=600)
    return workdir, env, tmp


def _config(workdir, tmp):
    config = run_loading.load_config(workdir)
    config.data.tfds_data_dir = str(tmp / "tfds")  # the subprocesses' $TFDS_DATA_DIR
    return config


def test_translate_command_matches_the_library(run, tmp_path):
    workdir, env, tmp = run
    src = tmp_path / "in.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    proc = _run(["bert_vs_transformer.cli.translate", f"--workdir={workdir}", f"--input={src}", f"--output={out}",
                 "--beam_size=4", "--batch_size=2"], env)
    got = out.read_text(encoding="utf-8").split("\n")
    assert got[-1] == "" and len(got) == len(LINES) + 1
    got = got[:-1]
    assert got[2] == "" and all(got[i] for i in (0, 1, 3, 4, 5)), got  # 40 steps: "Ein Mann ..."
    assert "sentences/s" in proc.stderr and f"step {STEPS}" in proc.stderr

    config, params, step = run_loading.load_run(workdir)
    assert step == STEPS
    config.data.tfds_data_dir = str(tmp / "tfds")
    texts = [line for line in LINES if line]
    expected, _ = translation_eval.translate_texts(config, params, texts, beam_size=4, batch_size=2)
    assert [g for g in got if g] == expected
    print("\n" + "\n".join(f"{s} -> {t}" for s, t in zip(texts, expected)))

    # stdin -> stdout, greedy.
    proc = subprocess.run([sys.executable, "-m", "bert_vs_transformer.cli.translate", f"--workdir={workdir}",
                           "--beam_size=0"], input="\n".join(texts[:2]) + "\n", cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    greedy, _ = translation_eval.translate_texts(config, params, texts[:2], beam_size=None)
    assert proc.stdout.splitlines() == greedy


def test_evaluate_split_bleu_equals_sacrebleu_on_its_output(run, tmp_path):
    workdir, env, tmp = run
    n = 12
    hyp_file = tmp_path / "hyp.de"
    proc = _run(["bert_vs_transformer.cli.translate", f"--workdir={workdir}", "--evaluate_split=test",
                 f"--max_examples={n}", "--beam_size=4", f"--output={hyp_file}"], env)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["num_examples"] == n and res["split"] == "test" and res["beam_size"] == 4 and res["step"] == STEPS
    for k in ("bleu", "bleu_lowercase", "chrf"):
        assert np.isfinite(res[k]) and 0 <= res[k] <= 100, res
    assert res["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    hyps = hyp_file.read_text(encoding="utf-8").splitlines()
    with open(os.path.join(env["BVT_DATA_DIR"], "multi30k", "test_2016_flickr.de"), encoding="utf-8") as f:
        refs = [next(f).rstrip("\n") for _ in range(n)]
    assert len(hyps) == n
    assert res["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert res["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)
    assert res["chrf"] > 0, res  # a 40-step model gets some characters right
    # The tokenized and compound-split BLEU of the same decode (bleu_variants tests the conventions).
    tok = sacremoses.MosesTokenizer(lang="de")
    tok_h, tok_r = [tok.tokenize(h, return_str=True) for h in hyps], [tok.tokenize(r, return_str=True) for r in refs]
    assert res["bleu_tokenized"] == pytest.approx(sacrebleu.corpus_bleu(tok_h, [tok_r], tokenize="none").score, abs=1e-9)
    assert res["bleu_compound_split"] == pytest.approx(sacrebleu.corpus_bleu(
        bleu_metrics.split_compounds(tok_h), [bleu_metrics.split_compounds(tok_r)], tokenize="none").score, abs=1e-9)
    print(f"\ntest[:{n}] beam 4: BLEU {res['bleu']:.2f} [{res['bleu_signature']}], chrF {res['chrf']:.2f}")

    # The training loop's hook (in-process, greedy, a few validation sentences).
    config = _config(workdir, tmp)
    with config.unlocked():
        config.evals.bleu.max_examples = 8
    params, _ = run_loading.restore_params(workdir, config)
    ev = _bleu_evaluator(config).evaluate(_context(config, params))[0]
    assert set(ev) >= {"eval_bleu", "eval_bleu_lowercase", "eval_bleu_tokenized", "eval_bleu_compound_split", "eval_chrf"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in ev.values()), ev


def test_evaluate_files_and_a_later_test_set(run, tmp_path, monkeypatch):
    """--evaluate_files scores any pair of files as bvt-score would; the same pairs as a test set by name
    (a fixture test_2017_flickr, its sums recorded for the test) decode and score the same; a test set
    whose files are absent is one line naming them."""
    workdir, env, tmp = run
    n = 6
    root = tmp_path / "raw"
    (root / "multi30k").mkdir(parents=True)
    files = {}
    for lang in ("en", "de"):
        with open(os.path.join(env["BVT_DATA_DIR"], "multi30k", f"test_2016_flickr.{lang}"), encoding="utf-8") as f:
            lines = [next(f).rstrip("\n") for _ in range(n)]
        path = root / "multi30k" / f"test_2017_flickr.{lang}"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        files[lang] = (str(path), lines)
    hyp_file = tmp_path / "hyp.de"
    proc = _run(["bert_vs_transformer.cli.translate", f"--workdir={workdir}", "--beam_size=0", "--batch_size=8",
                 f"--evaluate_files={files['en'][0]},{files['de'][0]}", f"--output={hyp_file}"], env)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    hyps = hyp_file.read_text(encoding="utf-8").splitlines()
    assert res["num_examples"] == n == len(hyps) and res["source_file"] == files["en"][0] and res["step"] == STEPS
    expected = bleu_metrics.translation_metrics(hyps, files["de"][1], language="de")
    keys = ("bleu", "bleu_lowercase", "bleu_tokenized", "bleu_compound_split", "chrf")
    assert {k: res[k] for k in keys} == pytest.approx({k: expected[k] for k in keys}, abs=1e-9)

    fake = {f"multi30k/test_2017_flickr.{lang}": sources.UNSTAGED[f"multi30k/test_2017_flickr.{lang}"]._replace(
        sha256=sources.sha256_file(path), num_lines=n) for lang, (path, _) in files.items()}
    monkeypatch.setattr(sources, "UNSTAGED", {**sources.UNSTAGED, **fake})
    config = _config(workdir, tmp)
    config.data.raw_data_dir = str(root)
    params, _ = run_loading.restore_params(workdir, config)
    split = translation_eval.bleu(config, params, "test_2017_flickr", beam_size=None, batch_size=8,
                                  return_translations=True)
    assert split["translations"] == hyps and split["split"] == "test_2017_flickr"
    assert {k: split[k] for k in keys} == pytest.approx({k: res[k] for k in keys}, abs=1e-9)

    proc = subprocess.run([sys.executable, "-m", "bert_vs_transformer.cli.translate", f"--workdir={workdir}",
                           "--evaluate_split=test_2017_mscoco"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(env, BVT_DATA_DIR=str(tmp_path / "empty")))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and lines[-1].startswith("error: "), proc.stderr
    assert "multi30k/test_2017_mscoco.en" in lines[-1] and "multi30k/test_2017_mscoco.de" in lines[-1]


def test_average_checkpoints(run, tmp_path):
    from bert_vs_transformer import tasks
    from bert_vs_transformer.models import partitioning
    from bert_vs_transformer.training import checkpoints, optim, train_step

    workdir, env, tmp = run
    out_dir = str(tmp_path / "avg")
    bad = subprocess.run([sys.executable, "-m", "bert_vs_transformer.cli.average_checkpoints", f"--workdir={workdir}",
                          f"--output_dir={out_dir}"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "only 3 exist" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    proc = _run(["bert_vs_transformer.cli.average_checkpoints", f"--workdir={workdir}", "--last=3",
                 f"--output_dir={out_dir}"], env)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["steps"] == [20, 30, 40] and info["output_step"] == 40

    config = _config(workdir, tmp)
    each = [jax.device_get(run_loading.restore_params(workdir, config, s)[0]) for s in (20, 30, 40)]
    avg, step = run_loading.restore_params(out_dir, config)
    assert step == 40
    expected = jax.tree_util.tree_map(lambda *xs: np.mean(np.stack([np.asarray(x, np.float64) for x in xs]), 0), *each)
    flat_e, flat_a = jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(jax.device_get(avg))
    assert len(flat_e) == len(flat_a)
    for e, a in zip(flat_e, flat_a):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)
    assert not np.allclose(flat_a[0], jax.tree_util.tree_leaves(each[-1])[0])  # it is not just the last

    # The layout the training loop restores: full state (optimizer state and step of checkpoint 40) + data state.
    task = tasks.get_task(config)
    tx, _ = optim.make_optimizer(config.optimizer, int(config.model.d_model), int(config.num_train_steps))
    mesh = partitioning.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    abstract, _ = train_step.abstract_state(task, tx, int(config.data.batch_size), int(config.seed), mesh)
    ours = checkpoints.Checkpointer(out_dir, async_save=False)
    theirs = checkpoints.Checkpointer(workdir, async_save=False)
    try:
        state, data_state = ours.restore(40, abstract)
        last, last_data = theirs.restore(40, abstract)
        assert ours.saved_config(40) == theirs.saved_config(40)
    finally:
        ours.close()
        theirs.close()
    assert int(state.step) == 40 and data_state == last_data and data_state
    for a, b in zip(jax.tree_util.tree_leaves(state.opt_state), jax.tree_util.tree_leaves(last.opt_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree_util.tree_leaves(state.params), flat_a):
        np.testing.assert_array_equal(np.asarray(a), b)

    # translate reads the averaged directory.
    res = json.loads(_run(["bert_vs_transformer.cli.translate", f"--workdir={out_dir}", "--evaluate_split=test",
                           "--max_examples=4", "--beam_size=0"], env).stdout.strip().splitlines()[-1])
    assert res["step"] == 40 and np.isfinite(res["bleu"])
    with open(os.path.join(out_dir, "averaged.json")) as f:
        assert json.load(f)["40"]["steps"] == [20, 30, 40]
