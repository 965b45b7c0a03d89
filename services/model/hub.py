"""Find the checkpoint directory: a local path as given, or the default snapshot from the Hugging Face hub.

Only what Bark runs on is fetched: configs, ONE weights format (safetensors
when the repo has it, else pytorch_model.bin), tokenizer files and speaker
embeddings. Where the hub cannot be reached and nothing is cached, the error
says how to go on without it.
"""

from __future__ import annotations

from pathlib import Path

from .files import HF_WEIGHT_FILES, CheckpointError

DEFAULT_REPO = "suno/bark-small"
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
