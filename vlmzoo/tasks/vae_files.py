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

import numpy as np

from vlmzoo.progress import progress_bar
from vlmzoo.tasks.mask_decoding import (
    VaeFileError,
    decoder_shapes,
    decoder_state,
    read_vae_weights,
    resolve_vae_file,
)
from vlmzoo.tasks.mask_encoding import check_encoder_weights

__all__ = ["DEFAULT_VAE_NAME", "DEFAULT_VAE_URL", "convert_vae_to_safetensors", "default_vae_file", "default_vae_path"]

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
        with (
            open(destination, "wb") as out,
            progress_bar(total=total, unit="B", unit_scale=True, desc=DEFAULT_VAE_NAME) as bar,
        ):
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


def convert_vae_to_safetensors(npz: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write ``vae-oid.npz`` (codebook, ``decoder.*`` and, when present, ``encoder.*``; same key names) as safetensors.

    Every key and shape is checked first (the encoder's too, when the file has one); the file is written
    next to ``output`` under a temporary name, then moved into
    place, so an existing ``output`` is replaced only by a complete file.
    """
    from safetensors.numpy import save_file

    source = resolve_vae_file(npz)
    weights = read_vae_weights(source)
    decoder_state(weights, str(source))  # the same checks as loading
    keys = list(decoder_shapes())
    if any(key.startswith("encoder.") for key in weights):
        keys += [key for key in check_encoder_weights(weights, str(source)) if key not in keys]
    kept = {key: np.ascontiguousarray(weights[key], dtype=np.float32) for key in keys}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    try:
        save_file(kept, temporary, metadata={"format": "np", "source": source.name})
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return output
