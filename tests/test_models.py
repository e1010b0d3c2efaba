"""Models: loss terms against hand-computed values, training on toy data, energy, save/load, bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import regae
from regae.config import build_experiment
from regae.data import load_data
from regae.engine import Trainer
from regae.errors import CheckpointError, ConfigError, DataError
from regae.models import AE, CAE, DAE, VAE, Autoencoder
from regae.models.ae import CAEConfig, DAEConfig, corrupt, top_k_mask
from regae.models.base import AutoencoderConfig
from regae.models.vae import VAEConfig, gaussian_kl
from regae.run import build_model

# --------------------------------------------------------------------------------------------- helpers


def make(cls: type[Autoencoder], config_cls: type = AutoencoderConfig, **fields) -> Autoencoder:
    """A tiny model built directly from its config (no data needed)."""
    fields = {"input_shape": (3,), "likelihood": "gaussian", "hidden": (5,), "code_dim": 2, **fields}
    torch.manual_seed(0)
    return cls(config_cls(**fields))


def toy_experiment(out_dir: Path, model: dict, **train):
    """A small two-moons experiment: 1000 points, a [32, 32] MLP, 200 steps, no progress bar."""
    return build_experiment(
        {
            "model": {"hidden": [32, 32], "gaussian_std": 0.25, **model},
            "data": {"name": "two-moons", "n_samples": 1000},
            "train": {
                "out_dir": str(out_dir),
                "name": "run",
                "epochs": 1000,
                "max_steps": 200,
                "batch_size": 50,
                "log_every": 20,
                "progress": False,
                "optim": {"lr": 3e-3},
                **train,
            },
        }
    )


def logged(run_dir: Path, suffix: str = "/loss") -> list[float]:
    """The values of the one ``metrics.csv`` column ending in ``suffix``, in step order."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    (key,) = [k for k in rows[0] if k.endswith(suffix) and not k.startswith(("val/", "test/"))]
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.fixture(scope="module")
def trained_ae(tmp_path_factory) -> tuple[AE, torch.Tensor]:
    """An AE with a 1-D bottleneck trained 300 steps on two-moons, and its test points."""
    out = tmp_path_factory.mktemp("trained-ae")
    cfg = toy_experiment(out, {"type": "ae", "code_dim": 1}, max_steps=300, log_every=100, best_metric=None)
    splits = load_data(cfg.data)
    torch.manual_seed(0)
    model = Trainer(cfg, out / "run").fit(build_model(cfg, splits), splits).eval()
    return model, splits.test.x


# ------------------------------------------------------------------------------------------- loss terms


def test_bernoulli_reconstruction_energy_is_summed_binary_cross_entropy():
    """Bernoulli energy = -Σ_i [x_i log σ(o_i) + (1 - x_i) log(1 - σ(o_i))] per sample."""
    model = make(AE, likelihood="bernoulli")
    x = torch.tensor([[0.0, 1.0, 0.25], [1.0, 1.0, 0.5]])
    out = torch.tensor([[-1.0, 2.0, 0.0], [0.5, -3.0, 1.5]])
    p = torch.sigmoid(out)
    manual = -(x * p.log() + (1 - x) * (1 - p).log()).sum(1)
    energy = model.reconstruction_energy(x, out)
    assert energy.shape == (2,)
    torch.testing.assert_close(energy, manual)
    # by hand for the first row: -log(1 - σ(-1)) - log σ(2) + log 2
    first = math.log(1 + math.e**-1) + math.log(1 + math.e**-2) + math.log(2)
    assert energy[0].item() == pytest.approx(first, rel=1e-6)


def test_gaussian_reconstruction_energy_is_scaled_squared_error():
    """Gaussian energy = Σ_i (x_i - o_i)² / (2σ²) per sample (constants dropped)."""
    model = make(AE, gaussian_std=0.5)
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    out = torch.tensor([[1.5, 2.0, 2.0], [1.0, -1.0, 0.0]])
    energy = model.reconstruction_energy(x, out)
    # row 0: (0.25 + 0 + 1) / (2 * 0.25) = 2.5; row 1: (1 + 1 + 0) / 0.5 = 4
    torch.testing.assert_close(energy, torch.tensor([2.5, 4.0]))


def test_gaussian_kl_matches_closed_form_and_torch_distributions():
    """gaussian_kl(μ, log σ²) = ½ Σ (μ² + σ² - log σ² - 1) = Σ KL(N(μ, σ²) || N(0, 1))."""
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0], [0.5, 0.3]])
    logvar = torch.tensor([[0.0, 0.0], [0.0, math.log(4.0)], [-1.0, 2.0]])
    kl = gaussian_kl(mu, logvar)
    assert kl[0].item() == 0.0  # the prior itself
    # row 1 by hand: ½ (1 + 1 - 0 - 1) + ½ (4 + 4 - log 4 - 1)
    assert kl[1].item() == pytest.approx(0.5 + 0.5 * (7 - math.log(4.0)), rel=1e-6)
    reference = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl, reference)


def per_sample_jacobian_norm(model: CAE, x: torch.Tensor) -> torch.Tensor:
    """||∂f(x_n)/∂x_n||_F² computed one sample at a time with torch.autograd.functional.jacobian."""
    norms = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: model.encode(v.unsqueeze(0)).squeeze(0), xi)
        norms.append(jac.square().sum())
    return torch.stack(norms)


def test_cae_contraction_matches_autograd_jacobian_for_a_deep_encoder():
    """The vectorised penalty equals the per-sample Jacobian norm for an MLP encoder with hidden layers."""
    model = make(CAE, CAEConfig, input_shape=(4,), hidden=(6, 5), code_dim=3, activation="tanh")
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(1))
    penalty = model.contraction(x)
    assert penalty.shape == (7,)
    assert (penalty > 0).all()
    torch.testing.assert_close(penalty, per_sample_jacobian_norm(model, x))


def test_cae_contraction_matches_closed_form_for_a_sigmoid_layer():
    """One sigmoid layer h = σ(Wx + b): ||J||_F² = Σ_j (h_j (1 - h_j))² Σ_i W_ji² (Rifai et al. 2011)."""
    model = make(CAE, CAEConfig, input_shape=(4,), hidden=(), code_dim=3, code_activation="sigmoid")
    (layer,) = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h = torch.sigmoid(layer(x))
        closed_form = ((h * (1 - h)).square() * layer.weight.square().sum(1)).sum(1)
    penalty = model.contraction(x).detach()
    torch.testing.assert_close(penalty, closed_form)
    torch.testing.assert_close(penalty, per_sample_jacobian_norm(model, x))


def test_cae_penalty_trains_the_encoder():
    """The contraction penalty is differentiable: it gives every encoder weight a non-zero gradient."""
    model = make(CAE, CAEConfig, input_shape=(4,), hidden=(6,), code_dim=3)
    model.contraction(torch.randn(8, 4)).mean().backward()
    weights = [p for name, p in model.encoder.named_parameters() if name.endswith("weight")]
    assert len(weights) == 2
    for w in weights:
        assert w.grad is not None and w.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.decoder.parameters())  # the decoder is not involved


def test_top_k_mask_keeps_exactly_the_k_largest_per_row():
    """top_k_mask zeroes all but the k largest entries of each row and leaves those unchanged."""
    z = torch.randn(20, 10, generator=torch.Generator().manual_seed(3))
    for k in (1, 3, 9):
        masked = top_k_mask(z, k)
        assert ((masked != 0).sum(1) == k).all()
        top = z.topk(k, dim=1)
        assert torch.equal(masked.gather(1, top.indices), top.values)
    assert torch.equal(top_k_mask(z, 10), z)


def test_gaussian_corruption_adds_noise_of_the_requested_std():
    """Gaussian corruption: x~ - x has mean ≈ 0 and std ≈ noise_std."""
    torch.manual_seed(0)
    x = torch.rand(200, 50)
    noise = corrupt(x, "gaussian", std=0.3, prob=0.0) - x
    assert abs(noise.mean().item()) < 0.01
    assert noise.std().item() == pytest.approx(0.3, rel=0.03)
    assert torch.equal(corrupt(x, "gaussian", std=0.0, prob=0.0), x)


def test_masking_corruption_zeroes_about_prob_of_the_inputs():
    """Masking corruption sets ≈ prob of the inputs to 0 and leaves the rest untouched."""
    torch.manual_seed(0)
    x = torch.full((200, 50), 0.7)
    noisy = corrupt(x, "masking", std=0.0, prob=0.25)
    zeroed = noisy == 0
    assert zeroed.float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert torch.equal(noisy[~zeroed], x[~zeroed])


def test_salt_and_pepper_corruption_sets_corrupted_inputs_to_0_or_1():
    """Salt and pepper: ≈ prob of the inputs become 0 or 1 (about half each); the others keep their value."""
    torch.manual_seed(0)
    x = torch.full((200, 50), 0.5)
    noisy = corrupt(x, "salt_and_pepper", std=0.0, prob=0.3)
    hit = noisy != 0.5
    assert hit.float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert set(noisy[hit].unique().tolist()) == {0.0, 1.0}
    assert (noisy[hit] == 1).float().mean().item() == pytest.approx(0.5, abs=0.05)


# -------------------------------------------------------------------------------------------- training

TRAINABLE = {
    "ae": {"code_dim": 2},
    "dae": {"code_dim": 2, "noise_std": 0.1},
    "sparse-ae": {"code_dim": 16, "sparsity_weight": 1e-3},
    "k-sparse-ae": {"code_dim": 16, "k": 2},
    "cae": {"code_dim": 2, "contraction_weight": 0.1},
    "vae": {"code_dim": 2},
    "beta-vae": {"code_dim": 2},
}


@pytest.mark.parametrize("model_type", list(TRAINABLE))
def test_training_lowers_the_loss(tmp_path, model_type):
    """Every model, trained 200 steps on two-moons through regae.train, ends with a clearly lower loss."""
    cfg = toy_experiment(tmp_path, {"type": model_type, **TRAINABLE[model_type]})
    run_dir = regae.train(cfg)
    losses = logged(run_dir)
    assert len(losses) == 10
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


def test_conv_architecture_on_8x8_digits(tmp_path):
    """architecture=conv builds for 8x8 digits (one stride-2 down-sampling) and trains a few steps."""
    cfg = build_experiment(
        {
            "model": {"type": "ae", "architecture": "conv", "hidden": [8], "code_dim": 4},
            "data": {"name": "digits", "limit": 200},
            "train": {
                "out_dir": str(tmp_path),
                "name": "conv",
                "max_steps": 5,
                "batch_size": 50,
                "log_every": 5,
                "progress": False,
            },
        }
    )
    run_dir = regae.train(cfg)
    model = Autoencoder.from_pretrained(run_dir / "model")
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and convs[0].stride == (2, 2)
    assert model.encoder.feature_shape == (8, 4, 4)
    x = torch.rand(3, 1, 8, 8)
    assert model.encode(x).shape == (3, 4)
    assert model.reconstruct(x).shape == (3, 1, 8, 8)
    assert math.isfinite(logged(run_dir)[-1])


# ---------------------------------------------------------------------------------------------- energy


def test_energy_is_one_finite_value_per_sample(trained_ae):
    """energy(x) has shape (N,) and is finite, for the AE and the VAE."""
    model, x = trained_ae
    with torch.no_grad():
        e = model.energy(x[:17])
    assert e.shape == (17,) and torch.isfinite(e).all()
    vae = make(VAE, VAEConfig, input_shape=(2,))
    with torch.no_grad():
        e = vae.energy(x[:5])
    assert e.shape == (5,) and torch.isfinite(e).all()


def test_trained_ae_energy_is_low_on_the_data_and_high_far_from_it(trained_ae):
    """A trained bottleneck AE gives its data a much lower energy than points at distance 10."""
    model, x = trained_ae
    angle = torch.linspace(0, 2 * math.pi, 65)[:-1]
    far = 10 * torch.stack([angle.cos(), angle.sin()], 1)
    with torch.no_grad():
        on_data, off_data = model.energy(x).mean().item(), model.energy(far).mean().item()
    assert off_data > 10 * on_data, (on_data, off_data)


def test_regae_train_works_with_a_one_dimensional_code(tmp_path):
    """A valid config with code_dim=1 trains *and* writes its report."""
    cfg = toy_experiment(tmp_path, {"type": "ae", "code_dim": 1}, max_steps=20, log_every=10)
    run_dir = regae.train(cfg)
    assert (run_dir / "report.md").is_file()


# ------------------------------------------------------------------------------------------- save/load


def test_save_and_load_round_trip_gives_identical_outputs(trained_ae, tmp_path):
    """from_pretrained restores the same class, config and outputs as the saved model."""
    model, x = trained_ae
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    for cls in (Autoencoder, AE):
        loaded = cls.from_pretrained(tmp_path / "m")
        assert type(loaded) is AE and loaded.config == model.config and not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
            assert torch.equal(loaded.energy(x), model.energy(x))


def test_truncated_weights_raise_checkpoint_error_naming_the_file(tmp_path):
    """A truncated model.safetensors is refused with a CheckpointError that names it."""
    folder = make(AE).save_pretrained(tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        AE.from_pretrained(folder)


def test_corrupt_config_raises_checkpoint_error_naming_the_file(tmp_path):
    """A config.json that is not JSON is refused with a CheckpointError that names it."""
    folder = make(AE).save_pretrained(tmp_path / "m")
    (folder / "config.json").write_text('{"model_type": "ae", "config": {')
    with pytest.raises(CheckpointError, match="config.json"):
        AE.from_pretrained(folder)


@pytest.mark.parametrize("content", ["[1, 2]", '{"model_type": "ae"}'])
def test_config_json_of_the_wrong_structure_is_a_checkpoint_error(tmp_path, content):
    """A config.json that is JSON but not a model description is refused with a CheckpointError naming it."""
    folder = make(AE).save_pretrained(tmp_path / "m")
    (folder / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match="config.json"):
        AE.from_pretrained(folder)


def test_missing_folder_raises_checkpoint_error(tmp_path):
    """from_pretrained on a folder that does not exist is a CheckpointError, not a FileNotFoundError."""
    with pytest.raises(CheckpointError, match="nope"):
        Autoencoder.from_pretrained(tmp_path / "nope")


def test_loading_a_vae_as_a_dae_is_refused(tmp_path):
    """DAE.from_pretrained on a folder holding a VAE raises CheckpointError naming both types."""
    folder = make(VAE, VAEConfig).save_pretrained(tmp_path / "vae")
    with pytest.raises(CheckpointError, match=r"'vae'.*DAE"):
        DAE.from_pretrained(folder)
    assert isinstance(VAE.from_pretrained(folder), VAE)


# -------------------------------------------------------------------------------------------- sampling


def test_sampling_a_non_generative_model_explains_why():
    """AE.sample raises NotImplementedError saying the model is not generative and what to use instead."""
    with pytest.raises(NotImplementedError, match="not a generative model.*VAE"):
        make(AE).sample(4)
    assert not AE.generative and VAE.generative


def test_vae_samples_have_the_input_shape():
    """VAE.sample(n) returns n decoded prior samples of the input shape; n < 1 is refused."""
    vae = make(VAE, VAEConfig, input_shape=(1, 4, 4), likelihood="bernoulli")
    x = vae.sample(6)
    assert x.shape == (6, 1, 4, 4)
    assert ((x >= 0) & (x <= 1)).all()  # Bernoulli means
    with pytest.raises(ValueError):
        vae.sample(0)


# ------------------------------------------------------------------------------------------- bad input


def test_validate_input_rejects_the_wrong_shape():
    """validate_input accepts (N, *input_shape) and raises DataError naming the expected shape otherwise."""
    model = make(AE)
    x = torch.zeros(4, 3)
    assert model.validate_input(x) is x
    with pytest.raises(DataError, match=r"\(N, 3\)"):
        model.validate_input(torch.zeros(4, 5))
    with pytest.raises(DataError):
        model.validate_input(torch.zeros(4, 3, dtype=torch.long))


@pytest.mark.parametrize(
    "model, field",
    [
        ({"type": "dae", "noise_std": -0.1}, "noise_std"),
        ({"type": "dae", "noise_prob": 1.5}, "noise_prob"),
        ({"type": "k-sparse-ae", "code_dim": 8, "k": 9}, "model.k"),
        ({"type": "vae", "beta": -1.0}, "beta"),
        ({"type": "cae", "contraction_weight": -0.5}, "contraction_weight"),
        ({"type": "sparse-ae", "sparsity_weight": -1.0}, "sparsity_weight"),
        ({"type": "ae", "code_dim": 0}, "code_dim"),
        ({"type": "ae", "gaussian_std": 0.0}, "gaussian_std"),
    ],
)
def test_out_of_range_model_config_values_name_the_field(model, field):
    """An out-of-range hyperparameter is a ConfigError whose message names the field."""
    with pytest.raises(ConfigError, match=field):
        build_experiment({"model": model})


def test_model_config_dataclasses_validate_directly():
    """The config classes validate on construction too, not only through build_experiment."""
    with pytest.raises(ConfigError, match="noise_std"):
        DAEConfig(noise_std=-1.0)
    with pytest.raises(ConfigError, match="noise"):
        DAEConfig(noise="blur")
    with pytest.raises(ConfigError, match="likelihood"):
        AutoencoderConfig(likelihood="poisson")


def test_a_model_needs_input_shape_and_likelihood():
    """Building a model from a config that the data has not completed is a ConfigError."""
    with pytest.raises(ConfigError, match="input_shape"):
        AE(AutoencoderConfig())


def test_model_loss_feeds_the_phase_by_name():
    """forward(batch, phase=name) runs that phase's loss; forward(x) reconstructs."""
    model = make(VAE, VAEConfig)
    x = torch.randn(4, 3)
    (phase,) = model.phases()
    assert phase.name == "elbo"
    loss, logs = model(regae.Batch(x), phase="elbo")
    assert loss.ndim == 0 and set(logs) == {"reconstruction", "kl"}
    assert model(x).shape == (4, 3)
    assert torch.equal(model(x), model.reconstruct(x))
