"""The light paths stay light: --help and validating an experiment file import no deep-learning stack."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
HEAVY = ('torch', 'transformers', 'sentence_transformers', 'faiss', 'pyterrier_dr')
REPORT = f"import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"


@pytest.mark.parametrize('code', [
    "import runpy, sys; sys.argv = ['pyterrier-hybrid', '--help']\n"
    "try:\n    runpy.run_module('pyterrier_hybrid', run_name='__main__')\nexcept SystemExit:\n    pass\n",
    "from pyterrier_hybrid.experiment.config import load_experiment\n"
    "load_experiment('examples/paper_table.yaml')\n",
    "import pyterrier_hybrid, pyterrier_hybrid.evaluation.fast\n",
], ids=['help', 'load_experiment', 'import'])
def test_light_paths_import_no_torch(code):
    done = subprocess.run([sys.executable, '-c', f'{code}\n{REPORT}'], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == '[]'
