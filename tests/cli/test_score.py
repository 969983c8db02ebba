"""bvt-score: one JSON line whose every score equals sacrebleu's on the same files (tokenized here
with sacremoses and the ##AT## substitution written out); bad files are one line, exit 2."""

import json
import os
import re
import subprocess
import sys

import pytest
import sacrebleu
from sacremoses import MosesTokenizer

from bert_vs_transformer.cli import score

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HYPS = ["Ein Mann fährt mit dem Fahrrad die Nord-Süd-Straße entlang.", 'Er sagte: „Das ist ein Test-Fall."',
        "", "Zwei Hunde spielen im Schnee & rennen."]
REFS = ["Ein Mann fährt mit dem Rad die Nord-Süd-Straße entlang.", 'Er sagte: „Das ist ein Test-Fall!"',
        "Ein Kind schläft.", "Zwei Hunde spielen im Schnee und rennen."]


def _score(*args):
    return subprocess.run([sys.executable, "-m", "bert_vs_transformer.cli.score", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_score_equals_sacrebleu(tmp_path):
    hyp, ref = _write(tmp_path / "hyp.de", HYPS), _write(tmp_path / "ref.de", REFS)
    proc = _score(f"--hypotheses={hyp}", f"--references={ref}", "--language=de")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    moses = MosesTokenizer(lang="de")
    tok_h = [moses.tokenize(s, return_str=True) for s in HYPS]
    tok_r = [moses.tokenize(s, return_str=True) for s in REFS]

    def atat(lines):
        return [re.sub(r"(\S)-(\S)", r"\1 ##AT##-##AT## \2", s) for s in lines]

    expected = {
        "bleu": sacrebleu.corpus_bleu(HYPS, [REFS]).score,
        "bleu_lowercase": sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True).score,
        "bleu_tokenized": sacrebleu.corpus_bleu(tok_h, [tok_r], tokenize="none").score,
        "bleu_compound_split": sacrebleu.corpus_bleu(atat(tok_h), [atat(tok_r)], tokenize="none").score,
        "chrf": sacrebleu.corpus_chrf(HYPS, [REFS]).score,
    }
    for key, value in expected.items():
        assert res[key] == pytest.approx(value, abs=1e-9), key
    assert res["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|")
    assert res["num_sentences"] == 4 and res["language"] == "de"


@pytest.mark.parametrize("case, says", [
    ("missing", "--references={tmp}/nope.de: No such file or directory"),
    ("lines", "--hypotheses={tmp}/hyp.de has 4 lines but --references={tmp}/short.de has 3"),
    ("latin1", "{tmp}/latin1.de:1: not UTF-8"),
    ("empty", "--references={tmp}/empty.de is empty"),
])
def test_bad_files_are_one_line(tmp_path, capsys, case, says):
    hyp = _write(tmp_path / "hyp.de", HYPS)
    refs = {"missing": str(tmp_path / "nope.de"), "lines": _write(tmp_path / "short.de", REFS[:3]),
            "empty": _write(tmp_path / "empty.de", [])}
    (tmp_path / "latin1.de").write_bytes("Straße\n".encode("latin-1") * 4)
    refs["latin1"] = str(tmp_path / "latin1.de")
    assert score.main([f"--hypotheses={hyp}", f"--references={refs[case]}"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err, out.err
    assert out.err.startswith("error: ") and says.format(tmp=tmp_path) in out.err


def test_console_script_reports_bad_files_in_one_line(tmp_path):
    proc = _score(f"--hypotheses={tmp_path}/nope.de", f"--references={tmp_path}/nope.de")
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: --hypotheses={tmp_path}/nope.de: No such file or directory; pass a text file, one sentence per line"]
