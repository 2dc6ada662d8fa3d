"""Model parity fixtures: random PyTorch weights -> safetensors, with inputs and
the logits PyTorch computes in eval and train mode; `--check-load` loads a
Rust-saved checkpoint with strict=True and compares its logits."""
import argparse
import json
import os

import torch
from safetensors.torch import load_file, save_file

import ref_models


def make(arch, out_dir, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = ref_models.build(arch)
    ref_models.randomize_bn_stats(model, g)
    x = torch.rand(4, 3, 32, 32, generator=g)
    weights = ref_models.state_dict_for_safetensors(model)
    model.eval()
    with torch.no_grad():
        eval_logits = model(x)
    model.train()
    with torch.no_grad():
        train_logits = model(x)
    after = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("running_mean") or k.endswith("running_var")}
    save_file(weights, os.path.join(out_dir, f"{arch}.weights.safetensors"))
    tensors = {"x": x, "eval_logits": eval_logits, "train_logits": train_logits}
    tensors.update({f"after_train.{k}": v for k, v in after.items()})
    save_file(tensors, os.path.join(out_dir, f"{arch}.io.safetensors"))
    params = sum(p.numel() for p in model.parameters())
    return {"arch": arch, "parameters": params}


def check_load(arch, path, io_path):
    model = ref_models.build(arch)
    state = load_file(path)
    model.load_state_dict(state, strict=True)
    model.eval()
    io = load_file(io_path)
    with torch.no_grad():
        logits = model(io["x"])
    diff = (logits - io["eval_logits"]).abs().max().item()
    scale = io["eval_logits"].abs().max().item()
    print(json.dumps({"arch": arch, "max_abs_diff": diff, "scale": scale}))
    if diff > 1e-4 * max(scale, 1.0):
        raise SystemExit(f"logits differ by {diff}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--arch", nargs="+", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-load")
    ap.add_argument("--io")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.check_load:
        check_load(a.arch[0], a.check_load, a.io)
    else:
        print(json.dumps([make(arch, a.out, a.seed) for arch in a.arch]))
