"""Edge-number parity: multiply-accumulates and parameters of each layer the
forward pass uses, counted with forward hooks on the PyTorch reference models
(one 1x3x32x32 image, eval mode). Conv2d: output elements x (C_in / groups) x
k_h x k_w; Linear: in x out; BatchNorm2d: no MACs, weight + bias parameters.
Prints JSON {arch: {layer name: [macs, params]}}."""
import argparse
import json

import torch
import torch.nn as nn

import ref_models


def count(arch):
    model = ref_models.build(arch).eval()
    seen = {}

    def hook(name):
        def record(module, inputs, output):
            params = sum(p.numel() for p in module.parameters(recurse=False))
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                macs = output.numel() // output.shape[0] * (module.in_channels // module.groups) * kh * kw
            elif isinstance(module, nn.Linear):
                macs = module.in_features * module.out_features
            else:
                macs = 0
            seen[name] = [macs, params]
        return record

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            m.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    return seen


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", nargs="+", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({arch: count(arch) for arch in a.arch}))
