"""Caption tokenization (graph vs Python twin), vocabulary, CaptionTokenizer and fastText loading."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.localization import text

CAPTIONS = {
    "english": (
        "Cut the bottle, then glue it! Don't spill.",
        ["cut", "the", "bottle", "then", "glue", "it", "dont", "spill"],
    ),
    "marathi": ("बाटली कापा। नंतर ती चिकटवा॥", ["बाटली", "कापा", "नंतर", "ती", "चिकटवा"]),
    "hindi": ("बोतल को काटें, फिर चिपकाएँ।", ["बोतल", "को", "काटें", "फिर", "चिपकाएँ"]),
    "japanese": ("ペットボトルを切ります。", ["ペ", "ッ", "ト", "ボ", "ト", "ル", "を", "切", "り", "ま", "す"]),
    "kanji_prolonged_mark": ("東京タワー　見る", ["東", "京", "タ", "ワ", "ー", "見", "る"]),
    "mixed": ("Step 2: ＬＥＤを光らせる (5V)", ["step", "2", "ｌｅｄ", "を", "光", "ら", "せ", "る", "5v"]),
    # The zero-width joiner of the Marathi eyelash ra is deleted, not a split.
    "zwj": ("दर्‍या\u200d मध्ये", ["दर्या", "मध्ये"]),
    "halfwidth_kana": ("ｶﾀｶﾅ test", ["ｶ", "ﾀ", "ｶ", "ﾅ", "test"]),
    "empty": ("", []),
    "only_punctuation": (" ...!!! ।। ", []),
}


@pytest.mark.parametrize("name", sorted(CAPTIONS))
def test_python_tokenizer_gives_expected_tokens(name):
    caption, expected = CAPTIONS[name]
    assert text.tokenize_caption(caption) == expected


def test_graph_tokenizer_matches_python_twin():
    captions = [caption for caption, _ in CAPTIONS.values()] + [
        "TAB\tand\nnewline\r\nsplit",
        "Émile’s café — naïve “quotes” ＆ ½ symbols ★",
        "मराठी: पाणी (water) आणि हिंदी: पानी?",
        "日本語のテキスト、句読点！？と「括弧」",
        "x" * 50 + " ॐ ।",
    ]
    graph = text.tokenize_captions(tf.constant(captions)).to_list()
    for caption, tokens in zip(captions, graph):
        assert [t.decode("utf-8") for t in tokens] == text.tokenize_caption(caption), caption


def test_tokenize_caption_accepts_utf8_bytes():
    assert text.tokenize_caption("कापा।".encode("utf-8")) == ["कापा"]


def test_build_vocabulary_orders_by_count_then_alphabet():
    captions = ["b a c", "a b", "d a", "c"]
    # a:3, b:2, c:2, d:1 -> ties between b and c broken alphabetically.
    assert text.build_vocabulary(captions, max_size=10) == ["a", "b", "c", "d"]
    assert text.build_vocabulary(captions, max_size=2) == ["a", "b"]
    assert text.build_vocabulary(captions, max_size=10, min_count=2) == ["a", "b", "c"]
    assert text.build_vocabulary(reversed(captions), max_size=10) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("kwargs, bad", [({"max_size": 0}, "0"), ({"max_size": 3, "min_count": 0}, "0")])
def test_build_vocabulary_rejects_bad_sizes(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        text.build_vocabulary(["a"], **kwargs)


def test_caption_tokenizer_ids_padding_oov_and_truncation():
    layer = text.CaptionTokenizer(["cut", "the", "紙"], max_tokens=4)
    ids = layer(tf.constant(["Cut the 紙!", "cut unknown", "", "the the the the the"])).numpy()
    np.testing.assert_array_equal(
        ids,
        [[2, 3, 4, 0], [2, 1, 0, 0], [0, 0, 0, 0], [3, 3, 3, 3]],
    )
    assert ids.dtype == np.int32
    assert layer.vocabulary_size == 5


def test_caption_tokenizer_config_round_trip():
    layer = text.CaptionTokenizer(["कापा", "बाटली"], max_tokens=3, name="tok")
    clone = text.CaptionTokenizer.from_config(layer.get_config())
    captions = tf.constant(["बाटली कापा।", "other"])
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone(captions), layer(captions))


@pytest.mark.parametrize(
    "vocabulary, bad",
    [
        (["cut", "cut"], "'cut'"),
        (["Cut"], "'Cut'"),
        (["two words"], "'two words'"),
        (["紙を"], "'紙を'"),
        ([], "empty"),
    ],
)
def test_caption_tokenizer_rejects_bad_vocabulary(vocabulary, bad):
    with pytest.raises(ValueError, match=bad):
        text.CaptionTokenizer(vocabulary, max_tokens=4)


def test_caption_tokenizer_rejects_bad_max_tokens():
    with pytest.raises(ValueError, match="max_tokens.*0"):
        text.CaptionTokenizer(["a"], max_tokens=0)


def _write_vec(path, rows, dim, count=None):
    lines = [f"{len(rows) if count is None else count} {dim}"]
    lines += [word + " " + " ".join(f"{v:g}" for v in values) for word, values in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_load_fasttext_vectors(tmp_path):
    path = tmp_path / "wiki.vec"
    _write_vec(
        path,
        [
            ("Glue", [9.0, 9.0, 9.0]),  # A lower-case match for "glue" comes first...
            ("cut", [1.0, 2.0, 3.0]),
            ("glue", [4.0, 5.0, 6.0]),  # ...but the exact match replaces it.
            ("बाटली", [0.5, -0.5, 0.25]),
            ("unused", [1.0, 1.0, 1.0]),
        ],
        dim=3,
    )
    vocabulary = ["cut", "glue", "बाटली", "missing", "tape"]
    matrix = text.load_fasttext_vectors(str(path), vocabulary, dim=3, seed=1)
    assert matrix.shape == (len(vocabulary) + 2, 3)
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[text.PAD_ID], 0.0)
    np.testing.assert_array_equal(matrix[2], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(matrix[3], [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(matrix[4], [0.5, -0.5, 0.25])
    # OOV and the words missing from the file are random, at the found vectors' scale.
    random_rows = matrix[[text.OOV_ID, 5, 6]]
    assert np.all(random_rows != 0.0)
    assert len({tuple(row) for row in random_rows}) == 3
    again = text.load_fasttext_vectors(str(path), vocabulary, dim=3, seed=1)
    np.testing.assert_array_equal(matrix, again)


def test_load_fasttext_vectors_lowercase_fallback(tmp_path):
    path = tmp_path / "cased.vec"
    _write_vec(path, [("Glue", [1.0, 1.0]), ("GLUE", [2.0, 2.0])], dim=2)
    matrix = text.load_fasttext_vectors(str(path), ["glue"], dim=2)
    # The first (most frequent) casing is used.
    np.testing.assert_array_equal(matrix[2], [1.0, 1.0])


def test_load_fasttext_vectors_dimension_mismatch_names_file_and_dims(tmp_path):
    path = tmp_path / "small.vec"
    _write_vec(path, [("cut", [1.0, 2.0])], dim=2)
    with pytest.raises(ValueError, match=r"small\.vec.*dimension 2.*embedding_dim=300"):
        text.load_fasttext_vectors(str(path), ["cut"], dim=300)


def test_load_fasttext_vectors_bad_row_and_header(tmp_path):
    path = tmp_path / "bad.vec"
    path.write_text("1 3\ncut 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.vec:2.*'cut' has 2 values, expected 3"):
        text.load_fasttext_vectors(str(path), ["cut"], dim=3)
    path.write_text("cut 1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.vec: first line"):
        text.load_fasttext_vectors(str(path), ["cut"], dim=3)
