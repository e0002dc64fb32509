"""Dataset tokens of iTransformer (issue 17 item 4): conditioning through attention only, the unknown id, the
unchanged default model, ids carried by SeriesDataModule batches and kept by name from a checkpoint."""

import numpy as np
import pandas as pd
import pytest
import torch

from sciformer import models
from sciformer.data.series import convert_csv
from sciformer.data.series_module import SeriesDataModule
from sciformer.errors import CheckpointError, ConfigError, DataError
from sciformer.tasks.forecast import ForecastTask

# today's parameters of itransformer-tiny (one layer), in order: the option off must leave them as they are
TODAY = ["embed.weight", "embed.bias",
         *(f"layers.0.attention.{p}.{t}" for p in ("query", "key", "value", "out") for t in ("weight", "bias")),
         *(f"layers.0.{m}.{t}" for m in ("ffn_in", "ffn_out", "norm1", "norm2") for t in ("weight", "bias")),
         "norm.weight", "norm.bias", "projection.weight", "projection.bias"]


def _store(tmp_path, name, n, cols, seed=0):
    t = pd.date_range("2020-01-01", periods=n, freq="h")
    v = np.random.default_rng(seed).normal(size=(n, len(cols)))
    pd.DataFrame(v, columns=cols).assign(date=t)[["date", *cols]].to_csv(tmp_path / f"{name}.csv", index=False)
    return str(convert_csv(tmp_path / f"{name}.csv", tmp_path / f"{name}.zarr"))


def _inputs(n=3, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 24, n, generator=g) * 3 + 1, torch.rand(b, 24, 4, generator=g) - 0.5


# ---- the model ---------------------------------------------------------------------------------------------
def test_ids_change_outputs_and_the_unknown_id_is_the_default():
    torch.manual_seed(0)
    net = models.get("itransformer-tiny", dataset_tokens=3).eval()
    x, mark = _inputs()
    zero, one = torch.tensor([0, 0]), torch.tensor([1, 1])
    out = net(x, mark, zero)
    assert out.shape == (2, 12, 3)  # the token is dropped before the head, as the covariates
    assert torch.equal(out, net(x, mark, zero.clone()))  # same id, identical output
    assert (out - net(x, mark, one)).abs().min() > 0  # another id moves every forecast value
    assert torch.equal(net(x, mark), net(x, mark, torch.tensor([3, 3])))  # no ids: the unknown token (id K)
    mixed = net(x, mark, torch.tensor([0, 1]))  # per sample: no leak across the batch
    torch.testing.assert_close(mixed[0], out[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[1], net(x, mark, one)[1], rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="dataset_tokens"):
        models.get("itransformer-tiny", dataset_tokens=-1)


def test_the_token_acts_only_through_attention():
    # without encoder layers no token attends to another: the ids cannot matter, and the variates' outputs are
    # those of the same weights without the option
    torch.manual_seed(1)
    net = models.get("itransformer-tiny", dataset_tokens=2, e_layers=0).eval()
    plain = models.get("itransformer-tiny", e_layers=0).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("dataset_embed")})
    x, mark = _inputs(n=4)
    for ids in ([0, 0], [1, 0], [2, 2]):
        torch.testing.assert_close(net(x, mark, torch.tensor(ids)), plain(x, mark), rtol=0, atol=1e-6)


def test_option_off_keeps_todays_state_dict_and_ignores_ids():
    torch.manual_seed(2)
    off = models.get("itransformer-tiny")
    assert list(off.state_dict()) == TODAY
    x, mark = _inputs()
    off.eval()
    assert torch.equal(off(x, mark, torch.tensor([5, 7])), off(x, mark))
    torch.manual_seed(2)
    on = models.get("itransformer-tiny", dataset_tokens=4)
    assert list(on.state_dict()) == [*TODAY, "dataset_embed.weight"]
    assert on.dataset_embed.weight.shape == (5, 32)  # 4 data sets + the unknown one
    # created last: the shared weights draw the same initial values with and without the option
    assert all(torch.equal(v, on.state_dict()[k]) for k, v in off.state_dict().items())
    assert models.spec(on).is_adapter("dataset_embed.weight")  # trained in frozen-latent mode, as the embedding


def test_dataset_dropout_trains_the_unknown_token():
    torch.manual_seed(3)
    net = models.get("itransformer-tiny", dataset_tokens=2, dataset_dropout=1.0, dropout=0.0).train()
    x, mark = _inputs()
    unknown = net(x, mark, torch.tensor([2, 2]))
    assert torch.equal(net(x, mark, torch.tensor([0, 1])), unknown)  # every id replaced while training
    net.eval()
    assert not torch.equal(net(x, mark, torch.tensor([0, 1])), unknown)  # never at inference
    net.config.dataset_dropout = 0.0
    net.train()
    assert not torch.equal(net(x, mark, torch.tensor([0, 1])), unknown)
    net.dataset_embed.weight.grad = None
    net(x, mark, torch.tensor([2, 2])).square().mean().backward()
    grad = net.dataset_embed.weight.grad
    assert grad[2].abs().sum() > 0 and grad[:2].abs().sum() == 0  # only the row read gets a gradient


# ---- the data ----------------------------------------------------------------------------------------------
def test_mixture_batches_carry_each_stores_id(tmp_path):
    a = _store(tmp_path, "a", 300, ["x", "y"], seed=1)
    b = _store(tmp_path, "b", 500, ["p", "q", "r"], seed=2)
    dm = SeriesDataModule([a, b], lookback=24, horizon=12, batch_size=8, eval_batch_size=16)
    assert dm.spec["datasets"] == ["a", "b"] and [s["dataset"] for s in dm.spec["stores"]] == [0, 1]
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            ids = batch["dataset"]
            assert ids.dtype == torch.long and ids.shape == (batch["x"].shape[0],)
            assert ids.tolist() == [{2: 0, 3: 1}[batch["x"].shape[-1]]] * len(ids)
    single = SeriesDataModule([b], lookback=24, horizon=12, batch_size=8)  # the collated (non-mixture) path
    batch = next(iter(single.train_dataloader()))
    assert batch["dataset"].tolist() == [0] * 8


def test_a_checkpoint_vocabulary_maps_ids_by_name(tmp_path):
    a = _store(tmp_path, "a", 300, ["x", "y"], seed=1)
    b = _store(tmp_path, "b", 500, ["p", "q", "r"], seed=2)
    c = _store(tmp_path, "c", 300, ["u"], seed=3)
    swapped = SeriesDataModule([b, a], lookback=24, horizon=12, datasets=["a", "b"])
    assert swapped.spec["datasets"] == ["a", "b"] and swapped.dataset_ids == [1, 0]
    assert next(iter(swapped.test_dataloader()))["dataset"][0] == 1  # b's windows come first, with b's id
    unseen = SeriesDataModule([c, a], lookback=24, horizon=12, datasets=["a", "b"])
    assert unseen.dataset_ids == [2, 0]  # c is not in the vocabulary: the unknown id len(vocabulary)
    assert {int(bt["dataset"][0]) for bt in unseen.test_dataloader()} == {2, 0}
    with pytest.raises(DataError, match="distinct"):
        SeriesDataModule([a], lookback=24, horizon=12, datasets=["a", "a"])


# ---- the task ----------------------------------------------------------------------------------------------
def _fit_and_save(task, dm, path):
    import lightning as L

    L.seed_everything(0)
    trainer = L.Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(path)
    return str(path)


def test_task_passes_ids_and_a_checkpoint_keeps_their_meaning(tmp_path):
    a = _store(tmp_path, "a", 300, ["x", "y"], seed=1)
    b = _store(tmp_path, "b", 500, ["p", "q", "r"], seed=2)
    c = _store(tmp_path, "c", 300, ["u", "v"], seed=3)
    dm = SeriesDataModule([a, b], lookback=24, horizon=12, batch_size=8)
    with pytest.raises(ConfigError, match="dataset_tokens=3 but the data names 2"):
        ForecastTask(model="itransformer-tiny", model_options={"dataset_tokens": 3}, data_spec=dm.spec)
    task = ForecastTask(model="itransformer-tiny", model_options={"dataset_tokens": 2}, data_spec=dm.spec).eval()
    batch = next(iter(dm.test_dataloader()))  # a's first test batch, id 0
    with torch.no_grad():
        got = task.predict_batch(batch)
        assert torch.equal(got, task.model(batch["x"], batch["x_mark"], torch.zeros(len(batch["x"]), dtype=torch.long)))
        assert not torch.equal(got, task.model(batch["x"], batch["x_mark"], torch.ones(len(batch["x"]), dtype=torch.long)))
    ckpt = _fit_and_save(task.train(), dm, tmp_path / "tokens.ckpt")
    with pytest.raises(CheckpointError, match=r"vocabulary is \['a', 'b'\] but the data's is \['b', 'a'\]"):
        ForecastTask(model=None, pretrained=ckpt, data_spec=SeriesDataModule([b, a], lookback=24, horizon=12).spec)
    # the store order differs, the checkpoint's vocabulary is passed: b's windows get b's id and b's forecast
    swapped = SeriesDataModule([b, a], lookback=24, horizon=12, eval_batch_size=16, datasets=["a", "b"])
    again = ForecastTask(model=None, pretrained=ckpt, data_spec=swapped.spec).eval()
    task.eval()
    b_batch = next(iter(swapped.test_dataloader()))
    assert b_batch["x"].shape[-1] == 3 and b_batch["dataset"].tolist() == [1] * 16
    with torch.no_grad():
        torch.testing.assert_close(again.predict_batch(b_batch), task.model(b_batch["x"], b_batch["x_mark"],
                                                                           torch.ones(16, dtype=torch.long)))
    # zero-shot on a store the checkpoint never saw: the unknown token, as a model called without ids
    new = SeriesDataModule([c], lookback=24, horizon=12, eval_batch_size=16, datasets=["a", "b"])
    zero = ForecastTask(model=None, pretrained=ckpt, data_spec=new.spec).eval()
    c_batch = next(iter(new.test_dataloader()))
    assert c_batch["dataset"].tolist() == [2] * 16
    with torch.no_grad():
        assert torch.equal(zero.predict_batch(c_batch), zero.model(c_batch["x"], c_batch["x_mark"]))
