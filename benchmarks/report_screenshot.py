"""Render an experiment report from real per-query results and photograph it in a headless browser.

Usage: python benchmarks/report_screenshot.py [--out DIR]

The per-query values are train_strategies.py's (XQuAD-R, 11 languages, 132 settings; mE5-small untrained and
fine-tuned with X-X-mono, X-Y and hybrid batches, three seeds each).
The report is written to DIR (default: a temporary folder) and Debian's chromium takes a 1400 x 4000 screenshot of
report.html, saved to benchmarks/results/report_screenshot.png (reduced to a 256-colour palette to stay small).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd

from pyterrier_hybrid.evaluation.measures import parse_measure
from pyterrier_hybrid.experiment.config import load_experiment
from pyterrier_hybrid.experiment.report import Report, describe_model

HERE = Path(__file__).resolve().parent
#: the study whose per-query values train_strategies.py wrote, and the models of it the report shows
EXPERIMENT = HERE.parent / 'examples' / 'strategy_study.yaml'
MODELS = ('mE5', 'xx-mono', 'xy', 'hybrid')


def perquery() -> pd.DataFrame:
    frame = pd.read_csv(HERE / 'results' / 'train_strategies.perquery.csv.gz', dtype={'qid': str, 'seed': 'Int64'})
    return frame[frame['name'].isin(MODELS)]


def screenshot(html: Path, png: Path) -> None:
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    if browser is None:
        raise SystemExit('chromium is not installed (apt-get install -y chromium)')
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                        '--disable-component-update', '--disable-sync', '--no-first-run', f'--user-data-dir={profile}',
                        f'--screenshot={png}', '--window-size=1400,4000', html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix='report-'))
    frame = perquery()
    spec = load_experiment(EXPERIMENT)
    started = time.perf_counter()
    report = Report(frame, {'lareqa/xquad-r': list(frame['dataset_id'].unique())},
                    [parse_measure(m) for m in ('nDCG@10', 'AP', 'RankDistance')], baseline='mE5',
                    title=spec.name, models=[(name, describe_model(spec.models[name])) for name in MODELS])
    report.write(out)
    print(f'report of {len(frame):,} per-query values written to {out} in {time.perf_counter() - started:.0f} s')
    target = HERE / 'results' / 'report_screenshot.png'
    screenshot(out / 'report.html', out / 'screenshot.png')
    from PIL import Image
    Image.open(out / 'screenshot.png').convert('RGB').quantize(256).save(target, optimize=True)
    print(f'{target}: {target.stat().st_size / 1e6:.2f} MB')


if __name__ == '__main__':
    main()
