"""Running an experiment: train what must be trained (once per seed), encode each pooled corpus once per model,
evaluate every setting, and write the results; every step is skipped when its output exists."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import ir_datasets
import pandas as pd

from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.data import lareqa
from pyterrier_hybrid.evaluation.settings import ALL_LANGUAGES, KINDS, Setting, lareqa_settings

from .config import ExperimentSpec, ModelSpec, load_experiment
from .report import Report

#: The per-query frame the runner hands to the report (pretrained models: seed <NA>, their values serve every seed).
PERQUERY_COLUMNS = ['name', 'seed', 'dataset_id', 'kind', 'query_lang', 'doc_lang', 'qid', 'measure', 'value']


def _lareqa_setting(dataset_id: str) -> Setting | None:
    """The setting of one LAReQA language pair (``lareqa/xquad-r/th/en``: Cr) or query language
    (``lareqa/xquad-r/th``: Mul); None for other ids."""
    parts = dataset_id.split('/')
    if parts[0] != 'lareqa' or len(parts) not in (3, 4) or parts[1] not in lareqa.COLLECTIONS:
        return None
    if len(parts) == 3:
        return Setting(dataset_id, 'Mul', parts[2], ALL_LANGUAGES)
    return Setting(dataset_id, 'Mo' if parts[2] == parts[3] else 'Cr', parts[2], parts[3])


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
    setting = _lareqa_setting(dataset_id)
    if setting is not None:
        return dataset_id, [setting]
    dataset = ir_datasets.load(dataset_id)
    query_lang = dataset.queries_lang() or 'xx'
    doc_lang = dataset.docs_lang() or query_lang
    return dataset_id, [Setting(dataset_id, 'Mo' if query_lang == doc_lang else 'Cr', query_lang, doc_lang)]


def _file_name(dataset_id: str) -> str:
    return dataset_id.replace('/', '__')


@contextmanager
def _one_progress_bar(encoder, description: str, total: Callable[[], int | None]):
    """One bar per encoding, counting texts: PooledDenseRetrieval hands the encoder 4,096 documents at a time, and
    the encoder's own bar would restart with each chunk. The bar opens at the first text encoded, so a reused
    encoding shows none."""
    import pyterrier as pt
    encode, bar = encoder.encode, None

    def counted(texts, *args, **kwargs):
        nonlocal bar
        if bar is None:
            bar = pt.tqdm(total=total(), desc=description, unit='text')
        vectors = encode(texts, *args, **kwargs)
        bar.update(len(texts))
        return vectors

    encoder.encode = counted
    try:
        yield
    finally:
        del encoder.encode
        if bar is not None:
            bar.close()


def _texts(dataset_id: str) -> int | None:
    """Documents plus queries of a data set (the length of its encoding's progress bar)."""
    dataset = ir_datasets.load(dataset_id)
    try:
        return dataset.docs_count() + len({q.text for q in dataset.queries_iter()})  # queries encoded once per text
    except (TypeError, NotImplementedError):
        return None


class ExperimentRunner:
    """Runs an :class:`ExperimentSpec` step by step, skipping every step whose output exists."""

    def __init__(self, spec: ExperimentSpec, log=print):
        self.spec, self.log = spec, log
        self.out = Path(spec.output)

    def model_path(self, model: ModelSpec) -> Path:
        return self.out / 'models' / model.key

    def checkpoint(self, model: ModelSpec) -> str:
        """The model to encode with: a pretrained name/path, or the trained checkpoint (trained if missing)."""
        if model.pretrained is not None:
            return model.pretrained
        from pyterrier_hybrid.training.trainer import train
        target = self.model_path(model)
        if not target.exists():
            base = self.checkpoint(model.base) if isinstance(model.base, ModelSpec) else model.base
            train(base, model.data, target, model.recipe)
        return str(target)

    def perquery_path(self, model: ModelSpec, dataset_id: str, settings: list[Setting]) -> Path:
        """Per-query values live under the encoding they come from, and name the settings and measures they hold,
        so adding a measure or a language computes them again instead of reading a file without them."""
        evaluated = [[s.dataset_id for s in settings], [str(m) for m in self.spec.measures]]
        digest = hashlib.sha256(json.dumps(evaluated).encode()).hexdigest()[:10]
        return self.out / 'perquery' / model.system_key / f'{_file_name(dataset_id)}-{digest}.csv.gz'

    def perquery(self, model: ModelSpec, dataset_id: str) -> pd.DataFrame:
        """Per-query values of one model on one data set (:data:`PERQUERY_COLUMNS`), and its runs (both cached;
        missing parts computed)."""
        pooled_id, settings = _settings(self.spec, dataset_id)
        cache = self.perquery_path(model, dataset_id, settings)
        missing_runs = [s for s in settings if not self.run_path(model, s).exists()] if self.spec.run_depth else []
        if cache.exists() and not missing_runs:
            return _read_perquery(cache)
        system = self.system(model, pooled_id)
        self.write_runs(model, system, missing_runs)
        if cache.exists():
            return _read_perquery(cache)
        from pyterrier_hybrid.evaluation.fast import evaluate_perquery
        self.log(f'evaluating {model.label} on {len(settings)} settings of {dataset_id}')
        values = evaluate_perquery({model.name: system}, settings, self.spec.measures)
        values = values.assign(seed=pd.array([model.seed] * len(values), dtype='Int64'))[PERQUERY_COLUMNS]
        write_atomically(cache, lambda tmp: values.to_csv(tmp, index=False, compression='gzip'))
        return values

    def runs_folder(self) -> Path:
        """TREC runs are ``run_depth`` deep, and their folder says so: AP of a 10-deep run is not AP."""
        return self.out / f'runs-top{self.spec.run_depth}'

    def run_path(self, model: ModelSpec, setting: Setting) -> Path:
        return self.runs_folder() / model.system_key / (_file_name(setting.dataset_id) + '.res.gz')

    def system(self, model: ModelSpec, pooled_id: str):
        from pyterrier_hybrid.retrieval.encoder import HybridEncoder
        from pyterrier_hybrid.retrieval.pooled import PooledDenseRetrieval
        encoder = HybridEncoder.from_pretrained(self.checkpoint(model), batch_size=model.batch_size,
                                                quantize=model.quantize)
        path = self.out / 'encodings' / model.encoding_key / _file_name(pooled_id)
        with _one_progress_bar(encoder, f'encoding {model.label} on {pooled_id}', lambda: _texts(pooled_id)):
            system = PooledDenseRetrieval(encoder, pooled_id, path)
        if model.bias_removal is None:
            return system
        return system.debiased(path / model.removal_key, **dict(model.bias_removal))

    def write_runs(self, model: ModelSpec, system, settings: list[Setting]) -> None:
        """TREC runs, ``run_depth`` deep, one per setting, tagged with the model's encoding key."""
        import pyterrier as pt
        for setting in settings:
            topics = pt.get_dataset(f'irds:{setting.dataset_id}').get_topics('text')
            run = (system(setting) % self.spec.run_depth)(topics)
            write_atomically(self.run_path(model, setting),
                             lambda tmp: pt.io.write_results(run, str(tmp), run_name=model.system_key))

    def evaluate(self) -> pd.DataFrame:
        """Train (bases first), then evaluate every model on every data set, logging ``[stage/stages]`` lines;
        returns the per-query values of all of them (:data:`PERQUERY_COLUMNS`)."""
        variants = self.spec.variants()
        trained = sorted((v for v in variants if v.trains), key=_depth)
        stages = len(trained) + len(variants) * len(self.spec.datasets)
        stage = itertools.count(1)
        for model in trained:
            target = self.model_path(model)
            self.log(f'[{next(stage)}/{stages}] {"reusing" if target.exists() else "training"} {model.label}: '
                     f'{target}')
            self.checkpoint(model)
        frames = []
        for dataset_id in self.spec.datasets:
            for model in variants:
                self.log(f'[{next(stage)}/{stages}] {model.label} on {dataset_id}')
                frames.append(self.perquery(model, dataset_id))
        return pd.concat(frames, ignore_index=True)

    def run(self) -> Path:
        """Evaluate (:meth:`evaluate`) and write the tables, plots and report; returns the results folder."""
        started = time.monotonic()
        perquery = self.evaluate()
        results = self.out / 'results'
        results.mkdir(parents=True, exist_ok=True)
        datasets = {d: [s.dataset_id for s in _settings(self.spec, d)[1]] for d in self.spec.datasets}
        Report.from_spec(self.spec, perquery, datasets, elapsed=time.monotonic() - started).write(results)
        self.add_results_to_model_cards(perquery, datasets)
        self.log(f'results in {results}')
        return results

    def add_results_to_model_cards(self, perquery: pd.DataFrame, datasets: dict[str, list[str]]) -> None:
        """Each trained checkpoint's model card gets its own Mo / Cr / Mul table from this experiment."""
        from pyterrier_hybrid.evaluation.statistics import macro_average_perquery
        from pyterrier_hybrid.training.trainer import add_model_card_results
        for model in (v for v in self.spec.variants() if v.trains):
            own = perquery[(perquery['name'] == model.name) & (perquery['seed'] == model.seed).fillna(False)]
            tables = []
            for dataset, setting_ids in datasets.items():
                table = macro_average_perquery(own[own['dataset_id'].isin(setting_ids)])
                table.columns = [f'{measure} {kind}' for measure, kind in table.columns]
                tables.append(f'{dataset} (experiment {self.spec.name!r}, macro averages over its settings):\n\n'
                              + table.round(4).to_markdown(index=False))
            add_model_card_results(self.model_path(model), '\n\n'.join(tables), title='Evaluation')


def _depth(model: ModelSpec) -> int:
    """How many trained models lie under this one (training order: bases first)."""
    return 1 + _depth(model.base) if isinstance(model.base, ModelSpec) else 0


def _read_perquery(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={'qid': str, 'seed': 'Int64'})


def run_experiment(path: str | os.PathLike, log=print) -> Path:
    """Validate and run an experiment file; returns its results folder."""
    return ExperimentRunner(load_experiment(path), log=log).run()
