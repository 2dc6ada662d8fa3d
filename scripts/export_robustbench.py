"""The PyTorch side of `ard-pipeline export --format robustbench` (not meant
to be run by hand; the Rust command checks the inputs, compares the logits
and writes model_info.json).

1. builds RobustBench's own class for the architecture: the installed
   `robustbench` package's ResNet-18 (model_zoo/architectures/resnet.py) or
   TRADES WideResNet (wide_resnet.py, with sub_block1), loaded from their
   files so that the package's data and download modules (torchvision,
   requests) are not needed; for MobileNetV2, which RobustBench does not ship,
   the project's definition (tests/parity/ref_models.py), written to
   --definition as a file of its own and loaded from there;
2. loads the safetensors checkpoint into it with strict=True and saves the
   state_dict with torch.save to --pt;
3. loads --pt back (weights_only=True) into a fresh instance, strictly, and
   writes its eval-mode logits on the images of --probe to --logits.

Prints one JSON object on stdout; errors go to stderr with exit status 2.
"""
import argparse
import importlib.metadata
import importlib.util
import inspect
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import ref_models  # noqa: E402


def fail(message):
    print(message, file=sys.stderr)
    raise SystemExit(2)


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def robustbench_module(name):
    """A module of robustbench/model_zoo/architectures, without importing the package."""
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        fail("the robustbench package is not installed: run `bash scripts/bootstrap.sh`")
    path = os.path.join(spec.submodule_search_locations[0], "model_zoo", "architectures", f"{name}.py")
    if not os.path.isfile(path):
        fail(f"robustbench has no {path}")
    return load_module(f"robustbench_{name}", path), f"robustbench.model_zoo.architectures.{name}"


def write_definition(path):
    """The project's MobileNetV2 as a file of its own: imports and the classes it needs."""
    parts = [
        '"""MobileNetV2 for CIFAR-10 (32x32 inputs in [0, 1], no normalisation), as trained by\n'
        "ard-pipeline; build it with MobileNetV2(width=W) and load model.pt with strict=True.\"\"\"\n",
        "import torch.nn as nn\nimport torch.nn.functional as F\n",
    ]
    for obj in (ref_models._scaled, ref_models.MBBlock, ref_models.MobileNetV2):
        parts.append(inspect.getsource(obj))
    with open(path, "w") as f:
        f.write("\n\n".join(parts))


def builder(arch, definition):
    """(module name, constructor text, a function building a fresh model)."""
    if arch == "resnet18":
        module, name = robustbench_module("resnet")
        return name, "ResNet18()", lambda: module.ResNet18()
    if arch.startswith("wrn"):
        depth, widen = (int(v) for v in arch[3:].split("_"))
        module, name = robustbench_module("wide_resnet")
        text = f"WideResNet(depth={depth}, widen_factor={widen}, sub_block1=True)"
        return name, text, lambda: module.WideResNet(depth=depth, widen_factor=widen, sub_block1=True)
    if arch.startswith("mobilenet_v2"):
        if not definition:
            fail("MobileNetV2 needs --definition")
        width = float(arch[len("mobilenet_v2_x"):]) if arch.startswith("mobilenet_v2_x") else 1.0
        write_definition(definition)
        module = load_module("ard_mobilenet_v2", definition)
        return os.path.basename(definition), f"MobileNetV2(width={width})", lambda: module.MobileNetV2(width=width)
    fail(f"RobustBench has no model class for {arch}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--pt", required=True, help="where the state_dict goes")
    p.add_argument("--probe", required=True, help="safetensors with `images` [N, 3, 32, 32] in [0, 1]")
    p.add_argument("--logits", required=True, help="where the logits of --pt on the probe go")
    p.add_argument("--definition", help="where MobileNetV2's definition goes")
    a = p.parse_args()
    module, constructor, build = builder(a.arch, a.definition)
    model = build()
    state = load_file(a.weights)
    # A checkpoint without BatchNorm counters (PyTorch never reads them in eval).
    for name, value in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = torch.zeros_like(value)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        fail(f"{a.weights} does not load into {constructor}: {str(e).splitlines()[0]}")
    torch.save(model.state_dict(), a.pt)

    fresh = build()
    fresh.load_state_dict(torch.load(a.pt, map_location="cpu", weights_only=True), strict=True)
    fresh.eval()
    images = load_file(a.probe)["images"].float()
    with torch.no_grad():
        logits = torch.cat([fresh(x) for x in images.split(256)])
    save_file({"logits": logits.contiguous()}, a.logits)
    try:
        version = importlib.metadata.version("robustbench")
    except importlib.metadata.PackageNotFoundError:
        version = None
    print(json.dumps({"module": module, "constructor": constructor, "robustbench": version, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
