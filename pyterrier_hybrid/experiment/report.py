"""What an experiment writes to ``results/``: machine-readable tables (CSV), readable ones (Markdown), plots (PNG)
and the report that puts them together (``report.md``, and ``report.html`` with every image embedded, so it opens
offline), each written atomically.

The report answers "where does model B beat model A?": the Mo / Cr / Mul summary (mean ± std over seeds), a
language-pair heatmap of the headline measure per model, a difference heatmap per model against the baseline (and
per head-to-head comparison the file names) with the significant pairs marked, the rank distance per query language
and the pooled significance tests; with the models' recipes, seeds and the environment that produced them.
"""
from __future__ import annotations

import base64
import html
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from pyterrier_hybrid.atomic import write_atomically
from pyterrier_hybrid.evaluation.measures import mul_only
from pyterrier_hybrid.evaluation.settings import ALL_LANGUAGES, KINDS
from pyterrier_hybrid.evaluation.statistics import pair_tests, paired_tests, seed_summary

if TYPE_CHECKING:
    from .config import ExperimentSpec, ModelSpec

#: The measure the report leads with (the papers' headline); the first measure when an experiment lacks it.
HEADLINE = 'nDCG@10'
#: How a person writes the collections.
TITLES = {'lareqa/xquad-r': 'XQuAD-R', 'lareqa/mlqa-r': 'MLQA-R'}
ALPHA = 0.05


def _label(measure: str) -> str:
    return measure.replace('RankDistance', 'rank distance')


def _decimals(measure: str) -> int:
    return 1 if mul_only(measure) else 3


def _lower_is_better(measure: str) -> bool:
    return mul_only(measure)


def _short(dataset: str) -> str:
    return TITLES.get(dataset, dataset)


def _title(dataset: str) -> str:
    return f'{TITLES[dataset]} ({dataset})' if dataset in TITLES else dataset


def _stem(*parts: str) -> str:
    return '_'.join(p.replace('/', '_') for p in parts)


def describe_model(model: ModelSpec) -> str:
    """One line a person reads as the model's recipe: what it starts from, its data, strategy and budget."""
    removal = (', language-bias removal ' + ', '.join(f'{k} {v}' for k, v in model.bias_removal)
               if model.bias_removal is not None else '')
    if model.recipe is None:
        return f'pretrained {model.pretrained}{removal}'
    r = model.recipe
    base = getattr(model.base, 'name', model.base)  # another model of the experiment, or a checkpoint
    parts = [f'{r.strategy} (α = {r.effective_alpha:g}) from {base} on {model.data}',
             f'{r.steps:,} steps × {r.batch_size} = {r.steps * r.batch_size:,} pairs',
             f'max length {r.max_length or "of the model"}', f'lr {r.learning_rate:g}',
             f'temperature {r.temperature:g}']
    if r.negative_language == 'mined':
        parts.append('mined cross-lingual negatives')
    elif r.negative_language != 'passage':
        parts.append(f'negatives in the {r.negative_language} language')
    if r.distillation:
        parts.append(f'distillation weight {r.distillation:g} from {r.teacher or "the base model"}')
    if r.freeze_embeddings:
        parts.append('word embeddings frozen')
    if r.mini_batch_size:
        parts.append(f'GradCache mini-batches of {r.mini_batch_size}')
    if r.languages:
        parts.append(f'languages {", ".join(r.languages)}')
    if r.code_switching:
        parts.append(f'code-switching p = {r.code_switching.p:g} ({len(r.code_switching.lexicons)} lexicons, '
                     f'{r.code_switching.side})')
    return ', '.join(parts) + removal


def environment(elapsed: float | None = None) -> list[tuple[str, str]]:
    """Package versions, CPU and GPU of the process writing the report (and how long the run took)."""
    import pyterrier_hybrid
    rows = [('pyterrier-hybrid', pyterrier_hybrid.__version__)]
    for label, *packages in [('torch', 'torch'), ('transformers', 'transformers'),
                             ('sentence-transformers', 'sentence-transformers'),
                             ('pyterrier', 'pyterrier', 'python-terrier')]:  # PyTerrier's name before 1.0
        rows.append((label, next((v for v in map(_version, packages) if v), 'not installed')))
    rows += [('Python', platform.python_version()), ('CPU', _cpu()), ('GPU', _gpu())]
    if elapsed is not None:
        rows.append(('time taken', f'{elapsed / 60:.1f} min ({elapsed:.0f} s; steps found on disk are skipped)'))
    return rows


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _cpu() -> str:
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.is_file():
        names = [line.split(':', 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith('model name')]
        if names:
            return f'{names[0]} ({len(names)} logical cores)'
    return platform.processor() or platform.machine()


def _gpu() -> str:
    """NVIDIA's driver names its GPUs in /proc (importing torch for it would take seconds)."""
    models = [line.split(':', 1)[1].strip() for info in sorted(Path('/proc/driver/nvidia/gpus').glob('*/information'))
              for line in info.read_text().splitlines() if line.startswith('Model:')]
    return ', '.join(models) or 'none found'



# --- document blocks, rendered both as Markdown and as HTML -------------------------------------------------------

class Heading(NamedTuple):
    text: str
    level: int = 2


class Text(NamedTuple):
    text: str


class Table(NamedTuple):
    """A frame shown as is (its index is not shown); ``bold`` marks cells (same shape) to set in bold."""
    frame: pd.DataFrame
    bold: np.ndarray | None = None


class Image(NamedTuple):
    file: str  # the PNG's name in results/
    caption: str
    png: bytes
    wide: bool = False  # the page's whole width, not half


class Images(NamedTuple):
    """Images shown side by side where the page is wide enough."""
    images: list[Image]


def _markdown(blocks: Sequence) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append('#' * block.level + ' ' + block.text)
        elif isinstance(block, Text):
            out.append(block.text)
        elif isinstance(block, Table):
            frame = block.frame.astype(str).apply(lambda c: c.str.replace('*', r'\*'))
            if block.bold is not None:
                frame = frame.mask(block.bold, '**' + frame + '**')
            if isinstance(frame.columns, pd.MultiIndex):
                frame.columns = [' '.join(c).strip() for c in frame.columns]
            out.append(frame.to_markdown(index=False, disable_numparse=True))
        elif isinstance(block, Images):
            out.append('\n\n'.join(f'![{image.caption}]({image.file})\n\n*{image.caption}*'
                                   for image in block.images))
    return '\n\n'.join(out) + '\n'


_CSS = '''
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1480px;
       padding: 0 16px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.85em; }
th, td { border: 1px solid #d0d0d0; padding: 2px 6px; }
th { background: #f0f0f0; } td { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figs { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; margin-bottom: 16px; }
figure { margin: 0; flex: 0 1 calc(50% - 8px); min-width: 600px; }
figure.wide { flex-basis: 100%; }
figure img { width: 100%; height: auto; }
figcaption { font-size: 0.88em; color: #444; }
p.note { font-size: 0.9em; color: #444; }
'''


def _html(title: str, blocks: Sequence) -> str:
    out = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f'<style>{_CSS}</style></head><body>', f'<h1>{html.escape(title)}</h1>']
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f'<h{block.level}>{html.escape(block.text)}</h{block.level}>')
        elif isinstance(block, Text):
            out.append(f'<p class="note">{html.escape(block.text)}</p>')
        elif isinstance(block, Table):
            out.append(_html_table(block))
        elif isinstance(block, Images):
            out.append('<div class="figs">' + ''.join(map(_html_image, block.images)) + '</div>')
    return '\n'.join(out) + '\n</body></html>\n'


def _html_image(image: Image) -> str:
    caption = html.escape(image.caption)
    return (f'<figure{" class=wide" if image.wide else ""}><img alt="{caption}" src="data:image/png;base64,'
            f'{base64.b64encode(image.png).decode()}"><figcaption>{caption}</figcaption></figure>')


def _html_table(table: Table) -> str:
    frame, columns = table.frame, table.frame.columns
    if isinstance(columns, pd.MultiIndex):  # a spanning header row per group (a measure), then the sub-columns
        groups = [(top, sum(1 for c in columns if c[0] == top)) for top in dict.fromkeys(c[0] for c in columns)]
        head = ('<tr>' + ''.join(f'<th colspan="{n}">{html.escape(str(top))}</th>' for top, n in groups) + '</tr>'
                + '<tr>' + ''.join(f'<th>{html.escape(str(c[1]))}</th>' for c in columns) + '</tr>')
    else:
        head = '<tr>' + ''.join(f'<th>{html.escape(str(c))}</th>' for c in columns) + '</tr>'
    bold = table.bold if table.bold is not None else np.zeros(frame.shape, dtype=bool)
    rows = ''.join('<tr>' + ''.join(_html_cell(str(v), b) for v, b in zip(values, marks)) + '</tr>'
                   for values, marks in zip(frame.itertuples(index=False), bold))
    return f'<table><thead>{head}</thead><tbody>{rows}</tbody></table>'


def _html_cell(text: str, bold: bool) -> str:
    numeric = re.fullmatch(r'[-+]?\d[\d,]*(\.\d+)?(e[-+]\d+)?( ± \d+(\.\d+)?)?( \*)?|n/a', text)  # not versions
    shown = f'<b>{html.escape(text)}</b>' if bold else html.escape(text)
    return f'<td class="num">{shown}</td>' if numeric else f'<td>{shown}</td>'


# --- the report ---------------------------------------------------------------------------------------------------

@dataclass
class Report:
    """Everything ``results/`` says about one experiment: built from the per-query values of every model on every
    setting (``name, [seed,] dataset_id, kind, query_lang, doc_lang, qid, measure, value``).

    Args:
        datasets: each experiment data set -> the setting ids evaluated for it.
        measures: the experiment's measures (any order: the report leads with :data:`HEADLINE`).
        correction: a statsmodels multiple-testing method, or ``'none'``.
        models: (name, recipe description) in the experiment file's order.
        elapsed: seconds the run took, if known.
        comparisons: (model, against) pairs to set head to head besides the baseline: a difference heatmap each,
            with its own per-pair tests.
    """
    perquery: pd.DataFrame
    datasets: Mapping[str, Sequence[str]]
    measures: Sequence
    baseline: str | None = None
    correction: str = 'holm'
    title: str = 'experiment'
    models: Sequence[tuple[str, str]] = ()
    elapsed: float | None = None
    comparisons: Sequence[tuple[str, str]] = ()
    _tests: dict = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_spec(cls, spec: ExperimentSpec, perquery: pd.DataFrame, datasets: Mapping[str, Sequence[str]],
                  elapsed: float | None = None) -> Report:
        return cls(perquery, datasets, spec.measures, spec.baseline, spec.correction, title=spec.name,
                   models=[(m.name, describe_model(m)) for m in spec.models.values()], elapsed=elapsed,
                   comparisons=spec.comparisons)

    def __post_init__(self):
        names = list(dict.fromkeys(self.perquery['name']))
        order = [n for n, _ in self.models if n in names] + [n for n in names if n not in dict(self.models)]
        if self.baseline in order:
            order = [self.baseline] + [n for n in order if n != self.baseline]
        self.names = order
        measures = [str(m) for m in self.measures]
        if not measures:
            raise ValueError('a report needs at least one measure, e.g. nDCG@10')
        headline = HEADLINE if HEADLINE in measures else measures[0]
        self.measure_order = [headline] + [m for m in measures if m != headline and not mul_only(m)] + \
                             [m for m in measures if m != headline and mul_only(m)]
        self.headline = headline

    @property
    def compared(self) -> bool:
        return bool(self.baseline) and len(self.names) > 1

    def of(self, dataset: str) -> pd.DataFrame:
        return self.perquery[self.perquery['dataset_id'].isin(self.datasets[dataset])]

    def seeds(self, name: str) -> list:
        if 'seed' not in self.perquery.columns:
            return []
        return sorted(self.perquery.loc[self.perquery['name'] == name, 'seed'].dropna().unique().tolist())

    # --- tables ---

    def summary(self, dataset: str) -> pd.DataFrame:
        """Long Mo / Cr / Mul table (``name, measure, kind, mean, std, seeds``); Mul-only measures only for Mul."""
        table = seed_summary(self.of(dataset))
        table = table[table['measure'].isin(self.measure_order) & (table['kind'].eq('Mul') | ~table['measure'].map(
            mul_only))]
        return self._sorted(table, ['name', 'measure', 'kind'])

    def _sorted(self, frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
        """Rows in the report's order: baseline then file order, headline measure first, Mo, Cr, Mul."""
        rank = {'name': self.names, 'measure': self.measure_order, 'kind': KINDS}
        return frame.sort_values(by, key=lambda c: c.map({v: i for i, v in enumerate(rank[c.name])})) \
            .reset_index(drop=True)

    def pooled_tests(self, dataset: str) -> pd.DataFrame:
        """:func:`paired_tests` per measure on one data set (each measure a family); Mul-only measures on Mul."""
        key = ('pooled', dataset)
        if key not in self._tests:
            frames = []
            for measure in self.measure_order:
                frame = self.of(dataset)
                if mul_only(measure):  # tested (and corrected) in Mul alone: in Mo and Cr it is 0 by construction
                    frame = frame[frame['kind'] == 'Mul']
                    if frame.empty:  # a data set without Mul settings (one Cr pair, say)
                        continue
                tests = paired_tests(frame, self.baseline, measure, correction=self.correction)
                frames.append(tests.assign(dataset=dataset, measure=measure))
            columns = ['dataset', 'measure', 'kind', 'name', 'baseline', 'pairs', 'mean', 'baseline_mean', 'delta', 'p',
                       'p_corrected', 'significant']
            self._tests[key] = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(
                columns=columns)
        return self._tests[key]

    def pair_tests(self, dataset: str, measure: str, comparison: tuple[str, str] | None = None) -> pd.DataFrame:
        """:func:`pair_tests` of ``measure`` on one data set, every model against the baseline or one
        ``(model, against)`` comparison: each model's settings corrected together."""
        key = ('pairs', dataset, measure, comparison)
        if key not in self._tests:
            frame = self.of(dataset)
            if mul_only(measure):
                frame = frame[frame['kind'] == 'Mul']
            frame = frame[frame['measure'] == measure]
            if comparison is not None:
                frame = frame[frame['name'].isin(comparison)]
            against = self.baseline if comparison is None else comparison[1]
            # a Mul-only measure on a data set without Mul settings (one Cr pair, say) has nothing to test
            self._tests[key] = pd.DataFrame() if frame.empty else \
                pair_tests(frame, against, measure, correction=self.correction).assign(dataset=dataset,
                                                                                        measure=measure)
        return self._tests[key]

    def _pair_test_families(self) -> list[tuple[str, str, tuple[str, str] | None]]:
        """(dataset, measure, comparison) of every per-pair test family the report draws or writes."""
        against = [None] if self.compared else []
        return [(d, m, c) for d in self.datasets for m in self.measure_order for c in [*against, *self.comparisons]]

    def write_tables(self, results: Path) -> None:
        """``settings``, ``summary``, and with a baseline ``significance`` and ``pair_significance``: CSV for
        programs (one column per value), Markdown for people (``summary.md`` and ``significance.md``)."""
        keys = ['name', 'dataset_id', 'kind', 'query_lang', 'doc_lang', 'measure']
        per_setting = self.perquery.groupby(keys, sort=False)['value'].mean().unstack('measure').reset_index()
        write_atomically(results / 'settings.csv', lambda tmp: per_setting.to_csv(tmp, index=False))
        write_atomically(results / 'settings.md',
                         lambda tmp: tmp.write_text(per_setting.round(4).to_markdown(index=False)))
        write_atomically(results / 'summary.csv', lambda tmp: self._summary_csv().to_csv(tmp))
        write_atomically(results / 'summary.md', lambda tmp: tmp.write_text(_markdown(self._summary_blocks(level=2))))
        if self.compared:
            tests = pd.concat([self.pooled_tests(d) for d in self.datasets], ignore_index=True)
            write_atomically(results / 'significance.csv', lambda tmp: tests.to_csv(tmp, index=False))
            write_atomically(results / 'significance.md',
                             lambda tmp: tmp.write_text(_markdown(self._significance_blocks(level=2))))
        if self._pair_test_families():
            pairs = pd.concat([self.pair_tests(*family) for family in self._pair_test_families()], ignore_index=True)
            write_atomically(results / 'pair_significance.csv', lambda tmp: pairs.to_csv(tmp, index=False))

    def _summary_csv(self) -> pd.DataFrame:
        """Index (dataset, name); columns ``{measure} {kind}`` (mean over seeds), ``{measure} {kind} std`` and
        ``seeds``."""
        frames = []
        for dataset in self.datasets:
            table = self.summary(dataset)
            column = table['measure'] + ' ' + table['kind']
            wide = pd.concat([table.assign(column=column).pivot(index='name', columns='column', values='mean'),
                              table.assign(column=column + ' std').pivot(index='name', columns='column',
                                                                          values='std')], axis=1)
            wide = wide[[c for pair in zip(column.unique(), column.unique() + ' std') for c in pair]]
            wide['seeds'] = table.groupby('name')['seeds'].max()
            frames.append(wide.reindex([n for n in self.names if n in wide.index]).assign(dataset=dataset)
                          .reset_index().set_index(['dataset', 'name']))
        return pd.concat(frames)

    def summary_markdown(self, dataset: str) -> str:
        """The Mo / Cr / Mul table of ``dataset`` as report.md shows it, with its note (for scripts that report a
        subset of the settings, e.g. the languages seen in training)."""
        return _markdown([self._summary_table(dataset), Text(self._summary_note())])

    def _summary_table(self, dataset: str) -> Table:
        """Models as rows, (measure, kind) as columns: mean ± std, * where the pooled test is significant, the best
        of each column in bold."""
        table = self.summary(dataset)
        significant = set()
        if self.compared:
            tests = self.pooled_tests(dataset)
            significant = set(tests.loc[tests['significant'], ['name', 'measure', 'kind']].itertuples(index=False,
                                                                                                     name=None))
        table['cell'] = [
            f'{r.mean:.{_decimals(r.measure)}f}' + (f' ± {r.std:.{_decimals(r.measure)}f}' if r.seeds > 1 else '')
            + (' *' if (r.name, r.measure, r.kind) in significant else '') for r in table.itertuples()]
        table['column'] = list(zip(table['measure'].map(_label), table['kind']))
        columns = table.drop_duplicates('column')
        names = [n for n in self.names if n in set(table['name'])]
        cells, means = (table.pivot(index='name', columns='column', values=v).reindex(index=names,
                                                                                      columns=columns['column'])
                        for v in ('cell', 'mean'))
        best = np.column_stack([means[c].eq(means[c].min() if _lower_is_better(m) else means[c].max())
                                for c, m in zip(columns['column'], columns['measure'])])
        seeds = table.groupby('name')['seeds'].max().reindex(names).to_numpy()
        frame = pd.concat([pd.DataFrame({('', 'model'): names, ('', 'seeds'): seeds}), cells.reset_index(drop=True)],
                          axis=1)
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
        return Table(frame, np.column_stack([np.zeros((len(names), 2), bool), best]) if len(names) > 1 else None)

    def _summary_note(self) -> str:
        seeded = any(len(self.seeds(name)) > 1 for name in self.names)
        note = ('Macro averages over the settings of each kind (Mo: same language, Cr: cross-language pairs, Mul: '
                'documents of all languages pooled)' + ('; mean ± standard deviation over training seeds (no ± with '
                                                         'one seed)' if seeded else '') +
                '. Bold: best in its column (rank distance: lowest, i.e. least language bias).')
        if self.compared:
            note += (f' *: differs from {self.baseline} (paired t-test over all queries of the kind, seeds averaged '
                     f'per query, {self._correction_words()} over the models and kinds of each measure, p < {ALPHA}).')
        return note

    def _correction_words(self) -> str:
        return 'uncorrected' if self.correction == 'none' else f'{self.correction}-corrected'

    def _summary_blocks(self, level: int) -> list:
        blocks = []
        for dataset in self.datasets:
            blocks += [Heading(_title(dataset), level), self._summary_table(dataset)]
        return blocks + [Text(self._summary_note())]

    def _significance_blocks(self, level: int) -> list:
        blocks = []
        for dataset in self.datasets:
            tests = self._sorted(self.pooled_tests(dataset), ['measure', 'kind', 'name'])
            frame = pd.DataFrame({
                'measure': tests['measure'].map(_label), 'setting': tests['kind'], 'model': tests['name'],
                'queries': tests['pairs'],
                'model mean': [f'{v:.{_decimals(m)}f}' for v, m in zip(tests['mean'], tests['measure'])],
                f'{self.baseline} mean': [f'{v:.{_decimals(m)}f}' for v, m in
                                          zip(tests['baseline_mean'], tests['measure'])],
                'Δ': [f'{v:+.{_decimals(m)}f}' for v, m in zip(tests['delta'], tests['measure'])],
                'p': tests['p'].map(_p), f'p ({self._correction_words()})': tests['p_corrected'].map(_p),
                'significant': tests['significant'].map({True: 'yes', False: 'no'})})
            blocks += [Heading(_title(dataset), level), Table(frame.reset_index(drop=True))]
        return blocks + [Text(f'Paired t-tests against {self.baseline} over all (setting, query) pairs of a kind, '
                              f'seeds averaged per query; {self._correction_words()} over the models and kinds of '
                              f'each measure; significant: p < {ALPHA}.')]

    # --- plots ---

    def grid(self, dataset: str, name: str, measure: str) -> pd.DataFrame:
        """Query language x document language means of one model (seeds averaged), Mul as the last column."""
        frame = self.of(dataset)
        frame = frame[(frame['name'] == name) & (frame['measure'] == measure)]
        grid = frame.groupby(['query_lang', 'doc_lang'], sort=False)['value'].mean().unstack('doc_lang')
        langs = list(dict.fromkeys(frame['query_lang']))
        return grid.reindex(index=langs, columns=[c for c in langs + [ALL_LANGUAGES] if c in grid.columns])

    def write_plots(self, results: Path) -> list:
        """PNGs in ``results/``; returns the report blocks that show them."""
        blocks = []
        for dataset in self.datasets:
            blocks += self._heatmaps(dataset, results)
            blocks += self._rank_distance(dataset, results)
        return blocks

    def _heatmaps(self, dataset: str, results: Path) -> list:
        """Per model, its language-pair heatmap and (next to it) its difference from the baseline; then each
        comparison's difference map."""
        measure = self.headline
        grids = {name: self.grid(dataset, name, measure) for name in self.names}
        grids = {name: grid for name, grid in grids.items() if grid.size > 1}
        if not grids:
            return []
        values = np.concatenate([grid.to_numpy(dtype=float).ravel() for grid in grids.values()])
        low = np.floor(np.nanmin(values) * 20) / 20  # one colour scale for all models, in steps of 0.05
        high = max(np.ceil(np.nanmax(values) * 20) / 20, low + 0.05)
        compared = self.compared and self.baseline in grids
        against_baseline = [(name, self.baseline) for name in grids if compared and name != self.baseline]
        head_to_head = [pair for pair in self.comparisons if set(pair) <= set(grids)]
        # every difference map, on one diverging scale
        deltas = {(model, against): grids[model] - grids[against] for model, against in against_baseline + head_to_head}
        limit = max(0.01, max((np.nanmax(np.abs(d.to_numpy(dtype=float))) for d in deltas.values()), default=0))
        marked = (f'blue: better, red: worse; boxed cells with *: significant difference (paired t-test over the '
                  f'queries of the pair, seeds averaged per query, {self._correction_words()} over all pairs of the '
                  f'model, p < {ALPHA})')
        blocks = [Heading(f'{_title(dataset)}: {_label(measure)} per language pair', 3), Text(
            f'Left: {_label(measure)} of each model (rows: query language, columns: document language; the last '
            f'column, Mul, searches the documents of all languages).'
            + (f' Right: the model minus {self.baseline} ({marked}).' if compared else ''))]
        for name, grid in grids.items():
            images = [self._save(results, _stem('heatmap', name, dataset), _heatmap(
                grid, f'{name}: {_label(measure)}, {_short(dataset)}', _label(measure), 'viridis', low, high, '.2f'),
                f'{name}: {_label(measure)} per query language (rows) and document language (columns)')]
            if (name, self.baseline) in against_baseline:
                images.append(self._difference(dataset, results, (name, self.baseline), deltas[name, self.baseline],
                                               limit))
            blocks.append(Images(images))
        if head_to_head:
            blocks += [Heading(f'{_title(dataset)}: head to head', 3),
                       Text(f'Each map: the first model minus the second, {_label(measure)} per language pair '
                            f'({marked}).'),
                       Images([self._difference(dataset, results, pair, deltas[pair], limit, head_to_head=True)
                               for pair in head_to_head])]
        return blocks

    def _difference(self, dataset: str, results: Path, pair: tuple[str, str], delta: pd.DataFrame, limit: float,
                    head_to_head: bool = False) -> Image:
        """``pair``'s difference ``delta`` (model − against) on a diverging scale of ±``limit``, the language pairs
        whose corrected test (against the baseline, or the pair's own family when ``head_to_head``) is significant
        boxed, the counts in the caption."""
        measure, (name, against) = self.headline, pair
        comparison = pair if head_to_head else None
        better_sign = -1 if _lower_is_better(measure) else 1  # blue and "better" mean the same for every measure
        tests = self.pair_tests(dataset, measure, comparison)
        tests = tests[tests['name'] == name]
        marks = tests[tests['significant']].set_index(['query_lang', 'doc_lang']).index
        better, worse = ((tests['significant'] & (better_sign * tests['delta'] > 0)).sum(),
                         (tests['significant'] & (better_sign * tests['delta'] < 0)).sum())
        return self._save(results, _stem('difference', name, against, dataset), _heatmap(
            delta, f'{name} − {against}: {_label(measure)}, {_short(dataset)}',
            f'Δ {_label(measure)} ({name} − {against})', 'RdBu' if better_sign > 0 else 'RdBu_r', -limit, limit,
            '+.2f', marks),
            f'{name} − {against}: significantly better in {better} and worse in {worse} of {len(tests)} settings')

    @property
    def bias_measure(self) -> str | None:
        """The experiment's language-bias measure (the first Mul-only one, rank distance), if it has one."""
        return next((m for m in self.measure_order if mul_only(m)), None)

    def per_query_language(self, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """:attr:`bias_measure` in Mul per query language: the mean and std over seeds of each seed's mean
        (query languages × models, in the file's order); None without that measure or its values."""
        measure = self.bias_measure
        frame = self.of(dataset)
        frame = frame[(frame['measure'] == measure) & (frame['kind'] == 'Mul')]
        if measure is None or frame.empty:
            return None
        names = [n for n in self.names if n in set(frame['name'])]
        seeded = frame if 'seed' in frame.columns else frame.assign(seed=None)
        per_seed = seeded.groupby(['name', 'seed', 'query_lang'], sort=False, dropna=False)['value'].mean()
        stats = per_seed.groupby(['query_lang', 'name'], sort=False).agg(['mean', 'std'])
        langs = list(dict.fromkeys(frame['query_lang']))
        return tuple(stats[stat].unstack('name').reindex(index=langs, columns=names) for stat in ('mean', 'std'))

    def _rank_distance(self, dataset: str, results: Path) -> list:
        stats = self.per_query_language(dataset)
        if stats is None:
            return []
        measure, (means, spread) = self.bias_measure, stats
        figure = _bars(means, spread.fillna(0.0), f'{_label(measure)} per query language, {_short(dataset)} (Mul)',
                       f'mean {_label(measure)} (lower: less language bias)')
        return [Heading(f'{_title(dataset)}: {_label(measure)} per query language (Mul)', 3),
                Images([self._save(results, _stem('rank_distance', dataset), figure,
                                   f'Mean {_label(measure)} per query language in Mul (error bars: std over seeds)',
                                   wide=True)])]

    @staticmethod
    def _save(results: Path, stem: str, figure, caption: str, wide: bool = False) -> Image:
        import io

        import matplotlib.pyplot as plt
        buffer = io.BytesIO()
        figure.savefig(buffer, format='png', dpi=150)
        plt.close(figure)
        png = buffer.getvalue()
        write_atomically(results / f'{stem}.png', lambda tmp: tmp.write_bytes(png))
        return Image(f'{stem}.png', caption, png, wide)

    # --- the whole ---

    def write(self, results: Path) -> None:
        """Tables, plots, ``report.md`` and the self-contained ``report.html``."""
        results.mkdir(parents=True, exist_ok=True)
        self.write_tables(results)
        plots = self.write_plots(results)
        blocks = [Heading('Models and budget'), Table(self._models_table()), Heading('Environment'),
                  Table(pd.DataFrame(environment(self.elapsed), columns=['', 'version / value'])),
                  Heading('Mo / Cr / Mul summary'), *self._summary_blocks(level=3)]
        if plots:
            blocks += [Heading('Per language pair and query language'), *plots]
        if self.compared:
            blocks += [Heading(f'Significance against {self.baseline}'), *self._significance_blocks(level=3)]
        title = f'Experiment {self.title}'
        write_atomically(results / 'report.md', lambda tmp: tmp.write_text(_markdown([Heading(title, 1), *blocks]),
                                                                 encoding='utf-8'))
        write_atomically(results / 'report.html', lambda tmp: tmp.write_text(_html(title, blocks), encoding='utf-8'))

    def _models_table(self) -> pd.DataFrame:
        described = dict(self.models)
        rows = []
        for name in self.names:
            seeds = self.seeds(name)
            rows.append({'model': name + (' (baseline)' if name == self.baseline else ''),
                         'seeds': ', '.join(str(_plain(s)) for s in seeds) if seeds else '—',
                         'recipe': described.get(name, '')})
        return pd.DataFrame(rows)


def _plain(seed):
    """Seeds read from CSV come back as floats (1.0) when a column mixes them with missing values."""
    return int(seed) if isinstance(seed, float) and seed.is_integer() else seed


def _p(p: float) -> str:
    return 'n/a' if p != p else f'{p:.2g}' if p >= 1e-4 else f'{p:.1e}'


# --- figures ------------------------------------------------------------------------------------------------------

def _heatmap(grid: pd.DataFrame, title: str, colorbar: str, cmap: str, vmin: float, vmax: float, fmt: str,
             marks: pd.Index | None = None):
    """A readable heatmap up to 11 x 12 cells: values printed in two decimals in a contrasting colour, the Mul column
    set apart, ``marks`` (query_lang, doc_lang) boxed and starred."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    rows, columns = grid.shape
    figure, axes = plt.subplots(figsize=(1.7 + 0.44 * columns, 1.3 + 0.36 * rows), layout='constrained')
    colormap = matplotlib.colormaps[cmap]
    norm = matplotlib.colors.Normalize(vmin=vmin, vmax=vmax)
    image = axes.imshow(grid.to_numpy(dtype=float), cmap=colormap, norm=norm, aspect='auto')
    labels = ['Mul' if c == ALL_LANGUAGES else c for c in grid.columns]
    axes.set_xticks(range(columns), labels)
    axes.set_yticks(range(rows), grid.index)
    axes.set_xlabel('document language')
    axes.set_ylabel('query language')
    axes.xaxis.set_ticks_position('top')
    axes.xaxis.set_label_position('top')
    fontsize = float(np.clip(90 / max(rows, columns), 7, 8))  # above 8 points a bold '-0.03*' overflows its box
    marked = set(marks) if marks is not None else set()
    for i, query in enumerate(grid.index):
        for j, doc in enumerate(grid.columns):
            value = grid.iat[i, j]
            if value != value:
                continue
            red, green, blue, _ = colormap(norm(value))
            star = (query, doc) in marked
            text = format(round(value, 2) + 0.0, fmt) + ('*' if star else '')  # + 0.0 turns -0.00 into 0.00
            axes.text(j, i, text, ha='center', va='center', fontsize=fontsize,
                      fontweight='bold' if star else 'normal',
                      color='black' if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else 'white')
            if star:
                axes.add_patch(Rectangle((j - 0.46, i - 0.44), 0.92, 0.88, fill=False, edgecolor='black',
                                         linewidth=1.6))
    if ALL_LANGUAGES in grid.columns and columns > 1:
        axes.axvline(columns - 1.5, color='white', linewidth=3)
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, shrink=0.9, pad=0.02).set_label(colorbar)
    return figure


def _bars(means: pd.DataFrame, spread: pd.DataFrame, title: str, ylabel: str):
    """Grouped bars: one group per query language, one bar per model (in the given column order)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    groups, bars = means.shape
    figure, axes = plt.subplots(figsize=(min(13.0, 3 + 0.22 * groups * bars + 0.3 * groups), 4.2),
                                layout='constrained')
    width = 0.8 / bars
    positions = np.arange(groups)
    for k, name in enumerate(means.columns):
        axes.bar(positions - 0.4 + width * (k + 0.5), means[name], width, yerr=spread[name], capsize=2, label=name,
                 color=f'C{k}', error_kw={'linewidth': 0.8})
    axes.set_xticks(positions, means.index)
    axes.set_xlabel('query language')
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=11)
    axes.grid(axis='y', alpha=0.3)
    axes.legend(ncols=min(bars, 6), loc='upper center', bbox_to_anchor=(0.5, -0.14), frameon=False)
    return figure
