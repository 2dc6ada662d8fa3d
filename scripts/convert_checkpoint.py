#!/usr/bin/env python3
"""Converts a PyTorch checkpoint (a `torch.save`d state_dict, or a dict holding
one under `state_dict`/`model`; or a safetensors file) to safetensors for
ard-pipeline: strips the `module.` prefix DataParallel adds, keeps tensors
only, writes atomically.

    .venv/bin/python scripts/convert_checkpoint.py model_cifar_wrn.pt weights/trades_wrn34_10.safetensors
"""
import argparse
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file


def state_dict_of(obj):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        return obj
    raise SystemExit(f"error: not a state_dict or module: {type(obj).__name__}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    a = ap.parse_args()
    try:
        if a.src.endswith(".safetensors"):
            obj = load_file(a.src)
        else:
            obj = torch.load(a.src, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any load failure with the file name
        raise SystemExit(f"error: {a.src}: cannot load ({e})")
    tensors = {}
    for k, v in state_dict_of(obj).items():
        if not torch.is_tensor(v):
            continue
        name = k[len("module."):] if k.startswith("module.") else k
        tensors[name] = v.detach().contiguous().clone()
    if not tensors:
        raise SystemExit(f"error: {a.src}: no tensors found")
    out_dir = os.path.dirname(os.path.abspath(a.dst))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, a.dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"{a.dst}: {len(tensors)} tensors")


if __name__ == "__main__":
    sys.exit(main())
