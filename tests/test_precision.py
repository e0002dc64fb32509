"""bf16 parameters with fp32 master weights (``sciformer.precision.BF16MasterWeights``): updates below bf16's
resolution are kept, no weight is cast per step, the checkpoint is float32, and where every weight feeds an
autocast product the run is the ``bf16-mixed`` run step for step. Every task kind through `sciformer fit`, kill
and resume included, is in tests/test_resume_tasks.py; LoRA through `sciformer finetune` in test_finetune_cli.py."""

from __future__ import annotations

import collections

import lightning as L
import pytest
import torch
from test_cli import run_cli, toy_config, train_losses
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sciformer import models
from sciformer.errors import ConfigError
from sciformer.precision import BF16MasterWeights, trainer_precision

STEPS, LR = 100, 1e-4


class SumOfProducts(L.LightningModule):
    """loss = Σ x·w with x ≡ 0.5 in batches of 4: dloss/dw = 2 exactly in bf16, whatever w is."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 1, bias=False)
        nn.init.ones_(self.lin.weight)

    def training_step(self, batch, batch_idx):
        return self.lin(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.full((4 * STEPS, 8), 0.5))
        return torch.utils.data.DataLoader(data, batch_size=4)


def _fit(tmp_path, **precision) -> tuple[SumOfProducts, L.Trainer]:
    module = SumOfProducts()
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **precision)
    trainer.fit(module)
    return module, trainer


def test_updates_below_bf16_resolution_accumulate_in_the_masters(tmp_path):
    """100 SGD steps of −2·10⁻⁴ from w = 1: each is below bf16's spacing at 1 (2⁻⁸), so bf16 parameters alone
    (``bf16-true``) never move; the float32 masters follow the float32 recursion exactly, the module holds
    their bf16 rounding, and the checkpoint holds the masters."""
    expected = torch.tensor(1.0)
    for _ in range(STEPS):
        expected = expected - torch.tensor(LR) * 2.0
    module, trainer = _fit(tmp_path, **trainer_precision("bf16-master"))
    plugin = trainer.precision_plugin
    assert isinstance(plugin, BF16MasterWeights)
    w = module.lin.weight
    master = plugin.masters[w]
    assert w.dtype == torch.bfloat16 and master.dtype == torch.float32
    torch.testing.assert_close(master.detach(), torch.full_like(master, expected.item()), rtol=0, atol=1e-6)
    assert torch.equal(w.detach(), master.detach().to(torch.bfloat16))
    assert float(w[0, 0].detach()) == pytest.approx(0.98046875)  # bf16(0.98), not 1
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    saved = torch.load(tmp_path / "m.ckpt", weights_only=True)["state_dict"]["lin.weight"]
    assert saved.dtype == torch.float32 and torch.equal(saved, master.detach())

    plain, _ = _fit(tmp_path, precision="bf16-true")  # the failure the masters prevent
    assert torch.equal(plain.lin.weight.detach(), torch.ones(1, 8, dtype=torch.bfloat16))


def test_loading_a_state_dict_writes_the_masters(tmp_path):
    """A ``load_state_dict`` into the converted module (restoring the best weights, say) must reach the masters,
    or the next step would copy the old masters back over it."""
    plugin = BF16MasterWeights()
    model = plugin.convert_module(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))
    new = {k: torch.randn_like(v, dtype=torch.float32) for k, v in model.state_dict().items()}
    model.load_state_dict(new)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, new[k]), k
    assert model[0].weight.dtype == torch.bfloat16 and model[1].weight.dtype == torch.float32  # norms stay fp32
    later = BF16MasterWeights()  # a second trainer's plugin on the same module steps the same masters
    later.convert_module(model)
    assert later.masters is plugin.masters


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("master", [False, True])
def test_scot_step_casts_no_weight(master):
    """Forward, loss and backward of scOT under bf16 autocast: with fp32 parameters one cast per weight and per
    gradient (~300 on scot-tiny's 305 tensors); with bf16 parameters only the inputs and the output are cast."""
    torch.manual_seed(0)
    model = models.get("scot-tiny", in_channels=2, out_channels=2, image_size=32).train()
    plugin = BF16MasterWeights()
    if master:
        plugin.convert_module(model)
    x, t = torch.randn(2, 2, 32, 32), torch.rand(2)

    def step():
        with plugin.forward_context():
            y = model(x, t)
        loss = (y.float() - x).square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    step()
    with _Ops() as ops:
        step()
    casts = ops.count["_to_copy"]
    assert (casts <= 4) if master else (casts >= 250), casts


def test_fit_is_the_bf16_mixed_run_when_every_weight_feeds_a_product(tmp_path):
    """The toy network's weights are used only by ``F.linear``: the bf16 weights are what autocast would have cast,
    and the float32 gradients what its cast's backward would have given, so the losses are bf16-mixed's exactly."""
    from concurrent.futures import ThreadPoolExecutor

    flags = {"mixed": ["--trainer.precision", "bf16-mixed"],
             "master": ["--trainer.plugins", "sciformer.precision.BF16MasterWeights"]}

    def fit(name: str):
        run = tmp_path / name
        run.mkdir()
        return run_cli("fit", "-c", str(toy_config(run, 6, every=3, dropout=0.0)), *flags[name], cwd=run)

    with ThreadPoolExecutor(2) as pool:  # two independent processes
        results = dict(zip(flags, pool.map(fit, flags)))
    losses = {}
    for name, r in results.items():
        run = tmp_path / name
        assert r.returncode == 0, r.stderr[-2000:]
        losses[name] = train_losses(run / "runs")
        sd = torch.load(run / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
        assert {v.dtype for v in sd.values()} == {torch.float32}
    assert sorted(losses["master"]) == list(range(6))
    assert losses["master"] == losses["mixed"]


def test_fsdp2_is_refused_with_one_clear_message():
    from lightning.pytorch.strategies import ModelParallelStrategy

    from sciformer.tasks.operator import OperatorTask

    spec = {"layout": "fields", "inputs": ["u"], "outputs": ["u"], "in_channels": 1, "out_channels": 1,
            "spatial_shape": [16, 16], "steady": False}
    task = OperatorTask(model="scot-tiny", data_spec=spec)
    task.trainer = L.Trainer(strategy=ModelParallelStrategy(), plugins=[BF16MasterWeights()], accelerator="cpu",
                             devices=1, logger=False)
    with pytest.raises(ConfigError, match="bf16-mixed, whose FSDP2 policy"):
        task.configure_model()


def test_precision_typo_is_one_clear_error():
    """`sciformer finetune --precision` is checked before anything trains: a typo names the flag and the choices."""
    from sciformer.errors import ConfigError
    from sciformer.finetune.config import SweepConfig

    with pytest.raises(ConfigError, match=r"--precision 'bf16-mix' is not a precision; .*bf16-mixed.*bf16-master"):
        SweepConfig(samples=[1], precision="bf16-mix")
    for ok in ("32-true", "bf16-mixed", "bf16", "bf16-master"):
        assert SweepConfig(samples=[1], precision=ok).precision == ok
