"""Square-attack reference: torchattacks' L-inf Square (an implementation
independent of ours, after the authors' code) on the same weights and test
images, BatchNorm in eval mode. Prints the robust accuracy (percent) and the
mean queries per image as JSON."""
import argparse
import json

import torch
import torchattacks
from safetensors.torch import load_file

import ref_models


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--io", required=True, help="safetensors with x and y")
    p.add_argument("--eps", type=float, required=True)
    p.add_argument("--queries", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    model = ref_models.build(a.arch)
    model.load_state_dict(load_file(a.weights), strict=True)
    model.eval()
    io = load_file(a.io)
    x, y = io["x"], io["y"].long()
    attack = torchattacks.Square(
        model, norm="Linf", eps=a.eps, n_queries=a.queries, n_restarts=1,
        p_init=0.8, loss="margin", resc_schedule=True, seed=a.seed,
    )
    adv = attack(x, y)
    with torch.no_grad():
        correct = model(adv).argmax(1) == y
        natural = model(x).argmax(1) == y
    print(json.dumps({
        "accuracy": 100.0 * correct.double().mean().item(),
        "natural": 100.0 * natural.double().mean().item(),
        "max_dist": (adv - x).abs().max().item(),
    }))


if __name__ == "__main__":
    main()
