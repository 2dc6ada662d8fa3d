"""ONNX export of a zoo model, driven by `ard-pipeline export` (not meant to be
run by hand; the Rust command checks the inputs, verifies the outputs and
writes the card).

Steps, each done by a maintained tool:
1. the parity-tested PyTorch definition (tests/parity/ref_models.py) loads the
   safetensors checkpoint with strict=True;
2. torch.fx's `fuse` folds every BatchNorm that directly follows a convolution
   into it (eval mode), and the folded model is checked against the unfolded one;
3. torch.onnx exports it with a dynamic batch: input `images` [N, 3, 32, 32] in
   [0, 1], output `logits` [N, 10];
4. with --int8, ONNX Runtime's static quantizer writes a QDQ model: int8
   per-channel weights, uint8 activations whose ranges are calibrated (MinMax)
   on the images of --calibration (training images; safetensors `images`).

Prints one JSON object on stdout; errors go to stderr with exit status 2.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))

import torch  # noqa: E402
import torch.fx.experimental.optimization as fx_optimization  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import ref_models  # noqa: E402


def fail(message):
    print(message, file=sys.stderr)
    raise SystemExit(2)


def count_batchnorms(model):
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def load(arch, weights):
    model = ref_models.build(arch)
    state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        fail(
            f"{weights}: not a {arch} checkpoint ({len(missing)} tensors missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    return model.eval()


def fold(model, probe):
    """BatchNorm folded into the preceding convolutions; checked on `probe`."""
    folded = fx_optimization.fuse(model).eval()
    with torch.no_grad():
        before, after = model(probe), folded(probe)
    diff = (before - after).abs().max().item()
    scale = before.abs().max().item()
    if diff > 1e-4 * max(scale, 1.0):
        fail(f"BatchNorm folding changed the logits by {diff} (logit scale {scale})")
    return folded, diff


def export_fp32(model, path, opset):
    # torch.export-based exporter; every zoo model's forward takes `x`.
    torch.onnx.export(
        model,
        (torch.rand(2, 3, 32, 32),),
        path,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        opset_version=opset,
        external_data=False,
        dynamo=True,
        verbose=False,
    )


class Calibration:
    """ONNX Runtime's CalibrationDataReader over a tensor of images."""

    def __init__(self, images, batch):
        self.batches = [images[i : i + batch].numpy() for i in range(0, images.shape[0], batch)]
        self.next = 0

    def get_next(self):
        if self.next >= len(self.batches):
            return None
        self.next += 1
        return {"images": self.batches[self.next - 1]}

    def rewind(self):
        self.next = 0


def has_vnni():
    """Whether this x86 CPU has VNNI (AVX512-VNNI or AVX-VNNI); True elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l for l in f if l.startswith("flags")), "").split()
    except OSError:
        return True
    if "avx2" not in flags:
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


def export_int8(fp32_path, path, calibration, work):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    CalibrationDataReader.register(Calibration)
    images = load_file(calibration)["images"].float()
    prepared = os.path.join(work, "prepared.onnx")
    quant_pre_process(fp32_path, prepared, skip_symbolic_shape=False)
    # Without VNNI, x86 int8 kernels (u8 x s8 pairs summed into int16) can
    # saturate; ONNX Runtime's advice is 7-bit weights there (reduce_range).
    reduce_range = not has_vnni()
    quantize_static(
        prepared,
        path,
        Calibration(images, 128),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    os.remove(prepared)
    bits = "7-bit range (reduce_range: this CPU has no VNNI)" if reduce_range else "8-bit"
    return {
        "format": "QDQ",
        "weights": f"int8, per output channel, symmetric, {bits}",
        "activations": "uint8, per tensor, asymmetric",
        "calibration": "MinMax",
        "calibration_images": int(images.shape[0]),
        "quantizer": "onnxruntime.quantization.quantize_static",
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--fp32", required=True, help="where the fp32 model goes")
    p.add_argument("--int8", help="where the int8 model goes")
    p.add_argument("--calibration", help="safetensors with `images` [N, 3, 32, 32] in [0, 1]")
    p.add_argument("--opset", type=int, default=18)
    a = p.parse_args()
    if a.int8 and not a.calibration:
        fail("--int8 needs --calibration")
    torch.manual_seed(0)
    model = load(a.arch, a.weights)
    batchnorms = count_batchnorms(model)
    folded, fold_diff = fold(model, torch.rand(8, 3, 32, 32))
    export_fp32(folded, a.fp32, a.opset)
    import onnx
    import onnxruntime

    onnx.checker.check_model(a.fp32, full_check=True)
    out = {
        "opset": a.opset,
        "batchnorms": batchnorms,
        "batchnorms_folded": batchnorms - count_batchnorms(folded),
        "fold_max_abs_diff": fold_diff,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    if a.int8:
        out["int8"] = export_int8(a.fp32, a.int8, a.calibration, os.path.dirname(os.path.abspath(a.int8)))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
