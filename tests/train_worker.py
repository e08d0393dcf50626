"""Run by test_resume.py in a subprocess: train the tiny model on MLQA-R, and with a step given, die by SIGKILL in
the middle of that step's checkpoint save (model weights written, optimizer state half written, nothing after)."""
import os
import signal
import sys
from pathlib import Path

from transformers import Trainer

import pyterrier_hybrid as ph

model, output, steps, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
save_optimizer = Trainer._save_optimizer_and_scheduler


def save_and_die(self, output_dir):
    save_optimizer(self, output_dir)
    if self.state.global_step == kill_at:
        optimizer = Path(output_dir) / 'optimizer.pt'
        optimizer.write_bytes(optimizer.read_bytes()[:optimizer.stat().st_size // 2])
        os.kill(os.getpid(), signal.SIGKILL)


Trainer._save_optimizer_and_scheduler = save_and_die
print(ph.train(model, 'lareqa/mlqa-r', output, steps=steps, batch_size=4, save_steps=1, seed=3,
               dataloader_num_workers=0))
