"""Serving stored output files safely: containment, ranges, sendfile hand-off.

The views in scheduler/views/files.py decide *who* may have a file; this module
decides *how* its bytes leave the server:

- the stored path is resolved and must lie inside SCHEDULER_FILE_ROOT, so a row
  pointing at ``../../etc/passwd`` or a link out of the store serves nothing;
- every answer carries ``X-Content-Type-Options: nosniff`` and a CSP that forbids
  everything (``default-src 'none'; sandbox``), so even a file a browser opens
  directly cannot run script in the site's origin;
- the bytes are streamed in blocks (never read whole), a single ``Range`` is
  honoured (206/416) so large downloads resume, and with SCHEDULER_SENDFILE set the
  front server (nginx ``X-Accel-Redirect``, Apache ``X-Sendfile``) sends them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header, http_date, parse_http_date_safe

from scheduler.models import OutputFile

BLOCK_SIZE = 256 * 1024
CSP = "default-src 'none'; sandbox"

# The only types ever shown inline, with the magic bytes each must start with.
INLINE_IMAGE_TYPES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # plus "WEBP" at offset 8, checked below
}
# Previewed as escaped text in the page; HTML, SVG, PDF and the like never are.
TEXT_PREVIEW_TYPES = {"text/plain", "text/csv", "application/json", "text/x-log"}

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def contained_path(output: OutputFile) -> Path:
    """The file's absolute path, checked to lie inside the store; Http404 otherwise."""
    root = Path(settings.SCHEDULER_FILE_ROOT).resolve()
    stored = output.stored_path or ""
    if not stored or "\x00" in stored or Path(stored).is_absolute():
        raise Http404("No such file.")
    path = (root / stored).resolve()
    if not path.is_relative_to(root) or path == root or not path.is_file():
        raise Http404("No such file.")
    return path


def base_type(content_type: str) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def is_inline_image(output: OutputFile) -> bool:
    return base_type(output.content_type) in INLINE_IMAGE_TYPES


def is_text_preview(output: OutputFile) -> bool:
    if output.kind in (OutputFile.Kind.STDOUT, OutputFile.Kind.STDERR):
        return True
    return base_type(output.content_type) in TEXT_PREVIEW_TYPES


def is_csv(output: OutputFile) -> bool:
    return base_type(output.content_type) == "text/csv"


def magic_matches(path: Path, content_type: str) -> bool:
    """True when the file's first bytes are those of the stored image type."""
    magics = INLINE_IMAGE_TYPES.get(base_type(content_type))
    if not magics:
        return False
    with path.open("rb") as fh:
        head = fh.read(16)
    if not any(head.startswith(m) for m in magics):
        return False
    if base_type(content_type) == "image/webp":
        return head[8:12] == b"WEBP"
    return True


def read_text_head(path: Path, *, max_lines: int, max_bytes: int) -> tuple[list[str], bool]:
    """The first lines of a text file (bytes-limited, decoded leniently) and whether more follow."""
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    truncated = len(data) > max_bytes
    lines = data[:max_bytes].decode("utf-8", errors="replace").splitlines()
    if len(lines) > max_lines:
        lines, truncated = lines[:max_lines], True
    elif truncated and lines:
        lines = lines[:-1]  # the last line may be cut in the middle
    return lines, truncated


class _FileRange:
    """Yields ``length`` bytes from ``start`` in blocks; closed by Django after the response."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        self._fh = path.open("rb")
        self._fh.seek(start)
        self._left = length

    def __iter__(self) -> Iterator[bytes]:
        while self._left > 0:
            block = self._fh.read(min(BLOCK_SIZE, self._left))
            if not block:
                break
            self._left -= len(block)
            yield block

    def close(self) -> None:
        self._fh.close()


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """Parse a single byte range against ``size``.

    Returns (start, end inclusive), None to ignore the header (absent, malformed
    or several ranges: RFC 9110 lets a server send the whole file then), or
    "unsatisfiable".
    """
    match = _RANGE_RE.match(header.strip().replace(" ", ""))
    if not match:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    end = int(last) if last else size - 1
    return start, min(end, size - 1)


def _etag(output: OutputFile, stat: os.stat_result) -> str:
    if output.sha256:
        return f'"{output.sha256}"'
    return f'"{stat.st_size:x}-{int(stat.st_mtime):x}"'


def _if_range_allows(request: HttpRequest, etag: str, mtime: float) -> bool:
    value = request.headers.get("If-Range")
    if not value:
        return True
    if value.startswith('"') or value.startswith("W/"):
        return value == etag  # strong comparison: a weak tag never matches
    since = parse_http_date_safe(value)
    return since is not None and int(mtime) <= since


def _harden(response: HttpResponse, output: OutputFile, *, disposition: str) -> None:
    response["Content-Disposition"] = content_disposition_header(
        disposition == "attachment", output.name
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = CSP
    response["Cache-Control"] = "private, no-transform"
    response["Cross-Origin-Resource-Policy"] = "same-origin"


def serve(
    request: HttpRequest,
    output: OutputFile,
    *,
    disposition: str = "attachment",
    content_type: str | None = None,
    path: Path | None = None,
) -> HttpResponse:
    """The response that sends ``output``: streamed with Range support, or handed off."""
    path = path or contained_path(output)
    # An attachment keeps its stored type (so the browser names it well); nosniff,
    # the CSP and "attachment" keep even text/html from rendering.
    content_type = content_type or base_type(output.content_type) or "application/octet-stream"
    mode = settings.SCHEDULER_SENDFILE
    if mode in ("nginx", "apache"):
        response = HttpResponse(content_type=content_type)
        if mode == "nginx":
            root = Path(settings.SCHEDULER_FILE_ROOT).resolve()
            relative = path.relative_to(root).as_posix()
            prefix = settings.SCHEDULER_SENDFILE_PREFIX.rstrip("/") + "/"
            response["X-Accel-Redirect"] = prefix + quote(relative)
            # nginx may buffer, and ranges it handles itself from the internal location.
        else:
            response["X-Sendfile"] = str(path)
        _harden(response, output, disposition=disposition)
        return response

    stat = path.stat()
    size = stat.st_size
    etag = _etag(output, stat)
    start, end, status = 0, size - 1, 200
    range_header = request.headers.get("Range")
    if range_header and _if_range_allows(request, etag, stat.st_mtime):
        parsed = parse_range(range_header, size)
        if parsed == "unsatisfiable":
            response = HttpResponse(status=416, content_type="text/plain")
            response["Content-Range"] = f"bytes */{size}"
            response["X-Content-Type-Options"] = "nosniff"
            response["Content-Security-Policy"] = CSP
            return response
        if parsed is not None:
            start, end = parsed
            status = 206
    length = max(0, end - start + 1)
    response = StreamingHttpResponse(
        _FileRange(path, start, length), status=status, content_type=content_type
    )
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = etag
    response["Last-Modified"] = http_date(stat.st_mtime)
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    _harden(response, output, disposition=disposition)
    return response
