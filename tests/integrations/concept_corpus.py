"""The corpus the integrations' search-mode tests share: lexical and dense signals that disagree.

The embedding knows synonyms (a "concept" per group of words) but not the product code "zx81",
which only BM25 sees; BM25 knows the code but not that "automobile" means "car", which only the
embedding sees.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

CONCEPTS = (
    ("car", "cars", "automobile", "vehicle", "truck", "sedan"),
    ("repair", "maintenance", "brakes", "tires", "service", "mechanic"),
    ("bread", "pasta", "recipe", "baking", "cooking", "sourdough"),
    ("synthesizer", "keyboard", "melody", "firmware", "piano"),
    ("dog", "kitten", "puppy", "pet"),
)
CONCEPT_OF = {word: i for i, words in enumerate(CONCEPTS) for word in words}
NOISE_DIMS = 16

DOCS = {
    "car": ("The car needs new brakes and tires", "auto"),
    "car_dup": ("The car needs new brakes and new tires", "auto"),
    "truck": ("A truck mechanic, by the road", "auto"),
    "synth": ("Firmware notes for the zx81 synthesizer", "music"),
    "bread": ("A recipe for baking sourdough bread, with notes", "food"),
    "pasta": ("Cooking pasta: recipe notes and more notes", "food"),
    "dog": ("The dog and the kitten sleep", "pets"),
    "piano": ("Piano melody notes for beginners: notes, notes", "music"),
}
KEYWORD_QUERY = "zx81 automobile"  # BM25 finds only "synth" (zx81); the embedding finds the car texts


def concept_vector(text: str) -> list[float]:
    """One dimension per concept; other words leave a faint hashed trace, so no two texts tie exactly."""
    v = np.zeros(len(CONCEPTS) + NOISE_DIMS + 1)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if word in CONCEPT_OF:
            v[CONCEPT_OF[word]] += 1.0
        else:
            h = zlib.crc32(word.encode("utf-8"))
            v[len(CONCEPTS) + h % NOISE_DIMS] += 0.05 if h & 1 else -0.05
    v[-1] = 0.01  # never the zero vector
    return (v / np.linalg.norm(v)).tolist()
