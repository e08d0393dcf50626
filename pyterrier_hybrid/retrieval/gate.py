"""The bias gate: an int8 encoder is used only if it ranks like the same checkpoint in fp32.

Quantisation error is not spread evenly over languages: a model can keep its average AP and still rank one script
lower than before, which is exactly the language bias that rank distance measures. So the gate compares XQuAD-R
Mul AP *and* rank distance of the int8 and fp32 encoders on a held-out sample (questions of several languages
against the pooled candidate sentences of those languages), with pyterrier_hybrid's exact evaluation.

The XQuAD-R paragraphs are split in two by a seeded hash: the gate's sample comes from one half, the calibration
texts of static quantisation (:meth:`BiasGate.calibration_texts`) from the other, so the gate never judges a
quantisation on the texts it was calibrated on.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np


class QuantizationRefusedError(ValueError):
    """An int8 model ranked differently from its fp32 checkpoint by more than the gate's tolerances."""


class GateSample(NamedTuple):
    queries: list[str]
    docs: list[str]
    docnos: list[str]
    targets: np.ndarray  # (queries, languages): column index of each relevant sentence, -1 = none


@dataclass(frozen=True)
class BiasGate:
    """Accept an int8 encoder when its Mul AP is within ``ap_tolerance`` (absolute) and its mean rank distance
    within ``rd_tolerance`` (relative) of the fp32 encoder's, on ``questions_per_lang`` held-out XQuAD-R questions
    of each of ``langs`` against the sentences of ``paragraphs`` held-out paragraphs in those languages."""
    ap_tolerance: float = 0.005
    rd_tolerance: float = 0.02
    langs: tuple[str, ...] = ('ar', 'de', 'en', 'hi', 'ru', 'zh')
    questions_per_lang: int = 50
    paragraphs: int = 60
    seed: int = 0
    collection: str = field(default='xquad-r', init=False)

    def __post_init__(self):
        from pyterrier_hybrid.data.lareqa import COLLECTIONS
        unknown = sorted(set(self.langs) - set(COLLECTIONS[self.collection]))
        if unknown or len(self.langs) < 2:
            raise ValueError(f'the gate needs two or more XQuAD-R languages ({", ".join(COLLECTIONS[self.collection])})'
                             f'; got {self.langs!r}')
        if self.ap_tolerance < 0 or self.rd_tolerance < 0 or min(self.questions_per_lang, self.paragraphs) < 1:
            raise ValueError('tolerances must be >= 0, questions_per_lang and paragraphs >= 1')

    def _calibration_part(self) -> list[str]:
        """The XQuAD-R paragraph numbers (parallel across languages) that calibration may use, the gate never."""
        from pyterrier_hybrid.data.lareqa import _load_language
        numbers = sorted({d.doc_id.split('-')[1] for d in _load_language(self.collection, 'en').docs})
        return [n for n in numbers if hashlib.sha256(f'{self.seed}:{n}'.encode()).digest()[0] % 2]

    @cached_property
    def sample(self) -> GateSample:
        """Queries, pooled candidate sentences and each query's answer sentence in every language."""
        from pyterrier_hybrid.data.lareqa import _load_language
        loaded = {lang: _load_language(self.collection, lang) for lang in self.langs}
        rng = np.random.default_rng(self.seed)
        held_out = sorted({d.doc_id.split('-')[1] for d in loaded[self.langs[0]].docs} - set(self._calibration_part()))
        chosen = set(rng.permutation(held_out)[:self.paragraphs])
        docs = sorted((d for lang in self.langs for d in loaded[lang].docs if d.doc_id.split('-')[1] in chosen),
                      key=lambda d: d.doc_id)
        column = {d.doc_id: i for i, d in enumerate(docs)}
        queries, targets = [], []
        for lang in self.langs:
            ids = sorted(q for q, doc_id in loaded[lang].answers.items() if doc_id in column)
            for qid in rng.permutation(ids)[:self.questions_per_lang]:
                queries.append(loaded[lang].queries[qid].text)
                targets.append([column.get(loaded[other].answers.get(qid), -1) for other in self.langs])
        return GateSample(queries, [d.text for d in docs], [d.doc_id for d in docs], np.array(targets))

    def calibration_texts(self, count: int = 300) -> list[str]:
        """A seeded sample of candidate sentences of all XQuAD-R languages from the paragraphs the gate never
        uses: the default calibration set of static quantisation."""
        from pyterrier_hybrid.data.lareqa import COLLECTIONS, _load_language
        part = set(self._calibration_part())
        texts = [d.text for lang in COLLECTIONS[self.collection] for d in _load_language(self.collection, lang).docs
                 if d.doc_id.split('-')[1] in part]
        return [texts[i] for i in np.random.default_rng(self.seed).permutation(len(texts))[:count]]

    def figures(self, encoder) -> dict[str, float]:
        """Mul AP and mean rank distance of ``encoder`` (a :class:`~pyterrier_hybrid.HybridEncoder`) on the
        sample, computed by the package's exact evaluator (trec_eval's semantics and tie order)."""
        return self.figures_of(encoder.encode_queries(self.sample.queries), encoder.encode_docs(self.sample.docs))

    def figures_of(self, query_vectors: np.ndarray, doc_vectors: np.ndarray) -> dict[str, float]:
        """:meth:`figures` from vectors of the sample's queries and documents, however they were encoded (e.g.
        by another library, to hold it to the same gate)."""
        import pandas as pd

        from pyterrier_hybrid.evaluation.fast import evaluate_scores
        from pyterrier_hybrid.evaluation.measures import AP, RankDistance
        from pyterrier_hybrid.retrieval.scoring import inner_products
        sample = self.sample
        scores = inner_products(query_vectors, doc_vectors)
        qids = [f'q{i}' for i in range(len(sample.queries))]
        rows, columns = np.nonzero(sample.targets >= 0)
        qrels = pd.DataFrame({'qid': np.asarray(qids, dtype=object)[rows],
                              'docno': np.asarray(sample.docnos, dtype=object)[sample.targets[rows, columns]],
                              'label': 1})
        values = evaluate_scores(scores, sample.docnos, qids, qrels, [AP, RankDistance])
        return values.groupby('measure')['value'].mean().to_dict()

    def check(self, fp32: dict[str, float], int8: dict[str, float]) -> None:
        """Raise :class:`QuantizationRefusedError` with the figures unless int8 is within the tolerances of fp32."""
        ap_change = int8['AP'] - fp32['AP']
        rd_change = abs(int8['RankDistance'] - fp32['RankDistance']) / max(fp32['RankDistance'], 1e-9)
        if abs(ap_change) > self.ap_tolerance or rd_change > self.rd_tolerance:
            raise QuantizationRefusedError(
                f'int8 refused by the bias gate: Mul AP fp32 {fp32["AP"]:.4f}, int8 {int8["AP"]:.4f} '
                f'(change {ap_change:+.4f}, tolerance {self.ap_tolerance}); rank distance fp32 '
                f'{fp32["RankDistance"]:.2f}, int8 {int8["RankDistance"]:.2f} (change {rd_change:.1%}, tolerance '
                f'{self.rd_tolerance:.1%}); on {len(self.sample.queries)} XQuAD-R questions '
                f'({", ".join(self.langs)}) against {len(self.sample.docs)} pooled sentences. '
                'Use the fp32 model, or loosen BiasGate(ap_tolerance=..., rd_tolerance=...) knowingly')

    def record(self, fp32: dict[str, float], int8: dict[str, float]) -> dict:
        """What is stored beside an accepted int8 export: the figures and the sample they were measured on."""
        sample = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                  if k not in ('ap_tolerance', 'rd_tolerance')}  # as JSON gives it back, to compare with the record
        return {'sample': sample,
                'fp32': fp32, 'int8': int8}
