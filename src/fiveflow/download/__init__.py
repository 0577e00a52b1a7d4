"""GDC downloads: manifests, and resumable, md5-verified, atomic file transfers (``fiveflow download``)."""
from .gdc import GDC_DATA_URL, DownloadError, DownloadResult, download_file, download_manifest
from .manifest import ManifestRow, read_manifest

__all__ = ["GDC_DATA_URL", "DownloadError", "DownloadResult", "ManifestRow", "download_file", "download_manifest",
           "read_manifest"]
