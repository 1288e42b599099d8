"""The default mask VQ-VAE: big_vision's public ``vae-oid.npz``, fetched once and kept as safetensors.

``get_postprocessor("segment")`` with no ``vae=`` uses it. The first use downloads the file (about
a few megabytes) from big_vision's public bucket into the Hugging Face cache directory
(``$HF_HUB_CACHE/vlmzoo``, which ``HF_HOME`` / ``HF_HUB_CACHE`` move), checks its size against the
server's, checks every key and shape while converting it to safetensors (encoder and decoder), and
removes the download; later uses read the safetensors file. Offline (``HF_HUB_OFFLINE=1`` or no
network) the error says what to download and where to put it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from vlmzoo.progress import progress_bar
from vlmzoo.tasks.segmentation import VaeFileError, convert_vae_to_safetensors

__all__ = ["DEFAULT_VAE_NAME", "DEFAULT_VAE_URL", "default_vae_file", "default_vae_path"]

#: Where big_vision publishes the VQ-VAE PaliGemma's ``<seg>`` tokens were made with.
DEFAULT_VAE_URL = "https://storage.googleapis.com/big_vision/paligemma/vae-oid.npz"
#: The converted file's name in the cache directory.
DEFAULT_VAE_NAME = "vae-oid.safetensors"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def default_vae_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted default VQ-VAE is kept: ``<cache_dir or the Hugging Face hub cache>/vlmzoo/``."""
    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    return Path(cache_dir).expanduser() / "vlmzoo" / DEFAULT_VAE_NAME


def fetch(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination``; the byte count must equal the server's Content-Length."""
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (a fixed https URL or a test's)
        expected = response.headers.get("Content-Length")
        total = int(expected) if expected and expected.isdigit() else None
        written = 0
        with open(destination, "wb") as out, progress_bar(
            total=total, unit="B", unit_scale=True, desc=DEFAULT_VAE_NAME
        ) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if total is not None and written != total:
        raise OSError(f"the download stopped at {written} of {total} bytes")


def default_vae_file(cache_dir: str | os.PathLike | None = None, url: str = DEFAULT_VAE_URL) -> Path:
    """The converted default VQ-VAE, downloaded and converted on first use (see the module docstring)."""
    target = default_vae_path(cache_dir)
    if target.is_file():
        return target
    where = f"download {url} and pass vae= its path, or put its conversion at {target}"
    if _offline():
        raise VaeFileError(f"segment needs a mask VQ-VAE and HF_HUB_OFFLINE is set, so none is downloaded: {where}")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".vae-download.", dir=target.parent))
    try:
        download = scratch / "vae-oid.npz"
        try:
            fetch(url, download)
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            raise VaeFileError(
                f"could not download the default mask VQ-VAE ({type(exc).__name__}: {exc}); check the network, "
                f"or {where}"
            ) from exc
        convert_vae_to_safetensors(download, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
