"""Train a testbed's attribute classifier: ``python -m rasfw.embedded.eval.train_classifier [--data patterns] [--steps N]``."""

from __future__ import annotations

import argparse

from rasfw.embedded.eval.classifier import train_classifier


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="shapes", help="the testbed: shapes (the default model's) or patterns")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv stage")
    parser.add_argument("--out", default=None, help="safetensors path (default: the testbed's file in eval/weights/)")
    args = parser.parse_args(argv)
    train_classifier(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        out=args.out,
        data=args.data,
        width=args.width,
    )


if __name__ == "__main__":
    main()
