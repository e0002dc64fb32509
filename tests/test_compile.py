"""Compilation (``sciformer.parallel``; task option ``compile: none|model|blocks``): whole graphs with no
breaks in training mode (``torch._dynamo.explain``), the compiled model's loss and gradients equal eager's
(CPU Inductor), compile through ``sciformer fit``, and a persistent on-disk cache.

The graph-break tests are in the default suite; the ones that run Inductor are ``slow`` (a cold compile costs
minutes on this host): ``pytest tests/test_compile.py -m slow``. Tolerance of compiled vs eager (float32): Inductor reorders reductions and fuses ops, so losses agree to
1e-5 relative and gradients to 1e-4 (all of them together, relative L2), not bitwise.
"""

import pytest
import torch
import torch._dynamo as dynamo

from sciformer import models, parallel


def _factformer():
    torch.manual_seed(0)
    model = models.get("factformer-2d-tiny", in_channels=2, out_channels=2, dim=16, depth=2, heads=2, dim_head=8)
    return model, (torch.randn(4, 2, 16, 16), torch.rand(4))  # the block shapes of the `sciformer fit` test


def _dit():
    torch.manual_seed(0)
    model = models.get("adit-dit-tiny", hidden_size=32, depth=2, num_heads=2)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    return model, (torch.randn(2, 5, 8), torch.rand(2), mask, None, torch.tensor([0, 1]))


def _scot():
    torch.manual_seed(0)
    model = models.get("scot-tiny", in_channels=2, out_channels=2, image_size=32)
    return model, (torch.randn(2, 2, 32, 32), torch.rand(2))


CASES = {"factformer": _factformer, "dit": _dit, "scot": _scot}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One Inductor cache for this module: the first compile builds Inductor's C++ prelude, the others reuse it."""
    return tmp_path_factory.mktemp("inductor")


def _breaks(name: str):
    model, x = CASES[name]()
    model.train()
    dynamo.reset()
    try:
        return dynamo.explain(model)(*x)
    finally:
        dynamo.reset()


@pytest.mark.parametrize("name", ["factformer", "dit"])
def test_one_graph_no_breaks_in_training_mode(name):
    e = _breaks(name)
    assert e.graph_break_count == 0, [str(b.reason)[:200] for b in e.break_reasons]
    assert e.graph_count == 1


def test_scot_one_graph_no_breaks_in_training_mode():
    """scOT's forward is the ops helper's work (issue 19, item 2/3); expected to reach 0 breaks there."""
    e = _breaks("scot")
    if e.graph_break_count:
        pytest.xfail(f"ops helper: scOT still breaks ({[str(b.reason)[:120] for b in e.break_reasons][:2]})")
    assert e.graph_count == 1


def _loss_and_grads(model, x):
    model.zero_grad(set_to_none=True)
    loss = model(*x).square().mean()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _compiled_matches_eager(name: str, how: str, cache_dir, monkeypatch):
    monkeypatch.setenv(parallel.CACHE_ENV, str(cache_dir))
    eager, x = CASES[name]()
    compiled, _ = CASES[name]()
    compiled.load_state_dict(eager.state_dict())
    eager.train()
    compiled.train()
    parallel.parallelize(compiled, compile=how)
    dynamo.reset()
    try:
        loss_e, grad_e = _loss_and_grads(eager, x)
        loss_c, grad_c = _loss_and_grads(compiled, x)
    finally:
        dynamo.reset()
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefixes
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=0)
    assert float((grad_c - grad_e).norm() / grad_e.norm()) < 1e-4


@pytest.mark.slow  # the first Inductor compile of a process builds its C++ prelude: 4 min on the loaded 2-core host
def test_compiled_factformer_loss_and_gradients_equal_eager(cache_dir, monkeypatch):
    _compiled_matches_eager("factformer", "blocks", cache_dir, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name, how", [("dit", "model"), ("factformer", "model"), ("scot", "model"),
                                       ("scot", "blocks")])
def test_compiled_loss_and_gradients_equal_eager_slow(name, how, cache_dir, monkeypatch):
    _compiled_matches_eager(name, how, cache_dir, monkeypatch)


@pytest.mark.slow
def test_persistent_cache_is_hit_after_a_reset(tmp_path, cache_dir, monkeypatch):
    """A second compile of the same graph (a new process is the same as a dynamo reset here) reads Inductor's
    FX-graph cache from the directory ``compile_cache`` chose instead of generating and building it again."""
    from torch._dynamo.utils import counters

    monkeypatch.delenv(parallel.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert parallel.compile_cache() == tmp_path / "sciformer" / "inductor"
    assert (tmp_path / "sciformer" / "inductor").is_dir()
    monkeypatch.setenv(parallel.CACHE_ENV, str(cache_dir))  # $TORCHINDUCTOR_CACHE_DIR wins
    assert parallel.compile_cache() == cache_dir
    where = cache_dir
    c = float(torch.rand(()))  # a graph no earlier run of this module compiled

    def f(a):
        return (a.sin() * c + 1).sum()

    x = torch.randn(8)
    dynamo.reset()
    counters.clear()
    torch.compile(f, fullgraph=True)(x)
    assert counters["inductor"]["fxgraph_cache_miss"] == 1
    dynamo.reset()
    torch.compile(f, fullgraph=True)(x)
    assert counters["inductor"]["fxgraph_cache_hit"] == 1
    assert any(where.rglob("*")), "the cache directory holds the compiled graph"
    dynamo.reset()


@pytest.mark.slow
def test_compile_is_a_task_option_of_sciformer_fit(tmp_path, cache_dir, monkeypatch):
    """``--model.init_args.compile blocks`` through the real CLI: trains, and the checkpoint's names are the
    eager model's (no wrapper prefixes), so it exports and fine-tunes like any other. Its blocks have the shapes
    of the equivalence test above, so with the module's cache their compiled code is read back, not rebuilt."""
    from heat import heat_store

    from sciformer.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(parallel.CACHE_ENV, str(cache_dir))
    store = heat_store(tmp_path / "heat.zarr", ["u", "v"], n=4, seed=0)
    (tmp_path / "fit.yaml").write_text(f"""
trainer: {{max_steps: 2, accelerator: cpu, logger: false, enable_progress_bar: false, enable_model_summary: false,
          limit_val_batches: 0, num_sanity_val_steps: 0, default_root_dir: {tmp_path}/run}}
model:
  class_path: sciformer.tasks.operator.OperatorTask
  init_args:
    model: factformer-2d-tiny
    model_options: {{dim: 16, depth: 2, heads: 2, dim_head: 8}}
    compile: blocks
data:
  class_path: sciformer.data.fields.FieldDataModule
  init_args: {{stores: [{store}], batch_size: 4, sampler: all2all}}
""")
    dynamo.reset()
    try:
        assert main(["fit", "-c", str(tmp_path / "fit.yaml")]) == 0
    finally:
        dynamo.reset()
    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["hyper_parameters"]["compile"] == "blocks" and saved["global_step"] == 2
    eager = models.get("factformer-2d-tiny", in_channels=2, out_channels=2, dim=16, depth=2, heads=2, dim_head=8)
    assert sorted(k[len("model."):] for k in saved["state_dict"] if k.startswith("model.")) == sorted(eager.state_dict())
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
