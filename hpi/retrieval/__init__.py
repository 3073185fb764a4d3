"""PP-ShiTuV2 retrieval: the feature index over faiss, its saved form, and the gallery lists it is built from.

* :mod:`hpi.retrieval.index`: :class:`FeatureIndex` (stable ids, tombstones, rebuilds, search).
* :mod:`hpi.retrieval.vectors`: the raw vectors every faiss index is built from.
* :mod:`hpi.retrieval.storage`: saving and loading with checksums, through :mod:`hpi.storage`.
* :mod:`hpi.retrieval.gallery`: PaddleX ``gallery.txt`` files.
* :mod:`hpi.retrieval.validation`: checks of the features, labels and ids callers pass.

Importing this package does not import faiss; building an index does.
"""

from __future__ import annotations

from hpi.retrieval.gallery import read_gallery
from hpi.retrieval.index import FeatureIndex, Hit, IndexType, MetricType, UnknownIdError
from hpi.retrieval.storage import IndexFileError

__all__ = ["FeatureIndex", "Hit", "IndexFileError", "IndexType", "MetricType", "UnknownIdError", "read_gallery"]
