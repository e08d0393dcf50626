"""Running an experiment: train what must be trained, encode each pooled corpus once per model, evaluate every
setting, and write the results; every step is skipped when its output exists."""
from __future__ import annotations

import os
import time
from pathlib import Path

import ir_datasets
import pandas as pd

from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.data import lareqa
from pyterrier_hybrid.evaluation.settings import KINDS, Setting, lareqa_settings

from .config import ExperimentSpec, ModelSpec, load_experiment
from .report import Report


def _settings(spec: ExperimentSpec, dataset_id: str) -> tuple[str, list[Setting]]:
    """The pooled id to encode once, and the settings evaluated on it."""
    collection = dataset_id.removeprefix('lareqa/')
    if dataset_id.startswith('lareqa/') and collection in lareqa.COLLECTIONS:
        langs = [lang for lang in spec.languages or lareqa.COLLECTIONS[collection]
                 if lang in lareqa.COLLECTIONS[collection]]
        kinds = [s for s in spec.settings if s in KINDS]
        settings = lareqa_settings(collection, kinds=kinds, langs=langs) if kinds else []
        pairs = [s for s in spec.settings if isinstance(s, list)]
        settings += [Setting(f'{dataset_id}/{q}/{c}', 'Mo' if q == c else 'Cr', q, c) for q, c in pairs
                     if q in lareqa.COLLECTIONS[collection] and c in lareqa.COLLECTIONS[collection]]
        return dataset_id, list(dict.fromkeys(settings))
    dataset = ir_datasets.load(dataset_id)
    query_lang = dataset.queries_lang() or 'xx'
    return dataset_id, [Setting(dataset_id, 'Mo', query_lang, dataset.docs_lang() or query_lang)]


class ExperimentRunner:
    """Runs an :class:`ExperimentSpec` step by step, skipping every step whose output exists."""

    def __init__(self, spec: ExperimentSpec, log=print):
        self.spec, self.log = spec, log
        self.out = Path(spec.output)

    def checkpoint(self, model: ModelSpec) -> str:
        """The model to encode with: a pretrained name/path, or the trained checkpoint (trained if missing)."""
        if model.pretrained is not None:
            return model.pretrained
        from pyterrier_hybrid.training.trainer import train
        target = self.out / 'models' / model.key
        if not target.exists():
            base = self.checkpoint(self.spec.models[model.base]) if model.base in self.spec.models else model.base
            self.log(f'training {model.name} -> {target}')
            train(base, model.data, target, model.recipe)
        return str(target)

    def perquery(self, model: ModelSpec, dataset_id: str) -> pd.DataFrame:
        """Per-query values of one model on one data set, and its runs (both cached; missing parts computed)."""
        cache = self.out / 'perquery' / model.key / (dataset_id.replace('/', '__') + '.csv.gz')
        pooled_id, settings = _settings(self.spec, dataset_id)
        missing_runs = [s for s in settings if not self.run_path(model, s).exists()] if self.spec.run_depth else []
        if cache.exists() and not missing_runs:
            return pd.read_csv(cache, dtype={'qid': str})
        system = self.system(model, pooled_id)
        self.write_runs(model, system, missing_runs)
        if cache.exists():
            return pd.read_csv(cache, dtype={'qid': str})
        from pyterrier_hybrid.evaluation.fast import evaluate_perquery
        self.log(f'evaluating {model.name} on {len(settings)} settings of {dataset_id}')
        values = evaluate_perquery({model.name: system}, settings, self.spec.measures)
        write_atomically(cache, lambda tmp: values.to_csv(tmp, index=False, compression='gzip'))
        return values

    def run_path(self, model: ModelSpec, setting: Setting) -> Path:
        return self.out / 'runs' / model.name / (setting.dataset_id.replace('/', '__') + '.res.gz')

    def system(self, model: ModelSpec, pooled_id: str):
        from pyterrier_hybrid.retrieval.encoder import HybridEncoder
        from pyterrier_hybrid.retrieval.pooled import PooledDenseRetrieval
        encoder = HybridEncoder.from_pretrained(self.checkpoint(model), batch_size=model.batch_size,
                                                quantize=model.quantize, verbose=True)
        path = self.out / 'encodings' / model.key / pooled_id.replace('/', '__')
        return PooledDenseRetrieval(encoder, pooled_id, path)

    def write_runs(self, model: ModelSpec, system, settings: list[Setting]) -> None:
        """TREC runs, ``run_depth`` deep, one per setting."""
        import pyterrier as pt
        for setting in settings:
            topics = pt.get_dataset(f'irds:{setting.dataset_id}').get_topics('text')
            run = (system(setting) % self.spec.run_depth)(topics)
            write_atomically(self.run_path(model, setting),
                              lambda tmp: pt.io.write_results(run, str(tmp), run_name=model.name))

    def run(self) -> Path:
        started = time.monotonic()
        frames = [self.perquery(model, dataset_id) for dataset_id in self.spec.datasets
                  for model in self.spec.models.values()]
        perquery = pd.concat(frames, ignore_index=True)
        results = self.out / 'results'
        results.mkdir(parents=True, exist_ok=True)
        datasets = {d: [s.dataset_id for s in _settings(self.spec, d)[1]] for d in self.spec.datasets}
        Report.from_spec(self.spec, perquery, datasets, elapsed=time.monotonic() - started).write(results)
        self.log(f'results in {results}')
        return results

def run_experiment(path: str | os.PathLike, log=print) -> Path:
    """Validate and run an experiment file; returns its results folder."""
    return ExperimentRunner(load_experiment(path), log=log).run()
