"""For the eval CLI test: makes a DataParallel-style torch.save checkpoint
(`module.` prefixes), and computes PyTorch's logits and accuracy on the first N
images of CIFAR-10's test_batch.bin for comparison."""
import argparse
import json

import numpy as np
import torch
from safetensors.torch import load_file

import ref_models

ap = argparse.ArgumentParser()
ap.add_argument("--arch", required=True)
ap.add_argument("--make", help="write a torch.save checkpoint here")
ap.add_argument("--weights", help="safetensors weights to evaluate")
ap.add_argument("--data")
ap.add_argument("--n", type=int, default=500)
a = ap.parse_args()
torch.set_num_threads(2)
if a.make:
    torch.manual_seed(0)
    model = ref_models.build(a.arch)
    ref_models.randomize_bn_stats(model, torch.Generator().manual_seed(1))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, a.make)
else:
    raw = np.fromfile(f"{a.data}/test_batch.bin", dtype=np.uint8).reshape(-1, 3073)[: a.n]
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    x = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    model = ref_models.build(a.arch)
    model.load_state_dict(load_file(a.weights), strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    acc = (logits.argmax(1) == labels).float().mean().item() * 100
    print(json.dumps({"accuracy": acc, "logits": logits.tolist()}))
