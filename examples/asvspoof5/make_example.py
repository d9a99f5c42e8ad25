"""Writes the small example score and key files of this folder (synthetic, seeded), in the
formats of the ASVspoof 5 evaluation package:

    cm_scores.tsv    filename  cm-score                         (Track 1)
    cm_keys.tsv      filename  cm-label  attack  codec
    sasv_scores.tsv  spk  filename  cm-score  asv-score  sasv-score   (Track 2)
    sasv_keys.tsv    spk  filename  cm-label  asv-label  attack

    python examples/asvspoof5/make_example.py     # rewrites the files (same content)
    python -m spoofloss.metrics --cm examples/asvspoof5/cm_scores.tsv --cm_key examples/asvspoof5/cm_keys.tsv

The scores are drawn, not produced by a model: bona fide above spoof by an amount that
differs per attack (A17 is the hardest), rounded to 4 decimals as score files often are.
"""

import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
ATTACKS = {"A17": 0.6, "A18": 1.6, "A19": 2.6}  # attack -> separation from bona fide
CODECS = ("none", "mp3", "opus")


def write(name, header, rows):
    with open(os.path.join(HERE, name), "w", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(x) for x in row) + "\n")


def track1(rng, n=600):
    rows_key, rows_score = [], []
    for i in range(n):
        name = f"E_{i:06d}"
        codec = rng.choice(CODECS)
        blur = 0.4 if codec == "opus" else 0.0  # a harder condition
        if rng.random() < 0.3:
            label, attack, score = "bonafide", "-", rng.gauss(1.5, 1.0 + blur)
        else:
            attack = rng.choice(sorted(ATTACKS))
            label, score = "spoof", rng.gauss(1.5 - ATTACKS[attack], 1.0 + blur)
        rows_key.append((name, label, attack, codec))
        rows_score.append((name, f"{score:.4f}"))
    rng.shuffle(rows_score)  # a score file need not follow the key's order
    write("cm_scores.tsv", ("filename", "cm-score"), rows_score)
    write("cm_keys.tsv", ("filename", "cm-label", "attack", "codec"), rows_key)


def track2(rng, n=900):
    rows_key, rows_score = [], []
    for i in range(n):
        spk, name = f"E_{rng.randrange(40):04d}", f"E_{i:06d}"
        kind = rng.choices(("target", "nontarget", "spoof"), (0.4, 0.25, 0.35))[0]
        attack = rng.choice(sorted(ATTACKS)) if kind == "spoof" else "-"
        cm = rng.gauss(1.5 - (ATTACKS[attack] if kind == "spoof" else 0.0), 1.0)
        asv = rng.gauss({"target": 3.0, "nontarget": 0.0, "spoof": 2.0}[kind], 1.0)
        sasv = 0.5 * cm + 0.5 * asv
        rows_key.append((spk, name, "spoof" if kind == "spoof" else "bonafide", kind, attack))
        rows_score.append((spk, name, f"{cm:.4f}", f"{asv:.4f}", f"{sasv:.4f}"))
    rng.shuffle(rows_score)
    write("sasv_scores.tsv", ("spk", "filename", "cm-score", "asv-score", "sasv-score"), rows_score)
    write("sasv_keys.tsv", ("spk", "filename", "cm-label", "asv-label", "attack"), rows_key)


if __name__ == "__main__":
    rng = random.Random(5)
    track1(rng)
    track2(rng)
