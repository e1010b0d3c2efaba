"""Adversarial autoencoders and priors: sampling, phases, exactness of the shared work, variants, bad input."""

from __future__ import annotations

import math
import re

import pytest
import torch

from regae.config import build_experiment
from regae.data import load_data
from regae.engine.phase import Batch
from regae.errors import ConfigError, DataError
from regae.models.aae import frozen
from regae.priors import build_prior
from regae.run import build_model, train

# ---------------------------------------------------------------------------------------------- priors


def test_gaussian_prior_std():
    torch.manual_seed(0)
    z = build_prior("gaussian", 4, std=5.0).sample(20000)
    assert z.shape == (20000, 4)
    assert z.std(0).sub(5.0).abs().max() < 0.15


def test_mixture_prior_conditional_samples_lie_in_their_component():
    prior = build_prior("mixture-2d", 2, k=10)
    labels = torch.arange(10).repeat(200)
    z = prior.sample(len(labels), labels)
    angle = torch.atan2(z[:, 1], z[:, 0]) % (2 * math.pi)
    expected = labels.float() * 2 * math.pi / 10
    diff = torch.remainder(angle - expected + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().median() < 0.1  # petals are thin: tangential std 0.05 at radius ~1.4


def test_swiss_roll_labels_follow_the_axis():
    prior = build_prior("swiss-roll", 2, k=10, noise=0.0)
    r = [prior.sample(500, torch.full((500,), k)).norm(dim=1).mean().item() for k in range(10)]
    assert r == sorted(r)  # label k sits further along (outward) the roll than label k-1


@pytest.mark.parametrize("name", ["mixture-2d", "swiss-roll"])
def test_part_of_recovers_the_label_of_conditional_samples(name):
    torch.manual_seed(0)
    prior = build_prior(name, 2, k=10)
    labels = torch.arange(10).repeat(300)
    agree = (prior.part_of(prior.sample(len(labels), labels)) == labels).float().mean()
    assert agree > 0.95  # misses only where parts touch (petals near the origin, ends of roll stretches)
    wrong = (prior.part_of(prior.sample(len(labels), (labels + 3) % 10)) == labels).float().mean()
    assert wrong < 0.05


def test_conditional_aae_reports_the_share_of_codes_outside_their_part():
    m, splits = _model({"type": "aae", "code_dim": 2, "prior": "swiss-roll", "conditional": True})
    val = splits.val
    assert 0 <= m.evaluate(val)["part_error"] <= 100
    torch.manual_seed(0)
    m.encode = lambda x: m.prior.sample(len(x), val.y[: len(x)])  # codes exactly where the prior puts them
    assert m.evaluate(val, batch_size=len(val))["part_error"] < 5
    assert "part_error" not in _model({"type": "aae", "code_dim": 2})[0].evaluate(val)
    # unlabeled rows (y = -1) do not count: their codes are all wrong here, the labeled ones right
    from regae.data.base import ArrayDataset

    y = val.y.clone()
    y[1::2] = -1
    m.encode = (
        lambda x: torch.where(  # labeled rows on their part, unlabeled ones at the far end of the roll
            (y[: len(x)] >= 0)[:, None], m.prior.sample(len(x), val.y[: len(x)]), m.prior.point(torch.ones(len(x)))
        )
    )
    half = ArrayDataset(val.x, y)
    assert m.evaluate(half, batch_size=len(val))["part_error"] < 5
    assert "part_error" not in m.evaluate(ArrayDataset(val.x, torch.full_like(y, -1)), batch_size=len(val))


def test_mixture_component_grid_spans_its_component():
    prior = build_prior("mixture-2d", 2, k=10)
    g = prior.component_grid(3, 10)
    assert g.shape == (100, 2)
    angle = torch.atan2(g[:, 1], g[:, 0]) % (2 * math.pi)
    assert (angle - 3 * 2 * math.pi / 10).abs().max() < 0.15  # stays inside the petal
    r = g.norm(dim=1).reshape(10, 10)[:, 0]
    assert torch.all(r[1:] > r[:-1])  # rows walk outward along the radial axis


def test_categorical_prior_is_one_hot():
    z = build_prior("categorical", 7).sample(100)
    assert torch.equal(z.sum(1), torch.ones(100)) and set(z.unique().tolist()) == {0.0, 1.0}


def test_concrete_prior_matches_torch_and_conditions_exactly():
    """Our top-down Gumbel sampler must give torch's RelaxedOneHotCategorical, and argmax = the label."""
    torch.manual_seed(0)
    prior = build_prior("concrete", 5, temperature=0.5)
    labels = torch.arange(5).repeat(4000)
    ours = prior.sample(len(labels), labels)
    assert torch.allclose(ours.sum(1), torch.ones(len(labels)))
    assert (ours.argmax(1) == labels).all()
    ref = torch.distributions.RelaxedOneHotCategorical(torch.tensor(0.5), logits=torch.zeros(5)).sample((20000,))
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    for a, b in [(ours.max(1).values, ref.max(1).values), (ours.min(1).values.log(), ref.min(1).values.log())]:
        assert (a.quantile(q) - b.quantile(q)).abs().max() < 0.03 * b.abs().quantile(0.9)
    free = prior.sample(20000)  # unconditional: every label about equally often
    assert torch.bincount(free.argmax(1), minlength=5).float().div(20000).sub(0.2).abs().max() < 0.02
    # colder is closer to one-hot
    cold = build_prior("concrete", 5, temperature=0.05).sample(1000)
    assert cold.max(1).values.median() > ours.max(1).values.median()


def test_prior_errors():
    with pytest.raises(ConfigError, match="cannot be sampled conditioned"):
        build_prior("gaussian", 2).sample(3, torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match="labels must lie"):
        build_prior("mixture-2d", 2, k=3).sample(2, torch.tensor([0, 5]))
    with pytest.raises(ConfigError, match="2-D"):
        build_prior("mixture-2d", 3)
    with pytest.raises(ConfigError, match="temperature > 0"):
        build_prior("concrete", 4, temperature=0.0)
    with pytest.raises(ConfigError, match="unknown prior"):
        build_prior("gausian", 2)
    with pytest.raises(ConfigError, match="std"):
        build_prior("gaussian", 2, std=-1.0)


# ---------------------------------------------------------------------------------------------- models


def _cfg(model: dict, data: dict | None = None, **train) -> object:
    return build_experiment(
        {
            "model": {"hidden": [32, 32], "disc_hidden": [32, 32], **model},
            "data": {"name": "digits", **(data or {})},
            "train": {
                "max_steps": 40,
                "epochs": 100,
                "batch_size": 50,
                "progress": False,
                "best_metric": None,
                **train,
            },
        }
    )


def _model(model: dict, data: dict | None = None):
    cfg = _cfg(model, data)
    splits = load_data(cfg.data)
    m = build_model(cfg, splits)
    m.attach_data(splits)
    return m, splits


@pytest.mark.parametrize(
    ("model", "data", "phases"),
    [
        ({"type": "aae", "code_dim": 2}, None, ["reconstruction", "discriminator", "generator"]),
        ({"type": "supervised-aae", "code_dim": 4}, None, ["reconstruction", "discriminator", "generator"]),
        (
            {"type": "semi-supervised-aae"},
            {"labels_per_class": 5},
            ["reconstruction", "discriminator", "generator", "semi_supervised"],
        ),
        ({"type": "clustering-aae"}, None, ["reconstruction", "discriminator", "generator"]),
        (
            {"type": "aae-dim-reduction"},
            {"labels_per_class": 5},
            ["reconstruction", "discriminator", "generator", "semi_supervised"],
        ),
    ],
)
def test_phases_carry_the_papers_names(model, data, phases):
    m, _ = _model(model, data)
    assert [p.name for p in m.phases()] == phases


def test_generator_step_reusing_the_discriminator_codes_is_exact():
    """The generator phase reuses the codes encoded in the discriminator phase; its gradients must equal
    those of a fresh encoder pass (the discriminator step does not touch the encoder)."""
    torch.manual_seed(0)
    m, splits = _model({"type": "semi-supervised-aae", "input_noise_std": 0.0}, {"labels_per_class": 5})
    batch = Batch(splits.train.x[:50], splits.train.y[:50])
    params = m.encoder_parameters()

    torch.manual_seed(1)
    m.discriminator_loss(batch)  # caches the codes with their graph
    assert m._codes is not None
    m.zero_grad()
    m.generator_loss(batch).backward()
    reused = [p.grad.clone() for p in params]

    torch.manual_seed(1)
    m._codes = None  # force a fresh encoder pass (same prior draws are irrelevant: G loss uses codes only)
    m.zero_grad()
    m.generator_loss(batch).backward()
    fresh = [p.grad.clone() for p in params]
    for a, b in zip(reused, fresh):
        torch.testing.assert_close(a, b)


def test_joint_step_matches_a_hand_written_joint_step():
    """regularization=joint: one autoencoder update on recon + λ·(-log D(z)) with D as it was, then a D update
    on the same codes, as pythae's Adversarial_AE does it."""
    torch.manual_seed(0)
    m, splits = _model({"type": "aae", "code_dim": 2, "regularization": "joint", "adversarial_weight": 0.5})
    assert [p.name for p in m.phases()] == ["autoencoder", "discriminator"]
    batch = Batch(splits.train.x[:50])
    loss, logs = m.joint_loss(batch)
    z = m.encode(batch.x)
    logits = m.disc(z)
    want = m.reconstruction_energy(batch.x, m.decode(z)).mean() + 0.5 * torch.nn.functional.softplus(-logits).mean()
    torch.testing.assert_close(loss, want)
    assert set(logs) == {"reconstruction", "adversarial"}
    real, fake = m._joint[1], m._joint[2]
    torch.testing.assert_close(fake[0], z.detach())
    d = m.discriminator_loss(batch)  # uses the cached codes and prior draws, and clears them
    assert m._joint is None and m._codes is None
    lr = m.disc(torch.cat([real[0], fake[0]]))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    want_d = bce(lr[:50], torch.ones_like(lr[:50])) + bce(lr[50:], torch.zeros_like(lr[50:]))
    torch.testing.assert_close(d, want_d)
    with pytest.raises(ConfigError, match="regularization=joint is not available"):
        _model({"type": "semi-supervised-aae", "regularization": "joint"}, {"labels_per_class": 5})[0].phases()


def test_joint_step_reusing_the_discriminators_logits_is_exact():
    """The engine's joint step (the autoencoder phase keeps its graph, each backward goes into its own
    phase's parameters, the discriminator phase reuses D's logits on the codes) gives the weights of a
    naive joint step that runs D three times and computes every gradient, as pythae does."""
    import copy

    torch.manual_seed(0)
    m, splits = _model({"type": "aae", "code_dim": 2, "regularization": "joint", "adversarial_weight": 0.5})
    ref = copy.deepcopy(m)
    phases = m.phases()
    assert phases[0].keep_graph and not phases[1].keep_graph
    opts = [torch.optim.SGD(p.params, lr=0.05, momentum=0.5) for p in phases]
    ref_ae = [p for p in ref.parameters() if all(p is not q for q in ref.disc.parameters())]
    ref_opts = [
        torch.optim.SGD(ref_ae, lr=0.05, momentum=0.5),
        torch.optim.SGD(ref.disc.parameters(), lr=0.05, momentum=0.5),
    ]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for step in range(3):
        batch = Batch(splits.train.x[step * 40 : (step + 1) * 40])
        torch.manual_seed(step)  # the same prior draws on both sides
        for phase, opt in zip(phases, opts):
            opt.zero_grad(set_to_none=True)
            out = phase.loss(batch)
            loss = out[0] if isinstance(out, tuple) else out
            loss.backward(inputs=phase.params, retain_graph=phase.keep_graph)
            opt.step()
        assert m._joint is None
        torch.manual_seed(step)
        z = ref.encode(batch.x)
        real = ref.prior.sample(len(z))
        ae = ref.reconstruction_energy(batch.x, ref.decode(z)).mean()
        logits = ref.disc(z)
        for opt in ref_opts:
            opt.zero_grad(set_to_none=True)
        (ae + 0.5 * bce(logits, torch.ones_like(logits))).backward()  # D's gradients too, then discarded
        ref_opts[0].step()
        ref_opts[1].zero_grad(set_to_none=True)
        lr, lf = ref.disc(real), ref.disc(z.detach())
        (bce(lr, torch.ones_like(lr)) + bce(lf, torch.zeros_like(lf))).backward()
        ref_opts[1].step()
    for (name, a), b in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_encoder_batchnorm_covers_the_output_layers_of_q():
    """A.3: batch norm in the encoder layers "including the last layer of q(y|x) and q(z|x)"."""
    m, _ = _model({"type": "clustering-aae"})
    for head in (m.z_head, m.y_head):
        assert isinstance(head[-1], torch.nn.BatchNorm1d)
    plain, _ = _model({"type": "clustering-aae", "encoder_batchnorm": False})
    assert isinstance(plain.z_head, torch.nn.Linear) and isinstance(plain.y_head, torch.nn.Linear)


def test_clustering_scores_the_paper_protocol_nmi_and_one_to_one_and_many_to_one_errors():
    """A clustering AAE's test metrics: §6's error, NMI, and the Hungarian (one-to-one) and majority-vote
    (many-to-one) errors; many-to-one can only match the data better than one-to-one."""
    m, splits = _model({"type": "clustering-aae", "num_classes": 16, "code_dim": 2})
    m.eval()
    with torch.no_grad():
        metrics = m.evaluate(splits.test)
    assert {"error", "nmi", "hungarian_error", "majority_error"} <= set(metrics)
    assert 0 <= metrics["majority_error"] <= metrics["hungarian_error"] <= 100 and 0 <= metrics["nmi"] <= 1


def test_label_shift_translates_the_labeled_batch(monkeypatch):
    from regae.data.augment import random_shift

    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    y = random_shift(x, 2)
    assert y.shape == x.shape and torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))  # nothing falls off the edge
    rows = y.sum((1, 3)).argmax(1)
    assert set(rows.tolist()) <= {1, 2, 3, 4, 5} and len(set(rows.tolist())) > 1
    assert torch.equal(random_shift(x, 0), x)
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_shift(x.flatten(1), 1)
    with pytest.raises(ConfigError, match="label_shift"):
        _model({"type": "semi-supervised-aae", "label_shift": -1}, {"labels_per_class": 5})
    with pytest.raises(ConfigError, match="label_shift"):
        _cfg({"type": "aae", "label_shift": 1})  # an unsupervised AAE has no labeled batch to shift
    with pytest.raises(ConfigError, match="label_shift needs labels"):
        _model({"type": "clustering-aae", "label_shift": 1})
    with pytest.raises(ConfigError, match="label_shift transforms images"):
        _model({"type": "semi-supervised-aae", "label_shift": 1}, {"name": "two-moons", "labels_per_class": 5})
    m, _ = _model({"type": "semi-supervised-aae", "label_shift": 1}, {"labels_per_class": 5})
    seen = []
    monkeypatch.setattr("regae.models.aae.random_shift", lambda x, s: seen.append(s) or x)
    m.classification_loss(Batch(torch.zeros(10, 1, 8, 8)))
    assert seen == [1]


def test_label_rotation_and_scale_jitter_the_labeled_batch(monkeypatch):
    from regae.data.augment import random_affine

    torch.manual_seed(0)
    x = torch.zeros(200, 1, 28, 28)
    x[:, :, 6:22, 13:15] = 1.0  # a vertical bar through the centre
    assert torch.equal(random_affine(x, 0.0, 0.0), x)
    y = random_affine(x, 90.0, 0.0)
    # rotation keeps the ink (it stays inside the frame) but turns some bars towards horizontal
    assert torch.allclose(y.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.05)  # bilinear resampling: a few %
    width = (y.sum(2) > 0.5).sum((1, 2)).float()  # columns the bar covers
    assert width.min() <= 3 and width.max() >= 10
    z = random_affine(x, 0.0, 0.3)
    mass = z.sum((1, 2, 3)) / x.sum((1, 2, 3))  # zooming by s scales the ink by about s²
    assert 0.45 < mass.min() < 0.8 and 1.2 < mass.max() < 1.9
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_affine(x.flatten(1), 10.0)
    with pytest.raises(ValueError, match="scale"):
        random_affine(x, 0.0, 1.0)
    for bad in ({"label_rotation": -1.0}, {"label_rotation": 181.0}, {"label_scale": 1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            _cfg({"type": "semi-supervised-aae", **bad}, {"labels_per_class": 5})
    with pytest.raises(ConfigError, match="label_rotation needs labels"):
        _model({"type": "clustering-aae", "label_rotation": 10.0})
    with pytest.raises(ConfigError, match="label_scale transforms images"):
        _model({"type": "semi-supervised-aae", "label_scale": 0.1}, {"name": "two-moons", "labels_per_class": 5})
    m, _ = _model(
        {"type": "semi-supervised-aae", "label_rotation": 15.0, "label_scale": 0.1, "label_shift": 2},
        {"labels_per_class": 5},
    )
    seen = []
    monkeypatch.setattr("regae.models.aae.random_affine", lambda x, r, s, **kw: seen.append(("affine", r, s)) or x)
    monkeypatch.setattr("regae.models.aae.random_shift", lambda x, s: seen.append(("shift", s)) or x)
    m.classification_loss(Batch(torch.zeros(10, 1, 8, 8)))
    assert seen == [("affine", 15.0, 0.1), ("shift", 2)]


def test_input_warp_corrupts_the_encoder_input_only_while_training(monkeypatch):
    """model.input_rotation / input_scale / input_elastic warp what the encoder sees while training; the
    decoder's target stays the clean image (a denoising corruption), and evaluation sees clean images."""
    for bad in ({"input_rotation": -1.0}, {"input_scale": 1.0}, {"input_elastic": -2.0}, {"input_elastic_sigma": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            _cfg({"type": "clustering-aae", **bad})
    with pytest.raises(ConfigError, match="warp images"):
        _model({"type": "aae", "code_dim": 2, "input_rotation": 10.0}, {"name": "two-moons"})
    m, splits = _model({"type": "aae", "code_dim": 2, "input_rotation": 20.0, "input_elastic": 3.0})
    x = splits.train.x[:16]
    seen = []

    def warp(x, rotation, scale, **kw):
        seen.append((x, rotation, scale, kw["elastic"]))
        return torch.zeros_like(x)

    monkeypatch.setattr("regae.models.aae.random_affine", warp)
    m.train()
    loss = m.reconstruction_loss(Batch(x))
    assert len(seen) == 1 and seen[0][0] is x and seen[0][1:] == (20.0, 0.0, 3.0)
    with torch.no_grad():
        blank = m.style(m.trunk(torch.zeros(16, x[0].numel())))
        expected = m.reconstruction_energy(x, m.decode(blank)).mean()
    torch.testing.assert_close(loss.detach(), expected)  # encoded from the warped input, scored on x
    m.eval()
    m.encode(x)
    assert len(seen) == 1  # no warp outside training
    from regae.data.augment import random_affine

    monkeypatch.setattr("regae.models.aae.random_affine", random_affine)
    m.train()
    torch.manual_seed(0)
    a = m.encode(x)
    assert not torch.allclose(a, m.encode(x))  # a fresh warp per call


def test_input_stroke_thickens_or_thins_the_encoder_input_only_while_training(monkeypatch):
    """model.input_stroke moves each training image towards its 3×3 dilation or erosion by a random amount
    in [-s, s]; a bar 2 pixels wide becomes up to 4 wide or vanishes, and nothing else is touched."""
    from regae.data.augment import random_stroke_width

    x = torch.zeros(400, 1, 12, 12)
    x[:, :, 2:10, 5:7] = 1.0  # a vertical bar 2 pixels wide
    assert random_stroke_width(x, 0.0) is x
    torch.manual_seed(0)
    y = random_stroke_width(x, 1.0)
    ink = y.sum((1, 2, 3)) / x.sum((1, 2, 3))
    # dilation: 10 rows x 4 columns = 40 pixels against 16 (2.5x); erosion of a 2-wide bar leaves nothing
    assert ink.min() < 0.1 and ink.max() > 2.3 and bool(((ink > 1.05) & (ink < 2.45)).any())
    assert y.min() >= 0 and y.max() <= 1  # the range of x
    far = torch.ones_like(x, dtype=torch.bool)
    far[:, :, 1:11, 4:8] = False
    assert torch.equal(y[far], x[far])  # only the bar's 3x3 neighbourhood changes
    half = random_stroke_width(x, 0.5)
    assert (half.sum((1, 2, 3)) / x.sum((1, 2, 3))).max() <= 1.75 + 1e-6  # at most half of the dilation
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_stroke_width(x.flatten(1), 0.5)
    with pytest.raises(ValueError, match="strength"):
        random_stroke_width(x, 1.5)
    for bad in (-0.1, 1.1):
        with pytest.raises(ConfigError, match="input_stroke"):
            _cfg({"type": "clustering-aae", "input_stroke": bad})
    with pytest.raises(ConfigError, match="warp images"):
        _model({"type": "aae", "code_dim": 2, "input_stroke": 0.5}, {"name": "two-moons"})
    m, splits = _model({"type": "aae", "code_dim": 2, "input_stroke": 0.7})
    seen = []
    monkeypatch.setattr(
        "regae.models.aae.random_stroke_width", lambda x, s: seen.append(s) or random_stroke_width(x, s)
    )
    m.train()
    m.reconstruction_loss(Batch(splits.train.x[:16]))
    assert seen == [0.7]
    m.eval()
    m.encode(splits.train.x[:16])
    assert seen == [0.7]  # no corruption outside training


def test_elastic_blur_by_banded_matrices_equals_two_zero_padded_convolutions():
    """The elastic field's Gaussian blur (B_h @ field @ B_w) is the separable blur it replaced: a 1-D
    convolution along the rows, then the columns, zero-padded, the kernel truncated at 3σ."""
    import torch.nn.functional as F

    from regae.data.augment import _gaussian_band

    for sigma, (h, w) in ((4.0, (28, 28)), (1.5, (9, 13)), (0.2, (5, 7))):
        field = torch.randn(6, 1, h, w)
        radius = max(1, int(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        ref = F.conv2d(field, k.view(1, 1, 1, -1), padding=(0, radius))
        ref = F.conv2d(ref, k.view(1, 1, -1, 1), padding=(radius, 0))
        band = _gaussian_band(h, sigma, field) @ field[:, 0] @ _gaussian_band(w, sigma, field)
        torch.testing.assert_close(band, ref[:, 0], rtol=1e-5, atol=1e-6)


def test_label_elastic_distorts_the_labeled_batch_locally(monkeypatch):
    from regae.data.augment import random_affine

    x = torch.zeros(100, 1, 28, 28)
    x[:, :, 6:22, 13:15] = 1.0  # a vertical bar through the centre
    torch.manual_seed(0)
    y = random_affine(x, 0.0, 0.0, elastic=34.0, elastic_sigma=4.0)
    # the bar bends: about half its ink leaves its two columns in a typical image; stretches and squeezes
    # change the ink of single images, but not of the batch as a whole
    kept = y[..., 13:15].sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert 0.2 < kept.median() < 0.8
    assert 0.85 < y.sum() / x.sum() < 1.15
    # each image gets its own field, and a smaller alpha moves less
    assert not torch.allclose(y[0], y[1])
    torch.manual_seed(0)
    small = random_affine(x, 0.0, 0.0, elastic=3.0, elastic_sigma=4.0)
    assert (small - x).abs().sum() < (y - x).abs().sum() / 3
    # elastic=0 leaves the affine part's random stream as it was
    torch.manual_seed(1)
    a = random_affine(x, 20.0, 0.1)
    torch.manual_seed(1)
    assert torch.equal(random_affine(x, 20.0, 0.1, elastic=0.0), a)
    with pytest.raises(ValueError, match="elastic must be >= 0"):
        random_affine(x, 0.0, 0.0, elastic=-1.0)
    with pytest.raises(ValueError, match="elastic_sigma"):
        random_affine(x, 0.0, 0.0, elastic=5.0, elastic_sigma=0.0)
    for bad in ({"label_elastic": -1.0}, {"label_elastic_sigma": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            _cfg({"type": "semi-supervised-aae", **bad}, {"labels_per_class": 5})
    with pytest.raises(ConfigError, match="label_elastic needs labels"):
        _model({"type": "clustering-aae", "label_elastic": 10.0})
    m, _ = _model(
        {"type": "semi-supervised-aae", "label_elastic": 20.0, "label_elastic_sigma": 3.0}, {"labels_per_class": 5}
    )
    seen = []
    monkeypatch.setattr("regae.models.aae.random_affine", lambda x, r, s, **kw: seen.append((r, s, kw)) or x)
    m.classification_loss(Batch(torch.zeros(10, 1, 8, 8)))
    assert seen == [(0.0, 0.0, {"elastic": 20.0, "elastic_sigma": 3.0})]


def test_label_elastic_warms_up_on_its_schedule(tmp_path, monkeypatch):
    """``train.schedules.label_elastic`` ramps α of the labeled batch's elastic distortion (a warm-up);
    clustering, with no labeled batch, refuses the schedule."""
    from regae.data.augment import random_affine as real
    from regae.engine import Trainer

    seen = []
    monkeypatch.setattr(
        "regae.models.aae.random_affine", lambda x, r, s, **kw: seen.append(kw["elastic"]) or real(x, r, s, **kw)
    )
    schedule = {"label_elastic": {"start": 0.0, "end": 30.0, "steps": 10}}
    model = {"type": "semi-supervised-aae", "label_rotation": 10.0}
    cfg = _cfg(model, {"labels_per_class": 5}, max_steps=15, schedules=schedule, out_dir=str(tmp_path))
    splits = load_data(cfg.data)
    m = Trainer(cfg, tmp_path / "run").fit(build_model(cfg, splits), splits)
    assert seen[:3] == pytest.approx([0.0, 3.0, 6.0]) and seen[-1] == pytest.approx(30.0) and len(seen) == 15
    assert m.label_elastic == pytest.approx(30.0)
    with pytest.raises(ConfigError, match="label_elastic must be >= 0"):
        m.label_elastic = -1.0
    cfg = _cfg({"type": "clustering-aae", "num_classes": 4}, max_steps=2, schedules=schedule)
    splits = load_data(cfg.data)
    with pytest.raises(ConfigError, match="no schedulable hyperparameter 'label_elastic'"):
        Trainer(cfg, tmp_path / "cluster").fit(build_model(cfg, splits), splits)
    unsup = build_model(_cfg({"type": "aae-dim-reduction", "use_labels": False, "num_classes": 4}), splits)
    with pytest.raises(ConfigError, match="label_elastic needs labels"):
        unsup.label_elastic = 5.0


def test_category_temperature_relaxes_the_adversarys_one_hots_only():
    torch.manual_seed(0)
    m, splits = _model({"type": "semi-supervised-aae", "category_temperature": 0.5}, {"labels_per_class": 5})
    real, fake = m.adversarial_codes(Batch(splits.train.x[:200]))
    top = real[0].max(1).values
    assert torch.allclose(real[0].sum(1), torch.ones(200))
    # near a vertex, not at it (a single sample may round to 1.0 in float32, the median may not)
    assert 0.5 < top.median() < 0.95
    exact, _ = _model({"type": "semi-supervised-aae"}, {"labels_per_class": 5})
    assert torch.equal(exact.adversarial_codes(Batch(splits.train.x[:20]))[0][0].max(1).values, torch.ones(20))
    assert m.categorical.sample(3, torch.tensor([0, 1, 2])).max(1).values.eq(1).all()  # generation: one-hots
    with pytest.raises(ConfigError, match="category_temperature"):
        _cfg({"type": "semi-supervised-aae", "category_temperature": -0.1}, {"labels_per_class": 5})


def _added_by_generator_phase(m, batch: Batch, key: str):
    """(the generator phase's loss minus the same loss with model.<key> = 0, the encoded codes of that
    pass); the RNG is left as that pass left it, so a penalty computed next draws what the phase drew."""
    value = getattr(m.config, key)
    torch.manual_seed(1)
    with_term = m.generator_loss(batch)
    setattr(m.config, key, 0.0)
    torch.manual_seed(1)
    without = m.generator_loss(batch)
    setattr(m.config, key, value)
    torch.manual_seed(1)
    return with_term - without, m.adversarial_codes(batch)[1]


def test_cluster_balance_adds_the_kl_of_the_batch_cluster_usage_to_uniform():
    torch.manual_seed(0)
    m, splits = _model({"type": "clustering-aae", "num_classes": 4, "cluster_balance": 2.0})
    uniform = torch.full((6, 4), 0.25)
    torch.testing.assert_close(m.generator_penalty(None, [uniform]), torch.tensor(0.0))
    # each row confident, but the batch uses only clusters 0 and 1: KL((½, ½, 0, 0) || U(4)) = log 2
    two = torch.eye(4)[torch.tensor([0, 1, 0, 1, 0, 1])]
    torch.testing.assert_close(m.generator_penalty(None, [two]), torch.tensor(2.0 * math.log(2)))

    # the generator phase adds exactly this term, on the batch's encoded q(y|x)
    added, fake = _added_by_generator_phase(m, Batch(splits.train.x[:50]), "cluster_balance")
    q_bar = fake[0].mean(0)
    expected = 2.0 * (q_bar * (4 * q_bar).log()).sum()
    torch.testing.assert_close(added, expected, rtol=1e-4, atol=1e-6)
    assert expected > 0
    with pytest.raises(ConfigError, match="cluster_balance"):
        _cfg({"type": "clustering-aae", "cluster_balance": -1.0})


def test_cluster_consistency_adds_the_kl_between_two_corruptions_of_each_image():
    torch.manual_seed(0)
    cfg = {"type": "clustering-aae", "num_classes": 4, "cluster_consistency": 3.0, "input_rotation": 15.0}
    m, splits = _model(cfg)
    m.train()
    batch = Batch(splits.train.x[:50])
    q1 = m.adversarial_codes(batch)[1][0]
    # λ·KL(q(y|x') || q(y|x'')), x'' a fresh warp and dropout of each image
    torch.manual_seed(2)
    same = m.generator_penalty(batch, [q1])
    torch.manual_seed(2)
    q2 = m.encode_parts(batch.x)[0].softmax(1)
    torch.testing.assert_close(same, 3.0 * (q1 * (q1 / q2).log()).sum(1).mean(), rtol=1e-4, atol=1e-6)
    assert same > 0  # two warps and dropouts of an image disagree a little at initialisation

    # the gradient reaches q(y|x'') only: the target view is held fixed
    q1 = q1.detach().requires_grad_(True)
    m.generator_penalty(batch, [q1]).backward()
    assert q1.grad is None or q1.grad.abs().sum() == 0
    assert m.y_head[0].weight.grad.abs().sum() > 0

    # and the generator phase adds exactly this term
    added, fake = _added_by_generator_phase(m, batch, "cluster_consistency")
    torch.testing.assert_close(added, m.generator_penalty(batch, fake), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="cluster_consistency"):
        _cfg({"type": "clustering-aae", "cluster_consistency": -1.0})
    with pytest.raises(ConfigError, match="nothing corrupts the input"):  # both views would be x: KL = 0
        _cfg({"type": "clustering-aae", "cluster_consistency": 0.3, "input_dropout": 0.0})
    _cfg({"type": "clustering-aae", "cluster_consistency": 0.3, "input_dropout": 0.2})  # dropout alone will do


def test_frozen_discriminator_passes_gradient_to_its_input_only():
    m, _ = _model({"type": "aae", "code_dim": 2})
    z = torch.randn(8, 2, requires_grad=True)
    with frozen(m.disc):
        m.disc(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.disc.parameters())
    assert all(p.requires_grad for p in m.disc.parameters())  # restored


def test_conditional_adversary_sees_label_or_unlabeled_class():
    m, splits = _model(
        {"type": "aae", "code_dim": 2, "prior": "mixture-2d", "conditional": True}, {"labels_per_class": 5}
    )
    y = splits.train.y[:40]
    real, fake = m.adversarial_codes(Batch(splits.train.x[:40], y))
    onehot = fake[0][:, 2:]
    assert onehot.shape[1] == 11  # 10 components + "unlabeled"
    assert torch.equal(onehot.argmax(1), torch.where(y >= 0, y, 10))
    assert torch.equal(real[0][:, 2:], onehot)


def test_dim_reduction_head_cost_pushes_close_heads_apart():
    m, _ = _model({"type": "aae-dim-reduction", "head_distance": 5.0}, {"labels_per_class": 5})
    with torch.no_grad():
        m.heads.zero_()
        m.heads[0, 0] = 1.0  # head 0 at distance 1 of the other nine (which coincide at the origin)
    # 9 pairs at distance 1 (cost 4 each) + 36 pairs at distance 0 (cost 5 each)
    assert m.head_cost().item() == pytest.approx(9 * 4 + 36 * 5)
    fixed, _ = _model({"type": "aae-dim-reduction", "code_dim": 10, "fixed_heads_scale": 10.0}, {"labels_per_class": 5})
    assert torch.equal(fixed.heads, 10 * torch.eye(10)) and "heads" not in dict(fixed.named_parameters())


@pytest.mark.parametrize(
    "model",
    [
        {"type": "aae", "code_dim": 2, "encoder": "universal"},
        {"type": "aae", "code_dim": 4, "encoder": "gaussian", "prior_args": {"std": 2.0}},
        {"type": "aae", "code_dim": 2, "prior": "swiss-roll", "conditional": True},
        {"type": "aae", "code_dim": 2, "prior": "mixture-2d", "conditional": True, "regularization": "joint"},
        {"type": "supervised-aae", "code_dim": 4},
        {"type": "clustering-aae", "encoder_batchnorm": True, "input_dropout": 0.2},
        {"type": "aae-dim-reduction", "use_labels": False, "num_classes": 6},
    ],
)
def test_variants_train_and_write_reports(tmp_path, model):
    cfg = _cfg(
        model,
        {"labels_per_class": 5} if model.get("conditional") else None,
        out_dir=str(tmp_path),
        name="run",
        log_every=10,
    )
    run = train(cfg)
    assert (run / "report.md").is_file() and (run / "model" / "model.safetensors").is_file()
    assert len(list((run / "figures").glob("*.png"))) >= 2
    report = (run / "report.md").read_text()
    unsupervised = model["type"] == "clustering-aae" or model.get("use_labels") is False
    assert ("## Clusters" in report) == unsupervised  # the per-cluster table, only without training labels
    if unsupervised:
        k = cfg.model.num_classes
        rows = [line for line in report.splitlines() if line.startswith("| ") and line[2].isdigit()]
        assert [int(r.split("|")[1]) for r in rows] == list(range(k))  # every cluster, empty ones too
        assert "§6 label" in report and re.search(rf"of {k} clusters takes? a §6 label", report)
    if model.get("conditional"):  # fig. 4b (mixture) / 4d (roll)
        want = ["component_0.png", "component_2.png"] if model["prior"] == "mixture-2d" else ["roll_walk.png"]
        assert all((run / "figures" / f).is_file() for f in want)


def test_semi_supervised_aae_learns_from_few_labels(tmp_path):
    """10 labels per class of the 8x8 digits: well above chance (90 % error) after a short run."""
    cfg = _cfg(
        {"type": "semi-supervised-aae", "hidden": [128, 128], "disc_hidden": [64, 64], "input_noise_std": 0.2},
        {"labels_per_class": 10},
        out_dir=str(tmp_path),
        name="semi",
        max_steps=400,
        optim={"name": "adam", "lr": 1e-3},
    )
    import json

    info = json.loads((train(cfg) / "run.json").read_text())
    assert info["test"]["test/error"] < 45.0


def test_bad_input_is_named():
    with pytest.raises(DataError, match="labeled training samples"):
        _model({"type": "semi-supervised-aae"}, {"name": "swiss-roll", "n_samples": 200})[0].phases()
    with pytest.raises(ConfigError, match="prior with components"):
        _model({"type": "aae", "code_dim": 2, "conditional": True})
    with pytest.raises(ConfigError, match="num_classes must be >= 2"):
        _model({"type": "clustering-aae", "num_classes": 1})
    with pytest.raises(DataError, match=r"labels must lie in \[-1, 5\)"):
        _model({"type": "semi-supervised-aae", "num_classes": 5}, {"labels_per_class": 5})
    with pytest.raises(ConfigError, match="prior dim|2-D"):
        _model({"type": "aae", "code_dim": 3, "prior": "mixture-2d"})
    with pytest.raises(ConfigError, match="fixed_heads_scale"):
        _model({"type": "aae-dim-reduction", "code_dim": 2, "fixed_heads_scale": 10.0})
    m, splits = _model({"type": "supervised-aae", "code_dim": 4})
    with pytest.raises(DataError, match="label in"):
        m.latent(Batch(splits.train.x[:4], None))


@pytest.mark.parametrize("regularization", ["alternating", "joint"])
def test_compiled_aae_trains(tmp_path, regularization):
    """train.compile=true traces the phases; the cross-phase reuse of the encoder's graph must step aside
    (a compiled phase is one autograd node, freed by the discriminator's backward)."""
    from regae.engine import Trainer

    cfg = _cfg({"type": "aae", "code_dim": 2, "regularization": regularization}, max_steps=3, compile=True)
    splits = load_data(cfg.data)
    torch.manual_seed(0)
    m = build_model(cfg, splits)
    before = [p.detach().clone() for p in m.encoder_parameters()]
    Trainer(cfg, tmp_path).fit(m, splits)
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, m.encoder_parameters()))
    assert getattr(m, "_codes", None) is None  # nothing was cached for the generator step


def test_swiss_roll_width_follows_its_schedule(tmp_path):
    """``train.schedules.prior_noise`` narrows the swiss roll during training; other priors refuse it."""
    from regae.engine import Trainer

    schedule = {"prior_noise": {"start": 0.5, "end": 0.1, "steps": 10}}
    roll = {"type": "aae", "code_dim": 2, "prior": "swiss-roll", "conditional": True}
    for model, steps in ((roll, 5), (roll, 20)):
        cfg = _cfg(model, max_steps=steps, schedules=schedule, out_dir=str(tmp_path), overwrite=True)
        splits = load_data(cfg.data)
        m = Trainer(cfg, tmp_path / f"run{steps}").fit(build_model(cfg, splits), splits)
        assert m.prior.noise == pytest.approx(0.5 - 0.4 * min(steps - 1, 10) / 10, abs=1e-6), steps
        # a reloaded model samples the prior it ended with, not the config's starting width
        reloaded = type(m).from_pretrained(m.save_pretrained(tmp_path / f"model{steps}"))
        assert reloaded.prior.noise == m.prior.noise
    cfg = _cfg({"type": "aae", "code_dim": 2}, schedules=schedule, out_dir=str(tmp_path))
    splits = load_data(cfg.data)
    with pytest.raises(ConfigError, match="prior_noise needs a prior with a width"):
        Trainer(cfg, tmp_path / "gauss").fit(build_model(cfg, splits), splits)


def test_category_temperature_follows_its_schedule(tmp_path):
    """``train.schedules.category_temperature`` anneals the categorical adversary's positives from soft to
    exact one-hots (τ = 0 swaps the Concrete prior back for the categorical one)."""
    from regae.engine import Trainer
    from regae.priors import CategoricalPrior, ConcretePrior

    schedule = {"category_temperature": {"start": 1.0, "end": 0.0, "steps": 10}}
    for steps, tau in ((5, 0.6), (20, 0.0)):
        cfg = _cfg({"type": "clustering-aae", "num_classes": 4}, max_steps=steps, schedules=schedule)
        splits = load_data(cfg.data)
        m = Trainer(cfg, tmp_path / f"run{steps}").fit(build_model(cfg, splits), splits)
        assert m.category_temperature == pytest.approx(tau)
        assert type(m.category_prior) is (ConcretePrior if tau else CategoricalPrior)
    with pytest.raises(ConfigError, match="category_temperature must be >= 0"):
        m.category_temperature = -0.1
