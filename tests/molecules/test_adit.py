"""ADiT: parameter counts as measured in the fact sheet, masking, adaLN-Zero, flow matching on known targets."""

from __future__ import annotations

import math

import pytest
import torch

from sciformer import models
from sciformer.models.adit import flow


def _count(name, **kw):
    with torch.device("meta"):
        m = models.get(name, **kw)
    return m, sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,millions", [("adit-vae", 51.09), ("adit-dit-s", 32.56), ("adit-dit-b", 129.71),
                                           ("adit-dit-l", 457.03)])
def test_param_counts_match_fact_sheet(name, millions):
    _, n = _count(name)
    assert round(n / 1e6, 2) == millions


def test_vae_encoder_decoder_split():
    m, _ = _count("adit-vae")
    enc = sum(p.numel() for p in m.encoder.parameters())
    dec = sum(p.numel() for p in m.decoder.parameters())
    assert (round(enc / 1e6, 2), round(dec / 1e6, 2)) == (25.81, 25.28) or (round(enc / 1e6, 1), round(dec / 1e6, 2)) == (25.8, 25.28)


def test_property_conditioning_adds_parameters_only_when_asked():
    _, base = _count("adit-dit-s")
    _, cond = _count("adit-dit-s", num_properties=2)
    assert cond - base == (4 * 384 + 384) + (384 * 384 + 384)


def test_padding_does_not_change_valid_tokens():
    torch.manual_seed(0)
    vae = models.get("adit-vae-tiny").eval()
    dit = models.get("adit-dit-tiny", num_properties=1).eval()
    for p in dit.parameters():  # leave adaLN-Zero so the output is not identically zero
        torch.nn.init.normal_(p, std=0.05)
    types = torch.tensor([[6, 8, 1, 1]])
    pos, frac = torch.randn(1, 4, 3), torch.zeros(1, 4, 3)
    mask = torch.ones(1, 4, dtype=torch.bool)
    pad = lambda x, v=0: torch.cat([x, torch.full((1, 3, *x.shape[2:]), v, dtype=x.dtype)], 1)  # noqa: E731
    mean, _ = vae.encode(types, pos, frac, mask)
    mean_p, _ = vae.encode(pad(types, 5), pad(pos, 7.0), pad(frac), pad(mask, False))
    assert torch.allclose(mean, mean_p[:, :4], atol=1e-5)
    t = torch.tensor([0.3])
    args = dict(dataset_idx=torch.tensor([1]), properties=torch.tensor([[0.5]]), property_mask=torch.tensor([[True]]))
    y = dit(mean, t, mask, **args)
    y_p = dit(pad(mean, 3.0), t, pad(mask, False), **args)
    assert torch.allclose(y, y_p[:, :4], atol=1e-5) and (y_p[:, 4:] == 0).all()
    assert not torch.allclose(y, dit(mean, t, mask, **args, null=True))  # labels change the prediction


def test_adaln_zero_starts_at_zero_output():
    dit = models.get("adit-dit-tiny")
    x = torch.randn(2, 5, 8)
    assert (dit(x, torch.rand(2), torch.ones(2, 5, dtype=torch.bool)) == 0).all()


def _gaussian_predictor(mu, sigma):
    """Exact E[x1 | x_t] for x1 ~ N(mu, sigma²), x0 ~ N(0, 1), x_t = (1−t)x0 + t·x1."""
    def fn(x, t, sc):
        t = t.view(-1, 1, 1)
        return mu + t * sigma**2 / ((1 - t) ** 2 + t**2 * sigma**2) * (x - t * mu)
    return fn


def _two_point_predictor(x, t, sc):
    t = t.view(-1, 1, 1)
    return torch.tanh(x * t / (1 - t) ** 2)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_sampler_transports_gaussian_exactly(method):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20000, 1, 1, generator=g, dtype=torch.float64)
    x1 = flow.sample(_gaussian_predictor(2.0, 0.5), x0, steps=200, t0=0.0, method=method, self_condition=False)
    assert abs(x1.mean().item() - 2.0) < 0.02 and abs(x1.std().item() - 0.5) < 0.02


def test_heun_beats_euler_with_few_steps():
    x0 = torch.linspace(-3, 3, 101, dtype=torch.float64).view(-1, 1, 1)
    exact = flow.sample(_gaussian_predictor(1.0, 0.3), x0, steps=2000, t0=0.0, self_condition=False)
    err = {m: (flow.sample(_gaussian_predictor(1.0, 0.3), x0, steps=8, t0=0.0, method=m, self_condition=False) - exact).abs().max()
           for m in ("euler", "heun")}
    assert err["heun"] < 0.5 * err["euler"]  # the last step (to t = 1) is Euler in both


def test_sampler_two_point_target():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4000, 1, 1, generator=g, dtype=torch.float64)
    x1 = flow.sample(_two_point_predictor, x0, steps=100, t0=0.0, self_condition=False)
    assert torch.allclose(x1.abs(), torch.ones_like(x1), atol=1e-3)
    assert abs((x1 > 0).double().mean().item() - 0.5) < 0.03
    assert torch.equal(x1 > 0, x0 > 0)  # the ODE flow never crosses the symmetric midpoint


def test_guidance_and_loss():
    fn = lambda x, t, sc, null: x * (0.0 if null else 1.0) + 1.0  # noqa: E731
    x = torch.ones(1, 2, 1)
    assert torch.allclose(flow.guided(fn, 1.0)(x, torch.zeros(1), None), x + 1)
    assert torch.allclose(flow.guided(fn, 3.0)(x, torch.zeros(1), None), 1 + 3 * x)
    mask = torch.tensor([[True, False]])
    x1 = torch.tensor([[[1.0], [100.0]]])
    assert flow.loss(torch.zeros_like(x1), x1, torch.tensor([0.5]), mask).item() == pytest.approx(4.0)
    noise = flow.centred_noise((3, 4, 2), torch.tensor([[1, 1, 1, 0]] * 3, dtype=torch.bool))
    assert torch.allclose(noise[:, :3].mean(1), torch.zeros(3, 2), atol=1e-6) and (noise[:, 3] == 0).all()


def test_autoencoder_overfits_one_batch():
    torch.manual_seed(0)
    from torch_geometric.data import Batch

    from sciformer.data.atoms import to_pyg
    from sciformer.tasks.generative import AutoencoderTask

    rng = torch.Generator().manual_seed(0)
    systems = [{"atomic_numbers": [6, 8, 1, 1], "positions": torch.randn(4, 3, generator=rng).numpy(),
                "cell": torch.zeros(3, 3).numpy(), "pbc": [False] * 3, "properties": {}},
               {"atomic_numbers": [11, 17], "positions": [[0, 0, 0], [2.0, 2.0, 2.0]],
                "cell": (torch.eye(3) * 4).numpy(), "pbc": [True] * 3, "properties": {}}]
    batch = Batch.from_data_list([to_pyg(s, 1 if k == 0 else 0) for k, s in enumerate(systems)])
    task = AutoencoderTask(model="adit-vae-tiny", augment=False, lr=1e-3)
    task.log = lambda *a, **k: None
    opt = torch.optim.Adam(task.parameters(), lr=2e-3)
    first = None
    for _ in range(60):
        loss = task.step(batch, "val")
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first and math.isfinite(loss.item())


def test_sampling_decodes_latents_in_training_units():
    """Regression guard for the classic LDM bugs (latent scale, time direction, padding): with a denoiser that
    always predicts the scaled latent of real molecules (the training target x₁ = z / latent_std), the sampler
    must return exactly that x₁ and decoding must equal decoding the encoder's z; padded tokens never become
    atoms."""
    from dataclasses import asdict

    from sciformer.tasks.generative import LatentFlowTask

    torch.manual_seed(0)
    ae = models.get("adit-vae-tiny")
    task = LatentFlowTask(autoencoder_spec={"class": "adit-vae-tiny", "config": asdict(ae.config)},
                          model="adit-dit-tiny")
    task.autoencoder.load_state_dict(ae.state_dict())
    task.latent_std.fill_(3.0)
    counts = torch.tensor([5, 3])
    mask = torch.arange(5)[None] < counts[:, None]
    z = torch.randn(2, 5, ae.config.latent_dim) * mask[..., None]
    target = z / task.latent_std

    class Oracle(torch.nn.Module):
        config = task.model.config

        def forward(self, x_t, t, mask, sc=None, **kw):
            return target.clone()

    task.model = Oracle()
    x1, m = task.sample_latents(counts, "molecule", steps=7, cfg_scale=2.0)
    assert torch.equal(m, mask) and torch.allclose(x1, target, atol=1e-5)
    items = task.decode_latents(x1, m, "molecule")
    ref = ae.eval().decode(z, mask)
    assert [len(it["atomic_numbers"]) for it in items] == [5, 3]
    assert torch.allclose(torch.as_tensor(items[1]["positions"]), ref["pos"][1, :3] * 10, atol=1e-4)


def test_decoder_finetune_keeps_encoder_and_noises_only_training():
    """Decoder fine-tuning (latent_noise, freeze_encoder): one step moves the decoder only, so the latent space an
    LDM was trained on is unchanged; validation decodes the clean mean (deterministic), training a noisy latent."""
    from torch_geometric.data import Batch

    from sciformer.data.atoms import to_pyg
    from sciformer.tasks.generative import AutoencoderTask

    torch.manual_seed(0)
    mol = {"atomic_numbers": [6, 8, 1, 1], "positions": [[0, 0, 0], [1.2, 0, 0], [-0.5, 0.9, 0], [-0.5, -0.9, 0]],
           "cell": torch.zeros(3, 3).numpy(), "pbc": [False] * 3, "properties": {}}
    batch = Batch.from_data_list([to_pyg(mol, 1)] * 2)
    task = AutoencoderTask(model="adit-vae-tiny", augment=False, freeze_encoder=True, latent_noise=0.5)
    task.log = lambda *a, **k: None
    enc = {k: v.clone() for k, v in task.model.encoder.state_dict().items()}
    dec = {k: v.clone() for k, v in task.model.decoder.state_dict().items()}
    opt = torch.optim.Adam([p for g in task.param_groups() for p in g["params"]], lr=1e-2)
    task.step(batch, "train").backward()
    opt.step()
    assert all(torch.equal(v, task.model.encoder.state_dict()[k]) for k, v in enc.items())
    assert not all(torch.equal(v, task.model.decoder.state_dict()[k]) for k, v in dec.items())
    with torch.no_grad():
        assert task.step(batch, "val").item() == task.step(batch, "val").item()
        assert task.step(batch, "train").item() != task.step(batch, "train").item()
