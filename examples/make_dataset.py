"""Write a spiral dataset folder for `slurmml dataset add`: `python make_dataset.py DIR [--noise 0.4] [--seed 0]`.

The folder holds spiral.pt (tensors x and y, read by train.py's `dataset=NAME@VERSION`) and a README line that
says how it was made. Two noise levels give two versions to compare: v1 and v2 of one dataset.
"""

import argparse
import os

import torch

from train import make_spiral


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x, y = make_spiral(args.samples, args.classes, args.noise, torch.Generator().manual_seed(args.seed))
    os.makedirs(args.folder, exist_ok=True)
    torch.save({"x": x, "y": y}, os.path.join(args.folder, "spiral.pt"))
    with open(os.path.join(args.folder, "README.txt"), "w") as handle:
        handle.write(f"spiral: {args.samples} points, {args.classes} classes, noise {args.noise}, seed {args.seed}\n")
    print(f"wrote {args.folder}/spiral.pt")


if __name__ == "__main__":
    main()
