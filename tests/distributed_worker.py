"""Run by test_distributed.py under torchrun: the index command (what ``torchrun -m pyterrier_hybrid index`` runs),
then a PooledDenseRetrieval (documents and queries), on every rank."""
import sys

import pyterrier_hybrid as ph
from pyterrier_hybrid.cli import main
from pyterrier_hybrid.retrieval.distributed import local_device

model, dataset, out = sys.argv[1:4]
if main(['index', model, dataset, f'{out}/index']) != 0:
    sys.exit('the index command failed')
ph.PooledDenseRetrieval(ph.HybridEncoder.from_pretrained(model, batch_size=8, device=local_device()), dataset,
                        f'{out}/pooled', distributed=True)
