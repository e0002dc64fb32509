"""Typed functions behind the `sciformer` subcommands (jsonargparse builds their --help)."""

from __future__ import annotations

import platform
from pathlib import Path


def export(ckpt: str, out: Path, *, push: str | None = None, onnx: bool = False, opset: int | None = None,
           results: list[Path] | None = None, license: str | None = None, private: bool = False,
           revision: str | None = None) -> None:
    """Write a trained model as a Hub-ready folder: model.safetensors, config.json and a README.md model card.

    The normalisation statistics and variable names of the training data go into config.json, so
    ``sciformer.models.load(OUT)`` gives a model that knows its inputs. The model card is generated from what
    the checkpoint and its run recorded (config, hyper-parameters, data spec, the run's logged metrics and the
    --results files); anything absent is written as "not recorded".

    Example:
        sciformer export runs/lightning_logs/version_0/checkpoints/last.ckpt exports/scot-tiny
        sciformer export runs/lightning_logs/version_0/checkpoints/last.ckpt exports/scot-tiny --results runs/ft-wave/results.json
        sciformer export runs/lightning_logs/version_0/checkpoints/last.ckpt exports/scot-tiny --push my-org/scot-tiny
        sciformer export exports/scot-tiny exports/scot-tiny-onnx --onnx

    Args:
        ckpt: a Lightning checkpoint written by `sciformer fit`, an export/convert directory, or hf://org/name.
        out: directory to write (replaced atomically if it exists).
        push: upload the folder to this Hugging Face Hub model repo (org/name; created if missing; needs a token
            from `hf auth login` or HF_TOKEN).
        onnx: also write OUT/model.onnx (needs the onnx extra: pip install 'sciformer[onnx]').
        opset: with --onnx: the ONNX opset (default: the exporter's).
        results: result files whose metrics go into the model card: a `sciformer finetune` results.json, a
            `sciformer rollout` summary.json; --results a.json,b.json.
        license: the card's licence (a Hub licence id such as apache-2.0; default: sciformer's own for models
            trained with it, "other" for converted checkpoints).
        private: with --push: create the repo private.
        revision: with --push: the branch to commit to (default main).
    """
    from sciformer import model_card
    from sciformer.checkpoints import export_checkpoint

    for r in results or []:  # a bad results file fails before anything is written
        model_card.result_metrics(r)
    path = export_checkpoint(ckpt, out)
    card = model_card.write(ckpt, path, results=results, license=license, repo_id=push)
    print(f"exported {ckpt} -> {path} (model card: {card})")
    if onnx:
        from sciformer.onnx_export import export_onnx

        print(f"onnx: {export_onnx(path) if opset is None else export_onnx(path, opset=opset)}")
    if push:
        from sciformer import hub

        url = hub.push(path, push, private=private or None, revision=revision)
        print(f"pushed {path} -> https://huggingface.co/{hub.parse(push).repo_id} ({url})")


def info() -> None:
    """Print versions, devices and the registered models and data sets.

    Example:
        sciformer info
    """
    import lightning
    import torch

    from sciformer import __version__, models
    from sciformer.data.commands import BUILDERS, CONVERTERS

    print(f"sciformer {__version__}  python {platform.python_version()}  torch {torch.__version__}  "
          f"lightning {lightning.__version__}")
    devices = [f"cpu ({torch.get_num_threads()} threads)"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    print("devices: " + ", ".join(devices))
    print("models: " + (", ".join(models.names()) or "(none)"))
    print("data builders: " + (", ".join(sorted(BUILDERS)) or "(none)"))
    print("data formats: " + (", ".join(sorted(CONVERTERS)) or "(none)"))


def finetune(
    *,
    ckpt: Path,
    data: Path,
    samples: list[int] | None = None,
    baseline: list[str] | None = None,
    seeds: list[int] | None = None,
    epochs: int = 20,
    batch_size: int | None = None,
    mode: str = "full",
    lr: float | None = None,
    lr_embedding_recovery: float = 5e-4,
    lr_time_embedding: float = 5e-4,
    scratch_lr: float | None = None,
    precision: str = "32-true",
    num_workers: int = 0,
    fno_model: str = "fno-2d",
    time_stride: int = 1,
    seasonality: int | None = None,
    properties: list[str] | None = None,
    test_data: Path | None = None,
    logger: str = "none",
    out: Path = Path("runs/finetune"),
) -> None:
    """Fine-tune a pretrained checkpoint on N samples of a store, for several N, against baselines.

    One sweep for every kind of store: field stores (operator models; N = training trajectories), series stores
    (forecasters; N = training windows) and atom stores (property models; N = training systems). Every cell
    (sample count × model × seed) gets the same budget and is tested on the same test split. A killed sweep
    resumes from its finished cells (rerun the same command). Writes OUT/results.json, OUT/report.md (errors,
    accuracy gain AG and efficiency gain EG) and OUT/error_vs_samples.png.

    Example:
        sciformer finetune --ckpt runs/pretrain/last.ckpt --data data/wave.zarr --samples 8,32,128 --baseline scratch --out runs/ft-wave
        sciformer finetune --ckpt exports/scot-t --data data/ac.zarr --samples 4,16 --seeds 0,1,2 --mode lora
        sciformer finetune --ckpt runs/ett/last.ckpt --data data/timeseries/etth2.zarr --samples 256,2048 --out runs/ft-etth2
        sciformer finetune --ckpt runs/c24/last.ckpt --data data/perov_5_val.zarr --test_data data/perov_5_test.zarr --properties heat_ref --samples 256,1024

    Args:
        ckpt: pretrained Lightning checkpoint or export/convert directory.
        data: the downstream store (its train split is subsampled, its test split is used for scoring).
        samples: sample counts (default 8,32); --samples 8,32 or --samples 8 --samples 32.
        baseline: baselines with the same budget. Fields: scratch (the checkpoint's architecture, fresh weights;
            for every source, converted Poseidon checkpoints included), fno (neuraloperator's FNO, size
            --fno_model); default scratch. Series: scratch, persistence, lookback-mean, seasonal-naive (default
            all). Atoms: scratch, mean (the training mean; default both). --baseline scratch --baseline fno or
            --baseline scratch,fno.
        seeds: seeds (default 0; report ≥ 3 for claims), as --seeds 0,1,2.
        epochs: epochs per cell (same for every model).
        batch_size: batch size per cell (default: fields 16, series 32, atoms 64).
        mode: full | frozen-latent | lora.
        lr: learning rate of the pretrained model (default: fields 5e-5 as Poseidon, series 1e-4, atoms 3e-4).
        lr_embedding_recovery: fields: learning rate of the embedding and recovery.
        lr_time_embedding: fields: learning rate of the time-conditioning parameters.
        scratch_lr: learning rate of the from-scratch baseline (default: fields 5e-4, series 1e-4, atoms 1e-3).
        precision: Lightning precision (32-true, bf16-mixed, ...) or bf16-master (bf16 parameters, fp32 master
            weights: no weight casts per step; ``sciformer.precision``).
        num_workers: DataLoader workers.
        fno_model: fields: registered FNO size of the fno baseline (fno-2d, fno-2d-tiny).
        time_stride: fields: use every k-th stored snapshot (all2all pairs grow with the square of the count).
        seasonality: series: period of the seasonal-naive baseline and of MASE (default: a day of steps for
            sub-daily data, 7 for daily).
        properties: atoms: the property to fine-tune on (default: the one the checkpoint was trained on).
        test_data: atoms: a separate test store (default: the held-out 10 % of --data).
        logger: none | tensorboard (events in OUT/tensorboard) | wandb (offline unless WANDB_MODE says
            otherwise, in OUT/wandb): the plots also go there as images and the tables as tables.
        out: output directory.
    """
    from sciformer import loggers
    from sciformer.finetune import SweepConfig, sweep
    from sciformer.finetune.report import log_outputs

    loggers.check(logger)

    cfg = SweepConfig(samples=samples or [8, 32], baselines=baseline, seeds=seeds or [0], epochs=epochs,
                      batch_size=batch_size, mode=mode, lr=lr, lr_embedding_recovery=lr_embedding_recovery,
                      lr_time_embedding=lr_time_embedding, scratch_lr=scratch_lr, precision=precision,
                      num_workers=num_workers, fno_model=fno_model, time_stride=time_stride, seasonality=seasonality,
                      properties=properties, test_data=str(test_data) if test_data else None)
    summary = sweep(ckpt, data, cfg, out)
    if (log := loggers.open_logger(logger, out, f"finetune {out.name}")) is not None:
        try:
            log_outputs(log, out, summary, cfg)
        finally:
            log.close()
    print((out / "report.md").read_text())
    print(f"results: {out / 'results.json'}  report: {out / 'report.md'}  plot: {out / 'error_vs_samples.png'}")

