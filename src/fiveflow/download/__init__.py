"""Downloads: GDC manifests, and resumable, verified (md5 or a pinned checksum), atomic file transfers."""

from .fetch import Checksum, fetch_url, parse_checksum
from .gdc import GDC_DATA_URL, DownloadError, DownloadResult, download_file, download_manifest
from .manifest import ManifestRow, read_manifest

__all__ = [
    "GDC_DATA_URL",
    "Checksum",
    "DownloadError",
    "DownloadResult",
    "ManifestRow",
    "download_file",
    "download_manifest",
    "fetch_url",
    "parse_checksum",
    "read_manifest",
]
