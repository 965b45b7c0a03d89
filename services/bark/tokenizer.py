"""Bark's text tokenizer: BERT multilingual cased WordPiece, ids without special tokens.

Suno's bark calls `BertTokenizer.from_pretrained("bert-base-multilingual-cased")`
and `encode(text, add_special_tokens=False)` after collapsing whitespace. We run
the same WordPiece through the `tokenizers` package (no transformers, no torch),
built from the checkpoint's own files, with mBERT-cased's settings: no
lowercasing, no accent stripping, control characters cleaned, CJK characters
split apart. A tokenizer.json that says otherwise is refused, because it would
silently give the semantic model different ids than Suno's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

UNK, CLS, SEP, PAD, MASK = "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
MAX_CHARS_PER_WORD = 100  # longer words become [UNK], as in BERT
_WHITESPACE = re.compile(r"\s+")


class TokenizerError(ValueError):
    """Tokenizer files are missing or do not describe BERT multilingual cased."""


def normalize_text(text: str) -> str:
    """Suno's `_normalize_whitespace`: runs of whitespace become one space, ends trimmed."""
    return _WHITESPACE.sub(" ", text).strip()


def read_vocab_txt(path: Path) -> dict[str, int]:
    """One token per line, id = line number (a repeated token keeps its last line, as BertTokenizer does)."""
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.rstrip("\n")] = index
    return vocab


def build_wordpiece(vocab: Mapping[str, int]) -> Tokenizer:
    """A `tokenizers` BERT WordPiece with bert-base-multilingual-cased's settings."""
    missing = [t for t in (UNK, CLS, SEP) if t not in vocab]
    if missing:
        raise TokenizerError(f"vocabulary lacks {missing}")
    tok = Tokenizer(models.WordPiece(dict(vocab), unk_token=UNK, max_input_chars_per_word=MAX_CHARS_PER_WORD))
    tok.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.BertProcessing((SEP, vocab[SEP]), (CLS, vocab[CLS]))
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _check_tokenizer_json(path: Path) -> None:
    """Refuse a tokenizer.json whose normalisation or model differs from mBERT cased."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: cannot read ({e})") from e
    norm = spec.get("normalizer") or {}
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    problems = []
    if norm.get("type") != "BertNormalizer":
        problems.append(f"normalizer is {norm.get('type')!r}, expected BertNormalizer")
    else:
        if norm.get("lowercase") is not False:
            problems.append("normalizer lowercases (mBERT cased does not)")
        if norm.get("strip_accents") not in (False, None):
            problems.append("normalizer strips accents (mBERT cased does not)")
        if norm.get("handle_chinese_chars") is False:
            problems.append("normalizer does not split CJK characters")
    if pre.get("type") != "BertPreTokenizer":
        problems.append(f"pre_tokenizer is {pre.get('type')!r}, expected BertPreTokenizer")
    if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != "##":
        problems.append(f"model is {model.get('type')!r}, expected WordPiece with '##' continuations")
    if problems:
        raise TokenizerError(f"{path}: not BERT multilingual cased: " + "; ".join(problems))


class BarkTokenizer:
    """Text -> BERT ids exactly as Suno's bark computes them (before the +10048 offset)."""

    def __init__(self, tokenizer: Tokenizer):
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer

    @classmethod
    def from_dir(cls, path: str | Path) -> BarkTokenizer:
        """From a checkpoint dir: tokenizer.json if present (validated), else vocab.txt."""
        root = Path(path)
        tj, vt = root / "tokenizer.json", root / "vocab.txt"
        if tj.is_file():
            _check_tokenizer_json(tj)
            try:
                return cls(Tokenizer.from_file(str(tj)))
            except Exception as e:  # tokenizers raises a bare Exception on malformed files
                raise TokenizerError(f"{tj}: cannot load ({e})") from e
        if vt.is_file():
            try:
                return cls(build_wordpiece(read_vocab_txt(vt)))
            except (OSError, UnicodeDecodeError) as e:
                raise TokenizerError(f"{vt}: cannot read ({e})") from e
        raise TokenizerError(f"{root}: no tokenizer.json or vocab.txt")

    @classmethod
    def from_vocab(cls, vocab: Sequence[str]) -> BarkTokenizer:
        """From a token list (id = position); for tests and random checkpoints."""
        return cls(build_wordpiece({t: i for i, t in enumerate(vocab)}))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer` (e.g. to save a tokenizer.json)."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        """Ids without [CLS]/[SEP], after Suno's whitespace normalisation."""
        return self._tok.encode(normalize_text(text), add_special_tokens=False).ids

    def count(self, text: str) -> int:
        """How many ids `encode` gives; Bark keeps the first 256."""
        return len(self.encode(text))

    def tokens(self, text: str) -> list[str]:
        """The word pieces, for debugging and tests."""
        return self._tok.encode(normalize_text(text), add_special_tokens=False).tokens
