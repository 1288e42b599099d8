"""Find a checkpoint: a local directory as is, a checkpoint bundled with vlmzoo by its name, or a hub
repo id fetched through huggingface_hub.

huggingface_hub brings its cache, ``HF_HUB_OFFLINE``, ``HF_TOKEN`` for gated repos, and revisions.
Only safetensors, JSON and tokenizer files are fetched: never pickled weights. Bundled checkpoints
are package data: they load offline, with nothing to download.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlmzoo.errors import VlmzooError

WEIGHT_PATTERNS = ["*.safetensors", "*.safetensors.index.json"]
CONFIG_PATTERNS = ["*.json", "tokenizer.model"]
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
#: Checkpoints shipped inside the package, by name: the directory under ``vlmzoo/bundled/`` holding each.
BUNDLED = {"shapes-demo": "shapes-demo", "shapes-siglip": "shapes-siglip"}


def bundled_checkpoint(name: str) -> Path | None:
    """The package directory of a checkpoint that ships with vlmzoo, or None if `name` is not one."""
    folder = BUNDLED.get(name)
    return None if folder is None else BUNDLED_DIR / folder


class CheckpointNotFoundError(VlmzooError, FileNotFoundError):
    """Neither a local directory nor a reachable hub repository."""


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or "\\" in name


def _variant_hint(name: str) -> str | None:
    """If ``name`` is a zoo variant (an architecture, no weights), the sentence that says so."""
    # The variants are read from the registries, not through the zoo, which sits above checkpoint files.
    from vlmzoo.plugins import get_registries
    from vlmzoo.variants import aliases_of, variants_of

    try:
        variants = variants_of(get_registries())
        if name not in variants and name not in aliases_of(variants):
            return None
    except (ValueError, LookupError):
        return None
    return (
        f"{name!r} is a model variant of the zoo (an architecture without weights), not a checkpoint. Use "
        f"vlmzoo.build({name!r}) for a randomly initialised model, or pass a checkpoint directory or a hub id "
        "such as 'google/paligemma2-3b-pt-224'"
    )


def _local_hint(name: str) -> str:
    """For an ``owner/name`` that is not a local directory: what does exist locally, if anything."""
    parent = Path(name).expanduser().parent
    if parent.is_dir():
        return f"there is no directory {name!r} (though {str(parent)!r} exists), and "
    return f"there is no local directory {name!r}, and "


def resolve(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    weights: bool = True,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A local directory holding the checkpoint files (downloading them from the hub if needed).

    A local directory wins over a bundled checkpoint of the same name, as it does over a hub id.
    ``local_files_only`` uses the hub cache without the network (as ``HF_HUB_OFFLINE=1`` does);
    ``cache_dir`` puts that cache elsewhere. Both mean what they mean in transformers.
    """
    name = os.fspath(path_or_repo_id)
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    bundled = bundled_checkpoint(name)
    if bundled is not None:
        if not bundled.is_dir():
            raise CheckpointNotFoundError(
                f"the bundled checkpoint {name!r} is missing from this installation (no directory {bundled}); "
                "reinstall vlmzoo, or run from a source checkout that includes vlmzoo/bundled/"
            )
        return bundled
    if local.exists():
        raise CheckpointNotFoundError(f"{name} is a file; pass the checkpoint's directory (holding config.json)")
    if _looks_like_path(name):
        raise CheckpointNotFoundError(
            _variant_hint(name)
            or f"directory {name!r} does not exist, and it is not a hub repo id of the form 'owner/name' "
            "(e.g. 'google/paligemma2-3b-mix-224')"
        )
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = CONFIG_PATTERNS + (WEIGHT_PATTERNS if weights else [])
    options = {"local_files_only": True} if local_files_only else {}
    if cache_dir is not None:
        options["cache_dir"] = os.fspath(cache_dir)
    try:
        return Path(
            huggingface_hub.snapshot_download(name, revision=revision, token=token, allow_patterns=patterns, **options)
        )
    except LocalEntryNotFoundError as exc:
        raise CheckpointNotFoundError(
            f"{_local_hint(name)}{name!r} is not in the local Hugging Face cache and cannot be downloaded now "
            f"({'local_files_only=True' if local_files_only else 'offline, or no network'}): {exc}. Check the "
            "path, download the checkpoint once with network access, or pass a local directory."
        ) from exc
    except HfHubHTTPError as exc:
        raise CheckpointNotFoundError(
            f"{_local_hint(name)}could not fetch {name!r} (revision {revision or 'main'}) from the hub: {exc}. "
            "Check the path; for gated models "
            "such as PaliGemma, accept the licence on the model page and set HF_TOKEN."
        ) from exc
    except Exception as exc:  # network and other failures: the same advice applies
        raise CheckpointNotFoundError(
            f"{_local_hint(name)}could not fetch {name!r} (revision {revision or 'main'}) from the hub: "
            f"{type(exc).__name__}: {exc}. "
            "Check the repo id, the network, or set HF_HUB_OFFLINE=1 to use the local cache; or pass a local directory."
        ) from exc
