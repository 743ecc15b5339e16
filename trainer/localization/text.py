"""Caption tokenization (in-graph and a pure-Python twin), vocabulary and fastText vectors."""

from __future__ import annotations

import collections
import logging
import re
import unicodedata
from typing import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

PAD_ID = 0
OOV_ID = 1
NUM_SPECIAL_TOKENS = 2
OOV_TOKEN = "[UNK]"

# Scripts written without spaces between words: every character of these ranges
# becomes a token of its own. Explicit code-point ranges rather than RE2's
# \p{Han}/\p{Hiragana}/\p{Katakana}: Python's `re` has no script classes, and one
# range list used by both tokenizers keeps them identical by construction. The
# Katakana block includes the prolonged sound mark U+30FC, whose script is Common.
_SPACELESS_RANGES = (
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3040, 0x309F),  # Hiragana
    (0x30A0, 0x30FF),  # Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # Halfwidth katakana
    (0x20000, 0x2FA1F),  # CJK extensions B-F and compatibility supplement
)
_SPACELESS_CLASS = "[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _SPACELESS_RANGES) + "]"
_SPACELESS_RE = re.compile(_SPACELESS_CLASS)
# Apostrophes are deleted, not turned into spaces, so "don't" stays one token.
_APOSTROPHES = "'\u2018\u2019\u02bc"


def _python_char_class(ch: str) -> str:
    """Maps one character to its normalization: ' ', '' or itself."""
    if ch in _APOSTROPHES:
        return ""
    category = unicodedata.category(ch)
    if category == "Cf":
        # Zero-width (non-)joiners etc.: deleting them keeps Devanagari words whole.
        return ""
    if category == "Cc" or category[0] in "ZPS":
        return " "
    return ch


def normalize_caption(text: str | bytes) -> str:
    """Pure-Python twin of `normalize_captions`: the normalized caption text.

    Args:
      text: a caption, as `str` or UTF-8 bytes.

    Returns:
      The caption lower-cased, with format characters and apostrophes deleted,
      control characters, separators, punctuation (the danda "।" included) and
      symbols turned into spaces, and a space either side of every Han, kana or
      halfwidth-kana character.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    text = "".join(_python_char_class(ch) for ch in text.lower())
    return _SPACELESS_RE.sub(r" \g<0> ", text)


def tokenize_caption(text: str | bytes) -> list[str]:
    """Pure-Python twin of `tokenize_captions`, used to build vocabularies.

    Args:
      text: a caption, as `str` or UTF-8 bytes.

    Returns:
      The caption's tokens, e.g. "Cut the 紙。" -> ["cut", "the", "紙"].
    """
    return normalize_caption(text).split()


def normalize_captions(texts: tf.Tensor) -> tf.Tensor:
    """In-graph caption normalization, token-for-token equal to `normalize_caption`.

    The two agree wherever TensorFlow's RE2 and Python's `unicodedata` share a
    Unicode version (characters assigned in between may differ), and except for
    Python's context-dependent lowering of a word-final Greek capital sigma.

    Args:
      texts: a string tensor of UTF-8 captions, any shape.

    Returns:
      A string tensor of the same shape.
    """
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, "[" + _APOSTROPHES + r"\p{Cf}]", "")
    texts = tf.strings.regex_replace(texts, r"[\p{Cc}\p{Z}\p{P}\p{S}]", " ")
    return tf.strings.regex_replace(texts, _SPACELESS_CLASS, r" \0 ")


def tokenize_captions(texts: tf.Tensor) -> tf.RaggedTensor:
    """In-graph tokenization of a batch of captions.

    Args:
      texts: a string tensor of shape [B].

    Returns:
      A ragged string tensor [B, (tokens)].
    """
    # After normalization the only whitespace left is ASCII space, which is what
    # tf.strings.split(sep=None) splits on (it ignores U+3000 and other spaces).
    return tf.strings.split(normalize_captions(texts))


def build_vocabulary(captions: Iterable[str], max_size: int, min_count: int = 1) -> list[str]:
    """Builds a caption vocabulary, most frequent token first.

    Args:
      captions: caption strings (training split only).
      max_size: the most words returned. Padding and out-of-vocabulary ids come
        on top, so pass `LocalizationModelConfig.vocab_size - NUM_SPECIAL_TOKENS`.
      min_count: tokens seen fewer times are left out.

    Returns:
      Tokens sorted by descending count, ties broken alphabetically.

    Raises:
      ValueError: `max_size` or `min_count` is below 1.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}.")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}.")
    counts = collections.Counter()
    for caption in captions:
        counts.update(tokenize_caption(caption))
    ranked = sorted((token for token, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
    return ranked[:max_size]


def _validate_vocabulary(vocabulary: Sequence[str]) -> list[str]:
    words = list(vocabulary)
    if not words:
        raise ValueError("vocabulary is empty; build it with build_vocabulary() from the training captions.")
    seen = set()
    for word in words:
        if not isinstance(word, str) or tokenize_caption(word) != [word]:
            raise ValueError(
                f"vocabulary entry {word!r} is not a normalized single token "
                f"(tokenize_caption gives {tokenize_caption(word) if isinstance(word, str) else None!r})."
            )
        if word in seen:
            raise ValueError(f"vocabulary entry {word!r} appears more than once.")
        seen.add(word)
    return words


@keras.saving.register_keras_serializable(package="avalign")
class CaptionTokenizer(keras.layers.Layer):
    """Maps raw caption strings to padded token ids, inside the graph.

    Id 0 is padding, id 1 out-of-vocabulary, and `vocabulary[i]` has id i + 2.
    The vocabulary lives in the layer config, so a saved model or an exported
    SavedModel takes raw text and tokenizes it exactly as training did.

    Args:
      vocabulary: normalized tokens (from `build_vocabulary`), without the
        padding and out-of-vocabulary entries.
      max_tokens: captions are cut or padded to this many ids.
      **kwargs: base layer arguments (name, ...).

    Raises:
      ValueError: an empty vocabulary, a duplicate or non-normalized entry, or
        `max_tokens` < 1.
    """

    def __init__(self, vocabulary: Sequence[str], max_tokens: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}.")
        self.vocabulary = _validate_vocabulary(vocabulary)
        self.max_tokens = max_tokens
        self.lookup = keras.layers.StringLookup(
            vocabulary=self.vocabulary,
            mask_token="",
            num_oov_indices=1,
            oov_token=OOV_TOKEN,
            output_mode="int",
            name="lookup",
        )

    @property
    def vocabulary_size(self) -> int:
        """Number of ids, padding and out-of-vocabulary included."""
        return len(self.vocabulary) + NUM_SPECIAL_TOKENS

    def build(self, input_shape):
        # The lookup table is made in __init__ from the vocabulary; nothing to size.
        self.built = True

    def call(self, captions):
        """Tokenizes a batch.

        Args:
          captions: string tensor [B].

        Returns:
          int32 tensor [B, max_tokens].
        """
        tokens = tokenize_captions(captions)
        # Padding with "" maps to the mask id 0 in the lookup.
        tokens = tokens.to_tensor(default_value="", shape=[None, self.max_tokens])
        return tf.cast(self.lookup(tokens), "int32")

    def compute_output_spec(self, captions):
        return keras.KerasTensor((captions.shape[0], self.max_tokens), dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary": list(self.vocabulary), "max_tokens": self.max_tokens})
        return config


def load_fasttext_vectors(path: str, vocabulary: Sequence[str], dim: int, seed: int = 0) -> np.ndarray:
    """Reads a fastText `.vec` file into an embedding initializer for `vocabulary`.

    Row 0 (padding) is zeros; row 1 (out-of-vocabulary) and the rows of words
    missing from the file are drawn from N(0, s^2), s the standard deviation of
    the vectors found (1/sqrt(dim) when none is found), so that they share the
    pretrained vectors' scale. A word is matched exactly first; failing that, by
    the first file entry that lower-cases to it (`.vec` files are sorted by
    frequency, so that is the most frequent casing).

    Args:
      path: the `.vec` file (any path tf.io.gfile reads, gs:// included). Its
        first line is "<count> <dim>", then one "<word> <dim floats>" per line.
      vocabulary: the model's vocabulary, without padding and OOV entries.
      dim: the embedding width the model expects.
      seed: seed of the random rows.

    Returns:
      float32 array [len(vocabulary) + 2, dim].

    Raises:
      ValueError: a malformed header or row, or a file whose dimension is not
        `dim` (the message names the file and both dimensions).
    """
    index = {word: i + NUM_SPECIAL_TOKENS for i, word in enumerate(vocabulary)}
    found: dict[int, np.ndarray] = {}
    exact: set[int] = set()
    with tf.io.gfile.GFile(path, "rb") as f:
        header = f.readline().decode("utf-8").split()
        if len(header) != 2 or not all(part.isdigit() for part in header):
            raise ValueError(f"{path}: first line must be '<count> <dim>', got {' '.join(header)!r}.")
        file_dim = int(header[1])
        if file_dim != dim:
            raise ValueError(f"{path}: vectors have dimension {file_dim}, but the model expects embedding_dim={dim}.")
        for line_number, raw in enumerate(f, start=2):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            # Words never contain spaces in .vec files; values are space-separated.
            word, _, values = line.partition(" ")
            if not word:
                continue
            row = index.get(word)
            is_exact = row is not None
            if row is None:
                row = index.get(word.lower())
                if row is None or row in found:
                    continue
            elif row in exact:
                continue
            vector = np.asarray(values.split(), dtype=np.float32)
            if vector.shape != (dim,):
                raise ValueError(f"{path}:{line_number}: word {word!r} has {vector.size} values, expected {dim}.")
            found[row] = vector
            if is_exact:
                exact.add(row)
    rng = np.random.default_rng(seed)
    scale = float(np.std(np.stack(list(found.values())))) if found else 1.0 / np.sqrt(dim)
    matrix = rng.normal(0.0, scale, size=(len(vocabulary) + NUM_SPECIAL_TOKENS, dim)).astype(np.float32)
    matrix[PAD_ID] = 0.0
    for row, vector in found.items():
        matrix[row] = vector
    logging.info("fastText %s: %d of %d vocabulary words found.", path, len(found), len(vocabulary))
    return matrix
