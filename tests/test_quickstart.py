"""The quickstart pipeline (build -> pretrain -> fine-tune vs scratch -> rollout -> report), at test size."""

import json

import pytest

from sciformer.data import commands
from sciformer.errors import SciformerError
from sciformer.quickstart import QuickstartConfig, run


@pytest.fixture
def heat_builders(monkeypatch):
    monkeypatch.setitem(commands.BUILDERS, "heat-a", "heat:build_heat")
    monkeypatch.setitem(commands.BUILDERS, "heat-down", "heat:build_heat_downstream")


def test_quickstart_runs_every_stage_and_reports(tmp_path, heat_builders):
    cfg = QuickstartConfig(pretrain_data={"heat-a": 16}, downstream="heat-down", downstream_trajectories=20,
                           resolution=16, model="factformer-2d-tiny",
                           model_options={"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "residual": True},
                           pretrain_epochs=2, batch_size=16, time_stride=1, max_snapshots=None,
                           finetune_time_stride=1, samples=[4, 8], finetune_epochs=1)
    report = run(cfg, tmp_path).read_text()
    # pretraining curve: one row per epoch, with the persistence baseline beside the model
    assert "Pretraining" in report and (tmp_path / "pretrain_curve.png").stat().st_size > 1000
    results = json.loads((tmp_path / "finetune-heat-down" / "results.json").read_text())
    assert set(results["cells"]) == {f"n={n}/{k}/seed=0" for n in (4, 8) for k in ("finetuned", "scratch")}
    # the report's table holds the sweep's numbers
    ft8 = results["summary"]["table"]["finetuned"]["8"]["mean"]
    assert f"{ft8:.3g}" in report
    for kind in ("finetuned", "scratch"):
        summary = json.loads((tmp_path / "rollout" / kind / "summary.json").read_text())
        assert summary["steps"] == 4 and summary["split"] == "test"
    assert "| finetuned | 4 |" in report and "Time per stage" in report
    # a rerun reuses every finished stage
    before = (tmp_path / "pretrained.ckpt").stat().st_mtime_ns
    run(cfg, tmp_path)
    assert (tmp_path / "pretrained.ckpt").stat().st_mtime_ns == before
    # other settings in the same directory would reuse stages made with these: refused
    cfg.pretrain_epochs = 3
    with pytest.raises(SciformerError, match="other settings"):
        run(cfg, tmp_path)
