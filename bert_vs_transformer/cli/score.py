"""Score translations against references, with BLEU counted as each paper counts it.

    bvt-score --hypotheses=FILE --references=FILE [--language=de]
    python -m bert_vs_transformer.cli.score --hypotheses=FILE --references=FILE

Both files are detokenized UTF-8 text, one sentence per line, line-aligned. Prints one JSON line:
bleu (sacreBLEU 13a, cased: the comparable number), bleu_lowercase, bleu_tokenized (Moses-tokenized,
the multi-bleu convention), bleu_compound_split (tokenized, compounds split as ##AT##-##AT##: t2t's
get_ende_bleu.sh), chrf, each with its `<key>_signature`, and the length statistics. --language is
the Moses tokenizer's language (the target's). docs/results.md says which published number each
key compares with.
"""

from __future__ import annotations

import json
import os
import sys

from bert_vs_transformer.cli import ArgumentParser, report
from bert_vs_transformer.data import sources
from bert_vs_transformer.evaluation import bleu


def read_lines(flag: str, path: str) -> list[str]:
    """The lines of `path` (strict UTF-8); a missing, unreadable or empty file is a DataError naming it."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise sources.DataError(f"--{flag}={path}: {e.strerror}; pass a text file, one sentence per line") from None
    if not raw:
        raise sources.DataError(f"--{flag}={path} is empty: nothing to score")
    return sources.decode_lines(raw, path)


def score_files(hypotheses: str, references: str, language: str = "de") -> dict:
    """translation_metrics of two line-aligned files, with num_sentences and the files' paths."""
    hyps, refs = read_lines("hypotheses", hypotheses), read_lines("references", references)
    if len(hyps) != len(refs):
        raise sources.LineCountMismatchError(
            f"--hypotheses={hypotheses} has {len(hyps)} lines but --references={references} has {len(refs)}; "
            "they must be line-aligned")
    out = bleu.translation_metrics(hyps, refs, language=language)
    out.update(num_sentences=len(hyps), hypotheses=os.path.abspath(hypotheses),
               references=os.path.abspath(references))
    return out


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hypotheses", required=True, help="translations, one per line (detokenized)")
    parser.add_argument("--references", required=True, help="references, line-aligned with --hypotheses")
    parser.add_argument("--language", default="de", help="target language, for the Moses tokenizer (default de)")
    args = parser.parse_args(argv)
    try:
        res = score_files(args.hypotheses, args.references, args.language)
    except sources.DataError as e:
        return report(e, show_traceback=args.verbose)
    print(json.dumps(res), flush=True)
    return 0


def run():
    """Console-script entry point (bvt-score)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
