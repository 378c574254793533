# SPDX-License-Identifier: Apache-2.0
"""Deterministic generator of English-like text for the demo character-level language model.

The text comes from a small hand-written grammar over fixed word lists (nothing is copied from any
corpus): simple declarative sentences, sentences with prepositional phrases and relative clauses,
questions, and quoted speech, grouped into paragraphs. The output is a pure function of the seed
(Python's ``random.Random``, whose sequence is stable across platforms and Python 3 versions).

Contract:

* :func:`alphabet` is the sorted list of every character the generator can emit; it is the demo
  LM's vocabulary (token id ``i`` is ``alphabet()[i]``).
* :func:`generate_text` (seed, n_chars) returns exactly ``n_chars`` characters, all in
  :func:`alphabet`, identical for identical arguments.

Run as a script to print a sample: ``python3 tools/demo_text.py [seed] [n_chars]``.
"""

from __future__ import annotations

import random
import sys
from typing import List

__all__ = ["alphabet", "generate_text", "sentence"]

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Iris", "Jack"]
NOUNS = [
    "cat", "dog", "bird", "horse", "child", "farmer", "teacher", "river", "garden", "house",
    "window", "table", "letter", "apple", "boat", "road", "tree", "stone", "lamp", "book",
    "friend", "king", "queen", "baker", "hill", "city", "door", "song", "storm", "field",
]
ADJECTIVES = [
    "small", "old", "red", "green", "quiet", "happy", "tall", "dark", "bright", "cold",
    "warm", "young", "strange", "heavy", "little", "good", "wild", "gentle", "empty", "blue",
]
# (third person singular, plural/base, past)
VERBS = [
    ("sees", "see", "saw"), ("finds", "find", "found"), ("likes", "like", "liked"),
    ("watches", "watch", "watched"), ("follows", "follow", "followed"), ("carries", "carry", "carried"),
    ("opens", "open", "opened"), ("paints", "paint", "painted"), ("helps", "help", "helped"),
    ("wants", "want", "wanted"), ("makes", "make", "made"), ("takes", "take", "took"),
]
INTRANSITIVE = [
    ("sleeps", "sleep", "slept"), ("sings", "sing", "sang"), ("waits", "wait", "waited"),
    ("runs", "run", "ran"), ("laughs", "laugh", "laughed"), ("walks", "walk", "walked"),
]
PREPOSITIONS = ["near", "under", "behind", "beside", "across", "into", "over", "past"]
ADVERBS = ["slowly", "quickly", "quietly", "again", "today", "often", "never", "always"]
TIMES = ["in the morning", "at night", "after the rain", "every day", "before dinner", "in the spring"]
SPEECH_VERBS = ["says", "asks", "whispers", "shouts"]
DETERMINERS = ["the", "a", "the", "the", "my", "her", "his", "this", "that", "every"]
CONJ = ["and", "but", "so", "because", "while"]

_PUNCT = " .,?!\"\n"


def alphabet() -> List[str]:
    """Every character :func:`generate_text` can emit, sorted (the demo LM's vocabulary)."""
    words = NOUNS + ADJECTIVES + PREPOSITIONS + ADVERBS + TIMES + SPEECH_VERBS + DETERMINERS + CONJ
    words += [w for triple in VERBS + INTRANSITIVE for w in triple]
    words += ["who", "is", "was", "there", "an", "does", "did"]
    chars = set(_PUNCT)
    for w in words + NAMES:
        chars.update(w)
    # Sentence-initial words (see `sentence`): names, determiners, "there", "does", "did".
    for w in DETERMINERS + ["an", "there", "does", "did"]:
        chars.add(w[0].upper())
    return sorted(chars)


def _np(r: random.Random) -> str:
    """Noun phrase: determiner, optional adjective(s), noun; or a name."""
    if r.random() < 0.2:
        return r.choice(NAMES)
    det = r.choice(DETERMINERS)
    adjs = ""
    x = r.random()
    if x < 0.45:
        adjs = r.choice(ADJECTIVES) + " "
    elif x < 0.55:
        a, b = r.sample(ADJECTIVES, 2)
        adjs = f"{a} {b} "
    noun = r.choice(NOUNS)
    if det == "a" and (adjs or noun)[0] in "aeiou":
        det = "an"
    return f"{det} {adjs}{noun}"


def _vp(r: random.Random, form: int) -> str:
    """Verb phrase in `form` (0: 3rd person singular present, 1: base, 2: past)."""
    if r.random() < 0.3:
        vp = r.choice(INTRANSITIVE)[form]
        if r.random() < 0.5:
            vp += f" {r.choice(PREPOSITIONS)} {_np(r)}"
    else:
        vp = f"{r.choice(VERBS)[form]} {_np(r)}"
    if r.random() < 0.25:
        vp += " " + r.choice(ADVERBS)
    return vp


def _clause(r: random.Random) -> str:
    subj = _np(r)
    if r.random() < 0.15:
        subj += f" who {_vp(r, 0 if r.random() < 0.5 else 2)}"
    x = r.random()
    if x < 0.15:
        return f"{subj} is {r.choice(ADJECTIVES)}"
    if x < 0.25:
        return f"there {'is' if r.random() < 0.5 else 'was'} {_np(r)} {r.choice(PREPOSITIONS)} {_np(r)}"
    return f"{subj} {_vp(r, 0 if r.random() < 0.6 else 2)}"


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def sentence(r: random.Random) -> str:
    """One sentence, capitalised and punctuated."""
    x = r.random()
    if x < 0.12:  # question
        aux, form = ("does", 1) if r.random() < 0.6 else ("did", 1)
        return _cap(f"{aux} {_np(r)} {_vp(r, form)}?")
    if x < 0.22:  # quoted speech
        return f"\"{_cap(_clause(r))},\" {_np(r)} {r.choice(SPEECH_VERBS)}."
    s = _clause(r)
    if r.random() < 0.3:
        s += f" {r.choice(TIMES)}"
    if r.random() < 0.3:
        conj = r.choice(CONJ)
        s += f"{',' if conj in ('but', 'so') else ''} {conj} {_clause(r)}"
    return _cap(s) + ("!" if r.random() < 0.05 else ".")


def generate_text(seed: int, n_chars: int) -> str:
    """Exactly `n_chars` characters of paragraphs (3-7 sentences, separated by newlines)."""
    r = random.Random(seed)
    parts: List[str] = []
    total = 0
    while total < n_chars:
        para = " ".join(sentence(r) for _ in range(r.randint(3, 7))) + "\n"
        parts.append(para)
        total += len(para)
    return "".join(parts)[:n_chars]


if __name__ == "__main__":
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1200
    sys.stdout.write(generate_text(seed, n) + "\n")
