"""Synthetic training questions: an LLM writes one question per sampled chunk.

>>> queries, relevance = generate_queries(vs, llm, n=40)
>>> job = vs.deep_memory.train(queries, relevance, validation_queries=real, validation_relevance=real_rel)

``llm`` is any of: a callable from a prompt string to text; a LlamaIndex LLM
(``llm.complete(prompt).text``); a LangChain chat model (``llm.invoke(prompt).content``).
Synthetic questions can share the LLM's blind spots, so judge the model they train on
a few real questions (``validation_queries``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import TensorDBError
from .corpus import DocumentCorpus, TextCorpus

DEFAULT_PROMPT = (
    "Here is a passage from a document collection.\n\n"
    "---\n{text}\n---\n\n"
    "Write one question a user could ask that this passage answers. "
    "Reply with the question only, on one line."
)
#: Longer chunks are cut to this many characters in the prompt.
MAX_PROMPT_CHARS = 2000


class QueryGenerationError(TensorDBError):
    """The LLM failed, or answered something that is not text, while writing a question for a chunk."""


def generate_queries(
    corpus: DocumentCorpus,
    llm: Any,
    n: int = 40,
    seed: int = 0,
    *,
    prompt: str = DEFAULT_PROMPT,
    max_retries: int = 2,
    retry_wait: float = 1.0,
    max_chars: int = MAX_PROMPT_CHARS,
    show_progress: bool = True,
) -> tuple[list[str], list[list[tuple[str, float]]]]:
    """Up to ``n`` questions, each written by ``llm`` for one randomly chosen chunk, with the chunk as its answer.

    Returns ``(queries, relevance)`` in :meth:`~.api.DeepMemory.train`'s format:
    ``relevance[i] == [(chunk_id, 1.0)]``. Chunks are drawn without replacement in an
    order fixed by ``seed``; a chunk whose text is empty, or whose question comes back
    empty or repeats an earlier one, is skipped and the next chunk is asked, so fewer
    than ``n`` questions come back only when the corpus runs out.

    ``prompt`` holds ``{text}`` where the chunk goes (cut to ``max_chars``). A call that
    raises is tried ``max_retries`` more times, ``retry_wait`` seconds apart (doubling);
    then, or when the answer is not text, :class:`QueryGenerationError` names the chunk.
    Nothing is written to the corpus's dataset.
    """
    _check_arguments(n, prompt, max_retries, retry_wait, max_chars)
    ask = as_text_function(llm)
    ids, texts = corpus_texts(corpus)
    order = np.random.default_rng(seed).permutation(len(ids))
    queries: list[str] = []
    relevance: list[list[tuple[str, float]]] = []
    seen: set[str] = set()
    from tqdm.auto import tqdm

    with tqdm(total=n, desc="generating questions", unit="question", disable=not show_progress) as bar:
        for row in order:
            if len(queries) == n:
                break
            text = texts[row].strip()
            if not text:
                continue
            question = _question(ask, prompt.replace("{text}", text[:max_chars]), ids[row], max_retries, retry_wait)
            key = " ".join(question.lower().split())
            if not key or key in seen:
                continue
            seen.add(key)
            queries.append(question)
            relevance.append([(ids[row], 1.0)])
            bar.update(1)
    if not queries:
        raise QueryGenerationError(f"no question was generated: the corpus has {len(ids)} chunks and none gave a "
                                   f"non-empty question")
    return queries, relevance


def as_text_function(llm: Any) -> Callable[[str], Any]:
    """``llm`` as a function from a prompt to its answer (a LlamaIndex LLM, a LangChain chat model or a callable)."""
    if hasattr(llm, "complete"):  # LlamaIndex: CompletionResponse.text
        return lambda p: _attribute(llm.complete(p), "text")
    if hasattr(llm, "invoke"):  # LangChain: AIMessage.content (or a plain string from an LLM)
        return lambda p: _attribute(llm.invoke(p), "content")
    if callable(llm):
        return llm
    raise QueryGenerationError(f"llm must be a callable from a prompt to text, a LlamaIndex LLM (.complete) or a "
                               f"LangChain chat model (.invoke), got {type(llm).__name__}")


def corpus_texts(corpus: DocumentCorpus) -> tuple[list[str], list[str]]:
    """Every chunk's id and text: from ``corpus.ids_and_texts()``, else its dataset's ``id`` and ``text`` tensors."""
    if isinstance(corpus, TextCorpus):
        ids, texts = corpus.ids_and_texts()
    else:
        ds = corpus.dataset
        missing = [name for name in ("id", "text") if name not in ds.tensors]
        if missing:
            raise QueryGenerationError(f"cannot read chunk texts: the corpus has no ids_and_texts() and its dataset "
                                       f"has no {' or '.join(missing)} tensor")
        ids, texts = ds["id"].numpy(aslist=True), ds["text"].numpy(aslist=True)
    return [str(i) for i in ids], ["" if t is None else str(t) for t in texts]


def _question(ask: Callable[[str], Any], prompt: str, chunk_id: str, max_retries: int, retry_wait: float) -> str:
    """The question ``ask`` writes for one chunk, cleaned to one line ("" when it wrote none)."""
    for attempt in range(max_retries + 1):
        try:
            answer = ask(prompt)
            break
        except Exception as e:  # any failure of the LLM client is retried, then reported with its chunk
            if attempt == max_retries:
                raise QueryGenerationError(f"the LLM failed on chunk {chunk_id!r} after {max_retries + 1} attempts: "
                                           f"{type(e).__name__}: {e}") from e
            time.sleep(retry_wait * 2**attempt)
    if not isinstance(answer, str):
        shown = repr(answer)
        shown = shown if len(shown) <= 200 else shown[:197] + "..."
        raise QueryGenerationError(f"the LLM answered chunk {chunk_id!r} with {type(answer).__name__} {shown}; "
                                   f"expected the question as text")
    return _clean(answer)


def _clean(answer: str) -> str:
    """The first non-empty line, without a leading "Question:" label or surrounding quotes."""
    line = next((s.strip() for s in answer.splitlines() if s.strip()), "")
    if line.lower().startswith("question:"):
        line = line[len("question:"):].strip()
    return line.strip("\"'“”").strip()


def _attribute(response: Any, name: str) -> Any:
    # A client that answers a bare string (LangChain's plain LLMs) is taken as is.
    return response if isinstance(response, str) else getattr(response, name, response)


def _check_arguments(n: int, prompt: str, max_retries: int, retry_wait: float, max_chars: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise QueryGenerationError(f"n must be a positive int (how many questions), got {n!r}")
    if not isinstance(prompt, str) or "{text}" not in prompt:
        raise QueryGenerationError("prompt must be a str holding {text}, where the chunk goes")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise QueryGenerationError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if not isinstance(retry_wait, (int, float)) or not retry_wait >= 0:
        raise QueryGenerationError(f"retry_wait must be a number of seconds >= 0, got {retry_wait!r}")
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise QueryGenerationError(f"max_chars must be a positive int, got {max_chars!r}")
