"""python -m spoofloss.metrics on good and malformed score/key files (written to tmp_path)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("numpy")
from spoofloss import metrics  # noqa: E402
from spoofloss.metrics.cli import main  # noqa: E402

TAR, NON, SPF = 1, 0, 2


def write(path, header, rows, sep="\t", end="\n"):
    path.write_text(sep.join(header) + end + "".join(sep.join(map(str, r)) + end for r in rows))
    return str(path)


def track1_files(tmp_path, n=400, seed=0, extra=True):
    rng = np.random.default_rng(seed)
    lab = (rng.random(n) < 0.3).astype(np.int64)
    lab[:2] = [0, 1]
    score = np.round(rng.normal(size=n) + 1.5 * lab, 3)
    attack = np.where(lab == 1, "bonafide", np.array([f"A{a:02d}" for a in rng.integers(1, 5, n)]))
    codec = np.array([f"C{c}" for c in rng.integers(0, 3, n)])
    names = [f"E_{i:06d}" for i in range(n)]
    order = rng.permutation(n)  # the score file lists the trials in another order
    scores = write(tmp_path / "scores.tsv", ["filename", "cm-score"], [(names[i], score[i]) for i in order])
    header = ["filename", "cm-label"] + (["attack", "codec"] if extra else [])
    key = write(tmp_path / "key.tsv", header,
                [(names[i], "bonafide" if lab[i] else "spoof") + ((attack[i], codec[i]) if extra else ())
                 for i in range(n)])
    return scores, key, score, lab, attack, codec


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_track1_summary_and_tables(tmp_path, capsys):
    scores, key, s, lab, attack, codec = track1_files(tmp_path)
    code, out, err = run(["--cm", scores, "--cm_key", key, "--json", str(tmp_path / "o.json")], capsys)
    assert code == 0, err
    ts, tl = torch.from_numpy(s), torch.from_numpy(lab)
    d, e, c, a = metrics.min_dcf(ts, tl)[0], metrics.eer(ts, tl)[0], metrics.cllr(ts, tl), metrics.act_dcf(ts, tl)[0]
    # evaluation.py's lines, names and decimals
    assert out.startswith("# Track 1 Result: \n\n-eval_mindcf: {:.5f}\n-eval_eer (%): {:.3f}\n-eval_cllr (bits): "
                          "{:.5f}\n-eval_actDCF: {:.5f}\n\n".format(d, e * 100, c, a))
    assert "# Per attack" in out and "# Per codec" in out
    got = json.loads((tmp_path / "o.json").read_text())
    assert got["pooled"]["eer"] == e and got["pooled"]["min_dcf"] == d
    for name in sorted(set(attack[lab == 0])):
        keep = (lab == 1) | (attack == name)
        assert got["per_attack"][name]["eer"] == metrics.eer(ts[keep], tl[keep])[0]
        assert got["per_attack"][name]["min_dcf"] == metrics.min_dcf(ts[keep], tl[keep])[0]
        assert f"\n{name} " in out
    for name in sorted(set(codec)):
        keep = codec == name
        assert got["per_codec"][name]["eer"] == metrics.eer(ts[keep], tl[keep])[0]


def test_track1_spaces_crlf_blank_lines_and_aliases(tmp_path, capsys):
    scores, key, s, lab, _, _ = track1_files(tmp_path, extra=False)
    _, plain, _ = run(["--cm", scores, "--cm_key", key], capsys)
    # the same tables, written with spaces, CRLF, a blank line and the package's aliases
    rows = [line.split("\t") for line in open(scores).read().splitlines()[1:]]
    odd = tmp_path / "odd.tsv"
    odd.write_text("trial_anon   cm-score\r\n" + "\r\n".join("  ".join(r) for r in rows[:5]) + "\r\n\r\n"
                   + "\r\n".join(" \t".join(r) for r in rows[5:]) + "\r\n")
    krows = [line.split("\t") for line in open(key).read().splitlines()[1:]]
    key2 = write(tmp_path / "key2.tsv", ["filename", "cm_label"], krows)
    code, out, err = run(["--cm", str(odd), "--cm_keys", key2], capsys)
    assert code == 0, err
    assert out == plain


def track2_files(tmp_path, n=900, seed=1, absent=False):
    rng = np.random.default_rng(seed)
    lab = rng.choice([TAR, NON, SPF], size=n, p=[0.35, 0.3, 0.35])
    lab[:3] = [TAR, NON, SPF]
    cm = np.round(rng.normal(size=n) + 2 * (lab != SPF), 4)
    asv = np.round(rng.normal(size=n) + 3 * (lab == TAR) + 1.2 * (lab == SPF), 4)
    sasv = np.round(0.5 * cm + 0.5 * asv, 4)
    attack = np.where(lab == SPF, np.array([f"A{a}" for a in rng.integers(10, 13, n)]), "-")
    spk = [f"S_{k:03d}" for k in rng.integers(0, 30, n)]
    names = [f"T_{i:06d}" for i in range(n)]
    word = {TAR: "target", NON: "nontarget", SPF: "spoof"}
    scores = write(tmp_path / "sasv.tsv", ["spk", "filename", "cm-score", "asv-score", "sasv-score"],
                   [(spk[i], names[i], "-" if absent else cm[i], "-" if absent else asv[i], sasv[i])
                    for i in rng.permutation(n)])
    key = write(tmp_path / "sasv_key.tsv", ["spk", "filename", "cm-label", "asv-label", "attack_anon"],
                [(spk[i], names[i], "spoof" if lab[i] == SPF else "bonafide", word[lab[i]], attack[i])
                 for i in range(n)])
    return scores, key, cm, asv, sasv, lab, attack


def test_track2_tandem(tmp_path, capsys):
    scores, key, cm, asv, sasv, lab, attack = track2_files(tmp_path)
    code, out, err = run(["--sasv", scores, "--sasv_key", key, "--json", str(tmp_path / "o.json")], capsys)
    assert code == 0, err
    t = torch.from_numpy
    a = metrics.a_dcf(t(sasv), t(lab))[0]
    d = metrics.min_tdcf(t(cm), t((lab != SPF).astype(np.int64)), **metrics.ASVSPOOF5_ASV_ERROR_RATES)[0]
    te = metrics.t_eer(t(cm), t(asv), t(lab))[0]
    assert out.startswith("# Track 2 Result: \n\n-eval_adcf: {:.5f}\n-eval_tdcf: {:.5f}\n-eval_teer (%): {:.3f}\n\n"
                          .format(a, d, te * 100))
    got = json.loads((tmp_path / "o.json").read_text())
    for name in sorted(set(attack[lab == SPF])):
        keep = (lab != SPF) | (attack == name)
        assert got["per_attack"][name]["a_dcf"] == metrics.a_dcf(t(sasv[keep]), t(lab[keep]))[0]
        assert got["per_attack"][name]["t_eer"] == metrics.t_eer(t(cm[keep]), t(asv[keep]), t(lab[keep]))[0]


def test_track2_single_when_cm_and_asv_scores_are_absent(tmp_path, capsys):
    scores, key, _, _, sasv, lab, _ = track2_files(tmp_path, absent=True)
    code, out, err = run(["--sasv", scores, "--sasv_key", key], capsys)
    assert code == 0, err
    a = metrics.a_dcf(torch.from_numpy(sasv), torch.from_numpy(lab))[0]
    assert out.startswith("# Track 2 (Single) Result: \n\n-eval_adcf: {:.5f}\n\n".format(a))


def test_entry_point_runs_as_a_module(tmp_path):
    scores, key, *_ = track1_files(tmp_path, n=50, extra=False)
    done = subprocess.run([sys.executable, "-m", "spoofloss.metrics", "--cm", scores, "--cm_key", key],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Track 1 Result:")


HIDE_NUMPY = ("import runpy, sys; sys.modules['numpy'] = None; "  # import numpy now raises ImportError
              "runpy.run_module('spoofloss.metrics', run_name='__main__', alter_sys=True)")


def test_command_without_numpy_says_how_to_install(tmp_path):
    scores, key, *_ = track1_files(tmp_path, n=50, extra=False)
    done = subprocess.run([sys.executable, "-c", HIDE_NUMPY, "--cm", scores, "--cm_key", key],
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr, done.stderr
    assert "reads score and key files with numpy, which is not installed" in done.stderr
    assert "pip install 'spoofloss[metrics]'" in done.stderr
    # the help needs no numpy
    done = subprocess.run([sys.executable, "-c", HIDE_NUMPY, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--cm_key" in done.stdout, done.stderr


def test_metrics_extra_is_declared():
    import pathlib

    tomllib = pytest.importorskip("tomllib", reason="tomllib (reading pyproject.toml) needs Python 3.11")
    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("tests/ runs without the source tree (no pyproject.toml beside it)")
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert extras["metrics"] == ["numpy"]  # the name the command's message gives


def _lines(path):
    return open(path).read().splitlines()


@pytest.mark.parametrize(
    "edit, which, pattern",
    [
        # (how to spoil the files, which file the error names, what it says)
        (lambda s, k: (s[1:], k), "scores", r"line 1: missing header"),
        (lambda s, k: (["filename\tscore"] + s[1:], k), "scores", r"line 1: the header names no 'cm-score' column"),
        (lambda s, k: (s, k[:3] + [k[3].replace("spoof", "fake").replace("bonafide", "fake")] + k[4:]), "key",
         r"line 4: unknown cm-label 'fake'; expected one of bonafide, spoof"),
        (lambda s, k: (s[:5] + ["E_999999\t0.5"] + s[6:], k), "scores", r"line 6: filename 'E_999999' is not in the key"),
        (lambda s, k: (s, k + [k[2]]), "key", r"line 402: filename 'E_000001' appears again \(first on line 3\)"),
        (lambda s, k: (s[:3] + [s[2]] + s[4:], k), "scores", r"line 4: filename '.*' appears again \(first on line 3\)"),
        (lambda s, k: (s[:7] + [s[7].split("\t")[0] + "\tabc"] + s[8:], k), "scores",
         r"line 8: cm-score 'abc' is not a number"),
        (lambda s, k: (s[:7] + [s[7].split("\t")[0] + "\tnan"] + s[8:], k), "scores",
         r"line 8: cm-score 'nan' is not a finite number"),
        (lambda s, k: (s[:-1], k), "key", r"has no score in .*1 key trial\(s\) unscored"),
        (lambda s, k: (s[:9] + [s[9] + "\textra"] + s[10:], k), "scores", r"line 10: 3 field\(s\) where the header names 2"),
        (lambda s, k: (s[:1], k), "scores", r"the file holds a header but no trial"),
        (lambda s, k: ([], k), "scores", r"the file is empty"),
    ],
)
def test_track1_bad_files(tmp_path, capsys, edit, which, pattern):
    scores, key, *_ = track1_files(tmp_path, extra=False)
    s, k = edit(_lines(scores), _lines(key))
    (tmp_path / "scores.tsv").write_text("".join(x + "\n" for x in s))
    (tmp_path / "key.tsv").write_text("".join(x + "\n" for x in k))
    code, out, err = run(["--cm", scores, "--cm_key", key], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    named = scores if which == "scores" else key
    assert err.startswith(f"error: {named}")
    assert __import__("re").search(pattern, err), err


def test_track2_bad_files(tmp_path, capsys):
    scores, key, *_ = track2_files(tmp_path)
    lines = _lines(scores)
    fields = lines[5].split("\t")
    fields[2] = "-"
    (tmp_path / "sasv.tsv").write_text("\n".join(lines[:5] + ["\t".join(fields)] + lines[6:]) + "\n")
    code, _, err = run(["--sasv", scores, "--sasv_key", key], capsys)
    assert code == 1 and "line 6: cm-score is '-' here but a number on other lines" in err
    klines = _lines(key)
    kf = klines[3].split("\t")
    kf[2] = "spoof" if kf[3] != "spoof" else "bonafide"
    (tmp_path / "sasv_key.tsv").write_text("\n".join(klines[:3] + ["\t".join(kf)] + klines[4:]) + "\n")
    (tmp_path / "sasv.tsv").write_text("\n".join(lines) + "\n")
    code, _, err = run(["--sasv", scores, "--sasv_key", key], capsys)
    assert code == 1 and f"{key}, line 4: cm-label" in err and "disagree" in err


def test_usage_errors(tmp_path, capsys):
    code, _, err = run(["--cm", str(tmp_path / "nope.tsv"), "--cm_key", str(tmp_path / "nope2.tsv")], capsys)
    assert code == 1 and "nope.tsv: cannot read the file" in err
    code, _, err = run(["--cm", "a.tsv"], capsys)
    assert code == 1 and "Track 1 needs both" in err
    code, _, err = run([], capsys)
    assert code == 1 and "give --cm and --cm_key" in err


def test_hard_cm_decisions_are_refused_in_track2(tmp_path, capsys):
    scores, key, cm, asv, sasv, lab, _ = track2_files(tmp_path, n=120)
    lines = _lines(scores)
    out = [lines[0]]
    for line in lines[1:]:
        f = line.split("\t")
        f[2] = "1" if float(f[2]) > 1 else "0"
        out.append("\t".join(f))
    (tmp_path / "sasv.tsv").write_text("\n".join(out) + "\n")
    code, _, err = run(["--sasv", scores, "--sasv_key", key], capsys)
    assert code == 1 and "fewer than 3 distinct values" in err
    assert not math.isnan(0.0)


@pytest.mark.parametrize("values", [[b"A01", b"bonafide", b"-", b"A1", b"A10", b"A01 x"[:3]],  # up to 8 bytes: exact words
                                    [b"attack_number_17", b"A01", b"attack_number_1", b"codec-opus-wb"]])  # hashed
def test_categories_ids_follow_sorted_values(values):
    from spoofloss.metrics.files import categories

    rng = np.random.default_rng(len(values))
    text = np.array(values)[rng.integers(0, len(values), 5000)]
    ids, names = categories(text)
    assert names == sorted(set(v.decode() for v in values))
    assert [names[i] for i in ids] == [v.decode() for v in text.tolist()]
