"""Shared data for the framework-integration tests: a slice of tensordb's demo corpus."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import pytest


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    metadata: list[dict]
    questions: list[dict]  # {"question", "relevant": [[id, score]], "split"}

    def split(self, name: str, targets: list[str]) -> tuple[list[str], list[str]]:
        """Questions of one split whose answer is among ``targets``, and their answer ids."""
        qs = [q for q in self.questions if q["split"] == name and q["relevant"][0][0] in set(targets)]
        return [q["question"] for q in qs], [q["relevant"][0][0] for q in qs]


def _read(name: str) -> list[dict]:
    text = resources.files("tensordb").joinpath("demo_data", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    chunks = _read("chunks.jsonl")
    questions = [q for q in _read("questions.jsonl") if len(q["relevant"]) == 1]
    return Corpus([c["id"] for c in chunks], [c["text"] for c in chunks], [c["metadata"] for c in chunks], questions)


@pytest.fixture(scope="session")
def targets(corpus: Corpus) -> list[str]:
    """Chunks that have both train and test questions, in id order."""
    splits: dict[str, set[str]] = {}
    for q in corpus.questions:
        splits.setdefault(q["relevant"][0][0], set()).add(q["split"])
    return sorted(doc for doc, s in splits.items() if {"train", "test"} <= s)
