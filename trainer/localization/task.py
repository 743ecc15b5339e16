"""The caption localization task (MALTA / ABLR) for the generic trainer."""

from __future__ import annotations

import dataclasses
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from avalign import audio as audio_lib
from avalign import features
from trainer import checkpointing, distribute
from trainer import input as input_lib
from trainer.base_task import Task, records_facts
from trainer.localization import data as data_lib
from trainer.localization import decoding, metrics, text
from trainer.localization import model as model_lib
from trainer.localization.config import LocalizationConfig
from trainer.registry import register_task

IOU_THRESHOLDS = metrics.DEFAULT_THRESHOLDS
# The training vocabulary, one token a line, for people to read (the job's
# facts file holds the one evaluation uses).
VOCABULARY_FILE = "vocabulary.txt"


def make_audio_view(kind: str, info: input_lib.RecordsInfo, encoder_path: str = ""):
    """The audio features the model sees, computed in-graph from a parsed record.

    Returns:
      callable record dict -> ([T', D], frames per second of T').

    Raises:
      FileNotFoundError: 'avlnet' with a dir that holds no exported encoder
        (a version dir, or a base dir of integer versions).
      RecordsError: 'hub' with records that hold no audio embedding stream.
    """
    if kind == "logmel":
        return lambda video: (video[features.AUDIO], info.audio_rate)
    if kind == "mfcc":
        audio_cfg = info.audio_config
        return lambda video: (audio_lib.mfcc(video[features.AUDIO], audio_cfg), info.audio_rate)
    if kind == "hub":
        info.check_streams([features.AUDIO_EMBEDDING])
        key = features.stream_keys(features.AUDIO_EMBEDDING)["features"]
        rate = info.stream_rates[features.AUDIO_EMBEDDING]
        return lambda video: (video[key], rate)
    from avalign import export_util

    if not tf.io.gfile.exists(os.path.join(encoder_path, "saved_model.pb")):
        encoder_path = export_util.latest_version_dir(encoder_path)
    encoder = tf.saved_model.load(encoder_path)
    stride = float(encoder.total_stride.numpy())

    def view(video):
        # The encoder's signature wants the bins known (a graph, e.g. an export's, may not know them).
        logmel = tf.ensure_shape(video[features.AUDIO], [None, info.audio_dim])
        out = encoder.embed_log_mel(logmel[None], tf.shape(logmel)[:1])
        return out["frame_embeddings"][0], info.audio_rate / stride

    # An export of a model that sees these features saves the encoder with it.
    view.encoder = encoder
    return view


@register_task(LocalizationConfig)
class LocalizationTask(Task):
    """Given a video's audio and frames and a caption, find where the caption happens."""

    def prepare(self, from_job: bool = False) -> None:
        cfg = self.cfg
        self.from_job = from_job
        self.info = input_lib.RecordsInfo(cfg.data.records_dir)
        self.info.check_streams(self.streams)
        self.counts = {}
        for split in (cfg.data.train_split, cfg.data.eval_split, cfg.data.test_split):
            self.counts[split] = input_lib.validate_records(self.info, split, self.streams, cfg.data.on_bad_record)
            logging.info("Split %s: %s", split, self.counts[split])
            if not self.counts[split]["captions"]:
                raise input_lib.RecordsError(f"{self.info.records_dir}: split {split!r} has no captions.")
            self._check_caption_field(split)
        self.audio_view = make_audio_view(cfg.data.audio_feature, self.info, cfg.data.audio_encoder)
        # The dims the model takes are the records' (through the audio view), whatever the model config.
        self.dims = {
            "video_dim": sum(self.info.stream_dims[s] for s in cfg.data.visual_streams),
            "audio_dim": self._audio_dim(),
        }
        # Vocabulary and normalization per (segments, vocabulary size): fitted once each, on the training split.
        self._fitted = {}
        self._job_facts = self.job_facts(self._facts()) if from_job else None
        self.model_cfg = None

    def configure(self, cfg=None):
        self._replace_config(cfg)
        mcfg = self.cfg.model
        for name, have in self.dims.items():
            want = getattr(mcfg, name)
            if want and want != have:
                raise input_lib.RecordsError(
                    f"model.{name}={want} but the records give {have} ({self.cfg.data.records_dir}, streams "
                    f"{list(self.cfg.data.visual_streams)}, audio {self.cfg.data.audio_feature}); set it to {have} "
                    f"or 0 to take it from the records."
                )
        self.model_cfg = dataclasses.replace(mcfg, **self.dims)
        self.parser = data_lib.LocalizationParser(
            self.model_cfg.num_segments,
            tuple(self.cfg.data.visual_streams),
            self.info.stream_rates,
            self.info.audio_rate,
            self.audio_view,
            self.cfg.data.caption_field,
        )
        if self._job_facts is not None:
            self._restore_training_statistics(self._job_facts)
        else:
            key = (self.model_cfg.num_segments, self.model_cfg.vocab_size)
            if key not in self._fitted:
                self._fitted[key] = self._fit_train_statistics()
            self.vocabulary, self.stats = self._fitted[key]
            self._record_training_statistics()
        self.tokenizer = model_lib.caption_tokenizer(self.model_cfg, self.vocabulary)
        return self.model_cfg

    def _check_caption_field(self, split: str) -> None:
        """Every caption of `split` must have text in `data.caption_field`; an empty one can't be scored.

        Raises:
          RecordsError: naming the split, the field and how to fix it.
        """
        field = self.cfg.data.caption_field
        key = data_lib.caption_key(field)
        languages = self.cfg.data.languages_of(split)
        by_language = self.counts[split]["empty_captions"][key]
        empty = sum(n for lang, n in by_language.items() if not languages or lang in languages)
        if not empty:
            return
        of = f"of its videos in {languages}" if languages else f"of its {self.counts[split]['captions']}"
        if field == "text_en":
            fix = (
                "their annotations gave no English caption (of the annotation formats only 'builtin' carries "
                "them, as 'sentences_en'): set data.caption_field=text to use the captions in the annotation "
                "language, or preprocess annotations that carry English captions."
            )
        else:
            fix = "fix those captions in the annotations and preprocess them again."
        raise input_lib.RecordsError(
            f"{self.info.records_dir}: split {split!r}: {empty} caption(s) {of} have an empty {key} "
            f"(data.caption_field={field}); {fix}"
        )

    def _facts(self) -> dict:
        """What the model is built from, by this run's config and records (see `Task.record_facts`)."""
        data = self.cfg.data
        log_mel = data.audio_feature != "hub"
        return {
            "records_dir": data.records_dir,
            "config": {
                "data.visual_streams": list(data.visual_streams),
                "data.audio_feature": data.audio_feature,
                "data.caption_field": data.caption_field,
            },
            "records": records_facts(self.info, self.streams, log_mel=log_mel),
            "model": {f"model.{name}": value for name, value in self.dims.items()},
        }

    @property
    def streams(self) -> tuple:
        """Streams parsed from the records: the visual ones, plus the audio embedding if used."""
        extra = (features.AUDIO_EMBEDDING,) if self.cfg.data.audio_feature == "hub" else ()
        return tuple(self.cfg.data.visual_streams) + extra

    def _audio_dim(self) -> int:
        if self.cfg.data.audio_feature == "hub":
            return self.info.stream_dims[features.AUDIO_EMBEDDING]
        probe = {features.AUDIO: tf.zeros([64, self.info.audio_dim])}
        return int(self.audio_view(probe)[0].shape[-1])

    def _captions(self, split: str) -> tf.data.Dataset:
        """(features, labels, meta) of every caption of `split`, in record order."""
        videos = input_lib.read_split(self.info, self.cfg.data, split, self.streams)
        return videos.flat_map(self.parser.captions)

    def _fit_train_statistics(self) -> tuple[list, dict]:
        """Vocabulary and feature normalization of the configured model, from the training split only.

        Returns:
          (vocabulary, {'video'|'audio': (mean, variance)}).
        """
        captions, video_sum, video_sq, audio_sum, audio_sq, n = [], 0.0, 0.0, 0.0, 0.0, 0
        for x, _, _ in self._captions(self.cfg.data.train_split).batch(256):
            captions += [c.decode("utf-8") for c in x["caption"].numpy()]
            v = x["video"].numpy().reshape(-1, x["video"].shape[-1]).astype(np.float64)
            a = x["audio"].numpy().reshape(-1, x["audio"].shape[-1]).astype(np.float64)
            video_sum, video_sq = video_sum + v.sum(0), video_sq + (v**2).sum(0)
            audio_sum, audio_sq = audio_sum + a.sum(0), audio_sq + (a**2).sum(0)
            n += v.shape[0]
        empty = [c for c in captions if not text.tokenize_caption(c)]
        if empty:
            raise input_lib.RecordsError(
                f"{len(empty)} training caption(s) have no tokens (field {self.cfg.data.caption_field}), e.g. {empty[0]!r}."
            )
        vocabulary = text.build_vocabulary(captions, max_size=self.model_cfg.vocab_size - 2)
        stats = {}
        for name, s, sq in (("video", video_sum, video_sq), ("audio", audio_sum, audio_sq)):
            mean = s / n
            stats[name] = (mean.astype(np.float32), np.maximum(sq / n - mean**2, 1e-6).astype(np.float32))
        logging.info("Vocabulary of %d tokens from %d training captions", len(vocabulary), len(captions))
        return vocabulary, stats

    def _record_training_statistics(self) -> None:
        """Records the vocabulary and statistics, with what else the model is built from, in the job dir."""
        facts = self._facts()
        facts["vocabulary"] = self.vocabulary
        facts["statistics"] = {
            name: {"mean": mean.tolist(), "variance": var.tolist()} for name, (mean, var) in self.stats.items()
        }
        self.record_facts(facts)
        if distribute.is_chief():
            # A copy to read; evaluation reads the vocabulary from the facts file.
            checkpointing.write_text(os.path.join(self.job_dir, VOCABULARY_FILE), "\n".join(self.vocabulary) + "\n")

    def _restore_training_statistics(self, facts: dict) -> None:
        """The vocabulary and feature normalization the job trained with, from its recorded facts."""
        self.vocabulary = list(facts["vocabulary"])
        self.stats = {
            name: (np.asarray(s["mean"], np.float32), np.asarray(s["variance"], np.float32))
            for name, s in facts["statistics"].items()
        }
        logging.info("Vocabulary of %d tokens and feature statistics from job %s", len(self.vocabulary), self.job_dir)

    def build_model(self) -> keras.Model:
        """The trained model: segment features and caption token ids in, span and attention out.

        Captions are tokenized in tf.data with `self.tokenizer` (distributed
        `fit` can't take string inputs); `serving_model` puts the same
        tokenizer in front for raw text (both through `model.tokenize_inputs`).
        """
        if self.model_cfg is None:
            self.configure()
        inner = model_lib.build_model(self.model_cfg, self.vocabulary)
        m = self.model_cfg.num_segments
        inputs = {
            "video": keras.Input((m, self.model_cfg.video_dim), name="video"),
            "audio": keras.Input((m, self.model_cfg.audio_dim), name="audio"),
            "segment_mask": keras.Input((m,), name="segment_mask"),
            "tokens": keras.Input((self.model_cfg.max_caption_tokens,), dtype="int32", name="tokens"),
        }
        normalized = dict(inputs)
        for name in ("video", "audio"):
            mean, var = self.stats[name]
            normalized[name] = keras.layers.Normalization(mean=mean, variance=var, name=f"{name}_normalization")(
                inputs[name]
            )
        outputs = inner(normalized)
        return keras.Model(inputs, {"span": outputs["span"], "attention": outputs["attention"]}, name="localizer")

    def serving_model(self, model: keras.Model) -> keras.Model:
        """`model` behind the caption tokenizer: raw caption strings in (saved as model.keras)."""
        return model_lib.with_text_input(model, self.tokenizer)

    def _model_inputs(self, x: dict) -> dict:
        """A batch's features with the caption strings replaced by token ids."""
        return model_lib.tokenize_inputs(x, self.tokenizer)

    def compile(self, model, optimizer) -> None:
        model.compile(
            optimizer=optimizer, run_eagerly=self.cfg.runtime.run_eagerly, **model_lib.compile_arguments(self.model_cfg)
        )

    def dataset(self, split: str, is_training: bool, batch_size: int) -> tf.data.Dataset:
        ds = self._captions(split).map(lambda x, y, meta: (x, y))
        if self.cfg.data.cache:
            ds = ds.cache()
        if is_training:
            ds = ds.shuffle(self.cfg.data.shuffle_buffer, seed=self.cfg.train.seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=is_training)
        ds = ds.map(lambda x, y: (self._model_inputs(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    def num_examples(self, split: str) -> int:
        if split == self.cfg.data.train_split and (self.cfg.data.languages or self.cfg.data.max_train_videos):
            return int(self._captions(split).reduce(0, lambda n, _: n + 1))
        return self.counts[split]["captions"]

    @property
    def monitor(self):
        # The best checkpoint is chosen by what the reported spans come from: the head's
        # R@1, or, when spans are read off the attention, how well eq. 2 calibrates it.
        if self.cfg.eval.span_decoder == "attention":
            return "val_attention_loss", "min"
        return "val_span_r1_iou_0.5", "max"

    def tuning_objectives(self) -> dict[str, str]:
        recalls = [metrics.recall_key(t) for t in IOU_THRESHOLDS] + ["miou"]
        names = {f"val_{k}": "min" for k in ("loss", "span_loss", "attention_loss")}
        # The epoch logs' recalls are the regression head's; eval_* are those of eval.span_decoder.
        names.update({f"val_span_{k}": "max" for k in recalls})
        evaluated = recalls + [f"snapped_{k}" for k in recalls]
        if self.cfg.eval.span_decoder == "attention" and not self.cfg.eval.window_seconds:
            evaluated += [metrics.recall_key(t, 5) for t in IOU_THRESHOLDS]
        names.update({f"eval_{k}": "max" for k in evaluated})
        return names

    def callbacks(self, model, log_dir):
        from trainer.localization import plots

        if not self.cfg.eval.num_plot_examples:
            return []
        x, y, meta = next(iter(self._captions(self.cfg.data.eval_split).batch(self.cfg.eval.num_plot_examples)))
        meta = dict(meta, caption=x["caption"])
        examples = (self._model_inputs(x), y, meta)
        return [plots.AttentionPlotCallback(examples, os.path.join(log_dir, "attention"))]

    def predict(self, model, split: str):
        """Predictions, truths and metadata of every caption of a split (numpy)."""
        spans, attention, truth, meta = [], [], [], {k: [] for k in data_lib.META_KEYS}
        for x, y, m in self._captions(split).batch(self.cfg.train.global_batch_size):
            out = model(self._model_inputs(x), training=False)
            spans.append(np.asarray(out["span"]))
            attention.append(np.asarray(out["attention"]))
            truth.append(y["span"].numpy())
            for k in meta:
                meta[k].append(m[k].numpy())
        meta = {k: np.concatenate(v) for k, v in meta.items()}
        return np.concatenate(spans), np.concatenate(truth), np.concatenate(attention), meta

    def predict_windowed(self, model, split: str):
        """As `predict`, over overlapping windows of `eval.window_seconds` for longer videos.

        A video longer than the window is cut into windows (stride
        `eval.window_stride_seconds`, default half a window), each cut into the
        model's M segments, so resolution does not fall with video length; each
        caption's per-window proposals are merged by `data.merge_windows`.
        """
        window, stride = self.cfg.eval.window_seconds, self.cfg.eval.window_stride_seconds
        key = self.parser.caption_key
        spans, truth, meta = [], [], {k: [] for k in data_lib.META_KEYS}
        videos = input_lib.read_videos(self.info, split, self.streams, languages=self.cfg.data.languages_of(split))
        for video in videos:
            duration = float(video[features.DURATION])
            starts = data_lib.window_starts(duration, window, stride)
            length = min(window, duration)
            audio = self.audio_view(video)
            segs = [self.parser.video_segments(video, float(t0), length, audio) for t0 in starts]
            captions = video[key]
            k, n = len(starts), int(tf.shape(captions)[0])
            x = {
                "video": tf.tile(tf.stack([s["video"] for s in segs]), [n, 1, 1]),
                "audio": tf.tile(tf.stack([s["audio"] for s in segs]), [n, 1, 1]),
                "segment_mask": tf.ones([n * k, self.model_cfg.num_segments]),
                "caption": tf.repeat(captions, k),
            }
            out = model(self._model_inputs(x), training=False)
            out_att = np.asarray(out["attention"])
            out_spans = self.decode(out["span"], out_att).reshape(n, k, 2)
            out_att = out_att.reshape(n, k, -1, 2)
            for i in range(n):
                spans.append(data_lib.merge_windows(starts, length, out_spans[i], out_att[i], duration)[0])
            truth.append(
                data_lib.normalized_span(video[features.CAPTION_START], video[features.CAPTION_END], duration).numpy()
            )
            meta["video_id"].append(np.repeat(video[features.VIDEO_ID].numpy(), n))
            meta["language"].append(np.repeat(video[features.LANGUAGE].numpy(), n))
            meta["duration"].append(np.full(n, duration, np.float32))
            meta["start"].append(video[features.CAPTION_START].numpy())
            meta["end"].append(video[features.CAPTION_END].numpy())
            meta["audio_dependent"].append(video[features.CAPTION_AUDIO_DEPENDENT].numpy())
        return np.stack(spans), np.concatenate(truth), None, {k: np.concatenate(v) for k, v in meta.items()}

    def decode(self, head_spans, attention, decoder=None) -> np.ndarray:
        """The spans of `eval.span_decoder` (or `decoder`) from a batch's outputs."""
        if (decoder or self.cfg.eval.span_decoder) == "attention":
            return metrics.attention_to_span(attention, self.cfg.eval.attention_threshold)
        return np.asarray(head_spans)

    def evaluate(self, model, split: str) -> dict:
        proposals = None
        if self.cfg.eval.window_seconds > 0:
            pred, truth, _, meta = self.predict_windowed(model, split)
            others = {}
        else:
            head, truth, attention, meta = self.predict(model, split)
            pred = self.decode(head, attention)
            others = {d: self.decode(head, attention, d) for d in ("head", "attention")}
            if self.cfg.eval.span_decoder == "attention":
                # The R@5 decoder the serving signatures run: the attention's peaks, each with
                # runs at several thresholds, after temporal NMS.
                # In chunks: a chunk holds [chunk, M, thresholds, M] booleans.
                chunks = [
                    decoding.top_k_proposals(
                        attention[i : i + 256], 5, self.cfg.eval.attention_threshold, self.cfg.eval.nms_iou
                    )
                    for i in range(0, len(attention), 256)
                ]
                proposals = [np.concatenate([c[j].numpy() for c in chunks]) for j in (0, 1)]
        m = self.model_cfg.num_segments

        def subset(sel):
            result = metrics.evaluate_spans(pred[sel], truth[sel], m)
            if proposals is not None:
                result.update(metrics.recall_at_k_iou(proposals[0][sel], proposals[1][sel], truth[sel], k=5))
            return result

        everything = np.ones(len(pred), bool)
        result = {"all": subset(everything), "num_captions": int(len(pred))}
        result["span_decoder"] = self.cfg.eval.span_decoder
        # Both decoders' overall numbers, whichever one the table reports.
        for name, spans in others.items():
            result[f"decoder_{name}"] = metrics.evaluate_spans(spans, truth, m)
        dependent = meta["audio_dependent"] == 1
        if dependent.any():
            result["audio_dependent"] = subset(dependent)
            result["not_audio_dependent"] = subset(~dependent)
        for lang in sorted(set(meta["language"])):
            result[f"language_{lang.decode() or 'unknown'}"] = subset(meta["language"] == lang)
        return result

    def format_results(self, result: dict) -> str:
        rows = [(k, v) for k, v in result.items() if isinstance(v, dict)]
        keys = [f"r1_iou_{t}" for t in IOU_THRESHOLDS] + ["miou"]
        if any("r5_iou_0.5" in r for _, r in rows):
            keys += ["r5_iou_0.5", "r5_iou_0.7"]
        lines = [f"{'subset':<24}" + "".join(f"{k:>12}" for k in keys)]
        for name, r in rows:
            lines.append(f"{name:<24}" + "".join(f"{r.get(k, float('nan')):>12.3f}" for k in keys))
        return "\n".join(lines)
