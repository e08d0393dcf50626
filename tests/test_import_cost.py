"""The light paths stay light: --help and validating an experiment file import no deep-learning stack."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
HEAVY = ('torch', 'transformers', 'sentence_transformers', 'faiss', 'pyterrier_dr')
REPORT = f"import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"


#: paper_table.yaml's models, budget and data sets, with a Hub id for the base (no checkpoint or $VAR needed)
EXPERIMENT = """
name: light
models:
  mE5: {pretrained: intfloat/multilingual-e5-small}
  hybrid: {train: {base: mE5, data: lareqa/mlqa-r, strategy: hybrid, steps: 40, batch_size: 16, temperature: 0.01}}
datasets: [lareqa/xquad-r]
measures: [AP, nDCG@10, RankDistance@100]
baseline: mE5
"""


@pytest.mark.parametrize('code', [
    "import runpy, sys; sys.argv = ['pyterrier-hybrid', '--help']\n"
    "try:\n    runpy.run_module('pyterrier_hybrid', run_name='__main__')\nexcept SystemExit:\n    pass\n",
    "from pyterrier_hybrid.experiment.config import load_experiment\n"
    "load_experiment('light.yaml')\n",
    "import pyterrier_hybrid, pyterrier_hybrid.evaluation.fast\n",
], ids=['help', 'load_experiment', 'import'])
def test_light_paths_import_no_torch(code, tmp_path, lareqa_dir):
    (tmp_path / 'light.yaml').write_text(EXPERIMENT)
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}  # this checkout's package, whatever the working directory
    done = subprocess.run([sys.executable, '-c', f'{code}\n{REPORT}'], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == '[]'
