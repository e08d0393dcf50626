"""Run by test_training.py under torchrun: train a few steps, record what this rank saw and its final weights."""
import hashlib
import json
import sys

import torch
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

import pyterrier_hybrid as ph

model, data, out = sys.argv[1:4]
seen = []
collate = SentenceTransformerDataCollator.__call__


def recording_collate(self, features):
    seen.append([f['anchor'] for f in features])
    return collate(self, features)


SentenceTransformerDataCollator.__call__ = recording_collate
run = ph.build_trainer(model, data, f'{out}/model', steps=3, batch_size=4, save_steps=100, ddp_backend='gloo',
                       use_cpu=True, dataloader_num_workers=0)
run.trainer.train()
rank = torch.distributed.get_rank()
digest = hashlib.sha256()
for name, tensor in sorted(run.trainer.model.state_dict().items()):
    digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
with open(f'{out}/rank{rank}.json', 'w') as f:
    json.dump({'batches': seen, 'weights': digest.hexdigest(), 'world_size': torch.distributed.get_world_size()}, f)
