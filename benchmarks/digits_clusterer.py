"""Not a speed test: what ``AAEClusterer``'s two departures from the paper buy on scikit-learn's digits.

The §6 clustering AAE as a scikit-learn estimator (K = 16 categories, 4-D style, encoder 64-256-256 with
batch norm, 20 % input dropout, Adam 1e-3, 60 epochs of batch 100) is fitted on the 1,797 8×8 digits scaled
to [0, 1], once per setting and seed:

- ``paper``: the paper's objective only;
- ``balance``: + KL(q̄(y) || U(K)) in the generator phase (``balance=1``);
- ``consistency``: + KL(q(y|x') || q(y|x'')) over two dropouts of each sample (``consistency=0.3``);
- ``both``: the two together.

k-means with the same K is printed for reference. Scores are the training partition's NMI and majority-vote
error (each cluster labelled by its commonest digit); digits has no validation split, so §6's own protocol
does not apply. Each fit takes ~12 s on one Intel Xeon thread.

Run: ``python benchmarks/digits_clusterer.py [--seeds 3] [--epochs 60] [--threads 1] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from regae.metrics import majority_accuracy, nmi
from regae.sklearn import AAEClusterer

SETTINGS = {
    "paper": {},
    "balance": {"balance": 1.0},
    "consistency": {"consistency": 0.3},
    "both": {"balance": 1.0, "consistency": 0.3},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--clusters", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write every fit's scores here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rows: dict[str, list[dict]] = {name: [] for name in ["k-means", *SETTINGS]}
    for seed in range(args.seeds):
        km = KMeans(args.clusters, n_init=10, random_state=seed).fit(X)
        rows["k-means"].append(
            {"seed": seed, "nmi": nmi(km.labels_, y), "error": 100 - majority_accuracy(km.labels_, y)}
        )
        for name, extra in SETTINGS.items():  # every setting on a seed before the next seed: drift hits all alike
            t = time.perf_counter()
            est = AAEClusterer(
                n_clusters=args.clusters, style_dim=4, hidden=(256, 256), epochs=args.epochs, random_state=seed, **extra
            ).fit(X)
            row = {
                "seed": seed,
                "nmi": nmi(est.labels_, y),
                "error": 100 - majority_accuracy(est.labels_, y),
                "clusters": est.n_clusters_,
                "seconds": time.perf_counter() - t,
            }
            rows[name].append(row)
            print(
                f"seed {seed} {name:<12} NMI {row['nmi']:.3f}  majority-vote error {row['error']:5.2f} %  "
                f"{row['clusters']} clusters  {row['seconds']:.0f} s",
                flush=True,
            )

    print(f"\nK = {args.clusters}, {args.epochs} epochs, {args.seeds} seeds: mean (min..max)")
    print(f"{'setting':<12} {'NMI':>22} {'majority-vote error %':>24}")
    for name, rs in rows.items():
        n, e = [r["nmi"] for r in rs], [r["error"] for r in rs]
        print(
            f"{name:<12} {statistics.mean(n):8.3f} ({min(n):.3f}..{max(n):.3f})"
            f" {statistics.mean(e):10.2f} ({min(e):5.2f}..{max(e):5.2f})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
