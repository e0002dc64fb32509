"""Generative tasks for ADiT: the all-atom autoencoder (stage 1) and latent flow matching (stage 2), plus
``sciformer sample``.

Batches are PyG batches from ``sciformer.data.atoms.AtomsDataModule`` (molecules and crystals mixed). Each
system is one set of atom tokens; ``dataset_idx`` 0 = crystal, 1 = molecule (ADiT's convention).

Stage 1 losses (ADiT's per-domain weights): cross-entropy of atom types (1, 1); positions in nm, centred
(molecules 10, crystals 0); fractional coordinates (crystals 10); lattice lengths / N^(1/3) (crystals 1) and
angles in radians (crystals 10); KL 1e-5. Training augmentation: random rotations (both domains) and random
periodic translations (crystals).

Stage 2 trains a DiT on the frozen autoencoder's posterior samples (scaled to unit variance by a constant
measured once on the training data and stored in the checkpoint), with self-conditioning on half the steps
and label dropout for classifier-free guidance; labels are the domain and, optionally, the data set's
properties (property conditioning). The LDM checkpoint contains the autoencoder, so sampling needs only it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sciformer import checkpoints, models
from sciformer.data.atoms import DOMAINS, params_to_cell
from sciformer.errors import CheckpointError
from sciformer.models.adit import flow
from sciformer.tasks.base import BaseTask

CRYSTAL, MOLECULE = DOMAINS["crystal"], DOMAINS["molecule"]


def random_rotations(n: int, device=None, generator=None) -> torch.Tensor:
    """Uniform random rotation matrices [n, 3, 3] (QR of Gaussian matrices, det +1)."""
    a = torch.randn(n, 3, 3, generator=generator).to(device)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.det(q)
    q[:, :, 0] *= det[:, None]
    return q


def dense(batch, augment: bool = False) -> dict[str, torch.Tensor]:
    """PyG batch → dense tensors: types [B, N], pos (nm, molecules centred) [B, N, 3], frac [B, N, 3], mask,
    domain [B], lattice target [B, 6] (lengths / N^(1/3), angles in rad), cell [B, 3, 3]."""
    from torch_geometric.utils import to_dense_batch

    b = batch.batch
    types, mask = to_dense_batch(batch.atomic_numbers, b)
    frac, _ = to_dense_batch(batch.frac_coords, b)
    pos, _ = to_dense_batch(batch.pos, b)
    domain = batch.dataset_idx.view(-1)
    cell = batch.cell.view(-1, 3, 3).clone()
    n_atoms = mask.sum(1).to(pos.dtype)
    crystal = domain == CRYSTAL
    m = mask[..., None].to(pos.dtype)
    if augment:
        B = types.shape[0]
        shift = torch.rand(B, 1, 3, device=pos.device) * crystal.view(-1, 1, 1)
        frac = torch.where(crystal.view(-1, 1, 1), (frac + shift) % 1.0, frac) * m
        rot = random_rotations(B, pos.device)
        cell = cell @ rot  # rows are lattice vectors: rotate each
        pos_cryst = frac @ cell
        pos = torch.where(crystal.view(-1, 1, 1), pos_cryst, pos) @ torch.where(
            crystal.view(-1, 1, 1), torch.eye(3, device=pos.device).expand(B, 3, 3), rot)
    centre = (pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
    pos = torch.where(crystal.view(-1, 1, 1), pos, pos - centre) * m
    lattice = torch.cat([batch.lengths.view(-1, 3) / n_atoms[:, None] ** (1 / 3), batch.angles.view(-1, 3)], -1)
    return {"types": types, "pos_nm": pos / 10.0, "frac": frac * m, "mask": mask, "domain": domain,
            "lattice": lattice * crystal[:, None].to(pos.dtype), "cell": cell, "n_atoms": n_atoms}


def _masked_mean(err: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean of ``err`` [B, N, k] or [B, k] weighted by ``w`` (broadcast); zero when nothing is selected."""
    w = w.to(err.dtype).expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1.0)


class AutoencoderTask(BaseTask):
    """Stage 1: ADiT's all-atom VAE.

    Args:
        kl_weight: weight of the KL term (ADiT: 1e-5).
        pos_weight: weight of the molecules' position MSE in nm² (ADiT: 10). In a joint run the crystal terms
            (fractional coordinates, angles) are ~100x larger than an nm² error of 0.03 nm (0.3 Å), so a short
            run leaves molecule positions too coarse for bond perception; raise it for small budgets.
        corrupt: fraction of atom types masked and of positions noised (σ 0.1 Å) at the input (ADiT: 0.1).
        latent_noise: during training the decoder reads z + σ·rms(z)·ε with σ ~ U[0, latent_noise] per system, so
            it tolerates the latent errors of a sampler (with KL 1e-5 the posterior std is ~1 % of the latent
            scale and a decoder trained only on it fails at errors of 5-10 %).
        init_from: AutoencoderTask checkpoint to start from (e.g. to fine-tune its decoder).
        freeze_encoder: train the decoder only; the latent space (and an LDM trained on it) stays valid.
        augment: random rotations / periodic translations during training.
        (other arguments: see BaseTask)
    """

    def __init__(self, model: str | None = "adit-vae-tiny", model_options: dict[str, Any] | None = None,
                 kl_weight: float = 1e-5, pos_weight: float = 10.0, corrupt: float = 0.0, augment: bool = True,
                 latent_noise: float = 0.0, init_from: str | None = None, freeze_encoder: bool = False, lr: float = 1e-4,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), warmup_steps: int = 0,
                 min_lr_ratio: float = 1.0, lr_groups: dict[str, float] | None = None,
                 data_spec: dict[str, Any] | None = None, pretrained: str | None = None,
                 finetune_mode: str = "full", lora_rank: int = 8, **options: Any):
        super().__init__(model, model_options, lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_groups,
                         data_spec, pretrained, finetune_mode, lora_rank, **options)
        if init_from:
            ae, spec = _autoencoder_from_checkpoint(init_from)
            if spec["config"] != asdict(self.model.config):
                raise CheckpointError(f"{init_from}: autoencoder architecture {spec['config']} differs from {self.hparams.model}")
            self.model.load_state_dict(ae.state_dict())
        if freeze_encoder:
            self.model.encoder.requires_grad_(False)

    def _forward(self, types, pos, frac, mask, stage: str) -> dict[str, torch.Tensor]:
        hp = self.hparams
        if stage != "train" or hp.latent_noise <= 0:
            return self.model(types, pos, frac, mask, sample=stage == "train")
        mean, logvar = self.model.encode(types, pos, frac, mask)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        m = mask[..., None].to(z.dtype)
        rms = ((mean.detach() ** 2 * m).sum() / (m.sum() * z.shape[-1]).clamp_min(1)).sqrt()
        sigma = torch.rand(z.shape[0], 1, 1, device=z.device) * hp.latent_noise
        out = self.model.decode(z + sigma * rms * torch.randn_like(z), mask)
        out.update(mean=mean, logvar=logvar, latent=z)
        return out

    def step(self, batch, stage: str) -> torch.Tensor:
        hp = self.hparams
        d = dense(batch, augment=hp.augment and stage == "train")
        types_in, pos_in = d["types"], d["pos_nm"]
        if stage == "train" and hp.corrupt > 0:
            drop = (torch.rand_like(types_in, dtype=torch.float) < hp.corrupt) & d["mask"]
            types_in = torch.where(drop, torch.zeros_like(types_in), types_in)
            jitter = (torch.rand(pos_in.shape[:2], device=pos_in.device) < hp.corrupt)[..., None]
            pos_in = pos_in + jitter * torch.randn_like(pos_in) * 0.01  # 0.1 Å in nm
        out = self._forward(types_in, pos_in, d["frac"], d["mask"], stage)
        mask, crystal = d["mask"], (d["domain"] == CRYSTAL)
        molecule = ~crystal
        ce = F.cross_entropy(out["atom_types"][mask], d["types"][mask])
        tok_mol = (mask & molecule[:, None])[..., None]
        tok_cry = (mask & crystal[:, None])[..., None]
        l_pos = _masked_mean((out["pos"] - d["pos_nm"]) ** 2, tok_mol)
        l_frac = _masked_mean((out["frac_coords"] - d["frac"]) ** 2, tok_cry)
        l_len = _masked_mean((out["lattice"][:, :3] - d["lattice"][:, :3]) ** 2, crystal[:, None])
        l_ang = _masked_mean((out["lattice"][:, 3:] - d["lattice"][:, 3:]) ** 2, crystal[:, None])
        kl = _masked_mean(-0.5 * (1 + out["logvar"] - out["mean"] ** 2 - out["logvar"].exp()).sum(-1, keepdim=True),
                          mask[..., None])
        loss = ce + hp.pos_weight * l_pos + 10 * l_frac + l_len + 10 * l_ang + hp.kl_weight * kl
        bs = int(mask.shape[0])
        log = {"loss": loss, "ce": ce, "pos": l_pos, "frac": l_frac, "lengths": l_len, "angles": l_ang, "kl": kl}
        if stage != "train":
            with torch.no_grad():
                pred_types = out["atom_types"][..., 1:].argmax(-1) + 1
                log["type_acc"] = (pred_types == d["types"])[mask].float().mean()
                if tok_mol.any():
                    log["pos_rmse_A"] = _masked_mean((out["pos"] - d["pos_nm"]) ** 2, tok_mol).sqrt() * 10
                if tok_cry.any():
                    dfrac = (out["frac_coords"] - d["frac"]).abs() % 1.0
                    log["frac_mae"] = _masked_mean(torch.minimum(dfrac, 1 - dfrac), tok_cry)
                    n3 = d["n_atoms"][:, None] ** (1 / 3)
                    log["lengths_mae_A"] = _masked_mean(((out["lattice"][:, :3] - d["lattice"][:, :3]) * n3).abs(), crystal[:, None])
                    log["angles_mae_deg"] = _masked_mean((out["lattice"][:, 3:] - d["lattice"][:, 3:]).abs(), crystal[:, None]) * 180 / math.pi
        for k, v in log.items():
            self.log(f"{stage}/{k}", v, batch_size=bs, prog_bar=k == "loss", on_step=stage == "train", on_epoch=stage != "train")
        return loss


def _autoencoder_from_checkpoint(path: str) -> tuple[torch.nn.Module, dict]:
    ck = checkpoints.read(path, kind="autoencoder")
    return ck.build(), {"class": ck.model_class, "config": ck.config}


def _build(spec: dict) -> torch.nn.Module:
    """The autoencoder an LDM checkpoint describes (its weights come with the LDM's state dict)."""
    return models.get(spec["class"], **spec["config"])


class LatentFlowTask(BaseTask):
    """Stage 2: latent DiT with flow matching on a frozen autoencoder.

    Args:
        autoencoder: checkpoint of an AutoencoderTask (only needed the first time; the LDM checkpoint keeps it).
        autoencoder_spec: filled in automatically (architecture of the embedded autoencoder).
        condition_on_properties: condition on the data module's ``properties`` (normalised) as optional labels.
        self_condition_prob: probability of a self-conditioning pass per training step (ADiT: 0.5).
        t_min, t_max: training time range (ADiT: 0.01, 0.99).
        val_samples: molecules generated at each validation end to log validity (0 = off).
        sample_steps, cfg_scale, method: sampler settings used for validation samples.
        (other arguments: see BaseTask)
    """

    def __init__(self, autoencoder: str | None = None, autoencoder_spec: dict[str, Any] | None = None,
                 model: str | None = "adit-dit-tiny", model_options: dict[str, Any] | None = None,
                 condition_on_properties: bool = False, self_condition_prob: float = 0.5, t_min: float = 0.01,
                 t_max: float = 0.99, val_samples: int = 0, sample_steps: int = 100, cfg_scale: float = 2.0,
                 method: str = "euler", lr: float = 1e-4, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), warmup_steps: int = 0, min_lr_ratio: float = 1.0,
                 lr_groups: dict[str, float] | None = None, data_spec: dict[str, Any] | None = None,
                 pretrained: str | None = None, finetune_mode: str = "full", lora_rank: int = 8, **options: Any):
        super().__init__(model, model_options, lr, weight_decay, betas, warmup_steps, min_lr_ratio, lr_groups,
                         data_spec, pretrained, finetune_mode, lora_rank, **options)
        self.register_buffer("latent_std", torch.zeros(()))

    def build_model(self):
        hp = self.hparams
        if hp.autoencoder_spec is not None:
            self.autoencoder = _build(hp.autoencoder_spec)  # weights come with the LDM checkpoint
        elif hp.autoencoder:
            self.autoencoder, spec = _autoencoder_from_checkpoint(hp.autoencoder)
            self.hparams["autoencoder_spec"] = spec
        else:
            raise CheckpointError("LatentFlowTask needs `autoencoder` (an AutoencoderTask checkpoint)")
        self.autoencoder.requires_grad_(False)
        self.autoencoder.eval()
        return super().build_model()

    def model_overrides(self) -> dict[str, Any]:
        spec = self.hparams.data_spec or {}
        n_props = len(spec.get("properties", [])) if self.hparams.condition_on_properties else 0
        return {"latent_dim": self.autoencoder.config.latent_dim, "num_properties": n_props}

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoencoder.eval()  # frozen: no dropout
        return self

    @torch.no_grad()
    def _latents(self, d) -> torch.Tensor:
        mean, logvar = self.autoencoder.encode(d["types"], d["pos_nm"], d["frac"], d["mask"])
        return (mean + torch.randn_like(mean) * (0.5 * logvar).exp()) * d["mask"][..., None]

    def on_fit_start(self) -> None:
        if float(self.latent_std) > 0:
            return
        loader = self.trainer.datamodule.train_dataloader() if self.trainer.datamodule else self.trainer.train_dataloader
        sq, cnt = 0.0, 0.0
        for k, batch in enumerate(loader):
            if k >= 20:
                break
            d = dense(batch.to(self.device))
            z = self._latents(d)
            sq += float((z**2).sum())
            cnt += float(d["mask"].sum()) * z.shape[-1]
        self.latent_std.fill_(math.sqrt(sq / max(cnt, 1.0)) or 1.0)

    def _labels(self, batch) -> dict[str, torch.Tensor | None]:
        if self.model.config.num_properties > 0:
            return {"properties": batch.y.float(), "property_mask": batch.y_mask.bool()}
        return {"properties": None, "property_mask": None}

    def step(self, batch, stage: str) -> torch.Tensor:
        hp = self.hparams
        d = dense(batch, augment=stage == "train")
        mask = d["mask"]
        x1 = self._latents(d) / self.latent_std.clamp_min(1e-6)
        x0 = flow.centred_noise(x1.shape, mask)
        t = hp.t_min + (hp.t_max - hp.t_min) * torch.rand(x1.shape[0], device=x1.device)
        xt = flow.interpolate(x0, x1, t)
        labels = dict(dataset_idx=d["domain"], **self._labels(batch))
        sc = None
        if stage == "train" and torch.rand(()) < hp.self_condition_prob:
            with torch.no_grad():
                sc = self.model(xt, t, mask, None, **labels)
        x1_hat = self.model(xt, t, mask, sc, **labels)
        loss = flow.loss(x1_hat, x1, t, mask)
        self.log(f"{stage}/loss", loss, batch_size=int(mask.shape[0]), prog_bar=True,
                 on_step=stage == "train", on_epoch=stage != "train")
        return loss

    def on_validation_epoch_end(self) -> None:
        n = self.hparams.val_samples
        if n <= 0 or self.trainer.sanity_checking or "molecule" not in (self.hparams.data_spec or {}).get("num_atoms_hist", {}):
            return
        from sciformer.metrics.molecules import validity

        g = torch.Generator().manual_seed(0)
        mols = self.generate(n, "molecule", steps=self.hparams.sample_steps, cfg_scale=self.hparams.cfg_scale,
                             method=self.hparams.method, generator=g)
        v = validity([m["atomic_numbers"] for m in mols], [m["positions"] for m in mols])
        self.log("val/molecule_validity", float(np.mean(v)), batch_size=n)

    @torch.no_grad()
    def generate(self, n: int, kind: str = "molecule", steps: int = 100, cfg_scale: float = 2.0,
                 method: str = "euler", properties: dict[str, float] | None = None, batch_size: int = 256,
                 generator: torch.Generator | None = None) -> list[dict[str, np.ndarray]]:
        """Sample ``n`` systems of ``kind`` ("molecule" | "crystal"); ``properties`` {name: value in the data's
        units} conditions on those labels (model trained with ``condition_on_properties``)."""
        spec = self.hparams.data_spec or {}
        hist = spec.get("num_atoms_hist", {}).get(kind)
        if not hist:
            raise CheckpointError(f"this model was not trained on {kind}s (trained on: {sorted(spec.get('num_atoms_hist', {}))})")
        was_training = self.training
        self.eval()
        probs = torch.tensor(hist, dtype=torch.float)
        out: list[dict[str, np.ndarray]] = []
        P = self.model.config.num_properties
        names = spec.get("properties", [])
        prop = torch.zeros(P)
        pmask = torch.zeros(P, dtype=torch.bool)
        for name, value in (properties or {}).items():
            if P == 0 or name not in names:
                raise CheckpointError(f"cannot condition on {name!r}: model conditions on {names[:P] if P else 'nothing'}")
            k = names.index(name)
            prop[k] = (value - spec["property_mean"][k]) / spec["property_std"][k]
            pmask[k] = True
        while len(out) < n:
            B = min(batch_size, n - len(out))
            counts = torch.multinomial(probs, B, replacement=True, generator=generator)
            x1, mask = self.sample_latents(counts, kind, steps=steps, cfg_scale=cfg_scale, method=method,
                                           properties=(prop, pmask), generator=generator)
            out += self.decode_latents(x1, mask, kind)
        self.train(was_training)
        return out

    @torch.no_grad()
    def sample_latents(self, counts: torch.Tensor, kind: str, steps: int = 100, cfg_scale: float = 2.0,
                       method: str = "euler", properties: tuple[torch.Tensor, torch.Tensor] | None = None,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate the flow for systems of ``counts`` atoms → scaled latents x₁ [B, N, L] and mask [B, N]
        (multiply by ``latent_std`` before decoding; :meth:`decode_latents` does)."""
        dev = self.latent_std.device
        B, N, P = len(counts), int(counts.max()), self.model.config.num_properties
        mask = (torch.arange(N)[None] < counts[:, None]).to(dev)
        x0 = flow.centred_noise((B, N, self.model.config.latent_dim), mask.cpu(), generator=generator).to(dev)
        prop, pmask = properties if properties is not None else (torch.zeros(P), torch.zeros(P, dtype=torch.bool))
        labels = dict(dataset_idx=torch.full((B,), DOMAINS[kind], device=dev),
                      properties=prop.expand(B, P).to(dev) if P else None,
                      property_mask=pmask.expand(B, P).to(dev) if P else None)

        def fn(x, t, sc, null):
            return self.model(x, t, mask, sc, null=null, **labels)

        return flow.sample(flow.guided(fn, cfg_scale), x0, steps=steps, t0=self.hparams.t_min, method=method), mask

    @torch.no_grad()
    def decode_latents(self, x1: torch.Tensor, mask: torch.Tensor, kind: str) -> list[dict[str, np.ndarray]]:
        """Scaled latents → systems: atomic numbers and positions (Å), plus cell and fractional coordinates for
        crystals (lengths from the scaled lengths × N^(1/3), angles clamped to (0.1, π − 0.1) rad)."""
        dec = self.autoencoder.decode(x1 * self.latent_std, mask)
        types = (dec["atom_types"][..., 1:].argmax(-1) + 1).cpu()
        out = []
        for i in range(x1.shape[0]):
            k = int(mask[i].sum())
            item = {"atomic_numbers": types[i, :k].numpy()}
            if kind == "molecule":
                item["positions"] = (dec["pos"][i, :k] * 10.0).cpu().numpy()
            else:
                lat = dec["lattice"][i].cpu()
                lengths = (lat[:3] * k ** (1 / 3)).clamp_min(0.5)
                angles = lat[3:].clamp(0.1, math.pi - 0.1)
                cell = params_to_cell(lengths.double(), angles.double())
                frac = (dec["frac_coords"][i, :k].cpu().double() % 1.0)
                item.update(cell=cell.numpy(), frac_coords=frac.numpy(), positions=(frac @ cell).numpy())
            out.append(item)
        return out


# ------------------------------------------------------------------------------------------------------
# writing samples and the `sciformer sample` command
# ------------------------------------------------------------------------------------------------------
def write_xyz(path: Path, mols: list[dict]) -> None:
    from rdkit.Chem import GetPeriodicTable

    pt = GetPeriodicTable()
    lines = []
    for k, m in enumerate(mols):
        lines += [str(len(m["atomic_numbers"])), f"sample {k}"]
        lines += [f"{pt.GetElementSymbol(int(z))} {p[0]:.5f} {p[1]:.5f} {p[2]:.5f}" for z, p in zip(m["atomic_numbers"], m["positions"])]
    path.write_text("\n".join(lines) + "\n")


def write_sdf(path: Path, mols: list[dict]) -> int:
    """Molecules whose bonds RDKit perceives go to the SDF (with bonds); returns how many were written."""
    from rdkit import Chem

    from sciformer.metrics.molecules import perceive

    w = Chem.SDWriter(str(path))
    written = 0
    for k, m in enumerate(mols):
        mol = perceive(m["atomic_numbers"], m["positions"], 0)
        if mol is not None:
            mol.SetProp("_Name", f"sample {k}")
            w.write(mol)
            written += 1
    w.close()
    return written


def write_cif(path: Path, crystals: list[dict]) -> None:
    import ase
    import ase.io

    ase.io.write(str(path), [ase.Atoms(numbers=c["atomic_numbers"], cell=c["cell"], scaled_positions=c["frac_coords"], pbc=True)
                             for c in crystals], format="cif")


def write_samples(out: Path, items: list[dict], kind: str) -> int | None:
    """``OUT/molecules.xyz`` + ``OUT/molecules.sdf`` (returns how many SDF records had perceivable bonds), or
    ``OUT/crystals.cif``."""
    out.mkdir(parents=True, exist_ok=True)
    if kind == "molecule":
        write_xyz(out / "molecules.xyz", items)
        return write_sdf(out / "molecules.sdf", items)
    write_cif(out / "crystals.cif", items)
    return None


def score_samples(items: list[dict], kind: str, reference: list) -> dict[str, Any]:
    """Validity, uniqueness and novelty of generated systems; novelty against the training part (first 90 % by
    index, the split AtomsDataModule trains on) of the ``reference`` atom stores of the same kind."""
    from sciformer.data.atoms import AtomStore

    stores = [s for s in (AtomStore(p).load() for p in reference) if s.domain == kind]
    ref = [s[i] for s in stores for i in range(int(round(len(s) * 0.9)))]
    if kind == "molecule":
        from sciformer.metrics import molecules as M

        ref_smiles = M.reference_smiles([r["atomic_numbers"] for r in ref], [r["positions"] for r in ref],
                                        [r.get("charge", 0) for r in ref]) if ref else None
        return M.evaluate([m["atomic_numbers"] for m in items], [m["positions"] for m in items],
                          reference_smiles=ref_smiles)
    from sciformer.metrics import crystals as C

    return C.evaluate(items, reference=ref or None)


def load_generator(ckpt: str | Path, device: str = "cpu", decoder: str | Path | None = None) -> LatentFlowTask:
    """LatentFlowTask from its checkpoint; ``decoder``: an AutoencoderTask checkpoint whose decoder replaces the
    embedded one. Its encoder must be the embedded encoder (a decoder fine-tuned with ``freeze_encoder``), since
    the flow was trained in that encoder's latent space."""
    ck = checkpoints.read(ckpt, kind="generative")
    if ck.source != "ckpt" or ck.task != "LatentFlowTask":
        raise CheckpointError(f"{ckpt}: not a LatentFlowTask training checkpoint (got {ck.task or ck.source}); "
                              "sampling needs the .ckpt written by `sciformer fit`, which embeds the autoencoder")
    hp = {k: v for k, v in ck.hparams.items() if not k.startswith("_")}
    if not hp.get("autoencoder_spec"):
        raise CheckpointError(f"{ckpt}: no embedded autoencoder architecture (autoencoder_spec)")
    task = LatentFlowTask(**hp)
    task.load_state_dict(ck.task_state)
    if decoder is not None:
        ae, _ = _autoencoder_from_checkpoint(str(decoder))
        same = all(torch.equal(a, b) for a, b in zip(ae.encoder.state_dict().values(),
                                                     task.autoencoder.encoder.state_dict().values()))
        if not same or ae.config != task.autoencoder.config:
            raise CheckpointError(f"{decoder}: its encoder differs from the one {ckpt} was trained on "
                                  "(fine-tune the decoder with freeze_encoder: true and init_from: the LDM's autoencoder)")
        task.autoencoder.decoder.load_state_dict(ae.decoder.state_dict())
    return task.to(device).eval()


def sample(ckpt: Path | None = None, n: int = 1000, kind: str = "molecule", out: Path = Path("samples"), steps: int = 100,
           cfg_scale: float = 2.0, method: str = "euler", batch_size: int = 256, seed: int = 0,
           condition: dict[str, float] | None = None, reference: list[Path] | None = None,
           evaluate: bool = True, device: str = "cpu", decoder: Path | None = None) -> None:
    """Generate molecules or crystals with a trained ADiT (LatentFlowTask checkpoint).

    Writes ``OUT/molecules.xyz`` (all) and ``OUT/molecules.sdf`` (bonds perceived), or ``OUT/crystals.cif``,
    plus ``OUT/metrics.json`` (validity, uniqueness, novelty vs ``reference`` atom stores) when ``evaluate``.

    Example:
        sciformer sample --ckpt runs/adit_ldm/checkpoints/last.ckpt --n 1000 --kind molecule --out samples/
        sciformer sample --ckpt last.ckpt --n 200 --kind crystal --condition '{dir_gap: 1.5}' --out samples_gap/

    Args:
        ckpt: LatentFlowTask checkpoint.
        n: number of systems.
        kind: "molecule" or "crystal".
        out: output directory.
        steps: ODE steps (ADiT: 100).
        cfg_scale: classifier-free guidance scale (ADiT: 2.0).
        method: "euler" (ADiT) or "heun".
        batch_size: systems per sampling batch.
        seed: random seed.
        condition: property values to condition on (model trained with condition_on_properties).
        reference: atom stores for novelty (default: the training stores recorded in the checkpoint).
        evaluate: compute metrics.json.
        device: "cpu" or "cuda".
        decoder: AutoencoderTask checkpoint whose decoder replaces the embedded one (same frozen encoder).
    """
    import time

    from sciformer.io import write_json

    if ckpt is None:
        raise CheckpointError("--ckpt is required (a LatentFlowTask checkpoint written by `sciformer fit`)")
    if kind not in ("molecule", "crystal"):
        raise CheckpointError(f"--kind must be molecule or crystal, got {kind!r}")
    task = load_generator(ckpt, device, decoder)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    items = task.generate(n, kind, steps=steps, cfg_scale=cfg_scale, method=method, properties=condition,
                          batch_size=batch_size, generator=g)
    elapsed = time.perf_counter() - t0
    out = Path(out)
    result: dict[str, Any] = {"n": n, "kind": kind, "steps": steps, "cfg_scale": cfg_scale, "method": method,
                              "decoder": str(decoder) if decoder else None,
                              "seconds": elapsed, "per_second": n / elapsed, "condition": condition}
    written = write_samples(out, items, kind)
    if written is not None:
        result["sdf_written"] = written
    if evaluate:
        result.update(score_samples(items, kind, reference or (task.hparams.data_spec or {}).get("stores", [])))
    write_json(out / "metrics.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "condition"}, default=float))
