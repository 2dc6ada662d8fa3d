"""The PyTorch side of `ard-pipeline bench`: ARD's training loop as the
paper's code runs it, timed, in plain eager PyTorch, or (--tuned) as a careful
PyTorch user would tune it.

Per batch: the teacher's forward on the clean augmented batch (eval mode, no
grad) or, with --soft-labels cached, a lookup of logits computed before the
clock starts; PGD on the student with BatchNorm in train mode from
x + U(-eps, eps) (cross-entropy, summed); the ARD loss (alpha, T, KL with
reduction 'mean', the clean forward computed for BatchNorm's sake as ARD's
loop does); torch.optim.SGD with momentum and weight decay.

The models and the two pieces of the step are not written again here: they
come from tests/parity/ref_models.py and tests/parity/ref_ard.py (`attack`,
`loss`), the references the parity tests hold the Rust side to; the loop is
ref_ard.ard_step with a clock around each part.

With --device cuda the models, batches and soft labels live on the GPU and
the clock stops after a synchronisation (the per-part seconds then count
queued kernels where they are waited for); --amp runs the attack and the
student's forwards under fp16 autocast with torch.cuda.amp's GradScaler, as
the Rust side's `perf.amp`.

Prints one JSON object on stdout: images, seconds (first batch to last, the
first one included, as on the Rust side), images/s, mean loss, the seconds
spent in each part (data, teacher, attack, student), CPU seconds from after
the imports to the last batch (the untimed soft-label pass excluded), and the
process's peak resident memory (and on CUDA the GPU memory the process holds
at its end, from nvidia-smi, as the Rust side measures it).
"""
import argparse
import contextlib
import copy
import json
import os
import resource
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
import ref_ard  # noqa: E402
import ref_models  # noqa: E402


def load_safetensors(path):
    """A safetensors file as {name: tensor}: with the `safetensors` package
    when it is installed, else read directly (an 8-byte little-endian header
    length, a JSON header of dtype/shape/offsets, the raw data), for GPU
    machines whose PyTorch comes without it (the device kit)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        pass
    else:
        return load_file(path)
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    body = bytearray(data[8 + n:])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = dtypes[info["dtype"]]
        count = (end - begin) // torch.empty((), dtype=dtype).element_size()
        flat = torch.frombuffer(body, dtype=dtype, count=count, offset=begin) if count else torch.empty(0, dtype=dtype)
        out[name] = flat.reshape(info["shape"]).clone()
    return out


def load_model(arch, path):
    model = ref_models.build(arch)
    if path:
        model.load_state_dict(load_safetensors(path), strict=True)
    return model


def cifar_prefix(root, n):
    """The first n training images (uint8 [n, 3, 32, 32]) and labels, as the
    Rust side's `data.train_limit = n` takes them."""
    parts, have = [], 0
    for i in range(1, 6):
        with open(os.path.join(root, f"data_batch_{i}.bin"), "rb") as f:
            raw = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).reshape(-1, 3073)
        parts.append(raw)
        have += len(raw)
        if have >= n:
            break
    raw = torch.cat(parts)[:n]
    x = raw[:, 1:].reshape(-1, 3, 32, 32).clone()
    y = raw[:, 0].to(torch.int64)
    return x, y


def make_batch(images, labels, idx, seed):
    """Random crop (padding 4) and horizontal flip, seeded per batch so the
    untimed soft-label pass sees the same batches as the timed loop."""
    g = torch.Generator().manual_seed(seed)
    x = images[idx].float().div_(255.0)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    offsets = torch.randint(0, 9, (len(idx), 2), generator=g)
    flips = torch.rand(len(idx), generator=g) < 0.5
    out = torch.empty_like(x)
    for i in range(len(idx)):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy:dy + 32, dx:dx + 32]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out, labels[idx]


# The Rust side's `perf.malloc_reuse` (mallopt at start-up), as tunables.
MALLOC_TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647"


def with_malloc_tunables():
    """Re-executes this script with MALLOC_TUNABLES in GLIBC_TUNABLES (read by
    glibc at process start only), unless they are already there."""
    have = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.mmap_max" in have:
        return
    env = dict(os.environ, GLIBC_TUNABLES=":".join(t for t in (have, MALLOC_TUNABLES) if t))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


def gpu_memory_mib():
    """GPU memory this process holds, from nvidia-smi (the Rust side's measure)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(mib)
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default="mobilenet_v2")
    p.add_argument("--student-weights")
    p.add_argument("--teacher", default="wrn16_4")
    p.add_argument("--teacher-weights")
    p.add_argument("--data", required=True, help="folder of the CIFAR-10 binary files")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--step-size", type=float, default=8 / 255)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=30.0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=2e-4)
    p.add_argument("--soft-labels", choices=["online", "cached"], default="online")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: PyTorch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler (CUDA)")
    p.add_argument("--tuned", action="store_true", help="malloc tunables, channels-last, bf16 autocast (CPU), graph-free clean forward, fused SGD")
    p.add_argument("--compile", action="store_true", help="torch.compile the student (with --tuned)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches before the clock with --compile")
    a = p.parse_args()
    device = torch.device(a.device)
    if a.amp and device.type != "cuda":
        sys.exit("--amp needs --device cuda")
    if a.compile and not a.tuned:
        sys.exit("--compile goes with --tuned")
    if a.tuned and device.type == "cpu":
        with_malloc_tunables()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    bf16 = a.tuned and device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if a.amp:
        autocast = lambda: torch.autocast("cuda", dtype=torch.float16)  # noqa: E731
    elif bf16:
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda") if a.amp else None
    layout = torch.channels_last if a.tuned else torch.contiguous_format
    no_grad_clean = a.tuned and a.alpha == 1.0

    cpu_start = time.process_time()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    student = load_model(a.student, a.student_weights).to(device, memory_format=layout)
    teacher = load_model(a.teacher, a.teacher_weights).eval().to(device, memory_format=layout)
    opt = torch.optim.SGD(student.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
                          **({"fused": True} if a.tuned else {}))
    model = torch.compile(student) if a.compile else student
    n = a.batches * a.batch_size
    images, labels = cifar_prefix(a.data, n)
    if len(images) < n:
        sys.exit(f"only {len(images)} training images, {n} needed")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(a.seed))
    batch_idx = [order[b * a.batch_size:(b + 1) * a.batch_size] for b in range(a.batches)]
    loss_cfg = {"temperature": a.temperature, "alpha": a.alpha, "kl_reduction": "mean"}

    cached = None
    cpu_untimed = 0.0
    if a.soft_labels == "cached":
        cpu_untimed = time.process_time()
        # Filled before the clock starts, like the Rust side's soft-label cache.
        with torch.no_grad(), autocast():
            cached = [teacher(make_batch(images, labels, idx, a.seed + b)[0].to(device, memory_format=layout)).float()
                      for b, idx in enumerate(batch_idx)]
        sync()
        cpu_untimed = time.process_time() - cpu_untimed

    def attack(x, y, t):
        noise = (torch.rand_like(x) * 2.0 - 1.0) * a.eps
        with autocast():
            return ref_ard.attack(model, x, y, x + noise, a.eps, a.step_size, a.steps, "ce", True, t)

    def update(x, x_adv, y, t):
        model.train()
        with autocast():
            s_adv = model(x_adv)
        if no_grad_clean:
            # alpha = 1: the clean logits have no weight in the loss; the
            # forward only moves BatchNorm's statistics, as ARD's loop does.
            with torch.no_grad(), autocast():
                model(x)
            s_clean = None
        else:
            with autocast():
                s_clean = model(x).float()
        value = ref_ard.loss("ard", s_adv.float(), s_clean, t.float(), y, loss_cfg)
        opt.zero_grad()
        if scaler is None:
            value.backward()
            opt.step()
        else:
            scaler.scale(value).backward()
            scaler.step(opt)
            scaler.update()
        return value.item()

    warmup_s = 0.0
    if a.compile and a.warmup > 0:
        # Compilation happens here, before the clock; the weights, BatchNorm
        # statistics and optimiser state are put back afterwards.
        w0 = time.perf_counter()
        saved = copy.deepcopy(student.state_dict()), copy.deepcopy(opt.state_dict())
        x, y = make_batch(images, labels, batch_idx[0], a.seed)
        x, y = x.to(device).contiguous(memory_format=layout), y.to(device)
        with torch.no_grad(), autocast():
            t = cached[0] if cached is not None else teacher(x).float()
        for _ in range(a.warmup):
            update(x, attack(x, y, t), y, t)
        student.load_state_dict(saved[0])
        opt.load_state_dict(saved[1])
        sync()
        warmup_s = time.perf_counter() - w0

    parts = dict(data=0.0, teacher=0.0, attack=0.0, student=0.0)
    losses = []
    started = time.perf_counter()
    for b, idx in enumerate(batch_idx):
        t0 = time.perf_counter()
        x, y = make_batch(images, labels, idx, a.seed + b)
        x, y = x.to(device, non_blocking=True).contiguous(memory_format=layout), y.to(device, non_blocking=True)
        t1 = time.perf_counter()
        if cached is None:
            with torch.no_grad(), autocast():
                t = teacher(x).float()
        else:
            t = cached[b]
        t2 = time.perf_counter()
        x_adv = attack(x, y, t)
        t3 = time.perf_counter()
        losses.append(update(x, x_adv, y, t))
        t4 = time.perf_counter()
        parts["data"] += t1 - t0
        parts["teacher"] += t2 - t1
        parts["attack"] += t3 - t2
        parts["student"] += t4 - t3
    sync()
    seconds = time.perf_counter() - started
    print(json.dumps({
        "images": n,
        "batches": a.batches,
        "seconds": seconds,
        "images_per_s": n / seconds,
        "mean_loss": sum(losses) / len(losses),
        "parts": parts,
        "threads": torch.get_num_threads(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        # As on the Rust side: after start-up to the last batch, models and data included.
        "cpu_s": time.process_time() - cpu_start - cpu_untimed,
        "torch": torch.__version__,
        "device": str(device),
        "amp": a.amp,
        "tuned": {"malloc_tunables": os.environ.get("GLIBC_TUNABLES"), "channels_last": a.tuned,
                  "bf16_autocast": bf16, "no_grad_clean": no_grad_clean, "fused_sgd": a.tuned,
                  "compile": a.compile, "warmup_s": warmup_s} if a.tuned else None,
        "gpu_mib": gpu_memory_mib() if device.type == "cuda" else None,
    }))


if __name__ == "__main__":
    main()
