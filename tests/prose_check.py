"""Numbers and comparisons in hand-written notebook prose (issue 19, item 4).

A markdown cell may state a constant (28×28, 784 pixels, 10 classes, a profile's seed count), cite a paper, name a
section or notebook, define a scale ("higher is better", "1 = perfect") or quote the textbook statement under test
("the VAE generalises better"); it may not state a measured number or say that one model beats another, because the
run may find otherwise. A measured sentence is rendered by a code cell from the measurement instead.
`prose_hits` returns what is left after the allowed forms are removed: each hit is a word to rephrase or generate.
"""

from __future__ import annotations

import re

# Removed before scanning, each for a reason.
STRIP: tuple[tuple[str, str], ...] = (
    (r"\$\$.*?\$\$|\$[^$]*\$", "formulas"),
    (r"(?:[A-Z][a-z]+ et al\.|[A-Z][a-z]+ (?:&|and) [A-Z][a-z]+) \((?:19|20)\d\d\) (?:found|showed|report(?:ed)?) "
     r"that[^.]*\.", "a published finding, cited"),
    (r"^#+ (?:\d+\.|0\d —)", "a heading's number"),
    (r"\b(?:[Nn]otebooks?|[Ss]ections?|section-|rows?)\s+\d+(?:\s*(?:[–-]|and|,|or)\s*\d+)*\b", "a cross-reference"),
    (r"(?<![.\d])\b0[1-9](?:[–-]0[1-9])?(?:'s)?\b(?!\.\d)", "a notebook number"),
    (r"\b(?:lower|upper) bounds?\b", "a term"),
    (r"\b\d+-(?:D|nearest|component|dimensional)\b|\bstride-\d\b|\bM[12]\b|\bsection-\d\b", "a name with a digit"),
    (r"\[0, 1\]|\(0, 1, 2, …\)|\b0 or 1\b|\b0/255\b|\bfrom 0\b|\b(?:above|below) 0\b|\bH_b\b",
     "a range or sign (a constant)"),
    (r"[<>≤≥] \d+(?:\.\d+)?|\bwithin \d+ % of\b|\b\d+(?:\.\d+)? when\b|\blog \d+(?:\.\d+)?|\bwell above 1\b"
     r"|\bfewer than \d+\b|\bscore, 0\b|\bβ = \d+\b", "a threshold or value defined by the text"),
    (r"\b\d+(?:,\d{3})* (?:draws|standard errors|components|test images|seeds|labelled subsets)\b"
     r"|\bAdam \d+e-\d+ /\s+\d\.\d\b|\bbatch(?:es of)? \d+\b",
     "a setting of the method, fixed in code"),
    (r"\babout 2\.5 seed-to-seed standard deviations with ≈ 90 %\s+power \(≈ 50 % at 1\.5 sd\)",
     "a property of the Welch test at 5 seeds (a power calculation, not a measurement)"),
    (r"\d+×\d+", "an image or feature-map size"),
    (r"\b(?:784|512|256)\b(?= →| and back|\)|,)", "the MLP's layer widths (a constant)"),
    (r"\b(?:higher|lower) (?:is better|= [a-z ]+)", "a scale's direction, defined"),
    (r"\b\d+(?:\.\d+)? = [a-z][a-z ]+", "a scale's anchor point, defined (1 = perfect, 0.5 = chance)"),
    (r"\bthe larger, the worse\b", "a scale's direction, defined"),
    (r"\b95 % (?:confidence )?interval", "the interval's level (a constant)"),
    (r"\bp < 0\.05\b", "the test's level (a constant)"),
    (r"\b1σ and 2σ\b", "contours of the prior"),
    (r"\b(?:5|10) in `?(?:standard|full)`?|\b\d+ seeds per model\b|\b\d+ in `full`", "a profile's seed count"),
    (r"\b10 classes\b|\b10-component\b|\b2×16\b", "a constant of the data or model"),
    (r"\b100, 1,000 and all\b|\b100 or 1,000\b|\b100 and 1,000\b|\b100 labels\b|\b1,000 labels\b"
     r"|\b(?:100|1,000) = \d+ per class\b",
     "the label budgets (constants)"),
    (r"\bU\(0, 1/256\)|\b8-bit\b|\b256-level\b", "the quantisation (constants)"),
    (r"\b\d+(?:\.\d+)? accuracy points\b|\bminimum (?:effect|AUROC gain) (?:of )?\d+(?:\.\d+)?\b"
     r"|\bmore than 0\.1 per rung\b"
     r"|\bminimum effect \d+(?:\.\d+)?\b|\bminimum effect:? \d", "a minimum effect fixed before measuring"),
    (r"\"[^\"\n]*\"|“[^”]*”", "a quoted statement: the textbook claim under test, or a name"),
    (r"`[^`]*`", "code names"),
    (r"(?:et\s+al\.(?:'s)?|[A-Z][a-zà-ÿ]+)\)?,? \(?(?:19|20)\d\d\b", "a citation's year"),
    (r"(?:[^.?!\n]|\.(?=\S))*\?", "a question: it asserts nothing"),
    (r"\bwhether\b(?:[^.;:!?]|\.(?=\S))*", "a question: it asserts nothing"),
)
NUMBER = r"\d+(?:[.,]\d+)*\s*%?|%"
COMPARATIVE = r"\b(?:better|worse|beats?|beaten|higher|lower|outperforms?|competitive)\b"
TOKEN = re.compile(f"{NUMBER}|{COMPARATIVE}", re.IGNORECASE)


def prose(text: str) -> str:
    """`text` with every allowed form (`STRIP`) blanked out."""
    for pattern, _reason in STRIP:
        text = re.sub(pattern, " ", text, flags=re.MULTILINE | re.DOTALL)
    return text


def prose_hits(text: str) -> list[str]:
    """The numbers and comparatives of a markdown cell that no allowed form explains, each with a little context."""
    kept = prose(text)
    return [kept[max(0, m.start() - 30):m.end() + 20].replace("\n", " ").strip() for m in TOKEN.finditer(kept)]
