"""What the AAE table-1 Parzen figure rewards: the same protocol on reference sample sets.

The Parzen-window log-likelihood (AAE §3, ``regae.metrics.parzen_evaluate``: 10K samples, σ chosen on 1000
validation images, mean ± standard error over the 10K test images) is not a likelihood of the model. Theis,
van den Oord & Bethge (2016, "A note on the evaluation of generative models", table 1) showed that on MNIST
10K *training images* score about 243 nats under it while the 10K centroids of k-means score 313: sample
sets that look like smoothed prototypes beat real data. This script scores, with regae's protocol and data:

- ``train``: 10K random training images (a perfect generator's samples; Theis et al.'s 243 checks that
  regae's protocol and data are theirs);
- and, for each ``--run`` (a trained AAE run folder): ``prior``, its samples (z from the prior, decoded: the
  figure in ``reports/aae.md``), and ``posterior``, the decoded codes of 10K random training images (z from
  the aggregated posterior q(z) instead of the prior: what the prior samples would score if q(z) filled
  the prior exactly). With a weight average (``train.ema_decay``) the run's model is the average.

Beside each figure, ``grey`` (``regae.metrics.grey_share``): the share of a set's ink (pixels above 0.1) that
is mid-grey (below 0.9). Real digits have anti-aliased edges only; a blurred sample set has more, so a Parzen
gain that comes with a higher ``grey`` is at least partly the blur the metric rewards, not a better generator.

    python benchmarks/parzen_calibration.py --run runs/probes/probe-lik-ema --json parzen.json

About half a minute per sample set on one core.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", default=[], type=Path, help="AAE run folder(s) to score")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from regae.config import DataConfig
    from regae.data import load_data
    from regae.metrics import grey_share, parzen_evaluate
    from regae.reproduce import parzen_metric

    splits = load_data(DataConfig(name="mnist"))
    # the same 10K training images whose codes parzen_metric decodes
    pick = torch.randperm(len(splits.train.x), generator=torch.Generator().manual_seed(0))[:10_000]
    real = parzen_evaluate(splits.train.x[pick].flatten(1), splits.val.x[:1000].flatten(1), splits.test.x.flatten(1))
    results = {
        "train": {
            "nats": real["log_likelihood"],
            "stderr": real["stderr"],
            "sigma": real["sigma"],
            "grey": grey_share(splits.train.x[pick]),
        }
    }
    for run in args.run:
        m = parzen_metric(run)
        results[f"{run.name}: prior"] = {
            "nats": m["test/parzen"],
            "stderr": m["test/parzen_stderr"],
            "sigma": m["test/parzen_sigma"],
            "grey": m["test/sample_grey"],
        }
        results[f"{run.name}: posterior"] = {"nats": m["test/parzen_posterior"], "grey": m["test/posterior_grey"]}
        if "test_online/parzen" in m:
            results[f"{run.name}: prior, online weights"] = {"nats": m["test_online/parzen"]}

    print(f"{'sample set':<48} {'nats':>8} {'± s.e.':>7} {'σ':>6} {'grey':>5}")
    for name, r in results.items():
        cols = (("stderr", 7, 2), ("sigma", 6, 3), ("grey", 5, 3))
        se, sigma, grey = (f"{r[k]:{w}.{d}f}" if k in r else " " * w for k, w, d in cols)
        print(f"{name:<48} {r['nats']:8.2f} {se} {sigma} {grey}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
