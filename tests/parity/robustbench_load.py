"""Loads a RobustBench entry written by `ard-pipeline export --format
robustbench` the way a RobustBench user would: RobustBench's own class from
the installed `robustbench` package (its architecture file, so that the
package's torchvision-based data module is not needed), or the definition
file of the entry for MobileNetV2; `load_state_dict(torch.load(pt), strict=True)`;
eval mode. Writes the logits on the images of --images (safetensors `images`)
to --out (safetensors `logits`).
"""
import argparse
import importlib.util
import os

import torch
from safetensors.torch import load_file, save_file


def from_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def architectures(name):
    root = importlib.util.find_spec("robustbench").submodule_search_locations[0]
    return from_file(f"rb_{name}", os.path.join(root, "model_zoo", "architectures", f"{name}.py"))


def build(arch, definition):
    if arch == "resnet18":
        return architectures("resnet").ResNet18()
    if arch.startswith("wrn"):
        depth, widen = (int(v) for v in arch[3:].split("_"))
        return architectures("wide_resnet").WideResNet(depth=depth, widen_factor=widen, sub_block1=True)
    width = float(arch[len("mobilenet_v2_x"):]) if arch.startswith("mobilenet_v2_x") else 1.0
    return from_file("entry_mobilenet_v2", definition).MobileNetV2(width=width)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", required=True)
    p.add_argument("--pt", required=True)
    p.add_argument("--definition")
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    model = build(a.arch, a.definition)
    model.load_state_dict(torch.load(a.pt, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(load_file(a.images)["images"])
    save_file({"logits": logits.contiguous()}, a.out)
    print("ok")


if __name__ == "__main__":
    main()
