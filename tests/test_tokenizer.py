"""BarkTokenizer gives the ids transformers' BERT tokenizers give (services/bark/tokenizer.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from barkstream.services.bark.tokenizer import BarkTokenizer, TokenizerError, normalize_text
from barkstream.services.checkpoint.random_writer import tokenizer_vocab

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning")

TEXTS = [
    "Hello world",
    "  Hello,   my dog is cute!!  ",
    "Héllo café naïve ß Straße ñandú",
    "你好世界 日本語のテキスト 한국어",
    "[laughs] Hello [MASK] there [CLS]",
    "Unknownwordzzz xyzzy qwerty",
    "a" * 150,  # longer than max_input_chars_per_word: one [UNK]
    "tab\tnew\nline\r\n end\u00a0nbsp",
    "¿Qué tal? ¡Bien! — “quoted” ‘single’ … €100 50°",
    "привет мир",
    "x\u0000y\u200bz\ufffd control chars",
    "ＡＢＣ fullwidth, emoji 😀 here",
    "walked talking quickly... done?!",
    "Hallo Welt und der die das",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_dir: Path) -> Path:
    """Only the tokenizer files of the session's random checkpoint."""
    full = tiny_checkpoint_dir
    out = tmp_path_factory.mktemp("tokonly")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(full / name, out / name)
    return out


def _suno_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()  # what Suno's generate_text_semantic does first


@pytest.mark.parity
def test_same_ids_as_transformers(ckpt_dir: Path) -> None:
    """transformers 5's BertTokenizer (what `bark` calls here) and the slow 4.x-style tokenizer."""
    from transformers import BertTokenizer
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    ours = BarkTokenizer.from_dir(ckpt_dir)
    # Note: transformers 5's BertTokenizer ignores `vocab_file=`; it takes the vocab as `vocab=`.
    fast = BertTokenizer(vocab=str(ckpt_dir / "vocab.txt"), do_lower_case=False)
    hub = BertTokenizer.from_pretrained(ckpt_dir)
    slow = BertTokenizerLegacy(vocab_file=str(ckpt_dir / "vocab.txt"), do_lower_case=False)
    for text in TEXTS:
        want = slow.encode(_suno_text(text), add_special_tokens=False)
        assert ours.encode(text) == want, text
        assert fast.encode(_suno_text(text), add_special_tokens=False) == want, text
        assert hub.encode(_suno_text(text), add_special_tokens=False) == want, text
        assert ours.count(text) == len(want)


@pytest.mark.parity
def test_decomposed_accents_follow_the_fast_tokenizer(ckpt_dir: Path) -> None:
    """The one known split: slow BertTokenizer (transformers 4.29+) NFC-composes, tokenizers does not.

    Bark was trained before that change and transformers 5 (what `bark` runs with here) has no NFC,
    so barkstream follows the fast tokenizer.
    """
    from transformers import BertTokenizer
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    text = "cafe\u0301"
    ours = BarkTokenizer.from_dir(ckpt_dir).encode(text)
    assert ours == BertTokenizer(vocab=str(ckpt_dir / "vocab.txt"), do_lower_case=False).encode(
        text, add_special_tokens=False
    )
    slow = BertTokenizerLegacy(vocab_file=str(ckpt_dir / "vocab.txt"), do_lower_case=False)
    assert slow.encode(text, add_special_tokens=False) != ours


def test_vocab_txt_only_matches_tokenizer_json(ckpt_dir: Path, tmp_path: Path) -> None:
    shutil.copy(ckpt_dir / "vocab.txt", tmp_path / "vocab.txt")
    a, b = BarkTokenizer.from_dir(ckpt_dir), BarkTokenizer.from_dir(tmp_path)
    for text in TEXTS:
        assert a.encode(text) == b.encode(text)
    assert a.vocab_size == b.vocab_size == len(tokenizer_vocab())


def test_no_special_tokens_and_whitespace_normalisation(ckpt_dir: Path) -> None:
    tok = BarkTokenizer.from_dir(ckpt_dir)
    ids = tok.encode("  Hello \n\t world  ")
    assert ids == tok.encode("Hello world") and 101 not in ids and 102 not in ids
    assert tok.tokens("Héllo") == ["H", "##é", "##l", "##l", "##o"]
    assert tok.encode("Bark is cute") == [tokenizer_vocab().index(w) for w in ("Bark", "is", "cute")]
    assert normalize_text(" a \u3000 b\n") == "a b"


def test_refuses_a_lowercasing_tokenizer_json(ckpt_dir: Path, tmp_path: Path) -> None:
    spec = json.loads((ckpt_dir / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"]["lowercase"] = True
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(TokenizerError, match="lowercases"):
        BarkTokenizer.from_dir(tmp_path)


def test_missing_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no tokenizer.json or vocab.txt"):
        BarkTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        BarkTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "vocab.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"\[UNK\]"):
        BarkTokenizer.from_dir(tmp_path)
