"""Resolves photo references (``file://`` and ``http(s)://`` URIs) to bytes, safely.

:class:`ReferenceFetcher` checks each reference against its :class:`FetcherSettings`; reading a
file without blocking on a FIFO or device lives in :mod:`.regular_files`, the overall deadline of
an HTTP fetch in :mod:`.deadline`, one GET in :mod:`.http_get`, the connections kept open between
fetches in :mod:`.connections`.
"""

from worker.adapters.photo_fetcher.fetcher import FetcherSettings, ReferenceFetcher

__all__ = ["FetcherSettings", "ReferenceFetcher"]
