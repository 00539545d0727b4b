"""How the REST API serves a run's artifact file so that nothing in it runs in Jupyter's origin.

Only raster images (PNG, JPEG, GIF, WebP) and plain text are shown in the browser (``inline``); text is
always ``text/plain`` (a ``.html`` or ``.js`` file is never served as what it is). Everything else, SVG
included, is an attachment: a browser that opens the link downloads it, while an ``<img>`` of the panel still
shows an SVG (an image loaded by ``<img>`` runs no script). Every answer is ``nosniff`` and carries a
``sandbox`` Content-Security-Policy with ``default-src 'none'``, so even a page opened from a download runs no
script and reaches nothing.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass

__all__ = ["CSP", "ServedAs", "served_as"]

#: the policy of every artifact answer: no script, no requests, a unique origin
CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"

_IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
           ".webp": "image/webp"}
_TEXT = frozenset({
    ".txt", ".log", ".py", ".json", ".jsonl", ".csv", ".tsv", ".md", ".yaml", ".yml", ".toml", ".cfg", ".ini",
    ".patch", ".diff", ".r", ".sql", ".sh", ".ipynb", ".html", ".htm", ".js", ".xml", ".mlmodel", "",
})
_ATTACHED = {".svg": "image/svg+xml", ".pdf": "application/pdf"}


@dataclass(frozen=True)
class ServedAs:
    """The ``Content-Type`` and ``Content-Disposition`` of an artifact answer."""

    content_type: str
    disposition: str

    @property
    def inline(self) -> bool:
        return self.disposition.startswith("inline")


def served_as(path: str, download: bool = False) -> ServedAs:
    """How the artifact at ``path`` (a run's artifact path) is served; ``download`` makes it an attachment."""
    name = posixpath.basename(path)
    suffix = posixpath.splitext(name)[1].lower()
    if name == "MLmodel" or suffix in _TEXT:
        content_type, inline = "text/plain; charset=utf-8", True
    elif suffix in _IMAGES:
        content_type, inline = _IMAGES[suffix], True
    else:
        content_type, inline = _ATTACHED.get(suffix, "application/octet-stream"), False
    kind = "inline" if inline and not download else "attachment"
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name) or "artifact"
    return ServedAs(content_type,
                    f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}")
