"""The `sciformer` command: help, bad input, a 2-step fit, export and load, kill-and-resume, DDP."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import toy  # noqa: F401  (registers the test-only toy-net sizes)
from conftest import ddp_env

from sciformer import models
from sciformer.cli import main

HELPERS = Path(__file__).parent / "helpers"


def toy_config(tmp: Path, max_steps: int, every: int = 2, extra_callbacks: str = "", dropout: float = 0.1) -> Path:
    cfg = tmp / f"toy_{max_steps}_{len(extra_callbacks)}.yaml"
    cfg.write_text(f"""
seed_everything: 7
trainer:
  max_steps: {max_steps}
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {tmp}/runs
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {tmp}/runs}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true, every_n_train_steps: {every}, dirpath: {tmp}/ckpt}}
{extra_callbacks}
model:
  class_path: toy.ToyTask
  init_args:
    model: toy-net
    model_options: {{dropout: {dropout}}}
    lr: 0.01
    warmup_steps: 3
data:
  class_path: toy.ToyData
""")
    return cfg


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = ddp_env(PYTHONPATH=str(HELPERS))
    return subprocess.run([sys.executable, "-m", "sciformer.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def train_losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for metrics in sorted(run_dir.glob("lightning_logs/version_*/metrics.csv")):
        with metrics.open() as f:
            for row in csv.DictReader(f):
                if row.get("train/loss"):
                    out[int(row["step"])] = float(row["train/loss"])
    return out


def test_help_lists_working_commands(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    from sciformer.cli import COMMANDS

    for cmd in ("fit", "validate", "test", "predict", *COMMANDS):
        assert f"  {cmd}" in text
    # every listed command resolves to a function with --help and an example
    for cmd in COMMANDS:
        assert main([cmd, "--help"]) == 0, cmd
        assert "sciformer " in capsys.readouterr().out, cmd


def test_unknown_command_is_one_clear_error(capsys):
    assert main(["fitt"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'fitt'" in err and "did you mean 'fit'" in err


def test_export_help_has_example(capsys):
    assert main(["export", "--help"]) == 0
    assert "sciformer export runs/" in capsys.readouterr().out


def test_config_typo_and_missing_file(tmp_path):
    cfg = toy_config(tmp_path, 2)
    cfg.write_text(cfg.read_text().replace("lr: 0.01", "lrr: 0.01"))
    r = run_cli("fit", "-c", str(cfg), cwd=tmp_path)
    assert r.returncode != 0 and "lrr" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("fit", "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert r.returncode != 0 and "nope.yaml" in r.stderr and "Traceback" not in r.stderr


def test_fit_two_steps_export_load(tmp_path):
    probe = f"""    - class_path: toy.AllocatorProbe
      init_args: {{path: {tmp_path}/returned}}"""
    cfg = toy_config(tmp_path, 2, every=1, dropout=0.0, extra_callbacks=probe)
    r = run_cli("fit", "-c", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(train_losses(tmp_path / "runs")) == [0, 1]
    if sys.platform.startswith("linux"):  # a CPU fit keeps freed memory (no page faults for the next step's
        # activations): a freed 64 MiB block stays in the process (glibc's default would hand it all back)
        assert int((tmp_path / "returned").read_text()) < 8 * 2**20
    # the resolved config is saved (overwrite allowed) and the full config reached the logger
    hparams = next((tmp_path / "runs").glob("lightning_logs/version_0/hparams.yaml")).read_text()
    assert "class_path: toy.ToyData" in hparams
    # export -> safetensors + config.json -> load gives the trained function
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "ckpt" / "last.ckpt"), str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    model = models.load(out)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    x = torch.randn(4, 8)
    w = {k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    ref = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(x, w["net.0.weight"], w["net.0.bias"])),
                                     w["net.3.weight"], w["net.3.bias"])
    torch.testing.assert_close(model(x), ref)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    cfg = toy_config(tmp_path, 2, every=1)
    assert run_cli("fit", "-c", str(cfg), cwd=tmp_path).returncode == 0
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text().replace("model: toy-net", "model: toy-net-wide").replace("max_steps: 2", "max_steps: 3"))
    r = run_cli("fit", "-c", str(other), "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"), cwd=tmp_path)
    assert r.returncode == 1
    assert "holds model 'toy-net'" in r.stderr and "Traceback" not in r.stderr


def test_kill_and_resume_reproduces_losses(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert run_cli("fit", "-c", str(toy_config(a, 12, every=3)), cwd=a).returncode == 0
    reference = train_losses(a / "runs")
    kill = "    - class_path: toy.KillAt\n      init_args: {step: 7}"
    r = run_cli("fit", "-c", str(toy_config(b, 12, every=3, extra_callbacks=kill)), cwd=b)
    assert r.returncode == -9  # SIGKILL mid-epoch (16 batches per epoch)
    assert torch.load(b / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 6
    for f in (b / "runs").glob("lightning_logs/version_0/metrics.csv"):
        f.unlink()  # keep only what the resumed run logs
    r = run_cli("fit", "-c", str(toy_config(b, 12, every=3)), "--ckpt_path", "last", cwd=b)
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = train_losses(b / "runs")
    assert sorted(resumed) == list(range(6, 12))
    for step in range(6, 12):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step


@pytest.mark.multiprocess
@pytest.mark.parametrize("precision", [[], ["--trainer.plugins", "sciformer.precision.BF16MasterWeights"]],
                         ids=["fp32", "bf16-master"])
def test_ddp_two_cpu_processes(tmp_path, precision):
    """DDP on two CPU processes; with bf16 parameters, cast before DDP wraps the module (its gradient buckets
    are sized by dtype), the checkpoint still holds the float32 masters."""
    cfg = toy_config(tmp_path, 3, every=1, dropout=0.0)
    r = run_cli("fit", "-c", str(cfg), "--trainer.strategy", "ddp", "--trainer.devices", "2",
                "--trainer.accelerator", "cpu", *precision, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    assert {v.dtype for v in ckpt["state_dict"].values()} == {torch.float32}
