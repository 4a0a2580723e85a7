"""Write a reference feature file (the training data) and tonight's batch, optionally shifted like a flash sale.

    python examples/batch_drift_gate/make_data.py --out /tmp/gate            # tonight looks like training
    python examples/batch_drift_gate/make_data.py --out /tmp/gate --shift    # tonight's basket values moved up
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def write(path: Path, rng: np.random.Generator, n: int, shift: float) -> None:
    basket = rng.lognormal(3.6 + shift, 0.6, n)
    items = rng.poisson(3.0, n)
    session = rng.gamma(2.0, 90.0, n)
    device = rng.choice(["web", "ios", "android"], n, p=[0.5, 0.3, 0.2])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["basket_value", "items_in_cart", "session_seconds", "device"])
        for row in zip(basket.round(2), items, session.round(1), device, strict=True):
            w.writerow(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shift", action="store_true", help="shift tonight's basket_value (PSI ~0.3)")
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "reference.csv", np.random.default_rng(1), args.rows, 0.0)
    write(args.out / "tonight.csv", np.random.default_rng(2), args.rows, 0.35 if args.shift else 0.0)
    print(f"wrote {args.out / 'reference.csv'} and {args.out / 'tonight.csv'}")


if __name__ == "__main__":
    main()
