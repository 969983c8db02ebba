"""Translation scores from sacreBLEU (Post, 2018), counted as each paper counts them.

One set of hypotheses and references gives every number the literature quotes (docs/results.md says
which published number each compares with):

| key                   | text scored                                        | BLEU tokenization |
|-----------------------|----------------------------------------------------|-------------------|
| `bleu`                | detokenized, cased (the comparable number)         | sacreBLEU 13a     |
| `bleu_lowercase`      | detokenized, lowercased                            | sacreBLEU 13a     |
| `bleu_tokenized`      | Moses-tokenized (tokenizer.perl -l LANG), cased    | none (multi-bleu) |
| `bleu_compound_split` | Moses-tokenized, then `a-b` -> `a ##AT##-##AT## b` | none (t2t get_ende_bleu.sh) |
| `chrf`                | detokenized                                        | chrF (characters) |

Every score is on sacreBLEU's 0-100 scale with its signature (`<key>_signature`), which a results
table should quote next to it. The Moses tokenizer is sacremoses with tokenizer.perl's defaults (no
`-a` dash splitting, XML escaping on).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from typing import Any, Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacremoses import MosesTokenizer

# t2t's get_ende_bleu.sh: perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'. Non-overlapping and left to
# right as perl's /g, so "a-b-c" -> "a ##AT##-##AT## b-c". (sacremoses' aggressive_dash_splits writes
# "@-@", another convention.)
_COMPOUND = re.compile(r"(\S)-(\S)")


def _reference_streams(references: Sequence[Any], n: int) -> list[list[str]]:
    """One reference per hypothesis (a list of str), or several (a list of lists of str, one
    list per hypothesis, all of the same length) -> sacreBLEU's reference streams."""
    if len(references) != n:
        raise ValueError(f"{n} hypotheses but {len(references)} references")
    if n == 0:
        raise ValueError("no hypotheses to score")
    if all(isinstance(r, str) for r in references):
        return [list(references)]
    counts = {len(r) for r in references}
    if len(counts) != 1:
        raise ValueError(f"every hypothesis needs the same number of references, got {sorted(counts)}")
    return [[r[j] for r in references] for j in range(counts.pop())]


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Any], *, lowercase: bool = False,
                tokenize: str = "13a") -> tuple[float, str, Any]:
    """sacreBLEU corpus BLEU -> (score 0-100, signature string, sacrebleu BLEUScore)."""
    refs = _reference_streams(references, len(hypotheses))
    metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    score = metric.corpus_score(list(hypotheses), refs)
    return float(score.score), str(metric.get_signature()), score


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[Any]) -> tuple[float, str, Any]:
    """sacreBLEU chrF (character 6-grams, beta 2) -> (score 0-100, signature, CHRFScore)."""
    refs = _reference_streams(references, len(hypotheses))
    metric = CHRF()
    score = metric.corpus_score(list(hypotheses), refs)
    return float(score.score), str(metric.get_signature()), score


@functools.lru_cache(maxsize=8)
def _moses(language: str) -> MosesTokenizer:
    return MosesTokenizer(lang=language)


def moses_tokenize(lines: Sequence[str], language: str) -> list[str]:
    """Each line as Moses' tokenizer.perl -l `language` writes it (sacremoses, escaping on)."""
    tok = _moses(language)
    return [tok.tokenize(line, return_str=True) for line in lines]


def split_compounds(lines: Sequence[str]) -> list[str]:
    """Hyphenated compounds of tokenized lines split as t2t's get_ende_bleu.sh does (`##AT##-##AT##`)."""
    return [_COMPOUND.sub(r"\1 ##AT##-##AT## \2", line) for line in lines]


def _map_references(references: Sequence[Any], fn) -> list[Any]:
    if all(isinstance(r, str) for r in references):
        return fn(list(references))
    return [fn(list(r)) for r in references]


def translation_metrics(hypotheses: Sequence[str], references: Sequence[Any], *,
                        language: str = "de") -> dict[str, Any]:
    """All the scores of the module docstring's table for detokenized hypotheses and references.

    Keys: bleu, bleu_lowercase, bleu_tokenized, bleu_compound_split, chrf (floats, 0-100), each with
    `<key>_signature` (str); bleu_details (sacreBLEU's one-line summary of `bleu`),
    bleu_brevity_penalty, bleu_length_ratio (floats), hyp_len, ref_len (13a tokens), language.
    `language` is the target language, for the Moses tokenizer.
    """
    bleu, bleu_sig, detail = corpus_bleu(hypotheses, references)
    bleu_lc, bleu_lc_sig, _ = corpus_bleu(hypotheses, references, lowercase=True)
    chrf, chrf_sig, _ = corpus_chrf(hypotheses, references)
    tok_hyps = moses_tokenize(hypotheses, language)
    tok_refs = _map_references(references, lambda rs: moses_tokenize(rs, language))
    bleu_tok, tok_sig, _ = corpus_bleu(tok_hyps, tok_refs, tokenize="none")
    bleu_cs, cs_sig, _ = corpus_bleu(split_compounds(tok_hyps), _map_references(tok_refs, split_compounds),
                                     tokenize="none")
    moses = f"moses:{language}|sacremoses:{importlib.metadata.version('sacremoses')}"
    return {
        "bleu": bleu,
        "bleu_lowercase": bleu_lc,
        "bleu_tokenized": bleu_tok,
        "bleu_compound_split": bleu_cs,
        "chrf": chrf,
        "bleu_signature": bleu_sig,
        "bleu_lowercase_signature": bleu_lc_sig,
        "bleu_tokenized_signature": f"{tok_sig}|{moses}",
        "bleu_compound_split_signature": f"{cs_sig}|{moses}|compound:##AT##",
        "chrf_signature": chrf_sig,
        "bleu_details": str(detail),
        "bleu_brevity_penalty": float(detail.bp),
        "bleu_length_ratio": float(detail.sys_len) / max(float(detail.ref_len), 1.0),
        "hyp_len": int(detail.sys_len),
        "ref_len": int(detail.ref_len),
        "language": language,
    }
