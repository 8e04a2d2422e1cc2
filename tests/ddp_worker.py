"""Run under torchrun by test_distributed.py: a few DDP training steps, then each rank writes a
fingerprint of its weights so the test can compare the replicas."""
import hashlib
import json
import os
import sys

import torch

from forgeryloc.train import TrainConfig, Trainer


def main(data: str, out: str) -> None:
    torch.set_num_threads(1)
    config = TrainConfig(out_dir=out, arch="m2sformer-b0", datasets=[data], size=64,
                         batch_size=2, epochs=1, epoch_size=16, lr=1e-3, workers=0,
                         device="cpu", augment=True, seed=0)
    trainer = Trainer(config)
    trainer.run()
    digest = hashlib.sha256()
    for name, tensor in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    rank = os.environ["RANK"]
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump({"sha256": digest.hexdigest(), "world": os.environ["WORLD_SIZE"]}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
