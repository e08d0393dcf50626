"""The ``pyterrier-hybrid`` command: translate, train, index (sharded), merge, retrieve, evaluate and run experiments.

User errors (a bad argument, unknown language, missing file, corrupt index) print one line and exit with 2;
anything else is a bug and keeps its traceback (exit 1).
"""
from __future__ import annotations

import argparse
import copy
import functools
import sys
from collections.abc import Sequence

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, OSError, ConnectionError)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every subcommand's help shows each option's default (also where the option has no help text), except None
    and False (the option is off)."""

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        return bool(action.option_strings) and all(action.default is not off
                                                   for off in (None, False, argparse.SUPPRESS))

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return super()._get_help_string(action) if self._shows_default(action) else action.help

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._shows_default(action):
            action = copy.copy(action)
            action.help = '(default: %(default)s)'
        return super()._format_action(action)


def _shard(value: str) -> tuple[int, int]:
    """``i/N`` -> (i, N)."""
    try:
        index, count = (int(part) for part in value.split('/'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected SHARD/NUM_SHARDS such as 0/4, not {value!r}') from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f'shard {index} is not in 0..{count - 1}')
    return index, count


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, not {value!r}')
    return int(value)


def _train(args: argparse.Namespace) -> None:
    from .retrieval.encoder import check_checkpoint
    from .training.recipe import recipe_from_arguments
    recipe = recipe_from_arguments(args)
    check_checkpoint(args.model)  # a corrupt file is named here, not deep in the trainer's loader
    from .training.trainer import train
    print(train(args.model, args.data, args.output, recipe, overwrite=args.overwrite, save_steps=args.save_steps))


_BACKEND_HELP = ('torch, onnx or openvino (CPU; exported once and cached; needs pip install '
                 '"pyterrier-hybrid[onnx]" or [openvino])')


def _index(args: argparse.Namespace) -> None:
    _dataset(args.dataset)  # an unknown id fails here, before torch is imported and the model loads
    import pyterrier as pt

    from .retrieval.distributed import build_index, local_device, world
    from .retrieval.encoder import HybridEncoder
    from .retrieval.index import DenseIndex, shard_corpus
    rank, size = world()
    if args.shard and size > 1:
        raise ValueError('--shard splits the corpus by hand; under torchrun the ranks split it: use one or the other')
    index = DenseIndex(args.index)
    if index.built() and not args.overwrite:
        raise FileExistsError(f'{index.index_path} already exists; pass --overwrite to replace it')
    encoder = HybridEncoder.from_pretrained(args.model, batch_size=args.batch_size, quantize=args.quantize,
                                            text_field=args.text_field, verbose=rank == 0, backend=args.backend,
                                            device=local_device())
    dataset = pt.get_dataset(f'irds:{args.dataset}')
    shard = args.shard or (0, 1)
    build_index(index, encoder, lambda: shard_corpus(dataset.get_corpus_iter(verbose=False), *shard),
                encoder.index_metadata(), mode='overwrite' if args.overwrite else 'create', distributed=True)
    if rank == 0:
        print(f'{index.index_path}: {len(index)} documents')


def _merge(args: argparse.Namespace) -> None:
    from .retrieval.index import DenseIndex
    merged = DenseIndex.merge(args.shards, args.output, mode='overwrite' if args.overwrite else 'create')
    print(f'{merged.index_path}: {len(merged)} documents')


def _retrieve(args: argparse.Namespace) -> None:
    dataset = _dataset(args.dataset)  # before torch is imported
    import pyterrier as pt

    from .atomic import write_atomically
    from .retrieval.encoder import HybridEncoder
    from .retrieval.index import DenseIndex
    docnos = [d.doc_id for d in dataset.docs_iter()] if args.restrict else None
    # a missing or corrupt index fails here, before the model loads
    index = DenseIndex(args.index, allow_other_encoder=args.allow_other_encoder)
    retriever = index.retriever(args.num_results, docnos=docnos, drop_query_vec=True)
    encoder = HybridEncoder.from_pretrained(args.model, batch_size=args.batch_size, verbose=True,
                                            backend=args.backend)
    pipeline = encoder >> retriever  # refuses another model than the one that built the index
    run = pipeline(pt.get_dataset(f'irds:{args.dataset}').get_topics(args.query_field))
    write_atomically(args.output, lambda tmp: pt.io.write_results(run, str(tmp), run_name=args.run_name))
    print(f'{args.output}: {run["qid"].nunique()} queries, {len(run)} results')


def _dataset(dataset_id: str):
    """``ir_datasets.load``, saying that an unknown id is one (ir_datasets' KeyError holds only the id)."""
    import ir_datasets
    try:
        return ir_datasets.load(dataset_id)
    except KeyError as error:
        if error.args != (dataset_id,):
            raise  # a registered pattern's own explanation, e.g. LAReQA's unknown language
        raise KeyError(f'unknown data set id {dataset_id!r}: ir_datasets has no such id (ids: '
                       'https://ir-datasets.com; LAReQA: lareqa/{xquad-r,mlqa-r}[/QUERY_LANG[/DOC_LANG]])') from None


def _check_run(path: str, run, judged: set[str], dataset_id: str) -> None:
    """Fail on a run with no query in the qrels (another data set's run scores 0, silently); warn on a partial one."""
    qids = set(run['qid'])
    evaluated = len(qids & judged)
    if not evaluated:
        raise ValueError(f'{path}: none of its {len(qids)} queries has qrels in {dataset_id} ({len(judged)} judged '
                         'queries); is it a run of another data set?')
    if evaluated < len(qids):
        print(f'pyterrier-hybrid evaluate: warning: {path}: {len(qids) - evaluated} of its {len(qids)} queries have '
              f'no qrels in {dataset_id} and are not evaluated', file=sys.stderr)


def _read_run(path: str):
    """``pt.io.read_results``, naming the file and line of what is not a TREC run line (pandas says only 'Integer
    column has NA values in column 3')."""
    import pyterrier as pt
    from pyterrier.io import autoopen
    with autoopen(path, 'rt') as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if fields and (len(fields) != 6 or not fields[3].lstrip('-').isdigit()):
                raise ValueError(f'{path}:{number}: not a TREC run line (QID Q0 DOCNO RANK SCORE RUN_NAME): '
                                 f'{line.strip()[:80]!r}')
    return pt.io.read_results(path)


def _evaluate(args: argparse.Namespace) -> None:
    import pyterrier as pt

    from .evaluation.measures import parse_measure
    _dataset(args.dataset)
    measures = [parse_measure(m) for m in args.measures]
    dataset = pt.get_dataset(f'irds:{args.dataset}')
    runs = [_read_run(path) for path in args.runs]
    judged = set(dataset.get_qrels()['qid'])
    for path, run in zip(args.runs, runs):
        _check_run(path, run, judged, args.dataset)
    table = pt.Experiment(runs, dataset.get_topics(args.query_field), dataset.get_qrels(), measures,
                          names=[str(p) for p in args.runs], baseline=0 if len(runs) > 1 else None,
                          correction=args.correction if len(runs) > 1 else None)
    print(table.round(4).to_markdown(index=False))


def _translate(args: argparse.Namespace) -> None:
    from .data.translation import LexiconTranslator, Seq2SeqTranslator, translate_train
    if bool(args.model) == bool(args.lexicon):
        raise ValueError('give either --model (machine translation) or --lexicon (word-by-word), not both')
    if args.model:
        translator = Seq2SeqTranslator(args.model, batch_size=args.batch_size, max_length=args.max_length)
    else:
        from .data.code_switching import load_lexicon
        translator = LexiconTranslator([load_lexicon(path) for path in args.lexicon])
    output = args.output
    if args.shard:
        output = f'{output.removesuffix(".jsonl")}.shard-{args.shard[0]}-of-{args.shard[1]}.jsonl'
    print(translate_train(args.source, output, translator, args.langs, source_lang=args.source_lang,
                          cache=args.cache, shard=args.shard, limit=args.limit))


def _merge_translations(args: argparse.Namespace) -> None:
    from .data.translation import merge_translations
    print(merge_translations(args.shards, args.output))


def _run(args: argparse.Namespace) -> None:
    from .experiment.runner import run_experiment
    print(run_experiment(args.experiment))


def parser() -> argparse.ArgumentParser:
    from .training.recipe import add_recipe_arguments
    root = argparse.ArgumentParser(prog='pyterrier-hybrid', description='Zero-shot cross-lingual dense retrieval: '
                                   'train encoders, build (sharded) dense indexes.')
    commands = root.add_subparsers(dest='command', required=True,
                                   parser_class=functools.partial(argparse.ArgumentParser, formatter_class=_Help))

    train = commands.add_parser('train', help='fine-tune an encoder with hybrid batches or a baseline',
                                description='Fine-tune MODEL on DATA and save the checkpoint to OUTPUT.')
    train.add_argument('model', help='Hub id or local path of the encoder to start from')
    train.add_argument('data', help='lareqa/mlqa-r, lareqa/xquad-r, or a JSONL file of parallel QA items')
    train.add_argument('output', help='directory for the trained checkpoint')
    add_recipe_arguments(train)
    train.add_argument('--save-steps', type=int, default=500, help='checkpoint every N steps (resume point)')
    train.add_argument('--overwrite', action='store_true',
                       help='replace OUTPUT if it holds anything else than this recipe trained on this data')
    train.set_defaults(run=_train)

    index = commands.add_parser('index', help='encode a corpus into a dense index (optionally one shard of it; '
                                'under torchrun split over its processes)',
                                description='Encode the corpus of an ir_datasets id into a DenseIndex.')
    index.add_argument('model', help='Hub id or local path of the encoder (a trained checkpoint)')
    index.add_argument('dataset', help='ir_datasets id, e.g. lareqa/xquad-r or miracl/sw')
    index.add_argument('index', help='index directory')
    index.add_argument('--shard', type=_shard, help='encode only shard I of N (round robin), e.g. 0/4')
    index.add_argument('--text-field', default='text', help='document field to encode')
    index.add_argument('--batch-size', type=int, default=32)
    index.add_argument('--quantize', action='store_true', help='int8 CPU inference')
    index.add_argument('--backend', default='torch', help=_BACKEND_HELP)
    index.add_argument('--overwrite', action='store_true')
    index.set_defaults(run=_index)

    merge = commands.add_parser('merge', help='merge shard indexes 0..N-1 into one',
                                description='Merge the indexes of --shard 0/N .. N-1/N, in that order.')
    merge.add_argument('shards', nargs='+', help='shard index directories, in shard order 0..N-1')
    merge.add_argument('--output', required=True)
    merge.add_argument('--overwrite', action='store_true')
    merge.set_defaults(run=_merge)

    retrieve = commands.add_parser('retrieve', help='retrieve for the queries of a data set into a TREC run',
                                   description='Encode the queries of DATASET and search INDEX.')
    retrieve.add_argument('model', help='Hub id or local path of the encoder that built INDEX')
    retrieve.add_argument('index', help='index directory')
    retrieve.add_argument('dataset', help='ir_datasets id whose queries to run')
    retrieve.add_argument('--output', required=True, help='TREC run file (.res or .res.gz)')
    retrieve.add_argument('--num-results', type=_positive_int, default=1000)
    retrieve.add_argument('--restrict', action='store_true',
                          help="search only the data set's own documents (e.g. one language of a pooled index)")
    retrieve.add_argument('--allow-other-encoder', action='store_true',
                          help='search with another model than the one that built the index (same dimension)')
    retrieve.add_argument('--query-field', default='text')
    retrieve.add_argument('--batch-size', type=int, default=32)
    retrieve.add_argument('--run-name', default='pyterrier-hybrid')
    retrieve.add_argument('--backend', default='torch', help=_BACKEND_HELP)
    retrieve.set_defaults(run=_retrieve)

    evaluate = commands.add_parser('evaluate', help='evaluate TREC runs on a data set (significance vs the first)',
                                   description='Evaluate RUNS against the qrels of DATASET with pt.Experiment.')
    evaluate.add_argument('dataset', help='ir_datasets id whose qrels to evaluate against, e.g. lareqa/xquad-r/de')
    evaluate.add_argument('runs', nargs='+', help='TREC run files (.res or .res.gz); the first is the baseline')
    evaluate.add_argument('--measures', nargs='+', default=['AP', 'nDCG@10', 'R@100', 'RankDistance'],
                          help='ir_measures names, and RankDistance[@k]')
    evaluate.add_argument('--correction', default='holm', help='multiple-testing correction of the significance tests')
    evaluate.add_argument('--query-field', default='text', help='query field of the data set')
    evaluate.set_defaults(run=_evaluate)

    translate = commands.add_parser(
        'translate', help='machine-translate English QA data into a parallel training set',
        description='Translate the English QA pairs of SOURCE into --langs and write OUTPUT (JSONL, items aligned by '
                    'id) with OUTPUT.manifest.json; translations are cached, so a rerun resumes.')
    translate.add_argument('source', help='ir_datasets id (docpairs, or queries + qrels), a JSONL file of '
                                          'training items, or hf:<dataset name or path>')
    translate.add_argument('output', help='JSONL file to write')
    translate.add_argument('--langs', nargs='+', required=True, help='target languages (ISO 639-1: de es zh ...)')
    translate.add_argument('--model', help='seq2seq MT model: NLLB, M2M100 or Marian (opus-mt-{src}-{tgt} allowed)')
    translate.add_argument('--lexicon', nargs='+', help='MUSE lexicons: word-by-word substitution, an offline '
                                                        'stand-in for machine translation')
    translate.add_argument('--source-lang', default='en', help='language of the SOURCE items to translate')
    translate.add_argument('--batch-size', type=int, default=32, help='texts per model call')
    translate.add_argument('--max-length', type=int, default=256, help='tokens kept per text (longer: truncated)')
    translate.add_argument('--cache', help='SQLite translation cache (default OUTPUT.cache.sqlite)')
    translate.add_argument('--shard', type=_shard, help='translate only items I, I+N, ... into '
                                                        'OUTPUT.shard-I-of-N.jsonl; join with merge-translations')
    translate.add_argument('--limit', type=int, help='the first N source items only')
    translate.set_defaults(run=_translate)

    merge_translations = commands.add_parser(
        'merge-translations', help='join translate --shard outputs 0..N-1 into one training set',
        description='Join the outputs of translate --shard 0/N .. N-1/N into what one run would have written.')
    merge_translations.add_argument('shards', nargs='+', help='the shard outputs OUTPUT.shard-I-of-N.jsonl')
    merge_translations.add_argument('--output', required=True, help='JSONL file to write')
    merge_translations.set_defaults(run=_merge_translations)

    run = commands.add_parser('run', help='run an experiment file (train, encode, evaluate, compare, plot)',
                              description='Validate and run EXPERIMENT; a second run reuses everything on disk.')
    run.add_argument('experiment', help='YAML experiment file')
    run.set_defaults(run=_run)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import pyterrier_hybrid  # noqa: F401  (registers the data sets)
    try:
        args.run(args)
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f'pyterrier-hybrid {args.command}: error: {message}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
