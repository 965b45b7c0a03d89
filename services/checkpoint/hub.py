"""Checkpoints from the Hugging Face hub: resolve one into the cache, or fetch one into a plain directory.

`resolve_checkpoint` finds the directory a server loads: a local path as given,
or the default snapshot in the Hugging Face cache. `fetch_snapshot` fills a plain
directory once, for deployments that mount the checkpoint instead of reaching the
hub from every server (the Kubernetes Job runs `barkstream checkpoint fetch`): it
verifies the checkpoint and only then writes DIR/.complete, so a re-applied Job
or a pod restarted halfway is safe (huggingface_hub resumes what it had).

Only what Bark runs on is fetched: configs, ONE weights format (safetensors
when the repo has it, else pytorch_model.bin), tokenizer files and speaker
embeddings. Where the hub cannot be reached and nothing is cached, the error
says how to go on without it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .layout import HF_WEIGHT_FILES, CheckpointError

DEFAULT_REPO = "suno/bark-small"
COMPLETE_MARKER = ".complete"  # written into a fetched directory once it has loaded and verified
COMMON_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "speaker_embeddings_path.json",
    "speaker_embeddings/**",
)
# (weight files to fetch, in order of preference); the first whose files arrive wins.
WEIGHT_PATTERNS = (
    ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"),
)


class HubUnavailableError(CheckpointError):
    """The default checkpoint is neither cached nor downloadable."""


def _offline_message(repo_id: str, cause: BaseException) -> str:
    return (
        f"cannot get checkpoint {repo_id!r} from the Hugging Face hub and it is not in the local cache "
        f"({type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}). "
        "Pass --checkpoint DIR with a local snapshot (a directory holding config.json and pytorch_model.bin "
        "or model.safetensors, e.g. a copy of suno/bark-small), or make a random one with "
        "`barkstream checkpoint random DIR --size small` (random weights: it produces noise, not speech)."
    )


def _has_weights(root: Path) -> bool:
    return any((root / name).is_file() for pair in HF_WEIGHT_FILES for name in pair)


def resolve_checkpoint(
    path: str | Path | None,
    *,
    repo_id: str = DEFAULT_REPO,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The checkpoint directory to load: `path` when given, else a snapshot of `repo_id`.

    Downloads go to the usual Hugging Face cache (or `cache_dir`); offline mode and a
    previously cached snapshot work as huggingface_hub makes them work.
    """
    if path is not None:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise CheckpointError(f"{root}: checkpoint directory not found")
        return root
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError as e:  # the server extra brings it; a bare client install does not
        raise HubUnavailableError(_offline_message(repo_id, e)) from e
    failures = (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError)
    root: Path | None = None
    try:
        for weights in WEIGHT_PATTERNS:
            root = Path(
                huggingface_hub.snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    allow_patterns=[*COMMON_PATTERNS, *weights],
                )
            )
            if _has_weights(root):
                return root
    except failures as e:
        raise HubUnavailableError(_offline_message(repo_id, e)) from e
    raise CheckpointError(f"{repo_id}: snapshot at {root} has no pytorch_model.bin or model.safetensors")


@dataclass(frozen=True)
class Fetched:
    """What `fetch_snapshot` did: the directory, and whether it was already complete."""

    out_dir: Path
    already_complete: bool
    seconds: float = 0.0


def fetch_snapshot(
    repo_id: str, out_dir: str | Path, revision: str | None = None, *, force: bool = False, verify: bool = True
) -> Fetched:
    """Download `repo_id` into `out_dir` (unless already complete), verify it, then mark it complete."""
    import huggingface_hub

    out = Path(out_dir)
    marker = out / COMPLETE_MARKER
    if marker.is_file() and not force:
        return Fetched(out, already_complete=True)
    marker.unlink(missing_ok=True)
    start = time.monotonic()
    for weights in WEIGHT_PATTERNS:  # safetensors when the repo has it, else pytorch_model.bin
        huggingface_hub.snapshot_download(
            repo_id, revision=revision, local_dir=out, allow_patterns=[*COMMON_PATTERNS, *weights]
        )
        if _has_weights(out):
            break
    else:
        raise CheckpointError(f"{repo_id}: no model.safetensors or pytorch_model.bin in the snapshot")
    if verify:
        from .load import load_checkpoint  # torch: only a verifying fetch pays for it

        load_checkpoint(out)  # raises CheckpointError on any missing or misshapen tensor
    seconds = round(time.monotonic() - start, 1)
    record = {"repo": repo_id, "revision": revision or "main", "verified": verify, "seconds": seconds}
    marker.write_text(json.dumps(record) + "\n")
    return Fetched(out, already_complete=False, seconds=seconds)
