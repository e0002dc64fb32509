"""FSDP2 through ``sciformer fit`` (Lightning's ModelParallelStrategy, 2 CPU processes with gloo) and the
per-block plan of ``sciformer.parallel`` for every family.

DECISIONS ("FSDP2 tolerance"): 5 steps in float32; the losses equal DDP's to 1e-5 relative; each rank holds
parameter bytes within 10 % of half the total. A sharded checkpoint (a DCP directory) resumes to the same losses
and exports to one ``model.safetensors`` that ``sciformer.models.load`` reads.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ddp_env
from heat import heat_store

from sciformer import models, parallel
from sciformer.errors import ConfigError

HELPERS = Path(__file__).parent / "helpers"
FSDP = ["--trainer.strategy.class_path", "lightning.pytorch.strategies.ModelParallelStrategy"]


def _fit(tmp: Path, store: Path, name: str, *extra: str) -> list[dict]:
    """Train scOT-tiny for 5 steps on 2 processes (checkpoints after step 3 and at the end in ``{name}/``); each rank's probe
    (losses, parameter bytes). The schedule's length is the same in every run: a resumed run continues it."""
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(f"""
seed_everything: 3
trainer:
  max_steps: 5
  limit_val_batches: 0
  num_sanity_val_steps: 0
  accelerator: cpu
  devices: 2
  precision: 32-true
  gradient_clip_val: 5.0
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp}/{name}, every_n_train_steps: 3, save_top_k: -1, filename: "{{step}}",
                  save_last: true}}
    - class_path: fsdp_probe.Probe
      init_args: {{out: {tmp}/{name}_probe}}
model:
  class_path: sciformer.tasks.operator.OperatorTask
  init_args:
    model: scot-tiny
    loss: mse
    lr: 3.0e-3
data:
  class_path: sciformer.data.fields.FieldDataModule
  init_args: {{stores: [{store}], batch_size: 4, sampler: all2all}}
""")
    env = ddp_env(PYTHONPATH=str(HELPERS), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "sciformer.cli", "fit", "-c", str(cfg), *extra], cwd=tmp, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads((tmp / f"{name}_probe" / f"rank{k}.json").read_text()) for k in range(2)]


@pytest.mark.multiprocess
def test_fsdp2_fit_equals_ddp_shards_half_resumes_and_exports(tmp_path, capsys):
    store = heat_store(tmp_path / "heat.zarr", ["u", "v"], n=8, seed=0)
    ddp = _fit(tmp_path, store, "ddp", "--trainer.strategy", "ddp")
    fsdp = _fit(tmp_path, store, "fsdp", *FSDP)
    ckpt = tmp_path / "fsdp" / "step=3.ckpt"
    assert ckpt.is_dir() and (ckpt / "meta.pt").is_file(), "ModelParallelStrategy writes a sharded checkpoint"
    resumed = _fit(tmp_path, store, "resumed", *FSDP, "--ckpt_path", str(ckpt))
    for rank in range(2):
        assert not ddp[rank]["dtensor"] and fsdp[rank]["dtensor"] and fsdp[rank]["strategy"] == "ModelParallelStrategy"
        torch.testing.assert_close(torch.tensor(fsdp[rank]["losses"]), torch.tensor(ddp[rank]["losses"]), rtol=1e-5,
                                   atol=0)
        assert resumed[rank]["step"] == 5 and len(resumed[rank]["losses"]) == 2  # steps 4 and 5
        torch.testing.assert_close(torch.tensor(resumed[rank]["losses"]), torch.tensor(fsdp[rank]["losses"][3:]),
                                   rtol=1e-6, atol=0)
        local, total = fsdp[rank]["local_bytes"], fsdp[rank]["total_bytes"]
        assert abs(local - total / 2) <= 0.1 * total / 2, (local, total)
        assert ddp[rank]["local_bytes"] == ddp[rank]["total_bytes"]  # DDP replicates: the control
    assert ddp[0]["losses"] != ddp[1]["losses"]  # each rank saw its own data
    assert len(set(ddp[0]["losses"])) == 5

    from sciformer.cli import main

    assert main(["export", str(tmp_path / "fsdp" / "last.ckpt"), str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "model.safetensors").is_file()
    model = models.load(tmp_path / "export")
    assert type(model).__name__ == "ScOT"
    ddp_weights = torch.load(tmp_path / "ddp" / "last.ckpt", weights_only=True)["state_dict"]
    for k, v in model.state_dict().items():  # the FSDP2 run's weights after 5 steps are the DDP run's
        torch.testing.assert_close(v, ddp_weights[f"model.{k}"], rtol=1e-4, atol=1e-5, msg=k)


def _run_families(tmp_path, *extra: str) -> list[dict]:
    env = ddp_env(OMP_NUM_THREADS="1", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(HELPERS / "fsdp_families.py"), str(tmp_path), *extra], env=env, capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.multiprocess
def test_every_family_shards_per_block_with_exact_gradients(tmp_path):
    """scOT, FactFormer, the DiT and iTransformer under FSDP2 (also with activation checkpointing): gradients
    equal the rank-averaged gradients of an unsharded copy; bf16 policy: bf16 compute, fp32 gradients."""
    for res in _run_families(tmp_path):
        for key, c in res.items():
            assert c["all_dtensor"], key
            assert abs(c["local_bytes"] - c["total_bytes"] / 2) <= 0.1 * c["total_bytes"] / 2, key
            assert c["grad_dtypes"] == ["torch.float32"], key
            if key.endswith("bf16"):  # against plain bf16 autocast of the unsharded model
                assert c["out_dtype"] == "torch.bfloat16" and c["grads_rel_err"] < 0.1 and c["loss_rel_err"] < 1e-2, c
            else:
                assert c["grad_rel_err"] < 1e-5 and c["loss_rel_err"] < 1e-6, (key, c)
        assert res["scot-tiny/fp32"]["blocks"][:3] == ["encoder.0", "encoder.1", "encoder.2"]
        assert res["itransformer-tiny/fp32"]["blocks"] == ["layers.0", "layers.1"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_compiled_blocks_under_fsdp2_give_exact_gradients(tmp_path):
    """``compile: blocks`` with FSDP2 (and with activation checkpointing): the sharding's hooks stay outside
    each compiled block; gradients equal the unsharded eager model's to the compile tolerance."""
    for res in _run_families(tmp_path, "compile"):
        for key, c in res.items():
            assert c["all_dtensor"] and c["grads_rel_err"] < 1e-4 and c["loss_rel_err"] < 1e-5, (key, c)
            assert abs(c["local_bytes"] - c["total_bytes"] / 2) <= 0.1 * c["total_bytes"] / 2, key


# ---- single process: the plan and its errors --------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("scot-tiny", ["encoder.0", "encoder.1", "encoder.2", "skips.0.0", "skips.1.0", "decoder.0", "decoder.1",
                   "decoder.2"]),
    ("factformer-2d-tiny", ["blocks.0", "blocks.1"]),
    ("adit-dit-tiny", ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]),
    ("itransformer-tiny", ["layers.0"]),
])
def test_spec_names_the_blocks(name, expected):
    model = models.get(name)
    assert [n for n, _ in model.spec.block_modules(model)] == expected
    owned = {id(p) for _, b in model.spec.block_modules(model) for p in b.parameters()}
    assert len(owned) > 0.5 * len(list(model.parameters()))  # the blocks hold most parameters


def _saved_bytes(model, *x) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(*x).square().mean().backward()
    return total


def test_activation_checkpointing_keeps_fewer_activations_and_the_same_gradients():
    torch.manual_seed(0)
    x = (torch.randn(2, 2, 16, 16), torch.rand(2))
    plain = models.get("factformer-2d-tiny", in_channels=2, out_channels=2)
    ac = models.get("factformer-2d-tiny", in_channels=2, out_channels=2)
    ac.load_state_dict(plain.state_dict())
    parallel.parallelize(ac, activation_checkpointing=True)
    before, after = _saved_bytes(plain, *x), _saved_bytes(ac, *x)
    assert after < 0.5 * before, (before, after)
    for (n, p), q in zip(plain.named_parameters(), ac.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=n)
    assert list(ac.state_dict()) == list(plain.state_dict())  # names unchanged: checkpoints read the same


def test_bad_options_are_one_config_error():
    model = models.get("factformer-2d-tiny")
    with pytest.raises(ConfigError, match="compile"):
        parallel.parallelize(model, compile="graph")
    with pytest.raises(ConfigError, match="needs compile"):
        parallel.parallelize(model, cudagraphs=True)
    with pytest.raises(ConfigError, match="CUDA device"):
        parallel.parallelize(model, compile="blocks", cudagraphs=True, device_type="cpu")
    with pytest.raises(ConfigError, match="bf16-mixed"):
        parallel.mixed_precision("16-mixed")
    with pytest.raises(ConfigError, match="no blocks"):
        parallel.parallelize(models.get("fno-2d-tiny"), activation_checkpointing=True)
    from sciformer.tasks.operator import OperatorTask

    with pytest.raises(ConfigError, match="compile"):
        OperatorTask(model="factformer-2d-tiny", compile="yes")
