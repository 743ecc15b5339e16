"""Objects, actions and the sentences that describe them in each language of the synthetic corpus."""

from __future__ import annotations

import dataclasses

LANGUAGES = ("en", "mr", "hi", "ja")
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "crescent")
TEXTURES = ("solid", "striped", "dotted")
ACTIONS = ("rotate", "slide", "shrink", "grow", "shake", "fall", "bounce", "heat")
# Saturated object colours (RGB) that stand out from the muted backgrounds.
COLOURS = {
    "red": (205, 40, 40),
    "blue": (35, 75, 215),
    "green": (35, 160, 55),
    "yellow": (235, 205, 30),
    "purple": (135, 50, 175),
    "orange": (245, 125, 20),
}


@dataclasses.dataclass(frozen=True)
class Phrase:
    """A piece of text with its written and spoken forms.

    They are the same except in Japanese, whose captions use kanji and kana
    while eSpeak NG reads kana only; spaces in the Japanese spoken form mark
    phrase boundaries for the synthesizer and never appear in a caption.

    Attributes:
      text: what a caption shows.
      speech: what the synthesizer is given (equal to `text` except in Japanese).
    """

    text: str
    speech: str


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object a tutorial shows: a shape with a colour and a surface texture.

    Attributes:
      shape: one of SHAPES.
      colour: a key of COLOURS.
      texture: one of TEXTURES.
    """

    shape: str
    colour: str
    texture: str

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"Unknown shape {self.shape!r}; valid: {', '.join(SHAPES)}.")
        if self.colour not in COLOURS:
            raise ValueError(f"Unknown colour {self.colour!r}; valid: {', '.join(COLOURS)}.")
        if self.texture not in TEXTURES:
            raise ValueError(f"Unknown texture {self.texture!r}; valid: {', '.join(TEXTURES)}.")

    @property
    def name(self) -> str:
        """Canonical English name, always three words: 'solid red circle'."""
        return f"{self.texture} {self.colour} {self.shape}"


# --- English -------------------------------------------------------------------------------------

_EN_ACTIONS = {
    "rotate": "Rotate the {obj}.",
    "slide": "Slide the {obj} across the table.",
    "shrink": "Make the {obj} smaller.",
    "grow": "Make the {obj} bigger.",
    "shake": "Shake the {obj}.",
    "fall": "Drop the {obj}.",
    "bounce": "Bounce the {obj}.",
    "heat": "Heat the {obj}.",
}


def _en_object(obj: SceneObject) -> str:
    texture = "" if obj.texture == "solid" else obj.texture + " "
    return f"{texture}{obj.colour} {obj.shape}"


# --- Marathi -------------------------------------------------------------------------------------
# Nouns carry a gender (m, f, n) that declinable adjectives agree with; the
# objects stay in the direct case, as Marathi does for inanimate objects.

_MR_SHAPES = {
    "circle": ("वर्तुळ", "n"),
    "square": ("चौरस", "m"),
    "triangle": ("त्रिकोण", "m"),
    "star": ("तारा", "m"),
    "ring": ("कडे", "n"),
    "cross": ("फुली", "f"),
    "hexagon": ("षटकोन", "m"),
    "crescent": ("चंद्रकोर", "f"),
}
_MR_COLOURS = {
    "red": {"m": "लाल", "f": "लाल", "n": "लाल"},
    "blue": {"m": "निळा", "f": "निळी", "n": "निळे"},
    "green": {"m": "हिरवा", "f": "हिरवी", "n": "हिरवे"},
    "yellow": {"m": "पिवळा", "f": "पिवळी", "n": "पिवळे"},
    "purple": {"m": "जांभळा", "f": "जांभळी", "n": "जांभळे"},
    "orange": {"m": "नारिंगी", "f": "नारिंगी", "n": "नारिंगी"},
}
_MR_TEXTURES = {"solid": "", "striped": "पट्टेदार", "dotted": "ठिपकेदार"}
_MR_BIG = {"m": "मोठा", "f": "मोठी", "n": "मोठे"}
_MR_ACTIONS = {
    "rotate": "{obj} फिरवा.",
    "slide": "{obj} टेबलावर सरकवा.",
    "shrink": "{obj} लहान करा.",
    "grow": "{obj} {big} करा.",
    "shake": "{obj} जोरात हलवा.",
    "fall": "{obj} खाली पडू द्या.",
    "bounce": "{obj} उसळी मारू द्या.",
    "heat": "{obj} गरम करा.",
}


def _mr_sentence(obj: SceneObject, action: str) -> str:
    noun, gender = _MR_SHAPES[obj.shape]
    words = [_MR_TEXTURES[obj.texture], _MR_COLOURS[obj.colour][gender], noun]
    return _MR_ACTIONS[action].format(obj=" ".join(w for w in words if w), big=_MR_BIG[gender])


# --- Hindi ---------------------------------------------------------------------------------------
# A definite object takes 'को', which puts the noun and its adjectives in the
# oblique case: नीला तारा -> नीले तारे को. All shape nouns used here are masculine.

_HI_SHAPES = {
    "circle": ("वृत्त", "वृत्त"),
    "square": ("वर्ग", "वर्ग"),
    "triangle": ("त्रिभुज", "त्रिभुज"),
    "star": ("तारा", "तारे"),
    "ring": ("छल्ला", "छल्ले"),
    "cross": ("क्रॉस", "क्रॉस"),
    "hexagon": ("षट्भुज", "षट्भुज"),
    "crescent": ("अर्धचंद्र", "अर्धचंद्र"),
}
_HI_COLOURS_OBLIQUE = {
    "red": "लाल",
    "blue": "नीले",
    "green": "हरे",
    "yellow": "पीले",
    "purple": "बैंगनी",
    "orange": "नारंगी",
}
_HI_TEXTURES = {"solid": "", "striped": "धारीदार", "dotted": "बिंदीदार"}
_HI_ACTIONS = {
    "rotate": "{obj} को घुमाइए।",
    "slide": "{obj} को मेज़ पर खिसकाइए।",
    "shrink": "{obj} को छोटा कीजिए।",
    "grow": "{obj} को बड़ा कीजिए।",
    "shake": "{obj} को ज़ोर से हिलाइए।",
    "fall": "{obj} को नीचे गिराइए।",
    "bounce": "{obj} को उछालिए।",
    "heat": "{obj} को गरम कीजिए।",
}


def _hi_sentence(obj: SceneObject, action: str) -> str:
    words = [_HI_TEXTURES[obj.texture], _HI_COLOURS_OBLIQUE[obj.colour], _HI_SHAPES[obj.shape][1]]
    return _HI_ACTIONS[action].format(obj=" ".join(w for w in words if w))


# --- Japanese ------------------------------------------------------------------------------------
# (written, kana reading) pairs.

_JA_SHAPES = {
    "circle": ("丸", "まる"),
    "square": ("四角", "しかく"),
    "triangle": ("三角", "さんかく"),
    "star": ("星", "ほし"),
    "ring": ("リング", "リング"),
    "cross": ("バツ印", "ばつじるし"),
    "hexagon": ("六角形", "ろっかくけい"),
    "crescent": ("三日月", "みかづき"),
}
_JA_COLOURS = {
    "red": ("赤い", "あかい"),
    "blue": ("青い", "あおい"),
    "green": ("緑の", "みどりの"),
    "yellow": ("黄色い", "きいろい"),
    "purple": ("紫の", "むらさきの"),
    "orange": ("オレンジ色の", "オレンジいろの"),
}
_JA_TEXTURES = {
    "solid": ("", ""),
    "striped": ("しま模様の", "しまもようの"),
    "dotted": ("水玉模様の", "みずたまもようの"),
}
_JA_ACTIONS = {
    "rotate": ("{obj}を回してください。", "{obj}を まわして ください。"),
    "slide": ("{obj}をテーブルの上で滑らせてください。", "{obj}を テーブルの うえで すべらせて ください。"),
    "shrink": ("{obj}を小さくしてください。", "{obj}を ちいさく して ください。"),
    "grow": ("{obj}を大きくしてください。", "{obj}を おおきく して ください。"),
    "shake": ("{obj}を振ってください。", "{obj}を ふって ください。"),
    "fall": ("{obj}を落としてください。", "{obj}を おとして ください。"),
    "bounce": ("{obj}を弾ませてください。", "{obj}を はずませて ください。"),
    "heat": ("{obj}を温めてください。", "{obj}を あたためて ください。"),
}


def _ja_sentence(obj: SceneObject, action: str) -> Phrase:
    parts = [_JA_TEXTURES[obj.texture], _JA_COLOURS[obj.colour], _JA_SHAPES[obj.shape]]
    text = "".join(p[0] for p in parts)
    speech = " ".join(p[1] for p in parts if p[1])
    written, spoken = _JA_ACTIONS[action]
    return Phrase(written.format(obj=text), spoken.format(obj=speech))


# --- Step-independent speech ---------------------------------------------------------------------

_INTROS = {
    "en": Phrase("Hi, let's get started.", "Hi, let's get started."),
    "mr": Phrase("नमस्कार, चला सुरू करूया.", "नमस्कार, चला सुरू करूया."),
    "hi": Phrase("नमस्ते, चलिए शुरू करते हैं।", "नमस्ते, चलिए शुरू करते हैं।"),
    "ja": Phrase("こんにちは。では、始めましょう。", "こんにちは。 では、 はじめましょう。"),
}
_FILLERS = {
    "en": ("Okay.", "Now let's continue.", "Alright, on to the next step.", "Good.", "Let's see.", "That looks right."),
    "mr": ("ठीक आहे.", "आता पुढे जाऊया.", "चला, पुढची पायरी.", "छान.", "बघूया.", "हे बरोबर दिसतंय."),
    "hi": ("ठीक है।", "अब आगे बढ़ते हैं।", "चलिए, अगला चरण।", "बहुत अच्छा।", "देखते हैं।", "यह सही लग रहा है।"),
    "ja": (
        ("はい。", "はい。"),
        ("では、続けましょう。", "では、 つづけましょう。"),
        ("次に進みましょう。", "つぎに すすみましょう。"),
        ("いいですね。", "いいですね。"),
        ("見てみましょう。", "みて みましょう。"),
        ("これで大丈夫です。", "これで だいじょうぶです。"),
    ),
}


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"Unknown language {language!r}; supported: {', '.join(LANGUAGES)}.")


def step_sentence(obj: SceneObject, action: str, language: str) -> Phrase:
    """The instruction for one step, e.g. 'Rotate the striped red circle.'.

    Args:
      obj: the object the step shows.
      action: one of ACTIONS.
      language: one of LANGUAGES.

    Returns:
      The sentence's written and spoken forms.

    Raises:
      ValueError: unknown action or language.
    """
    _check_language(language)
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}; valid: {', '.join(ACTIONS)}.")
    if language == "en":
        text = _EN_ACTIONS[action].format(obj=_en_object(obj))
    elif language == "mr":
        text = _mr_sentence(obj, action)
    elif language == "hi":
        text = _hi_sentence(obj, action)
    else:
        return _ja_sentence(obj, action)
    return Phrase(text, text)


def intro(language: str) -> Phrase:
    """The greeting a tutorial opens with, in `language`."""
    _check_language(language)
    return _INTROS[language]


def fillers(language: str) -> tuple[Phrase, ...]:
    """Step-independent remarks ('Okay.', 'Now let's continue.') in `language`."""
    _check_language(language)
    return tuple(Phrase(*f) if isinstance(f, tuple) else Phrase(f, f) for f in _FILLERS[language])
