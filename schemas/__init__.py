"""Contracts that cross process boundaries.

Kafka event formats (:mod:`schemas.image_event`, :mod:`schemas.tag_event`,
:mod:`schemas.dead_letter`, with JSON Schema files under ``schemas/json/``), the Milvus gallery
layout (:mod:`schemas.gallery`), the model manifest (:mod:`schemas.manifest`), the image
preprocessing every model expects (:mod:`schemas.preprocessing`) and the kNN vote
(:mod:`schemas.vote`). Imports only the standard library, numpy and Pillow.
"""
