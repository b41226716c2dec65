"""The reference gallery in Milvus, seen by the worker: batched kNN search behind an alias.

:class:`MilvusReferenceIndex` implements :class:`worker.ports.Gallery`. It searches the
collection the alias (``landmarks`` by default) points to, with **one** Milvus search call per
batch of query embeddings (Milvus Lite scans rows in Python, so a call costs about the same for
one query as for sixty-four), and returns :class:`~schemas.tag_event.Neighbour` lists sorted by
squared Euclidean distance (``2 - 2 cos`` for the unit embeddings a COSINE gallery holds).

The trainer's gallery loader moves the alias to a new collection in one step when a new
gallery is complete; :meth:`MilvusReferenceIndex.refresh` (one cheap ``describe_alias`` call,
made by the worker between batches) notices and switches over without a restart, refusing a
gallery whose model version or dimension does not match the model the worker serves.

Modules: :mod:`.index` (the index), :mod:`.description` (a collection's description and the
check against the model), :mod:`.hits` (hits to neighbours), :mod:`.errors` (the errors and which
failures are transient), :mod:`.retries` (repeating transient failures). All but the index are
pure, so that they can be tested without a server.
"""

from worker.adapters.milvus.description import GalleryDescription
from worker.adapters.milvus.errors import GalleryMismatchError, GalleryUnavailableError
from worker.adapters.milvus.index import MilvusReferenceIndex

__all__ = [
    "GalleryDescription",
    "GalleryMismatchError",
    "GalleryUnavailableError",
    "MilvusReferenceIndex",
]
