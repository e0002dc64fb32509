"""The fine-tuning matrix: every checkpoint source × mode × target, built as `sciformer finetune` builds it
(``OperatorTask(pretrained=..., finetune_mode=...)``), so the joints between checkpoints, adaptation, LoRA, the
fast paths, the LR groups and export are tested together.

Sources: scOT (Lightning .ckpt), FactFormer-2D (export directory), FNO (.ckpt), a converted Poseidon directory,
and a family that exists only in this file (one model class with its spec plus one ``register`` line).
Targets: the same variables, a subset, and one renamed plus one new variable (same channel count: a match by
position would go unnoticed). The expectations below are written out per family, independently of the specs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import lightning as L
import pytest
import torch
from poseidon_upstream import write_upstream
from torch import nn

from sciformer import checkpoints, kernels, models
from sciformer.adaptation import MODES
from sciformer.models.poseidon_convert import convert
from sciformer.models.spec import ChannelTensors, FamilySpec
from sciformer.nn.conditional_norm import TimeConditionedLayerNorm
from sciformer.nn.lora import LoRALinear
from sciformer.tasks.operator import OperatorTask

SOURCE_VARS = ["rho", "u", "v", "p"]
TARGETS = {"same": ["rho", "u", "v", "p"], "subset": ["u", "v"], "renamed+new": ["rho", "u", "vy", "tracer"]}
GRID = (16, 16)
LR, LR_EMBED, LR_TIME = 1e-3, 5e-3, 2e-3


# ---- a new family, declared the way a contributor would ------------------------------------------------------
@dataclass
class PointMLPConfig:
    in_channels: int = 1
    out_channels: int = 1
    width: int = 16


class PointMLP(nn.Module):
    """Lift per point, a time-conditioned MLP trunk, project per point."""

    config_class = PointMLPConfig
    spec = FamilySpec(
        kind="operator",
        sized_by_data=("in_channels", "out_channels"),
        channels=(ChannelTensors("inputs", r"^lift\.weight$", dims=(1,)),
                  ChannelTensors("outputs", r"^project\.(weight|bias)$")),
        adapters=r"^(lift|project)\.",
        time_conditioning=r"^norm\.",
        lora_targets=r"^trunk\.\d+$",
        lr_groups={"embedding_recovery": r"^(lift|project)\.", "time_embedding": r"^norm\."},
    )

    def __init__(self, config: PointMLPConfig):
        super().__init__()
        self.config = c = config
        self.lift = nn.Conv2d(c.in_channels, c.width, 1)
        self.norm = TimeConditionedLayerNorm(c.width)
        self.trunk = nn.Sequential(nn.Linear(c.width, c.width), nn.GELU(), nn.Linear(c.width, c.width))
        self.project = nn.Linear(c.width, c.out_channels)

    def forward(self, x, t=None):
        h = self.lift(x).movedim(1, -1)
        return self.project(h + self.trunk(self.norm(h, t))).movedim(-1, 1)


models.register("point-mlp-test", PointMLP, width=16)


# ---- what each family's parts are, written out (the test's oracle) -------------------------------------------
@dataclass
class Family:
    adapters: tuple[str, ...]  # parameter-name prefixes trained in frozen-latent mode
    channels: dict[str, tuple[str, tuple[int, ...], int]]  # parameter -> (side, dims, trailing non-variables)
    lora: str  # module names LoRA must wrap
    time: bool  # has time-conditioned norms outside the adapters


SCOT = Family(("embeddings.", "patch_recovery."),
              {"embeddings.proj.weight": ("inputs", (1,), 0), "patch_recovery.projection.weight": ("outputs", (1,), 0),
               "patch_recovery.projection.bias": ("outputs", (0,), 0), "patch_recovery.mixup.weight": ("outputs", (0, 1), 0)},
              r"(attn\.qkv|attn\.proj|fc1|fc2)$", True)
FAMILIES = {
    "scot": SCOT,
    "poseidon": SCOT,
    "factformer-2d": Family(("embed.", "head1.", "head2."),
                            {"embed.weight": ("inputs", (1,), 0), "head2.weight": ("outputs", (0,), 0),
                             "head2.bias": ("outputs", (0,), 0)},
                            r"attn\.(to_v|to_in|out1|out2|kernel\.\d+\.to_[qk])$", True),
    "fno": Family(("fno.lifting.", "fno.projection."),
                  {"fno.lifting.fcs.0.weight": ("inputs", (1,), 3),  # + lead time, 2 grid coordinates
                   "fno.projection.fcs.1.weight": ("outputs", (0,), 0),
                   "fno.projection.fcs.1.bias": ("outputs", (0,), 0)},
                  r"fno_blocks\.(channel_mlp\.\d+\.fcs\.\d+|fno_skips\.\d+\.conv)$", False),
    "new-family": Family(("lift.", "project."),
                         {"lift.weight": ("inputs", (1,), 0), "project.weight": ("outputs", (0,), 0),
                          "project.bias": ("outputs", (0,), 0)}, r"^trunk\.(0|2)$", True),
}


def data_spec(variables: list[str]) -> dict:
    return {"layout": "fields", "inputs": list(variables), "outputs": list(variables), "in_channels": len(variables),
            "out_channels": len(variables), "spatial_shape": list(GRID), "steady": False,
            "stats": {v: {"mean": 0.0, "std": 1.0} for v in variables}}


def batch(n_vars: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(4, n_vars, *GRID, generator=g), "y": torch.randn(4, n_vars, *GRID, generator=g),
            "t": torch.rand(4, generator=g), "mask": torch.ones(4, n_vars)}


def fit_steps(task: OperatorTask, steps: int = 1) -> L.Trainer:
    """A few real Lightning optimiser steps on a random batch (the trained weights differ from any init)."""
    n = task.hparams.data_spec["in_channels"]
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader([batch(n)], batch_size=None))
    return trainer


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """name -> checkpoint path, one per source kind: .ckpt, export directory, converted Poseidon directory."""
    tmp = tmp_path_factory.mktemp("sources")
    L.seed_everything(0)
    out = {}
    for name, model, options, as_export in [
        ("scot", "scot-tiny", dict(embed_dim=16, depths=[1, 1], num_heads=[2, 4], skip_blocks=[1, 0], window_size=4), False),
        ("factformer-2d", "factformer-2d-tiny", dict(dim=16, depth=1, heads=2, dim_head=8), True),
        ("fno", "fno-2d-tiny", dict(modes=4, width=8, n_layers=2), False),
    ]:
        task = OperatorTask(model=model, model_options=options, lr=1e-2, data_spec=data_spec(SOURCE_VARS))
        trainer = fit_steps(task, 2)
        ckpt = tmp / f"{name}.ckpt"
        trainer.save_checkpoint(ckpt)
        out[name] = checkpoints.export_checkpoint(ckpt, tmp / f"{name}-export") if as_export else ckpt
    up = dict(num_channels=4, num_out_channels=4, image_size=16, patch_size=2, embed_dim=12, depths=[1, 1],
              num_heads=[3, 3], skip_connections=[1, 0], window_size=4, use_conditioning=True)
    write_upstream(tmp / "poseidon-upstream", up)
    out["poseidon"] = convert(tmp / "poseidon-upstream", tmp / "poseidon")
    torch.manual_seed(1)
    toy = models.get("point-mlp-test", in_channels=4, out_channels=4)
    with torch.no_grad():
        for p in toy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out["new-family"] = models.save(toy, tmp / "toy", extra={"data_spec": data_spec(SOURCE_VARS),
                                                             "model_name": "point-mlp-test"})
    return out


def test_sources_are_what_the_matrix_claims(sources):
    got = {name: checkpoints.read(path).source for name, path in sources.items()}
    assert got == {"scot": "ckpt", "factformer-2d": "export", "fno": "ckpt", "poseidon": "poseidon",
                   "new-family": "export"}
    assert checkpoints.read(sources["poseidon"]).model_name is None  # not a registered size: the hard case


def _slice(t: torch.Tensor, dims: tuple[int, ...], idx: tuple[int, ...]) -> torch.Tensor:
    for d, i in sorted(zip(dims, idx), reverse=True):
        t = t.select(d, i)
    return t


def _check_channels(name, fam_entry, new_t, old_t, twin_t, old_vars, new_vars):
    """Copied slices are bit-equal to the source's; slices of variables the source lacks are the fresh twin's."""
    side, dims, trailing = fam_entry
    old_index = {v: i for i, v in enumerate(old_vars)} | {("trailing", k): len(old_vars) + k for k in range(trailing)}
    new_keys = list(new_vars) + [("trailing", k) for k in range(trailing)]
    for combo in torch.cartesian_prod(*[torch.arange(len(new_keys))] * len(dims)).reshape(-1, len(dims)).tolist():
        keys = [new_keys[j] for j in combo]
        got = _slice(new_t, dims, tuple(combo))
        if all(k in old_index for k in keys):
            assert torch.equal(got, _slice(old_t, dims, tuple(old_index[k] for k in keys))), (name, keys)
        else:
            assert torch.equal(got, _slice(twin_t, dims, tuple(combo))), (name, keys, "not re-initialised")
            if len(dims) == 1:  # and no source slice was copied by position
                assert not any(torch.equal(got, old_t.select(dims[0], i)) for i in range(old_t.shape[dims[0]]))


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", list(FAMILIES))
def test_finetuning_cell(sources, source, mode, target):
    path, fam, new_vars = sources[source], FAMILIES[source], TARGETS[target]
    ck = checkpoints.read(path)
    src = ck.build().state_dict()
    torch.manual_seed(123)
    task = OperatorTask(model=ck.model_name, pretrained=str(path), finetune_mode=mode, data_spec=data_spec(new_vars),
                        lr=LR, lr_embedding_recovery=LR_EMBED, lr_time_embedding=LR_TIME, weight_decay=0.0)
    model = task.model
    torch.manual_seed(123)  # the same random stream gives the fresh twin the adapted model started from
    ck.build()
    twin = ck.fresh_twin(in_channels=len(new_vars), out_channels=len(new_vars)).state_dict()

    # 1. weights: channel slices by name, everything else copied bit for bit
    state = {n.replace(".base.", "."): v for n, v in model.state_dict().items() if "lora_" not in n}
    assert set(state) == set(src)
    for name, t in state.items():
        if name in fam.channels:
            side = fam.channels[name][0]
            _check_channels(name, fam.channels[name], t, src[name], twin[name], SOURCE_VARS, new_vars)
            assert task.adaptation and side in ("inputs", "outputs")
        else:
            assert torch.equal(t, src[name]), f"{name} was not copied"

    # 2. trainable parameters: exactly those the mode names, never none
    params = dict(model.named_parameters())
    adapters = {n for n in params if n.startswith(fam.adapters)}
    lora_modules = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    trainable = {n for n, p in params.items() if p.requires_grad}
    if mode == "full":
        assert trainable == set(params) and not lora_modules
    elif mode == "frozen-latent":
        assert trainable == adapters and not lora_modules
    else:
        expected = {n for n, m in model.named_modules() if re.search(fam.lora, n) and isinstance(m, LoRALinear)}
        wrapped_by_name = {n for n in lora_modules if re.search(fam.lora, n)}
        assert lora_modules and lora_modules == wrapped_by_name == expected
        assert trainable == adapters | {f"{m}.lora_{ab}" for m in lora_modules for ab in "ab"}
    assert trainable and adapters

    # 3. learning-rate groups: embedding/recovery and time conditioning get their own rates
    lr_of = {id(p): g["lr"] for g in task.param_groups() for p in g["params"]}
    assert {lr_of[id(params[n])] for n in adapters} == {LR_EMBED}
    if fam.time and mode == "full":
        time_params = [n for n in params if n.endswith(("weight_t", "bias_t")) and not n.startswith(fam.adapters)]
        assert time_params and {lr_of[id(params[n])] for n in time_params} == {LR_TIME}

    # 4. one optimiser step through the default fast paths changes only trainable tensors
    assert kernels.mode() == "auto"
    opt = torch.optim.AdamW(task.param_groups())
    before = {n: p.detach().clone() for n, p in params.items()}
    b = batch(len(new_vars), seed=1)
    model.train()
    ((model(b["x"], b["t"]) - b["y"]) ** 2).mean().backward()
    for n, p in params.items():
        assert (p.grad is not None) == p.requires_grad, n
    for m in lora_modules:  # the update is on the forward path (the fused paths read the effective weight)
        assert model.get_submodule(m).lora_b.grad.abs().sum() > 0, f"{m}: LoRA bypassed by a fast path"
    opt.step()
    changed = {n for n, p in params.items() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= trainable


@pytest.mark.parametrize("source", list(FAMILIES))
def test_exported_lora_finetune_computes_what_the_unmerged_model_computed(sources, source, tmp_path):
    new_vars = TARGETS["renamed+new"]
    ck = checkpoints.read(sources[source])
    task = OperatorTask(model=ck.model_name, pretrained=str(sources[source]), finetune_mode="lora", lr=1e-2,
                        data_spec=data_spec(new_vars))
    trainer = fit_steps(task, 2)  # moves B away from zero: the merge matters
    assert any(m.lora_b.abs().sum() > 0 for m in task.model.modules() if isinstance(m, LoRALinear))
    trainer.save_checkpoint(tmp_path / "lora.ckpt")
    exported = models.load(checkpoints.export_checkpoint(tmp_path / "lora.ckpt", tmp_path / "export"))
    assert not any(isinstance(m, LoRALinear) for m in exported.modules())
    b = batch(len(new_vars), seed=2)
    task.model.eval()
    with torch.no_grad():
        want, got = task.model(b["x"], b["t"]), exported(b["x"], b["t"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    # and the training checkpoint itself loads the same way (merged on reading)
    with torch.no_grad():
        torch.testing.assert_close(models.load(tmp_path / "lora.ckpt")(b["x"], b["t"]), want, rtol=1e-5,
                                   atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("source", list(FAMILIES))
def test_fresh_twin_is_the_same_architecture_freshly_initialised(sources, source):
    ck = checkpoints.read(sources[source])
    trained, twin = ck.build(), ck.fresh_twin()
    assert type(twin) is type(trained) and twin.config == trained.config
    ts, ws = trained.state_dict(), twin.state_dict()
    assert {k: v.shape for k, v in ts.items()} == {k: v.shape for k, v in ws.items()}
    assert any(not torch.equal(ts[k], ws[k]) for k in ts)
    # the twin a task builds (the sweep's scratch baseline) for other channels
    name, options = ck.twin()
    task = OperatorTask(model=name, model_options=options, data_spec=data_spec(TARGETS["subset"]))
    assert type(task.model) is type(trained) and task.model.config.in_channels == 2
