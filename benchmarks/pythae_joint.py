"""regae vs pythae 0.1.2's ``Adversarial_AE`` on pythae's own joint AAE step, same networks, same data.

pythae trains an AAE with one joint step per batch (``AdversarialTrainer``): encode and decode, D on the
encoded codes, on prior codes and on the detached codes; backward the autoencoder loss
(½ squared error + λ·BCE(D(z), 1)), backward the discriminator loss, step both Adam optimizers. regae runs
that same step with ``model.regularization=joint``: phase ``autoencoder`` (recon + λ·generator loss, D frozen
so no weight gradients are wasted on it), then phase ``discriminator`` on the same codes and prior draws in
one D pass; fused Adam; data as one tensor batched by index.

Networks (both sides): encoder 784-1000-1000-8, decoder 8-1000-1000-784 with a sigmoid output,
discriminator 8-1000-1000-1 (sigmoid on pythae's side, which takes probabilities; logits on regae's), ReLU,
deterministic posterior, N(0, I) prior, λ = 0.5 (pythae's default), Adam lr 1e-4, batch 100, MNIST.

Each side runs in its own subprocess (so peak RSS is its own), warm-up first, then ``--steps`` timed steps
(pythae: ``trainer.train_step`` over a dataset of exactly that many batches, its DataLoader included; regae:
``Trainer.fit`` with ``max_steps``). Sides alternate for ``--rounds`` rounds; medians are compared.
Target (issue 3): regae ≥ 1.5× pythae's samples/s at ≤ its peak RSS.

``--regae-precision bf16-mixed`` runs regae's side under bfloat16 autocast (Lightning Fabric's
``bf16-mixed``: bf16 matmuls, fp32 weights and optimizer state). pythae has no CPU counterpart: its
``amp`` option is CUDA-only (``no_cuda=True`` switches it off), so its side stays fp32. That row compares
what each library can do on this CPU, not the same arithmetic; the fp32 row is the like-for-like one.

pythae is installed only for this benchmark: ``make bench-pythae`` puts it in ``.venv/bench-pythae`` with
``pip install --no-deps --target`` (its pinned dependencies must not touch the project's environment).

Run: ``python benchmarks/pythae_joint.py [--steps 100] [--rounds 5] [--threads 2] [--regae-precision 32-true]
[--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# outside the source tree, beside the project's environment: third-party code we only time, never import
PYTHAE_DIR = Path(os.environ.get("PYTHAE_DIR", ROOT / ".venv" / "bench-pythae"))
SPEEDUP_TARGET = 1.5
LAMBDA, LR, BATCH = 0.5, 1e-4, 100


def load_x(n: int):
    import torch

    from regae.data import load_data
    from regae.data.base import DataConfig

    x = load_data(DataConfig(name="mnist")).train.x[:n]
    return x.reshape(len(x), -1).contiguous() if torch.is_tensor(x) else x


def run_pythae(steps: int, threads: int) -> dict:
    sys.path.insert(0, str(PYTHAE_DIR))
    import torch
    from pythae.data.preprocessors import DataProcessor
    from pythae.models import Adversarial_AE, Adversarial_AE_Config
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseDiscriminator, BaseEncoder
    from pythae.trainers import AdversarialTrainer, AdversarialTrainerConfig

    from regae.nn import mlp

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([784, 1000, 1000, 8])

        def forward(self, x):
            mu = self.net(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=mu, log_covariance=torch.zeros_like(mu))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([8, 1000, 1000, 784], out_act="sigmoid")

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    class Discriminator(BaseDiscriminator):
        def __init__(self):
            super().__init__()
            self.net = mlp([8, 1000, 1000, 1], out_act="sigmoid")  # pythae's BCE takes probabilities

        def forward(self, z):
            return ModelOutput(embedding=self.net(z))

    cfg = Adversarial_AE_Config(
        input_dim=(784,),
        latent_dim=8,
        reconstruction_loss="mse",
        adversarial_loss_scale=LAMBDA,
        reconstruction_loss_scale=1.0,
        deterministic_posterior=True,
    )
    model = Adversarial_AE(cfg, encoder=Encoder(), decoder=Decoder(), discriminator=Discriminator())
    x = load_x((steps + 10) * BATCH)
    out = tempfile.mkdtemp()

    def trainer_for(data):
        tc = AdversarialTrainerConfig(
            output_dir=out,
            per_device_train_batch_size=BATCH,
            num_epochs=1,
            autoencoder_learning_rate=LR,
            discriminator_learning_rate=LR,
            no_cuda=True,
        )
        # what pythae's TrainingPipeline does with a tensor: wrap it in its BaseDataset
        trainer = AdversarialTrainer(model=model, train_dataset=DataProcessor.to_dataset(data), training_config=tc)
        trainer.prepare_training()  # optimizers, output folder, callbacks: what its train() does first
        return trainer

    trainer_for(x[: 10 * BATCH]).train_step(epoch=1)  # warm-up
    trainer = trainer_for(x[10 * BATCH :])
    t0 = time.perf_counter()
    trainer.train_step(epoch=1)
    seconds = time.perf_counter() - t0
    return {"samples_per_s": steps * BATCH / seconds, "peak_rss_mib": peak_rss_mib()}


def run_regae(steps: int, threads: int, precision: str = "32-true") -> dict:
    import torch

    from regae.config import build_experiment
    from regae.data import load_data
    from regae.engine import Trainer
    from regae.run import build_model

    torch.set_num_threads(threads)

    def cfg(n_steps: int):
        return build_experiment(
            {
                "model": {
                    "type": "aae",
                    "hidden": [1000, 1000],
                    "disc_hidden": [1000, 1000],
                    "code_dim": 8,
                    "recon_loss": "half_sse",
                    "regularization": "joint",
                    "adversarial_weight": LAMBDA,
                },
                "data": {"name": "mnist"},
                "train": {
                    "max_steps": n_steps,
                    "epochs": 10**6,
                    "batch_size": BATCH,
                    "progress": False,
                    "log_every": 50,
                    "best_metric": None,
                    "num_threads": threads,
                    "keep_last": 1,
                    "optim": {"name": "adam", "lr": LR},
                    "precision": precision,
                },
            }
        )

    c = cfg(steps)
    splits = load_data(c.data)
    # the same number of training images as pythae holds (its dataset is exactly the timed batches)
    splits.train = splits.train.subset(torch.arange((steps + 10) * BATCH))
    seconds = 0.0
    for n, timed in ((10, False), (steps, True)):
        torch.manual_seed(0)
        model = build_model(cfg(n), splits)
        with tempfile.TemporaryDirectory() as d:
            trainer = Trainer(cfg(n), d)
            trainer.fit(model, splits)
            if timed:
                seconds = trainer.elapsed * steps / max(trainer.steps_run, 1)
    return {"samples_per_s": steps * BATCH / seconds, "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def side(name: str, steps: int, threads: int, precision: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--side", name, "--steps", str(steps), "--threads", str(threads)]
    cmd += ["--regae-precision", precision]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{name} side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--regae-precision", choices=("32-true", "bf16-mixed"), default="32-true")
    p.add_argument("--json", default=None)
    p.add_argument("--side", choices=("pythae", "regae"), default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    if a.side:
        if a.side == "pythae":
            result = run_pythae(a.steps, a.threads)
        else:
            result = run_regae(a.steps, a.threads, a.regae_precision)
        print(json.dumps(result))
        return 0
    if not (PYTHAE_DIR / "pythae").is_dir():
        print(f"pythae is not installed in {PYTHAE_DIR}; run `make bench-pythae` (or see this file's docstring)")
        return 2

    res: dict[str, list[dict]] = {"pythae": [], "regae": []}
    for r in range(a.rounds):
        for name in ("pythae", "regae") if r % 2 == 0 else ("regae", "pythae"):
            res[name].append(side(name, a.steps, a.threads, a.regae_precision))
            print(f"round {r} {name}: {res[name][-1]['samples_per_s']:.0f} samples/s", flush=True)
    med = {k: statistics.median(x["samples_per_s"] for x in v) for k, v in res.items()}
    rss = {k: max(x["peak_rss_mib"] for x in v) for k, v in res.items()}
    speedup = med["regae"] / med["pythae"]
    ok = speedup >= SPEEDUP_TARGET and rss["regae"] <= rss["pythae"]
    print(
        f"pythae {med['pythae']:.0f} samples/s, peak RSS {rss['pythae']:.0f} MiB | regae {med['regae']:.0f} "
        f"samples/s, peak RSS {rss['regae']:.0f} MiB | speed-up {speedup:.2f}× (target ≥ {SPEEDUP_TARGET}×, "
        f"memory ≤ pythae's): {'PASS' if ok else 'FAIL'}"
        + ("" if a.regae_precision == "32-true" else f" [regae {a.regae_precision}, pythae fp32: not like-for-like]")
    )
    if a.json:
        out = {"median": med, "peak_rss_mib": rss, "rounds": res, "pass": ok, "regae_precision": a.regae_precision}
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
