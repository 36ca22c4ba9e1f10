"""Evaluators of generated text: image ``captioning`` (BLEU/METEOR/ROUGE-L/CIDEr),
speech recognition ``wer`` (word and character error rates) and ``text2text``
(BLEU with sacrebleu or ROUGE with rouge-score: translation and summarisation).

Both encode the task's encoder inputs on the mesh (``model.encode``), generate
with :func:`jaxmm.generate` (greedy or beam search) and decode with the run's
tokenizer. References are strings kept in the eval batch (``references``); when
the pipeline keeps only token ids, the target ``input_ids`` are decoded instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, ClassVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmm.config import ConfigBase, ConfigError
from jaxmm.evaluate.captioning import repeated_ngram_rate, score_captions
from jaxmm.evaluate.evaluators.base import Evaluator, register_evaluator, texts
from jaxmm.evaluate.text import cer, wer

log = logging.getLogger(__name__)

__all__ = ["CaptionPredictions", "CaptioningEvaluator", "GenerationOptions",
           "GeneratingEvaluator", "Text2TextEvaluator", "WEREvaluator", "bleu_score",
           "rouge_scores"]


@dataclasses.dataclass(frozen=True)
class GenerationOptions(ConfigBase):
    """max_new_tokens / num_beams / length_penalty / repetition_penalty /
    no_repeat_ngram_size: as in :func:`jaxmm.generate` (greedy when ``num_beams=1``;
    a repetition penalty of 1 and an n-gram size of 0 are off). references: the
    batch's reference strings."""

    max_new_tokens: int = 24
    num_beams: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    references: str = "captions"

    def validate(self) -> None:
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ConfigError(f"max_new_tokens and num_beams must be >= 1; got "
                              f"{self.max_new_tokens}, {self.num_beams}.")
        if self.repetition_penalty <= 0 or self.no_repeat_ngram_size < 0:
            raise ConfigError(f"repetition_penalty must be > 0 (1 = off) and "
                              f"no_repeat_ngram_size >= 0 (0 = off); got "
                              f"{self.repetition_penalty}, {self.no_repeat_ngram_size}.")


class GeneratingEvaluator(Evaluator):
    """Base of evaluators that generate text with an encoder-decoder model.

    :meth:`generate_tokens` runs ``model.encode`` on the task's encoder inputs of
    the prepared batch (jitted on the mesh), then :func:`jaxmm.generate`. With
    one process generation runs on the mesh, sharded as the params are; across
    processes each process generates its own rows on one of its devices, with a
    full copy of the params (``jaxmm.generate`` reads its tokens on the host).
    """

    Options = GenerationOptions

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._decoding_references = False  # noted once in the log
        if self.generates:
            self._encode = self.jit(self._encoder_fn())

    @property
    def generates(self) -> bool:
        """Whether this evaluator generates (subclasses may answer otherwise)."""
        return True

    def _encoder_fn(self):
        model = self.task.model
        if not hasattr(model, "encode"):
            raise ConfigError(f"Evaluator {self.name!r} needs an encoder-decoder model with an "
                              f"encode method; {type(model).__name__} has none.")
        keys = tuple(getattr(self.task, "encoder_inputs", ()) or ("image",))

        def encode(variables, batch):
            prepared = self.prepare(batch)
            out = model.apply(variables, **{k: prepared[k] for k in keys if k in prepared},
                              method="encode")
            hidden = out.last_hidden_state
            rows = {"hidden": hidden, "example_mask": prepared.get(
                "example_mask", jax.numpy.ones((hidden.shape[0],), jax.numpy.float32))}
            mask = getattr(out, "attention_mask", None)
            return rows if mask is None else {**rows, "attention_mask": mask}

        return encode

    def generation_params(self, variables: Any) -> Any:
        """The params :meth:`generate_tokens` passes to :func:`jaxmm.generate`: as they
        are with one process; across processes a full copy on one local device (the
        generator reads its tokens on the host, so each process generates its own
        rows on its own device)."""
        params = variables["params"]
        if jax.process_count() == 1:
            return params
        everywhere = NamedSharding(self.mesh, PartitionSpec())
        params = jax.jit(lambda p: p, out_shardings=everywhere)(params)
        return jax.tree.map(lambda a: a.addressable_shards[0].data, params)

    def generate_tokens(self, variables: Any, params: Any, batch: dict[str, jax.Array]
                        ) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens, mask)``: this process's generated ids ``(rows, 1 + max_new_tokens)``
        (decoder start token first, padded with the pad id) and row mask.
        ``params``: :meth:`generation_params`."""
        from jaxmm.generation import generate

        o = self.options
        enc = self._encode(variables, batch)
        hidden, mask = enc["hidden"], enc.get("attention_mask")
        where = contextlib.nullcontext()
        if jax.process_count() > 1:  # this process's rows, generated on a local device
            hidden = self.host_rows(hidden)
            mask = None if mask is None else self.host_rows(mask)
            one = (1,) * len(self.mesh.axis_names)
            where = jax.set_mesh(Mesh(np.asarray(jax.local_devices()[:1]).reshape(one),
                                      self.mesh.axis_names))
        with where:
            out = generate(self.task.model, params, encoder_outputs=hidden,
                           encoder_attention_mask=mask, max_new_tokens=o.max_new_tokens,
                           num_beams=o.num_beams, length_penalty=o.length_penalty,
                           repetition_penalty=o.repetition_penalty,
                           no_repeat_ngram_size=o.no_repeat_ngram_size)
        tokens = np.asarray(out.sequences)  # this process's rows either way
        pad = getattr(self.task.model.config, "pad_token_id", None) or 0
        width = 1 + o.max_new_tokens
        tokens = np.pad(tokens, ((0, 0), (0, width - tokens.shape[1])), constant_values=pad)
        return tokens, self.host_rows(enc["example_mask"])

    def references(self, local: dict[str, np.ndarray], rows: int) -> np.ndarray:
        """Reference strings ``(rows, K)`` of the host batch (``""`` = no reference)."""
        key = self.options.references
        if key in local:
            refs = texts(local[key])
        elif "input_ids" in local:
            if not self._decoding_references:
                self._decoding_references = True
                log.info("Evaluator %s: no %r strings in the eval batch; decoding the target "
                         "input_ids as references.", self.name, key)
            ids = np.asarray(local["input_ids"])
            decoded = self.require_tokenizer().decode(ids.reshape(-1, ids.shape[-1]))
            refs = texts(np.asarray(decoded, object)).reshape(ids.shape[:-1])
        else:
            raise ConfigError(f"Evaluator {self.name!r}: the eval batch has neither {key!r} "
                              f"reference strings nor input_ids (keys: {sorted(local)}).")
        return refs.reshape(rows, -1)


@dataclasses.dataclass(frozen=True)
class CaptionPredictions:
    """Generated captions of every eval image (real rows of all processes, in order).

    ids: ``(N,)`` image ids. tokens: ``(N, 1 + max_new_tokens)`` generated ids.
    captions: ``N`` decoded captions. references: ``N`` lists of reference captions.
    """

    ids: np.ndarray
    tokens: np.ndarray
    captions: list[str]
    references: list[list[str]]


@register_evaluator("captioning")
class CaptioningEvaluator(GeneratingEvaluator):
    """Caption metrics of generated captions against every reference of their image:
    ``BLEU-1``..``BLEU-4``, ``METEOR``, ``ROUGE-L``, ``CIDEr`` (pycocoevalcap,
    PTB-tokenised; without Java, BLEU/ROUGE-L/CIDEr on whitespace tokens:
    :func:`jaxmm.evaluate.captioning.score_captions`), and ``repeated_2grams`` /
    ``repeated_3grams``, the percentage of a caption's word n-grams that repeat an
    earlier n-gram of the same caption
    (:func:`jaxmm.evaluate.captioning.repeated_ngram_rate`). Batches: ``image``,
    ``image_id`` and the reference strings (``references``, ``(B, K)``)."""

    def predict(self, variables: Any) -> CaptionPredictions:
        params = self.generation_params(variables)

        def step(local, batch):
            tokens, mask = self.generate_tokens(variables, params, batch)
            out = {"tokens": tokens, "mask": mask, "references": self.references(local,
                                                                                  len(tokens))}
            if "image_id" in local:
                out["image_id"] = local["image_id"]
            return out

        rows = self.collect(step)
        ids = rows.get("image_id", np.arange(len(rows["tokens"])))
        captions = self.require_tokenizer().decode(rows["tokens"])
        refs = [[r for r in row if r] for row in rows["references"]]
        return CaptionPredictions(ids=np.asarray(ids), tokens=rows["tokens"],
                                  captions=list(captions), references=refs)

    def score(self, predictions: CaptionPredictions) -> dict[str, float]:
        keys = [int(i) for i in predictions.ids]
        scores = score_captions(dict(zip(keys, predictions.captions)),
                                dict(zip(keys, predictions.references)))
        for n in (2, 3):
            scores[f"repeated_{n}grams"] = repeated_ngram_rate(predictions.captions, n)
        return scores

    def evaluate(self, variables: Any) -> dict[str, float]:
        return self.score(self.predict(variables))


@dataclasses.dataclass(frozen=True)
class TranscriptionOptions(GenerationOptions):
    """As :class:`GenerationOptions`; ``references`` defaults to ``"text"``."""

    DEFAULTS: ClassVar = {"max_new_tokens": 64, "references": "text"}


@register_evaluator("wer")
class WEREvaluator(GeneratingEvaluator):
    """Corpus word and character error rates (jiwer) of generated transcripts
    against one reference per example (compared as given). Metrics: ``wer``,
    ``cer`` (fractions) and ``num_examples``."""

    Options = TranscriptionOptions

    def evaluate(self, variables: Any) -> dict[str, float]:
        params = self.generation_params(variables)

        def step(local, batch):
            tokens, mask = self.generate_tokens(variables, params, batch)
            return {"tokens": tokens, "mask": mask,
                    "reference": self.references(local, len(tokens))[:, 0]}

        rows = self.collect(step)
        hyps = list(self.require_tokenizer().decode(rows["tokens"]))
        refs = [str(r) for r in rows["reference"]]
        return {"wer": wer(refs, hyps), "cer": cer(refs, hyps), "num_examples": float(len(refs))}


TEXT2TEXT_METRICS = ("bleu", "rouge")


@dataclasses.dataclass(frozen=True)
class Text2TextOptions(GenerationOptions):
    """As :class:`GenerationOptions` (``references`` defaults to ``"references"``: the
    target strings the eval pipeline keeps). metric: ``bleu`` (sacrebleu's corpus BLEU,
    0-100, for translation) or ``rouge`` (rouge-score's ROUGE-1/2/L/Lsum F-measures with
    stemming, in percent, best over the references, averaged: for summarisation)."""

    DEFAULTS: ClassVar = {"max_new_tokens": 64, "references": "references"}
    metric: str = "bleu"

    def validate(self) -> None:
        super().validate()
        if self.metric not in TEXT2TEXT_METRICS:
            raise ConfigError(f"metric must be one of {', '.join(TEXT2TEXT_METRICS)}; "
                              f"got {self.metric!r}.")


def bleu_score(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """sacrebleu's corpus BLEU of ``hypotheses`` against each one's references."""
    try:
        import sacrebleu
    except ImportError as e:
        raise ConfigError("metric='bleu' needs sacrebleu, which is not installed.",
                          hint="pip install sacrebleu") from e
    width = max(len(r) for r in references)
    # sacrebleu takes reference streams; a row with fewer references repeats its first.
    streams = [[r[i] if i < len(r) else r[0] for r in references] for i in range(width)]
    result = sacrebleu.corpus_bleu(hypotheses, streams)
    return {"bleu": float(result.score), "bleu_brevity_penalty": float(result.bp)}


def rouge_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measures (percent) of rouge-score, stemmed, best over the
    references of each hypothesis (``rougeLsum`` splits summaries at newlines)."""
    try:
        from rouge_score import rouge_scorer, scoring
    except ImportError as e:
        raise ConfigError("metric='rouge' needs rouge-score, which is not installed.",
                          hint="pip install rouge-score") from e
    kinds = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    totals = dict.fromkeys(kinds, 0.0)
    for hyp, refs in zip(hypotheses, references):
        best: dict[str, scoring.Score] = scorer.score_multi(refs, hyp)
        for k in kinds:
            totals[k] += best[k].fmeasure
    n = max(len(hypotheses), 1)
    return {k: 100.0 * v / n for k, v in totals.items()}


@register_evaluator("text2text")
class Text2TextEvaluator(GeneratingEvaluator):
    """Generated text of a text-to-text model (T5, the original Transformer) scored
    against the target text: ``bleu`` or ``rouge`` (:class:`Text2TextOptions`), and
    ``num_examples``. The source is the batch's ``input_ids`` / ``attention_mask``
    (the attention mask is passed to generation, so padding is never attended to);
    references are the batch's ``references`` strings (the option), or else its decoded
    ``labels``."""

    Options = Text2TextOptions

    def _encoder_fn(self):
        encode = super()._encoder_fn()

        def with_source_mask(variables, batch):
            out = encode(variables, batch)
            if "attention_mask" not in out and "attention_mask" in batch:
                out["attention_mask"] = self.prepare(batch)["attention_mask"]
            return out

        return with_source_mask

    def references(self, local: dict[str, np.ndarray], rows: int) -> np.ndarray:
        if self.options.references not in local and "labels" in local:
            ids = np.asarray(local["labels"])  # -100 (ignored positions) is dropped
            decoded = self.require_tokenizer().decode(ids.reshape(-1, ids.shape[-1]))
            return texts(np.asarray(decoded, object)).reshape(rows, -1)
        return super().references(local, rows)

    def evaluate(self, variables: Any) -> dict[str, float]:
        params = self.generation_params(variables)

        def step(local, batch):
            tokens, mask = self.generate_tokens(variables, params, batch)
            return {"tokens": tokens, "mask": mask,
                    "references": self.references(local, len(tokens))}

        rows = self.collect(step)
        hyps = [str(h) for h in self.require_tokenizer().decode(rows["tokens"])]
        refs = [[str(r) for r in row if r] or [""] for row in rows["references"]]
        score = bleu_score if self.options.metric == "bleu" else rouge_scores
        return {**score(hyps, refs), "num_examples": float(len(hyps))}
