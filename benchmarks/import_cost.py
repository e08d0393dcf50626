"""Start-up cost of the light paths, this tree against a reference commit: wall time and peak memory.

Usage: python benchmarks/import_cost.py [--before 31ddf6e] [--repeats 3]

Measures ``python -m pyterrier_hybrid --help``, ``import pyterrier_hybrid`` and validating
examples/paper_table.yaml (``load_experiment``), each in a fresh process (best wall time of ``--repeats``; peak
RSS of that process, from wait4), for this tree and for ``--before`` checked out as a temporary git worktree. Both
run with this interpreter, with PYTHONPATH and the working directory set to their tree, so each imports its own
package. A further run of each path reports which heavy modules (torch, transformers, sentence_transformers,
faiss, pyterrier_dr) it imported. Results go to benchmarks/results/import_cost.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ('torch', 'transformers', 'sentence_transformers', 'faiss', 'pyterrier_dr')
EXPERIMENT = ROOT / 'examples' / 'paper_table.yaml'
# path -> Python code; 'help' is timed as ``-m pyterrier_hybrid --help`` and run through runpy for its imports.
PATHS = {
    'pyterrier-hybrid --help': "import runpy, sys; sys.argv = ['pyterrier-hybrid', '--help']\n"
                               "try:\n    runpy.run_module('pyterrier_hybrid', run_name='__main__')\n"
                               "except SystemExit:\n    pass\n",
    'import pyterrier_hybrid': 'import pyterrier_hybrid\n',
    'load_experiment(paper_table.yaml)': f'from pyterrier_hybrid import load_experiment\n'
                                         f'load_experiment({str(EXPERIMENT)!r})\n',
}


def _command(path: str) -> list[str]:
    if path == 'pyterrier-hybrid --help':
        return [sys.executable, '-m', 'pyterrier_hybrid', '--help']
    return [sys.executable, '-c', PATHS[path]]


def _run(command: list[str], tree: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one fresh process; wait4 reaps it, so the RSS is its own."""
    env = {**os.environ, 'PYTHONPATH': str(tree)}
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=tree, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode:
            raise RuntimeError(f'{command} in {tree} failed:\n{err.read()[-2000:]}')
        return wall, usage.ru_maxrss / 1024, out.read()


def measure(tree: Path, repeats: int) -> dict[str, dict]:
    results = {}
    for path, code in PATHS.items():
        runs = [_run(_command(path), tree) for _ in range(repeats)]
        wall, rss, _ = min(runs)  # the fastest run, with its own peak RSS
        probe = f'{code}\nimport json, sys, pyterrier_hybrid\nprint(pyterrier_hybrid.__file__)\n' \
                f'print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n'
        *_, origin, heavy = _run([sys.executable, '-c', probe], tree)[2].strip().splitlines()
        if not origin.startswith(str(tree)):
            raise RuntimeError(f'{tree} imported pyterrier_hybrid from {origin}')
        results[path] = {'wall_s': round(wall, 2), 'peak_rss_mb': round(rss), 'heavy_modules': json.loads(heavy)}
        print(f'{tree.name:>20}  {path:<36} {wall:6.2f} s {rss:6.0f} MB  {heavy}', flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--before', default='31ddf6e', help='reference commit')
    parser.add_argument('--repeats', type=int, default=3, help='fresh processes per path; the best wall time counts')
    args = parser.parse_args()
    head = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                          check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        before_tree = Path(tmp) / f'before-{args.before}'
        subprocess.run(['git', '-C', str(ROOT), 'worktree', 'add', '--detach', '-q', str(before_tree), args.before],
                       check=True)
        try:
            before = measure(before_tree, args.repeats)
        finally:
            subprocess.run(['git', '-C', str(ROOT), 'worktree', 'remove', '--force', str(before_tree)], check=True)
    after = measure(ROOT, args.repeats)
    result = {'before': args.before, 'after': head, 'python': sys.version.split()[0], 'repeats': args.repeats,
              'cpus': os.cpu_count(), 'paths': {p: {'before': before[p], 'after': after[p]} for p in PATHS}}
    out = ROOT / 'benchmarks' / 'results'
    out.mkdir(parents=True, exist_ok=True)
    (out / 'import_cost.json').write_text(json.dumps(result, indent=2) + '\n')
    lines = [f'# Import cost: {args.before} (before) vs {head} (after)', '',
             f'Best wall time of {args.repeats} fresh processes and that process\'s peak RSS; Python '
             f'{result["python"]}, {result["cpus"]} CPUs (shared, so wall times vary with load).', '',
             '| path | wall before (s) | wall after (s) | peak RSS before (MB) | peak RSS after (MB) | heavy modules '
             'before | heavy modules after |', '|---|---:|---:|---:|---:|---|---|']
    for path in PATHS:
        b, a = before[path], after[path]
        lines.append(f'| `{path}` | {b["wall_s"]} | {a["wall_s"]} | {b["peak_rss_mb"]} | {a["peak_rss_mb"]} | '
                     f'{", ".join(b["heavy_modules"]) or "none"} | {", ".join(a["heavy_modules"]) or "none"} |')
    (out / 'import_cost.md').write_text('\n'.join(lines) + '\n')
    print(f'{out}/import_cost.{{json,md}}')


if __name__ == '__main__':
    main()
