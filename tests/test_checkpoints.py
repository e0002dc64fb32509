"""One checkpoint module for every source: each bad input is one CheckpointError naming the file and what to do."""

from __future__ import annotations

import json

import pytest
import torch

from sciformer import checkpoints, cli, models
from sciformer.errors import CheckpointError


@pytest.fixture
def export(tmp_path):
    torch.manual_seed(0)
    model = models.get("factformer-2d-tiny", in_channels=2, out_channels=2)
    return models.save(model, tmp_path / "ff", extra={"data_spec": {"inputs": ["u", "v"], "outputs": ["u", "v"]}}), model


class _Code:  # a pickled object: weights_only refuses it
    pass


def _corrupt(kind: str, tmp_path, export_dir):
    if kind == "missing":
        return tmp_path / "nope.ckpt", "no such checkpoint"
    if kind == "junk":
        (tmp_path / "junk.ckpt").write_bytes(b"\x00not a checkpoint" * 10)
        return tmp_path / "junk.ckpt", "cannot read this checkpoint"
    if kind == "pickled code":
        torch.save({"state_dict": {}, "sciformer_model": _Code()}, tmp_path / "code.ckpt")
        return tmp_path / "code.ckpt", "cannot read this checkpoint"
    if kind == "plain torch file":
        torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
        return tmp_path / "plain.ckpt", "not a sciformer training checkpoint"
    if kind == "no config.json":
        (export_dir / "config.json").unlink()
        return export_dir, "no config.json"
    if kind == "config not JSON":
        (export_dir / "config.json").write_text("{oops")
        return export_dir, "not valid JSON"
    if kind == "upstream directory":
        (export_dir / "config.json").write_text(json.dumps({"num_channels": 4}))
        return export_dir, "sciformer convert poseidon"
    if kind == "no weights":
        (export_dir / "model.safetensors").unlink()
        return export_dir, "no model.safetensors"
    if kind == "truncated weights":
        w = export_dir / "model.safetensors"
        w.write_bytes(w.read_bytes()[:100])
        return export_dir, "unreadable safetensors"
    if kind == "unknown class":
        meta = json.loads((export_dir / "config.json").read_text())
        (export_dir / "config.json").write_text(json.dumps({**meta, "class": "Unet9000"}))
        return export_dir, "does not know"
    if kind == "weights of another size":
        meta = json.loads((export_dir / "config.json").read_text())
        (export_dir / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], "dim": 48}}))
        return export_dir, "do not fit"
    raise AssertionError(kind)


BAD = ["missing", "junk", "pickled code", "plain torch file", "no config.json", "config not JSON", "upstream directory",
       "no weights", "truncated weights", "unknown class", "weights of another size"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_checkpoint_is_one_clear_error(kind, tmp_path, export):
    path, message = _corrupt(kind, tmp_path, export[0])
    with pytest.raises(CheckpointError, match=message) as e:
        checkpoints.read(path).build()
    assert str(path) in str(e.value)


@pytest.mark.parametrize("kind", ["missing", "truncated weights", "weights of another size"])
def test_every_command_reports_it_the_same_way(kind, tmp_path, export, capsys):
    from heat import heat_store

    path, message = _corrupt(kind, tmp_path, export[0])
    store = heat_store(tmp_path / "d.zarr", ["u", "v"], n=4, seed=0)
    for argv in (["export", str(path), str(tmp_path / "out")],
                 ["finetune", "--ckpt", str(path), "--data", str(store), "--out", str(tmp_path / "ft")],
                 ["rollout", "--ckpt", str(path), "--data", str(store), "--out", str(tmp_path / "ro" / "r.zarr")],
                 ["sample", "--ckpt", str(path), "--n", "2", "--out", str(tmp_path / "samples")]):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
        # sample refuses an operator model before looking at its weights
        assert message in err or (argv[0] == "sample" and "needs a model of kind 'generative'" in err)


def test_a_checkpoint_of_another_kind_is_refused(tmp_path, export, capsys):
    series = models.save(models.get("itransformer-tiny"), tmp_path / "series")
    with pytest.raises(CheckpointError, match="ITransformer \\(a series model\\).*kind 'operator'"):
        checkpoints.read(series, kind="operator")
    assert checkpoints.read(series, kind="series").kind == "series"
    assert cli.main(["sample", "--ckpt", str(export[0]), "--n", "2", "--out", str(tmp_path / "s")]) == 1
    assert "FactFormer (an operator model); this command needs a model of kind 'generative'" in capsys.readouterr().err


def test_every_source_builds_the_same_function(tmp_path, export):
    path, model = export
    x, t = torch.randn(1, 2, 8, 8), torch.rand(1)
    with torch.no_grad():
        want = model.eval()(x, t)
        torch.testing.assert_close(models.load(path)(x, t), want)
        re_exported = checkpoints.export_checkpoint(path, tmp_path / "again")
        torch.testing.assert_close(models.load(re_exported)(x, t), want)
    model_, spec = checkpoints.load_model(path)
    assert spec["inputs"] == ["u", "v"] and not model_.training
