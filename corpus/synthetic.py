"""Generates avalign's built-in corpus: narrated multilingual how-to videos with caption annotations."""

from __future__ import annotations

import argparse
import collections
import colorsys
import dataclasses
import fractions
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from typing import Iterator, Mapping, Optional, Union

import av
import numpy as np
from tqdm import tqdm

from corpus import tts
from corpus import vocab as corpus_vocab
from corpus.vocab import ACTIONS, SceneObject

GENERATOR_VERSION = "1.1"  # 1.1: reproducible encoding (no x264 macroblock tree).
SUPPORTED_LANGUAGES = tuple(code for code in corpus_vocab.LANGUAGES if code in tts.SUPPORTED_LANGUAGES)
# Sample rates FFmpeg's native AAC encoder accepts.
AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# Timeline, in seconds.
MIN_DURATION = 8.0  # Room for a lead-in, one shortest step and the tail.
MAX_DURATION = 3600.0
_LEAD = (1.0, 3.0)
_STEP = (3.0, 20.0)
_GAP = (1.5, 5.0)
_TAIL = 2.0
_NARRATION_OFFSET = (-1.0, 2.0)  # Narration start relative to its step's start.
_SPEECH_GAP = 0.3  # Least silence between two utterances.

# Levels (RMS, full scale = 1).
_SPEECH_RMS = 0.1
_ACTION_RMS = 0.035
_ROOM_RMS = (0.003, 0.006)

# Margin of the precomputed camera-noise fields that frames crop from.
_NOISE_PAD = 32
# Object radius as a fraction of the frame's shorter side.
_RADIUS = 0.18


def parse_languages(text: str) -> dict[str, float]:
    """Parses 'en,mr' or 'en=4,ja=1' into {code: weight}.

    Args:
      text: comma-separated language codes, each optionally `=weight`.

    Returns:
      Language code -> positive weight (1.0 where none is given).

    Raises:
      ValueError: empty list, unknown or repeated code, or a weight that is not
        a positive number.
    """
    result: dict[str, float] = {}
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise ValueError(f"No languages in {text!r}; give e.g. 'en,mr' or 'en=4,ja=1'.")
    for item in items:
        if not item:
            raise ValueError(f"Empty entry in languages {text!r}.")
        code, _, weight_text = item.partition("=")
        code = code.strip()
        if code in result:
            raise ValueError(f"Language {code!r} is given twice in {text!r}.")
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
        except ValueError:
            raise ValueError(f"Weight of language {code!r} must be a number, got {weight_text!r}.") from None
        result[code] = weight
    return result


@dataclasses.dataclass
class SyntheticConfig:
    """What corpus to generate.

    Attributes:
      out: output directory (created if missing; existing files of the same
        names are overwritten, nothing else is deleted).
      videos: number of videos.
      languages: narration language code -> relative weight; videos are
        assigned languages in proportion to the weights (largest remainder),
        so 'en=4,ja=1' over 100 videos gives 80 English and 20 Japanese. A
        string 'en,mr=2' is parsed with `parse_languages`.
      seed: non-negative seed; video i draws from a generator seeded with
        (seed, i), so the output does not depend on `workers`.
      min_duration: shortest video in seconds (>= MIN_DURATION).
      max_duration: longest video in seconds (>= min_duration).
      audio_dependent_fraction: share of steps, in [0, 1], that repeat an
        object already shown with a different action that is hard to see and
        easy to hear. The first step of a video is always visible, so a video
        of n steps has at most n - 1 of them.
      fps: frames per second.
      width: frame width in pixels (even, >= 64).
      height: frame height in pixels (even, >= 48).
      sample_rate: audio sample rate in Hz; one of AAC_SAMPLE_RATES (16000
        matches the audio front-end, so no resampling is needed downstream).
      workers: processes that render videos; 1 renders in this process.
      split: train / val / test fractions of the videos (per language).
    """

    out: str
    videos: int = 80
    languages: dict[str, float] = dataclasses.field(default_factory=lambda: {c: 1.0 for c in SUPPORTED_LANGUAGES})
    seed: int = 0
    min_duration: float = 30.0
    max_duration: float = 90.0
    audio_dependent_fraction: float = 0.3
    fps: int = 10
    width: int = 160
    height: int = 120
    sample_rate: int = 16000
    workers: int = 2
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)

    def __post_init__(self):
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out).strip():
            raise ValueError(f"out must be a non-empty path, got {self.out!r}.")
        self.out = os.fspath(self.out)
        _check_int("videos", self.videos, 1)
        if isinstance(self.languages, str):
            self.languages = parse_languages(self.languages)
        if not isinstance(self.languages, Mapping) or not self.languages:
            raise ValueError(f"languages must be a non-empty mapping of code -> weight, got {self.languages!r}.")
        languages = {}
        for code, weight in self.languages.items():
            if code not in SUPPORTED_LANGUAGES:
                raise ValueError(f"Unsupported language {code!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}.")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
                raise ValueError(f"Weight of language {code!r} must be a positive number, got {weight!r}.")
            languages[code] = float(weight)
        self.languages = languages
        _check_int("seed", self.seed, 0)
        for name in ("min_duration", "max_duration", "audio_dependent_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
            setattr(self, name, float(value))
        if not MIN_DURATION <= self.min_duration <= MAX_DURATION:
            raise ValueError(
                f"min_duration must be in [{MIN_DURATION}, {MAX_DURATION}] seconds (a video needs room for a "
                f"lead-in, a step and a tail), got {self.min_duration}."
            )
        if not self.min_duration <= self.max_duration <= MAX_DURATION:
            raise ValueError(
                f"max_duration must be in [min_duration={self.min_duration}, {MAX_DURATION}] seconds, "
                f"got {self.max_duration}."
            )
        if not 0.0 <= self.audio_dependent_fraction <= 1.0:
            raise ValueError(f"audio_dependent_fraction must be in [0, 1], got {self.audio_dependent_fraction}.")
        _check_int("fps", self.fps, 1, 60)
        _check_int("width", self.width, 64, 1920)
        _check_int("height", self.height, 48, 1080)
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even (4:2:0 video), got {self.width}x{self.height}.")
        if self.sample_rate not in AAC_SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {list(AAC_SAMPLE_RATES)} (AAC), got {self.sample_rate!r}.")
        _check_int("workers", self.workers, 1, 256)
        split = self.split
        if isinstance(split, str):
            try:
                split = tuple(float(s) for s in split.split(","))
            except ValueError:
                raise ValueError(f"split must be three numbers 'train,val,test', got {self.split!r}.") from None
        split = tuple(split)
        if (
            len(split) != 3
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1 for f in split)
            or split[0] <= 0
            or abs(sum(split) - 1.0) > 1e-6
        ):
            raise ValueError(
                f"split must be three fractions train,val,test in [0, 1] with train > 0 summing to 1, got {self.split!r}."
            )
        self.split = tuple(float(f) for f in split)


def _check_int(name: str, value, low: int, high: Optional[int] = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}.")


# --- Corpus-level decisions (depend on seed and the number of videos only) -----------------------


def _largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Integer counts summing to `total`, proportional to `weights`."""
    w = np.asarray(weights, np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts.tolist()


def video_ids(count: int) -> list[str]:
    """Ids 'v_000000', ... whose lexical order is their index order."""
    width = max(6, len(str(count - 1)))
    return [f"v_{i:0{width}d}" for i in range(count)]


def assign_languages(languages: Mapping[str, float], count: int, seed: int) -> list[str]:
    """The narration language of each video, in proportion to the weights, shuffled by `seed`."""
    codes = sorted(languages)
    counts = _largest_remainder(count, [languages[c] for c in codes])
    order = np.repeat(np.arange(len(codes)), counts)
    order = np.random.default_rng([seed, 2]).permutation(order)
    return [codes[i] for i in order]


def split_videos(ids: list[str], languages: list[str], fractions_: tuple[float, ...], seed: int) -> dict:
    """Splits videos into train / val / test within each language (so each split has every language)."""
    rng = np.random.default_rng([seed, 3])
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for code in sorted(set(languages)):
        members = [vid for vid, lang in zip(ids, languages) if lang == code]
        members = [members[i] for i in rng.permutation(len(members))]
        counts = _largest_remainder(len(members), list(fractions_))
        start = 0
        for name, n in zip(("train", "val", "test"), counts):
            splits[name].extend(members[start : start + n])
            start += n
    return {name: sorted(members) for name, members in splits.items()}


# --- One video's plan ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Segment:
    """An object on screen from `start` to `end` seconds (frame-aligned).

    Attributes:
      obj: what is shown.
      start: seconds.
      end: seconds.
      home: object centre (x, y) in pixels.
      action: the step's action; '' for an object at rest between steps.
      audio_dependent: the step's motion is replaced by the rest tremor.
      motion: the action's parameters (periods, amplitudes, phases).
    """

    obj: SceneObject
    start: float
    end: float
    home: tuple[float, float]
    action: str = ""
    audio_dependent: bool = False
    motion: tuple = ()

    @property
    def is_step(self) -> bool:
        return bool(self.action)


def _frames(seconds: float, fps: int) -> int:
    return int(round(seconds * fps))


def _motion_params(action: str, rng: np.random.Generator) -> tuple:
    """Per-step parameters of an action, shared by the picture and the sound."""
    if action == "rotate":
        return (float(rng.uniform(0.25, 0.45)), float(rng.choice([-1.0, 1.0])))  # rev/s, direction
    if action == "slide":
        return (float(rng.uniform(3.0, 5.0)), float(rng.choice([-1.0, 1.0])))  # period, direction
    if action in ("shrink", "grow"):
        return (float(rng.uniform(0.35, 0.45)), float(rng.uniform(1.1, 1.25)))  # small, large scale
    if action == "shake":
        return (float(rng.uniform(6.0, 8.0)), float(rng.uniform(0.0, 1.0)))  # reversals/s, phase
    if action == "fall":
        return (float(rng.uniform(1.4, 2.2)),)  # period
    if action == "bounce":
        return (float(rng.uniform(0.6, 0.9)),)  # period
    if action == "heat":
        return (float(rng.uniform(2.0, 4.0)), float(rng.uniform(0.0, 2 * np.pi)))  # flicker Hz, phase
    raise ValueError(f"Unknown action {action!r}; valid: {', '.join(ACTIONS)}.")


def _rotation_invisible(obj: SceneObject) -> bool:
    return obj.texture == "solid" and obj.shape in ("circle", "ring")


def plan_video(cfg: SyntheticConfig, index: int) -> tuple[float, list[Segment]]:
    """Lays out video `index` of the corpus `cfg` describes, without rendering it.

    Args:
      cfg: the corpus config.
      index: the video's index in [0, cfg.videos).

    Returns:
      (duration in seconds, the video's steps and objects at rest in time order).
    """
    return _plan(cfg, np.random.default_rng([cfg.seed, 1, index, 0]))


def _plan(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[float, list[Segment]]:
    """Lays out one video: its duration and its steps and rest displays, in time order."""
    fps = cfg.fps
    # Frame-aligned, within [min_duration, max_duration] whenever a frame boundary lies there.
    low = math.ceil(cfg.min_duration * fps - 1e-6)
    high = max(low, math.floor(cfg.max_duration * fps + 1e-6))
    duration = min(max(_frames(rng.uniform(cfg.min_duration, cfg.max_duration), fps), low), high) / fps
    # Step slots, frame-aligned.
    slots = []
    t = _frames(rng.uniform(*_LEAD), fps) / fps
    while duration - _TAIL - t >= _STEP[0]:
        room = min(_STEP[1], duration - _TAIL - t)
        length = _frames(math.exp(rng.uniform(math.log(_STEP[0]), math.log(room))), fps) / fps
        length = max(_STEP[0], min(length, room))
        slots.append((t, t + length))
        t += length + _frames(rng.uniform(*_GAP), fps) / fps
    n_steps = len(slots)
    # Which steps are audio-dependent: stochastic rounding of fraction * n, never the first step.
    wanted = cfg.audio_dependent_fraction * n_steps
    n_dependent = min(n_steps - 1, int(wanted) + int(rng.uniform() < wanted - int(wanted)))
    dependent = set((1 + rng.permutation(n_steps - 1)[:n_dependent]).tolist()) if n_dependent > 0 else set()

    used_objects: list[SceneObject] = []
    actions_of: dict[SceneObject, set] = collections.defaultdict(set)
    homes: dict[SceneObject, tuple[float, float]] = {}
    segments: list[Segment] = []
    for i, (start, end) in enumerate(slots):
        # Objects shown so far that have an action left (all have, unless a long video
        # with a high fraction used them all up: then the step is a visible one).
        candidates = [o for o in used_objects if len(actions_of[o]) < len(ACTIONS)]
        is_dependent = i in dependent and bool(candidates)
        if is_dependent:
            obj = candidates[int(rng.integers(len(candidates)))]
            choices = [a for a in ACTIONS if a not in actions_of[obj]]
        else:
            while True:
                obj = SceneObject(
                    corpus_vocab.SHAPES[int(rng.integers(len(corpus_vocab.SHAPES)))],
                    list(corpus_vocab.COLOURS)[int(rng.integers(len(corpus_vocab.COLOURS)))],
                    corpus_vocab.TEXTURES[int(rng.integers(len(corpus_vocab.TEXTURES)))],
                )
                if obj not in homes:
                    break
            used_objects.append(obj)
            homes[obj] = (
                float(rng.uniform(0.42, 0.58) * cfg.width),
                float(rng.uniform(0.45, 0.55) * cfg.height),
            )
            choices = [a for a in ACTIONS if not (a == "rotate" and _rotation_invisible(obj))]
        action = choices[int(rng.integers(len(choices)))]
        actions_of[obj].add(action)
        segments.append(Segment(obj, start, end, homes[obj], action, is_dependent, _motion_params(action, rng)))
    # Objects at rest in the gaps. Each audio-dependent object also rests in some gap,
    # so that the picture alone cannot tell that rest from its audio-dependent step.
    gaps = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(slots, slots[1:])]
    rest_objects: list[Optional[SceneObject]] = [None] * len(gaps)
    free = list(rng.permutation(len(gaps)))
    for seg in segments:
        if seg.audio_dependent and free:
            rest_objects[int(free.pop())] = seg.obj
    for g in free:
        if rng.uniform() < 0.5:
            rest_objects[int(g)] = used_objects[int(rng.integers(len(used_objects)))]
    rests = [Segment(obj, start, end, homes[obj]) for (start, end), obj in zip(gaps, rest_objects) if obj is not None]
    return duration, sorted(segments + rests, key=lambda s: s.start)


# --- Pictures ------------------------------------------------------------------------------------


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _fall_range(cfg: SyntheticConfig) -> tuple[float, float]:
    """Rows of the centre of a falling object: from just above the frame to the floor."""
    radius = _RADIUS * min(cfg.width, cfg.height)
    return -radius, cfg.height - 0.9 * radius


def _fall_phase0(seg: Segment, cfg: SyntheticConfig) -> float:
    """Phase of the fall cycle at the step's start, so that the object starts at its home."""
    top, bottom = _fall_range(cfg)
    return math.sqrt(min(max((seg.home[1] - top) / (bottom - top), 0.0), 1.0))


def _pose(seg: Segment, t: float, cfg: SyntheticConfig, tremor: np.ndarray) -> tuple:
    """(cx, cy, scale, angle, glow) of a segment's object `t` seconds after the segment starts."""
    cx, cy = seg.home
    w, h = cfg.width, cfg.height
    if not seg.is_step or seg.audio_dependent:
        # Rest and audio-dependent steps: a sub-pixel tremor, as of an object held in a hand.
        a1, a2, p1, p2 = tremor
        return (
            cx + 0.35 * math.sin(2 * math.pi * a1 * t + p1),
            cy + 0.3 * math.sin(2 * math.pi * a2 * t + p2),
            1.0 + 0.005 * math.sin(2 * math.pi * 0.4 * t + p2),
            0.0,
            0.0,
        )
    progress = t / max(seg.end - seg.start, 1e-6)
    m = seg.motion
    scale, angle, glow = 1.0, 0.0, 0.0
    if seg.action == "rotate":
        angle = m[1] * 2 * math.pi * m[0] * t
    elif seg.action == "slide":
        cx += m[1] * 0.25 * w * math.sin(2 * math.pi * t / m[0])
    elif seg.action == "shrink":
        scale = 1.0 - (1.0 - m[0]) * float(_smoothstep(progress))
    elif seg.action == "grow":
        scale = 1.0 - (1.0 - m[0]) + (m[1] - m[0]) * float(_smoothstep(progress))
    elif seg.action == "shake":
        reversal = math.floor(t * m[0] + m[1])
        cx += 0.045 * w * (1 if reversal % 2 else -1)
        angle = 0.15 * (1 if reversal % 3 else -1)
    elif seg.action == "fall":
        top, bottom = _fall_range(cfg)
        phase = (t / m[0] + _fall_phase0(seg, cfg)) % 1.0
        cy = top + (bottom - top) * phase * phase
    elif seg.action == "bounce":
        cy -= 0.3 * h * abs(math.sin(math.pi * t / m[0]))
    elif seg.action == "heat":
        glow = 0.9 * float(_smoothstep(t / 2.5)) * (0.85 + 0.15 * math.sin(2 * math.pi * m[0] * t + m[1]))
        scale = 1.0 + 0.02 * math.sin(2 * math.pi * m[0] * t)
    return cx, cy, scale, angle, glow


def _box(u, v, bx, by):
    qx, qy = np.abs(u) - bx, np.abs(v) - by
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (in object radii, negative inside) of points (u, v), v pointing up."""
    if shape == "circle":
        return np.hypot(u, v) - 0.9
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.66) - 0.28
    if shape == "square":
        return _box(u, v, 0.75, 0.75)
    if shape == "triangle":
        k = math.sqrt(3.0)
        r = 0.9
        px, py = np.abs(u) - r, v + r / k
        flip = px + k * py > 0
        px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
        px = px - np.clip(px, -2 * r, 0.0)
        return -np.hypot(px, py) * np.sign(py)
    if shape == "hexagon":
        kx, ky, kz = -0.866025404, 0.5, 0.577350269
        r = 0.8
        px, py = np.abs(u), np.abs(v)
        d = 2 * np.minimum(kx * px + ky * py, 0)
        px, py = px - d * kx, py - d * ky
        px = px - np.clip(px, -kz * r, kz * r)
        py = py - r
        return np.hypot(px, py) * np.sign(py)
    if shape == "star":
        k1x, k1y = 0.809016994375, -0.587785252292
        r, rf = 1.0, 0.45
        px, py = np.abs(u), v
        d = 2 * np.maximum(k1x * px + k1y * py, 0)
        px, py = px - d * k1x, py - d * k1y
        d = 2 * np.maximum(-k1x * px + k1y * py, 0)
        px, py = px + d * k1x, py - d * k1y
        px = np.abs(px)
        py = py - r
        bax, bay = rf * -k1y - 0.0, rf * k1x - 1.0
        hh = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0.0, r)
        return np.hypot(px - bax * hh, py - bay * hh) * np.sign(py * bax - px * bay)
    if shape == "cross":
        a, b = (u + v) / math.sqrt(2), (v - u) / math.sqrt(2)
        return np.minimum(_box(a, b, 0.95, 0.24), _box(a, b, 0.24, 0.95))
    if shape == "crescent":
        return np.maximum(np.hypot(u, v) - 0.9, -(np.hypot(u - 0.4, v - 0.15) - 0.72))
    raise ValueError(f"Unknown shape {shape!r}; valid: {', '.join(corpus_vocab.SHAPES)}.")


_GLOW = np.array([255.0, 215.0, 110.0], np.float32)
_WHITE = np.array([255.0, 255.0, 255.0], np.float32)


def _draw(frame: np.ndarray, obj: SceneObject, pose: tuple, radius: float, xs: np.ndarray, ys: np.ndarray) -> None:
    """Composites the object onto `frame` (H, W, 3 float32) in place, antialiased."""
    cx, cy, scale, angle, glow = pose
    size = radius * scale
    extent = 1.05 * size + 2
    h, w = frame.shape[:2]
    x0, x1 = max(0, int(cx - extent)), min(w, int(cx + extent) + 2)
    y0, y1 = max(0, int(cy - extent)), min(h, int(cy + extent) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    dx = xs[x0:x1][None, :] - cx
    dy = ys[y0:y1][:, None] - cy
    c, s = math.cos(angle), math.sin(angle)
    u = (c * dx + s * dy) / size
    v = -(-s * dx + c * dy) / size  # image rows grow downwards; shapes are defined with v up.
    alpha = np.clip(0.5 - _shape_distance(obj.shape, u, v) * size, 0.0, 1.0)[..., None]
    colour = np.asarray(corpus_vocab.COLOURS[obj.colour], np.float32)
    if obj.texture == "striped":
        light = (np.floor((u + 4.0) * 2.6) % 2 == 1)[..., None]
        fill = np.where(light, 0.45 * colour + 0.55 * _WHITE, colour)
    elif obj.texture == "dotted":
        spacing = 0.42
        du = u - np.round(u / spacing) * spacing
        dv = v - np.round(v / spacing) * spacing
        dot = np.clip(0.5 - (np.hypot(du, dv) - 0.12) * size, 0.0, 1.0)[..., None]
        fill = (1 - dot) * colour + dot * (0.3 * colour + 0.7 * _WHITE)
    else:
        fill = colour * (1.0 + 0.25 * np.clip(v, -1, 1))[..., None]
    if glow > 0:
        fill = (1 - glow) * fill + glow * _GLOW
    region = frame[y0:y1, x0:x1]
    region *= 1 - alpha
    region += alpha * fill


def _background(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """A muted two-colour gradient with a soft stain texture, float32 (H, W, 3)."""
    h, w = cfg.height, cfg.width
    hue = rng.uniform()
    colours = [
        np.array(colorsys.hsv_to_rgb((hue + rng.uniform(-0.08, 0.08)) % 1.0, rng.uniform(0.05, 0.2), v)) * 255
        for v in (rng.uniform(0.55, 0.7), rng.uniform(0.72, 0.88))
    ]
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(theta) * (xx / w - 0.5) + np.sin(theta) * (yy / h - 0.5)) + 0.5
    ramp = np.clip(ramp, 0, 1)[..., None]
    image = (1 - ramp) * colours[0] + ramp * colours[1]
    # Stains: coarse noise, bilinearly upsampled.
    gh, gw = h // 16 + 2, w // 16 + 2
    coarse = rng.standard_normal((gh, gw))
    gy, gx = yy / 16, xx / 16
    iy, ix = gy.astype(int), gx.astype(int)
    fy, fx = gy - iy, gx - ix
    stain = (
        coarse[iy, ix] * (1 - fy) * (1 - fx)
        + coarse[iy + 1, ix] * fy * (1 - fx)
        + coarse[iy, ix + 1] * (1 - fy) * fx
        + coarse[iy + 1, ix + 1] * fy * fx
    )
    image = image + rng.uniform(4.0, 8.0) * stain[..., None]
    return image.astype(np.float32)


# --- Sounds --------------------------------------------------------------------------------------


def _band_noise(rng: np.random.Generator, n: int, sr: int, low: float, high: float) -> np.ndarray:
    """Noise band-limited to [low, high] Hz with soft edges, unit RMS."""
    if n <= 0:
        return np.zeros(0, np.float32)
    high = min(high, 0.47 * sr)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    edge = 0.15 * (high - low) + 1.0
    gain = _smoothstep((freqs - low + edge) / edge) * _smoothstep((high + edge - freqs) / edge)
    x = np.fft.irfft(spectrum * gain, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _pink_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """1/f noise above 20 Hz, unit RMS: the room tone under everything."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    x = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, 20.0)), n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _place(out: np.ndarray, times, kernel: np.ndarray, sr: int, amps=None) -> None:
    """Adds `kernel` into `out` at each of `times` (seconds), scaled by `amps`."""
    for k, t in enumerate(times):
        i = int(round(t * sr))
        if 0 <= i < out.size:
            m = min(kernel.size, out.size - i)
            out[i : i + m] += (1.0 if amps is None else amps[k]) * kernel[:m]


def _chirps(n: int, sr: int, f0: float, f1: float, length: float, every: float) -> np.ndarray:
    """Repeated exponential sweeps from f0 to f1 Hz, each Hann-windowed."""
    m = int(length * sr)
    t = np.arange(m) / sr
    k = f1 / f0
    phase = 2 * np.pi * f0 * length / math.log(k) * (k ** (t / length) - 1)
    sweep = np.sin(phase) * np.hanning(m)
    out = np.zeros(n, np.float32)
    _place(out, np.arange(0.1, n / sr, every), sweep, sr)
    return out


def _action_sound(seg: Segment, n: int, cfg: SyntheticConfig, rng: np.random.Generator, timbre: float) -> np.ndarray:
    """The characteristic sound of a step's action, synchronous with its motion.

    Args:
      seg: the step.
      n: samples.
      cfg: the corpus config (sample rate, frame geometry).
      rng: the video's audio generator.
      timbre: per-video factor around 1 that shifts pitches a little.

    Returns:
      float32 (n,) at _ACTION_RMS, faded in and out.
    """
    sr = cfg.sample_rate
    t = np.arange(n) / sr
    dur = n / sr
    m = seg.motion
    out = np.zeros(n, np.float32)
    if seg.action == "rotate":
        # A ratchet: a short ping for each of 24 teeth per revolution.
        kt = np.arange(int(0.008 * sr)) / sr
        ping = np.sin(2 * np.pi * 3000 * timbre * kt) * np.exp(-kt / 0.0015)
        times = np.arange(0.0, dur, 1.0 / (24 * m[0]))
        _place(out, times, ping, sr, amps=np.where(np.arange(times.size) % 2, 0.7, 1.0))
    elif seg.action == "slide":
        # A whoosh as loud as the object is fast.
        speed = np.abs(np.cos(2 * np.pi * t / m[0]))
        out = _band_noise(rng, n, sr, 300 * timbre, 2500 * timbre) * (0.08 + speed**1.5)
    elif seg.action == "shrink":
        out = _chirps(n, sr, 1300 * timbre, 450 * timbre, 0.35, 0.55)
    elif seg.action == "grow":
        out = _chirps(n, sr, 450 * timbre, 1300 * timbre, 0.35, 0.55)
    elif seg.action == "shake":
        # A rattle: a noise burst at each reversal of the shake.
        burst = _band_noise(rng, int(0.035 * sr), sr, 2000, 7000) * np.exp(-np.arange(int(0.035 * sr)) / (0.008 * sr))
        times = (np.arange(1, math.ceil(dur * m[0] + m[1]) + 1) - m[1]) / m[0]
        _place(out, times, burst, sr, amps=rng.uniform(0.5, 1.0, times.size))
    elif seg.action == "fall":
        # A rumble that swells as the object falls, and a thud where it lands.
        phase0 = _fall_phase0(seg, cfg)
        phase = (t / m[0] + phase0) % 1.0
        out = 0.6 * _band_noise(rng, n, sr, 40, 250) * phase**2
        kt = np.arange(int(0.25 * sr)) / sr
        thud = np.sin(2 * np.pi * 65 * timbre * kt) * np.exp(-kt / 0.06)
        _place(out, (np.arange(1, dur / m[0] + 2) - phase0) * m[0], 3.0 * thud, sr)
    elif seg.action == "bounce":
        # A springy 'boing' at each contact with the floor.
        kt = np.arange(int(0.3 * sr)) / sr
        freq = 270 * timbre * (1 + 0.08 * np.sin(2 * np.pi * 14 * kt))
        boing = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-kt / 0.09)
        _place(out, np.arange(1, dur / m[0] + 1) * m[0], boing, sr)
    elif seg.action == "heat":
        # A sizzle: high hiss with a wandering level, plus crackles.
        wander = np.interp(t, np.linspace(0, dur, 8 + int(dur * 4)), rng.uniform(0.4, 1.0, 8 + int(dur * 4)))
        out = _band_noise(rng, n, sr, 3000, 7500) * wander
        crackle = rng.standard_normal(int(0.002 * sr))
        times = np.sort(rng.uniform(0, dur, int(dur * 25)))
        _place(out, times, 4.0 * crackle, sr)
    else:
        raise ValueError(f"Unknown action {seg.action!r}; valid: {', '.join(ACTIONS)}.")
    out = out.astype(np.float32)
    rms = float(np.sqrt(np.mean(out**2)))
    if rms > 0:
        out *= _ACTION_RMS / rms
        peak = float(np.max(np.abs(out)))
        if peak > 0.5:
            out *= 0.5 / peak
    fade = min(int(0.03 * sr), n // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        out[:fade] *= ramp
        out[n - fade :] *= ramp[::-1]
    return out


# --- Speech --------------------------------------------------------------------------------------

_SPEAKER: Optional[tts.Speaker] = None


def _speaker(sample_rate: int) -> tts.Speaker:
    global _SPEAKER
    if _SPEAKER is None or _SPEAKER.sample_rate != sample_rate:
        _SPEAKER = tts.Speaker(sample_rate)
    return _SPEAKER


def _level(wav: np.ndarray, rms: float) -> np.ndarray:
    """Scales speech to `rms`, keeping its peak below 0.9."""
    current = float(np.sqrt(np.mean(wav**2)))
    gain = min(rms / max(current, 1e-9), 0.9 / max(float(np.max(np.abs(wav))), 1e-9))
    return (wav * gain).astype(np.float32)


def _soundtrack(
    cfg: SyntheticConfig, duration: float, segments: list[Segment], language: str, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[float, float]], dict]:
    """Mixes room tone, action sounds, narration and filler speech.

    Returns:
      The float32 mono track, the (start, end) seconds of each step's narration,
      and the voice (tts.Speaker.synthesize keyword arguments: rate, pitch, variant).
    """
    sr = cfg.sample_rate
    n = int(round(duration * sr))
    speaker = _speaker(sr)
    voice = {
        "rate": int(rng.integers(140, 181)),
        "pitch": int(rng.integers(30, 71)),
        "variant": tts.VARIANTS[int(rng.integers(len(tts.VARIANTS)))],
    }
    loudness = float(rng.uniform(0.8, 1.1))
    timbre = float(rng.uniform(0.9, 1.1))
    track = float(rng.uniform(*_ROOM_RMS)) * _pink_noise(rng, n, sr)
    steps = [s for s in segments if s.is_step]
    for seg in steps:
        a, b = int(round(seg.start * sr)), min(n, int(round(seg.end * sr)))
        track[a:b] += _action_sound(seg, b - a, cfg, rng, timbre)

    speech: list[tuple[float, np.ndarray]] = []  # (start seconds, waveform), in time order
    narration = []
    prev_end = 0.0
    for seg in steps:
        text = corpus_vocab.step_sentence(seg.obj, seg.action, language).speech
        wav = _level(speaker.synthesize(text, language, **voice), _SPEECH_RMS * loudness)
        length = wav.size / sr
        start = max(seg.start + rng.uniform(*_NARRATION_OFFSET), prev_end + _SPEECH_GAP, 0.1)
        # A narration that would run past the end starts earlier, but never before its
        # step's window or the previous utterance.
        start = max(min(start, duration - 0.1 - length), seg.start + _NARRATION_OFFSET[0], prev_end + 0.05)
        if start + length > duration - 0.05:
            # Only when utterances outrun very short steps at the end of a video.
            keep = max(0, int((duration - 0.05 - start) * sr))
            logging.warning("Narration %r cut from %.2f s to %.2f s to fit the video.", text, length, keep / sr)
            wav = wav[:keep]
            length = wav.size / sr
        speech.append((start, wav))
        narration.append((start, start + length))
        prev_end = start + length

    # Step-independent speech in the silences between narrations.
    bounds = [0.0] + [x for span in narration for x in span] + [duration]
    phrases = corpus_vocab.fillers(language)
    for k in range(0, len(bounds), 2):
        lo, hi = bounds[k] + 0.4, bounds[k + 1] - 0.6
        if k == 0:
            phrase = corpus_vocab.intro(language)
        elif rng.uniform() < 0.5:
            phrase = phrases[int(rng.integers(len(phrases)))]
        else:
            continue
        if hi - lo < 0.5:
            continue
        wav = _level(speaker.synthesize(phrase.speech, language, **voice), 0.8 * _SPEECH_RMS * loudness)
        if wav.size / sr <= hi - lo:
            speech.append((lo if k == 0 else rng.uniform(lo, hi - wav.size / sr), wav))
    for start, wav in speech:
        i = int(round(start * sr))
        m = min(wav.size, n - i)
        track[i : i + m] += wav[:m]
    peak = float(np.max(np.abs(track)))
    if peak > 0.98:
        track *= 0.98 / peak
    return track.astype(np.float32), narration, voice


# --- Encoding ------------------------------------------------------------------------------------


# libx264 settings that make its output a function of its input alone. One thread, so
# nothing depends on the core count or the load. No macroblock tree: with B-frames, the
# mbtree of x264 (core 165) reads memory it has not written while its frame pool fills,
# so the first GOP's quantizers followed whatever the process's heap held (they changed
# from run to run, with the worker count, and with glibc's MALLOC_PERTURB_); and its float
# propagation is one of the few x264 routines whose SIMD versions may round differently.
X264_PARAMS = "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0"
# RGB -> YUV 4:2:0 with swscale's exact C arithmetic, the same on every CPU.
_SWS_EXACT = (
    av.video.reformatter.Interpolation.BILINEAR
    | av.video.reformatter.Interpolation.ACCURATE_RND
    | av.video.reformatter.Interpolation.BITEXACT
)


def video_codec() -> str:
    """libx264 where the PyAV build has it, else MPEG-4 part 2."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except (av.codec.codec.UnknownCodecError, ValueError):
        return "mpeg4"


def _encode(
    path: str,
    cfg: SyntheticConfig,
    duration: float,
    segments: list[Segment],
    track: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Renders the frames and writes them with the audio track to an mp4 at `path`."""
    fps, sr, w, h = cfg.fps, cfg.sample_rate, cfg.width, cfg.height
    n_frames = _frames(duration, fps)
    background = _background(cfg, rng)
    camera_noise = float(rng.uniform(1.5, 3.0))
    noise_bank = camera_noise * rng.standard_normal((4, h + _NOISE_PAD, w + _NOISE_PAD, 3), dtype=np.float32)
    radius = _RADIUS * min(w, h)
    xs = np.arange(w, dtype=np.float32) + 0.5
    ys = np.arange(h, dtype=np.float32) + 0.5
    tremors = [
        np.array([rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.6), *rng.uniform(0, 2 * np.pi, 2)]) for _ in segments
    ]
    # Which segment is on screen in each frame (-1: the empty table).
    on_screen = np.full(n_frames, -1)
    for k, seg in enumerate(segments):
        on_screen[_frames(seg.start, fps) : _frames(seg.end, fps)] = k

    codec = video_codec()
    with av.open(path, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        vstream = container.add_stream(codec, rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = w, h, "yuv420p"
        vstream.codec_context.thread_count = 1
        vstream.codec_context.flags |= av.codec.context.Flags.bitexact
        if codec == "libx264":
            vstream.codec_context.options = {
                "preset": "veryfast",
                "crf": "23",
                "threads": "1",
                "g": str(2 * fps),
                "x264-params": X264_PARAMS,
            }
        else:
            # Constant quantizer 4, as `ffmpeg -q:v 4`.
            vstream.codec_context.qscale = True
            vstream.codec_context.global_quality = 4
            vstream.codec_context.options = {"g": str(2 * fps)}
        astream = container.add_stream("aac", rate=sr)
        astream.codec_context.layout = "mono"
        astream.codec_context.thread_count = 1
        astream.codec_context.options = {"aac_coder": "fast"}
        astream.codec_context.bit_rate = 48000 if sr <= 16000 else 96000
        astream.codec_context.flags |= av.codec.context.Flags.bitexact
        for f in range(n_frames):
            frame = background.copy()
            k = on_screen[f]
            if k >= 0:
                seg = segments[k]
                t = f / fps - seg.start
                _draw(frame, seg.obj, _pose(seg, t, cfg, tremors[k]), radius, xs, ys)
            # Sensor noise: a random crop of a few precomputed fields (drawing fresh normals per
            # frame would cost as much as the rest of the rendering).
            dy, dx = int(rng.integers(_NOISE_PAD)), int(rng.integers(_NOISE_PAD))
            frame += noise_bank[int(rng.integers(len(noise_bank))), dy : dy + h, dx : dx + w]
            image = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
            # Converted here rather than by the encoder, whose scaler takes the fastest,
            # CPU-dependent path.
            vframe = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format="yuv420p", interpolation=_SWS_EXACT, threads=1
            )
            vframe.pts = f
            vframe.time_base = fractions.Fraction(1, fps)
            container.mux(vstream.encode(vframe))
            a, b = int(round(f * sr / fps)), int(round((f + 1) * sr / fps))
            aframe = av.AudioFrame.from_ndarray(track[None, a:b], format="flt", layout="mono")
            aframe.sample_rate = sr
            aframe.pts = a
            aframe.time_base = fractions.Fraction(1, sr)
            container.mux(astream.encode(aframe))
        container.mux(vstream.encode(None))
        container.mux(astream.encode(None))


# --- One video end to end ------------------------------------------------------------------------


def _r(x: float) -> float:
    return round(float(x), 3)


def _annotation(duration: float, segments: list[Segment], narration: list, language: str, voice: dict) -> dict:
    """The ActivityNet Captions entry of a video, with avalign's extra keys.

    Keys: duration; timestamps ([start, end] per step); sentences (in the
    narration language); language; sentences_en; audio_dependent (0/1 per
    step); steps ({"object": 'texture colour shape', "action": ...} per step);
    narration ([start, end] of each step's spoken sentence); voice (the
    narrator's eSpeak NG settings: rate, pitch, variant).
    """
    steps = [s for s in segments if s.is_step]
    return {
        "duration": _r(duration),
        "timestamps": [[_r(s.start), _r(s.end)] for s in steps],
        "sentences": [corpus_vocab.step_sentence(s.obj, s.action, language).text for s in steps],
        "language": language,
        "sentences_en": [corpus_vocab.step_sentence(s.obj, s.action, "en").text for s in steps],
        "audio_dependent": [int(s.audio_dependent) for s in steps],
        "steps": [{"object": s.obj.name, "action": s.action} for s in steps],
        "narration": [[_r(a), _r(b)] for a, b in narration],
        "voice": dict(voice),
    }


def _make_video(job: tuple) -> tuple[str, dict]:
    """Plans, voices, renders and writes one video; returns (video_id, annotation entry)."""
    cfg, index, video_id, language = job
    duration, segments = plan_video(cfg, index)
    track, narration, voice = _soundtrack(
        cfg, duration, segments, language, np.random.default_rng([cfg.seed, 1, index, 1])
    )
    final = os.path.join(cfg.out, "videos", f"{video_id}.mp4")
    partial = final + ".part"
    _encode(partial, cfg, duration, segments, track, np.random.default_rng([cfg.seed, 1, index, 2]))
    os.replace(partial, final)
    entry = _annotation(duration, segments, narration, language, voice)
    logging.debug("Wrote %s (%s, %.1f s, %d steps).", final, language, duration, len(entry["timestamps"]))
    return video_id, entry


# --- Corpus --------------------------------------------------------------------------------------


class _Tally:
    """Running totals of a corpus, from its annotation entries."""

    def __init__(self):
        self.videos = 0
        self.seconds = 0.0
        self.steps = 0
        self.dependent = 0
        self.languages: collections.Counter = collections.Counter()

    def add(self, entry: Mapping) -> None:
        self.videos += 1
        self.seconds += float(entry["duration"])
        self.steps += len(entry["timestamps"])
        self.dependent += sum(int(x) for x in entry.get("audio_dependent", []))
        self.languages[entry.get("language", "")] += 1

    def summary(self) -> dict:
        return {
            "videos": self.videos,
            "hours": round(self.seconds / 3600.0, 4),
            "steps": self.steps,
            "languages": dict(sorted(self.languages.items())),
            "audio_dependent_share": round(self.dependent / self.steps, 4) if self.steps else 0.0,
        }


def summarize(out_dir: Union[str, os.PathLike]) -> dict:
    """Summarizes a generated corpus from its annotations.json.

    Args:
      out_dir: the directory `generate` wrote.

    Returns:
      {"videos": int, "hours": float, "steps": int, "languages": {code: count},
      "audio_dependent_share": float (share of steps)}.

    Raises:
      FileNotFoundError: out_dir has no annotations.json.
      ValueError: the file is not a mapping of video id -> entry.
    """
    path = os.path.join(os.fspath(out_dir), "annotations.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of video id -> annotation, got {type(data).__name__}.")
    tally = _Tally()
    for video_id, entry in data.items():
        if not isinstance(entry, dict) or "duration" not in entry or "timestamps" not in entry:
            raise ValueError(f"{path}: entry {video_id!r} lacks 'duration' or 'timestamps'.")
        tally.add(entry)
    return tally.summary()


def format_summary(summary: Mapping) -> str:
    """A few human-readable lines about a corpus summary."""
    languages = ", ".join(f"{code} {count}" for code, count in summary["languages"].items())
    return (
        f"{summary['videos']} videos, {summary['hours']:.2f} h, {summary['steps']} steps "
        f"({100 * summary['audio_dependent_share']:.1f} % audio-dependent)\nlanguages: {languages}"
    )


def _prepare_out_dir(out_dir: str) -> None:
    """Creates out_dir/videos and checks that files can be written there."""
    try:
        os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
        probe = os.path.join(out_dir, f".write_test.{os.getpid()}")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"Output directory {out_dir!r} is not writable: {e}.") from e


def _write_json(path: str, obj) -> None:
    partial = path + ".part"
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(obj, f, sort_keys=True, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(partial, path)
    logging.info("Wrote %s.", path)


def _results(jobs: list[tuple], workers: int) -> Iterator[tuple[str, dict]]:
    if workers == 1:
        yield from map(_make_video, jobs)
        return
    # spawn: each worker loads eSpeak NG itself, and no lock or thread of the parent is inherited.
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(_make_video, jobs, chunksize=1)
        # Let the workers exit normally, which runs their clean-up (see tts._private_data_dir).
        pool.close()
        pool.join()


def generate(cfg: SyntheticConfig, progress: bool = True) -> dict:
    """Generates the corpus that `cfg` describes into cfg.out.

    Each video is a "tutorial" of steps. A step shows one object (a shape with
    a colour and a texture) undergoing one action (rotate, slide, shrink, grow,
    shake, fall, bounce, heat) while a narrator, synthesized with eSpeak NG,
    says what is done in the video's language, and the action makes its own
    language-independent sound, in time with the motion. Audio-dependent steps
    repeat an object already shown with another action that is nearly
    invisible (the object only trembles, as objects at rest between steps do)
    but clearly audible.

    Output layout:
      videos/<video_id>.mp4: H.264 (MPEG-4 part 2 where the PyAV build lacks
        libx264), yuv420p, cfg.fps, cfg.width x cfg.height; AAC mono audio at
        cfg.sample_rate (16 kHz by default, which FFmpeg's AAC encoder takes
        as is). Encoded single-threaded with fixed settings (X264_PARAMS, an
        exact colour conversion, FFmpeg's bit-exact flags), so that the bytes
        do not depend on the run, the load or the number of workers. Nor on
        the x86-64 CPU, as far as checked (SSSE3 to AVX-512 give the same
        video, AVX2 to AVX-512 the same audio): FFmpeg's AAC encoder rounds
        differently without AVX2/FMA3, as it may on other architectures.
      annotations.json: ActivityNet Captions ({video_id: {"duration",
        "timestamps", "sentences"}}) plus the keys that `_annotation` lists;
        sorted keys, times rounded to 3 decimals, one video per line.
      splits.json: {"train": [ids], "val": [ids], "test": [ids]}, split
        within each language.
      corpus.json: the config (less out and workers, which do not change
        the output), generator version, codecs and the summary.

    The same config gives byte-identical files whatever `workers` is. Videos
    are written one by one as workers finish them, and their annotation
    entries are streamed to annotations.json, so memory does not grow with the
    number of videos.

    Args:
      cfg: what to generate.
      progress: show a progress bar on stderr.

    Returns:
      The corpus summary (see `summarize`).

    Raises:
      ValueError: cfg.out cannot be written.
    """
    _prepare_out_dir(cfg.out)
    ids = video_ids(cfg.videos)
    languages = assign_languages(cfg.languages, cfg.videos, cfg.seed)
    jobs = [(cfg, i, vid, lang) for i, (vid, lang) in enumerate(zip(ids, languages))]
    logging.info(
        "Generating %d videos (%s) into %s with %d worker(s), codec %s.",
        cfg.videos,
        ", ".join(f"{c} {languages.count(c)}" for c in sorted(cfg.languages)),
        cfg.out,
        cfg.workers,
        video_codec(),
    )
    started = time.monotonic()
    tally = _Tally()
    path = os.path.join(cfg.out, "annotations.json")
    with open(path + ".part", "w", encoding="utf-8") as f:
        f.write("{")
        bar = tqdm(total=cfg.videos, unit="video", desc="Generating", file=sys.stderr, disable=not progress)
        with bar:
            for k, (video_id, entry) in enumerate(_results(jobs, cfg.workers)):
                line = json.dumps(entry, sort_keys=True, ensure_ascii=False)
                f.write(f"{',' if k else ''}\n{json.dumps(video_id)}: {line}")
                tally.add(entry)
                bar.update(1)
        f.write("\n}\n")
    os.replace(path + ".part", path)
    videos_dir = os.path.join(cfg.out, "videos")
    logging.info("Wrote %s and %d videos under %s.", path, cfg.videos, videos_dir)
    stale = sorted(set(os.listdir(videos_dir)) - {f"{vid}.mp4" for vid in ids})
    if stale:
        # Left alone (this generator deletes nothing), but they are not part of this corpus.
        logging.warning("%s holds %d files of an earlier run, e.g. %s.", videos_dir, len(stale), stale[0])
    _write_json(os.path.join(cfg.out, "splits.json"), split_videos(ids, languages, cfg.split, cfg.seed))
    summary = tally.summary()
    # The output does not depend on where it was written or on how many workers wrote it.
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "workers")}
    _write_json(
        os.path.join(cfg.out, "corpus.json"),
        {
            "generator": "corpus.synthetic",
            "version": GENERATOR_VERSION,
            "video_codec": video_codec(),
            "audio_codec": "aac",
            "config": config,
            "summary": summary,
        },
    )
    logging.info("Generated %d videos in %.1f s.", cfg.videos, time.monotonic() - started)
    return summary


# --- Command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    defaults = SyntheticConfig(out="-")
    p = argparse.ArgumentParser(
        prog="python -m corpus.synthetic",
        description="Generate the built-in multilingual how-to video corpus (mp4 + ActivityNet-style captions).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # A mistyped flag is an error, not a silent prefix match.
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--videos", type=int, default=defaults.videos, help="number of videos")
    p.add_argument(
        "--languages",
        default=",".join(defaults.languages),
        help=f"comma-separated codes with optional weights, e.g. en=4,ja=1; supported: {','.join(SUPPORTED_LANGUAGES)}",
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--min_duration", type=float, default=defaults.min_duration, help="seconds")
    p.add_argument("--max_duration", type=float, default=defaults.max_duration, help="seconds")
    p.add_argument("--audio_dependent_fraction", type=float, default=defaults.audio_dependent_fraction)
    p.add_argument("--fps", type=int, default=defaults.fps)
    p.add_argument("--width", type=int, default=defaults.width)
    p.add_argument("--height", type=int, default=defaults.height)
    p.add_argument("--sample_rate", type=int, default=defaults.sample_rate, help="Hz, an AAC rate")
    p.add_argument("--workers", type=int, default=defaults.workers)
    p.add_argument("--split", default=",".join(str(x) for x in defaults.split), help="train,val,test fractions")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def parse_args(argv: Optional[list[str]] = None) -> tuple[SyntheticConfig, bool]:
    """Turns command-line flags into a validated config.

    Args:
      argv: flags without the program name; None reads sys.argv.

    Returns:
      (config, whether to show progress).

    Raises:
      SystemExit: with status 2 and a message on an unknown flag or a bad value.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        cfg = SyntheticConfig(
            out=args.out,
            videos=args.videos,
            languages=parse_languages(args.languages),
            seed=args.seed,
            min_duration=args.min_duration,
            max_duration=args.max_duration,
            audio_dependent_fraction=args.audio_dependent_fraction,
            fps=args.fps,
            width=args.width,
            height=args.height,
            sample_rate=args.sample_rate,
            workers=args.workers,
            split=args.split,
        )
    except ValueError as e:
        parser.error(str(e))
    return cfg, not args.no_progress


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: parse flags, generate, print the summary."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg, progress = parse_args(argv)
    try:
        summary = generate(cfg, progress=progress)
    except ValueError as e:
        _parser().error(str(e))
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
