"""Contracts that cross process boundaries.

Kafka event formats (:mod:`schemas.image_event`, :mod:`schemas.tag_event`,
:mod:`schemas.dead_letter`, with JSON Schema files under ``schemas/json/``), the Milvus gallery
layout (:mod:`schemas.gallery`), the model manifest (:mod:`schemas.manifest`), the image
preprocessing every model expects (:mod:`schemas.preprocessing`) and the kNN vote
(:mod:`schemas.vote`). Imports only the standard library, numpy and Pillow.
"""

from pathlib import Path

#: Folder of the JSON Schema (draft 2020-12) files describing the JSON contracts.
JSON_SCHEMA_DIR = Path(__file__).resolve().parent / "json"
TAG_EVENT_SCHEMA_FILE = JSON_SCHEMA_DIR / "tag-event.schema.json"
DEAD_LETTER_SCHEMA_FILE = JSON_SCHEMA_DIR / "dead-letter.schema.json"
IMAGE_REFERENCE_SCHEMA_FILE = JSON_SCHEMA_DIR / "image-reference.schema.json"
MODEL_MANIFEST_SCHEMA_FILE = JSON_SCHEMA_DIR / "model-manifest.schema.json"
