"""The Milvus connection group, shared by the worker and the gallery loader."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from configuration.base import CommandSettings, setting
from schemas.gallery import DEFAULT_ALIAS


class MilvusConnection(CommandSettings):
    """Which Milvus, with which credentials, and the gallery's alias in it."""

    group_title: ClassVar[str] = "Milvus connection"

    milvus_uri: str = setting(help="Milvus URI: a Milvus Lite .db file path or http://host:19530")
    milvus_token: SecretStr = setting(
        SecretStr(""), help="Milvus token (user:password or API key); never shown or logged"
    )
    gallery_alias: str = setting(
        DEFAULT_ALIAS, help="Milvus collection alias of the reference gallery"
    )
