"""BLEU as each paper counts it (evaluation/bleu.py): every key against sacrebleu run here on its
own, the Moses tokenization and the ##AT## compound split against hand-tokenized text (and perl's
own substitution where perl is installed)."""

import shutil
import subprocess

import pytest
import sacrebleu

from bert_vs_transformer.evaluation import bleu

HYPS = [
    'Er sagte: „Das ist ein Test-Fall."',
    "Ein Mann fährt mit dem Fahrrad (schnell) die Nord-Süd-Straße entlang.",
    "Zwei Hunde spielen im Schnee & rennen.",
    "eine Frau geht die Straße hinunter",
]
REFS = [
    'Er sagte: „Das ist ein Test-Fall!"',
    "Ein Mann fährt mit dem Rad die Nord-Süd-Straße entlang.",
    "Zwei Hunde spielen im Schnee und rennen.",
    "Eine Frau geht die Straße entlang.",
]
# The same sentences as Moses' tokenizer.perl -l de writes them (written out by hand: punctuation split
# off, hyphens inside words kept, & and " escaped as XML entities).
HYPS_TOK = [
    "Er sagte : „ Das ist ein Test-Fall . &quot;",
    "Ein Mann fährt mit dem Fahrrad ( schnell ) die Nord-Süd-Straße entlang .",
    "Zwei Hunde spielen im Schnee &amp; rennen .",
    "eine Frau geht die Straße hinunter",
]
REFS_TOK = [
    "Er sagte : „ Das ist ein Test-Fall ! &quot;",
    "Ein Mann fährt mit dem Rad die Nord-Süd-Straße entlang .",
    "Zwei Hunde spielen im Schnee und rennen .",
    "Eine Frau geht die Straße entlang .",
]
# ... and with t2t's compound split.
HYPS_ATAT = [
    "Er sagte : „ Das ist ein Test ##AT##-##AT## Fall . &quot;",
    "Ein Mann fährt mit dem Fahrrad ( schnell ) die Nord ##AT##-##AT## Süd ##AT##-##AT## Straße entlang .",
    "Zwei Hunde spielen im Schnee &amp; rennen .",
    "eine Frau geht die Straße hinunter",
]
REFS_ATAT = [
    "Er sagte : „ Das ist ein Test ##AT##-##AT## Fall ! &quot;",
    "Ein Mann fährt mit dem Rad die Nord ##AT##-##AT## Süd ##AT##-##AT## Straße entlang .",
    "Zwei Hunde spielen im Schnee und rennen .",
    "Eine Frau geht die Straße entlang .",
]


def test_moses_tokenization_by_hand():
    assert bleu.moses_tokenize(HYPS, "de") == HYPS_TOK
    assert bleu.moses_tokenize(REFS, "de") == REFS_TOK
    assert bleu.moses_tokenize(["Das kostet 3.000,50 Euro, oder?"], "de") == ["Das kostet 3.000,50 Euro , oder ?"]
    assert bleu.moses_tokenize(["It's a dog's life."], "en") == ["It &apos;s a dog &apos;s life ."]


COMPOUNDS = [
    ("Das ist ein Test-Fall .", "Das ist ein Test ##AT##-##AT## Fall ."),
    ("Ein Nord-Süd-Zug fährt .", "Ein Nord ##AT##-##AT## Süd ##AT##-##AT## Zug fährt ."),
    ("a-b-c", "a ##AT##-##AT## b-c"),  # perl's /g resumes after the consumed "b"
    ("-x y- - z", "-x y- - z"),  # a dash needs a non-space on both sides
    ("Ä-Ö ü-ß", "Ä ##AT##-##AT## Ö ü ##AT##-##AT## ß"),
]


def test_compound_split_by_hand():
    assert bleu.split_compounds([a for a, _ in COMPOUNDS]) == [b for _, b in COMPOUNDS]
    assert bleu.split_compounds(HYPS_TOK) == HYPS_ATAT and bleu.split_compounds(REFS_TOK) == REFS_ATAT


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is not installed")
def test_compound_split_equals_perl():
    text = "\n".join([a for a, _ in COMPOUNDS] + HYPS_TOK + REFS_TOK) + "\n"
    perl = subprocess.run(["perl", "-ple", r"s{(\S)-(\S)}{$1 ##AT##-##AT## $2}g"], input=text.encode("utf-8"),
                          capture_output=True, check=True, timeout=60).stdout.decode("utf-8")
    assert bleu.split_compounds(text.splitlines()) == perl.splitlines()


def test_every_key_equals_sacrebleu():
    m = bleu.translation_metrics(HYPS, REFS, language="de")
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert m["bleu_lowercase"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True).score, abs=1e-9)
    assert m["bleu_tokenized"] == pytest.approx(
        sacrebleu.corpus_bleu(HYPS_TOK, [REFS_TOK], tokenize="none").score, abs=1e-9)
    assert m["bleu_compound_split"] == pytest.approx(
        sacrebleu.corpus_bleu(HYPS_ATAT, [REFS_ATAT], tokenize="none").score, abs=1e-9)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    # The conventions differ on these sentences: 13a splits "Test-Fall" into three tokens, the
    # compound split too (as ##AT##-##AT##), plain Moses keeps it whole.
    assert len({round(m[k], 6) for k in ("bleu", "bleu_lowercase", "bleu_tokenized", "bleu_compound_split")}) == 4
    version = sacrebleu.__version__
    assert m["bleu_signature"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{version}"
    assert m["bleu_tokenized_signature"].startswith(f"nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:{version}|moses:de|")
    assert m["bleu_compound_split_signature"].endswith("|compound:##AT##")
    assert m["language"] == "de"


def test_several_references_are_tokenized_each():
    refs2 = ["Er sagte: „Das ist ein Testfall.“", "Ein Mann radelt die Nord-Süd-Straße entlang.",
             "Zwei Hunde spielen im Schnee.", "Eine Frau läuft die Straße hinunter."]
    m = bleu.translation_metrics(HYPS, [[a, b] for a, b in zip(REFS, refs2)], language="de")
    tok2 = bleu.moses_tokenize(refs2, "de")
    assert m["bleu_compound_split"] == pytest.approx(sacrebleu.corpus_bleu(
        HYPS_ATAT, [REFS_ATAT, bleu.split_compounds(tok2)], tokenize="none").score, abs=1e-9)
    assert m["bleu_signature"].startswith("nrefs:2|")
