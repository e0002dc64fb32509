#!/usr/bin/env bash
# The GPU checks of one short device session (at most 8 minutes on one H100/H200), as one prepared script.
#
# Default job `throughput` (alone on the GPU): benchmarks/train_throughput.py — tokens/s, MFU and peak memory of
# scOT-T/B/L and FactFormer-2D at the largest batch that fits, eager vs compile vs compile + CUDA graphs, bf16,
# 128² (every row its own process and time limit; rows the budget did not reach say so), written as JSON and as
# the README's markdown table. Optional jobs (JOBS="throughput scot_step ..."): `scot_step` (the older scOT step
# benchmark: launches per step; `compile` adds SCIFORMER_KERNELS=compile) and ADiT training throughput; phase B,
# side by side: the iTransformer Weather rows at 4 horizons (paper protocol, GPU; done 2026-11-29),
# a time-boxed latent-DiT training + 1,000 molecule and crystal samples (`adit`; scored afterwards where RDKit is:
# `python benchmarks/molecules_adit.py score --raw .../samples_molecule.json`), and the GPU-only tests (`tests`).
# Only `throughput` fits the 8 minutes with room for the start-up; the others are for a longer session.
# Everything lands in $OUT/gpu_results.tgz (logs, JSON) and $OUT/train_throughput.{json,md}; every job has its own
# time limit so the archive is always written. Compiled code is cached in $TORCHINDUCTOR_CACHE_DIR (default
# .gpu/inductor: carry .gpu to reuse a cache from an earlier run; each row reports its first step, cold or warm).
#
# Needs beside the checkout (not in git): .gpu/.whl (wheels of packages the GPU image lacks: zarr, numcodecs,
# donfig, google-crc32c, jsonargparse, docstring_parser, typeshed_client), .gpu/data (qm9_etkdg_30k,
# perov_5/carbon_24 val+test stores, timeseries/weather.zarr) and .gpu/adit_ae_joint_cpu.ckpt (the trained
# autoencoder, optimizer state stripped). Prepared here with (Python 3.12 wheels for the GPU image):
#     echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/data/timeseries
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       --platform manylinux2014_x86_64 -d .gpu/.whl zarr numcodecs donfig google-crc32c jsonargparse \
#       docstring_parser typeshed_client                      # pin the versions of .venv
#     cp -r data/{qm9_etkdg_30k,perov_5_val,perov_5_test,carbon_24_val,carbon_24_test}.zarr .gpu/data/
#     cp -r data/timeseries/weather.zarr .gpu/data/timeseries/
#     python -c "import torch; c = torch.load('runs/adit_ae_joint_cpu/checkpoints/last.ckpt', weights_only=True);
#       torch.save({k: c[k] for k in ('state_dict', 'hyper_parameters', 'sciformer_task', 'sciformer_model')},
#       '.gpu/adit_ae_joint_cpu.ckpt')"
# and run through the device tool with carry [".gpu"] and the command `OUT=$OUT bash benchmarks/gpu_checks.sh`.
#
# (the throughput job alone needs only zarr, numcodecs, donfig, google-crc32c and jsonargparse from .gpu/.whl).
#
#     OUT=/tmp/gpu bash benchmarks/gpu_checks.sh          # DEADLINE=470 seconds by default
#     JOBS="scot_step compile adit weather tests" DEADLINE=900 OUT=/tmp/gpu bash benchmarks/gpu_checks.sh
set -u
OUT=${OUT:-runs/gpu_checks}
PY=${PY:-python3}
DEADLINE=${DEADLINE:-470}
JOBS=${JOBS:-"throughput"}  # of: throughput scot_step compile adit weather tests
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.gpu/inductor}
W=/tmp/gpu_checks
mkdir -p "$OUT" "$W/logs" data
START=$SECONDS
export PYTHONUNBUFFERED=1
if ls .gpu/.whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/.whl/*.whl \
    > "$W/logs/pip.log" 2>&1 || echo "pip install failed" >> "$W/logs/pip.log"
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
cp -rn .gpu/data/* data/ 2>/dev/null
nvidia-smi > "$W/logs/nvidia-smi.txt" 2>&1
$PY -c "import torch, lightning, zarr, jsonargparse; print(torch.__version__, lightning.__version__, zarr.__version__, torch.cuda.get_device_name())" \
  > "$W/logs/versions.txt" 2>&1

# ---- phase A: timings on an otherwise idle GPU ----
if [[ " $JOBS " == *" throughput "* ]]; then  # the budget of the rows: what is left, less 40 s for the rest
  budget=$(( DEADLINE - (SECONDS - START) - 120 ))
  timeout $(( budget + 20 )) $PY benchmarks/train_throughput.py --device cuda --threads 8 --budget $budget \
    --job-limit 200 --out "$W/train_throughput.json" --table "$W/train_throughput.md" > "$W/logs/train_throughput.log" 2>&1
  # bf16 parameters with fp32 masters (no weight casts per step), eager: the launch-bound case it is for
  timeout 80 $PY benchmarks/train_throughput.py --device cuda --threads 8 --budget 60 --models scot-t,scot-b \
    --modes eager --precision bf16-master --out "$W/train_throughput_master.json" \
    --table "$W/train_throughput_master.md" > "$W/logs/train_throughput_master.log" 2>&1
  cp "$W"/train_throughput{,_master}.{json,md} "$OUT/" 2>/dev/null
fi
if [[ " $JOBS " == *" scot_step "* ]]; then
  timeout 150 $PY benchmarks/scot_step.py --device cuda --threads 8 --out "$W/scot_step_cuda.json" > "$W/logs/scot_step.log" 2>&1
fi
if [[ " $JOBS " == *" compile "* ]]; then  # each scOT stage compiled whole (first step compiles: minutes)
  SCIFORMER_KERNELS=compile timeout 240 $PY benchmarks/scot_step.py --device cuda --threads 8 \
    --out "$W/scot_step_cuda_compile.json" > "$W/logs/scot_step_compile.log" 2>&1
fi
[[ " $JOBS " == *" adit "* ]] && timeout 60 $PY benchmarks/molecules_adit.py throughput --device cuda \
  --sizes adit-vae,adit-dit-s,adit-dit-b --batch 256 --steps 10 --warmup 3 > "$W/logs/adit_throughput.log" 2>&1

# ---- phase B: accuracy runs side by side ----
left=$(( DEADLINE - (SECONDS - START) ))
(( left < 60 )) && JOBS=${JOBS//adit/} && JOBS=${JOBS//weather/} && JOBS=${JOBS//tests/} && echo "phase B: no time left" > "$W/logs/phase_b.txt"
adit_s=$(( left - 120 ))  # probe, start-up and sampling take about 1.5 minutes
[[ " $JOBS " == *" adit "* ]] && timeout $(( left - 15 )) $PY benchmarks/molecules_adit.py budget --ae .gpu/adit_ae_joint_cpu.ckpt --seconds $adit_s \
  --out "$W/adit" > "$W/logs/adit_budget.log" 2>&1 &
[[ " $JOBS " == *" weather "* ]] && for h in 96 192 336 720; do
  timeout $(( left - 15 )) $PY benchmarks/itransformer_reproduce.py --datasets weather --horizons $h --accelerator gpu \
    --threads 2 --out "$W/weather_$h.json" --workdir "$W/reproduce" > "$W/logs/weather_$h.log" 2>&1 &
done
[[ " $JOBS " == *" tests "* ]] && timeout $(( left - 15 < 180 ? left - 15 : 180 )) $PY -m pytest -q -p no:cacheprovider -m gpu tests/kernels > "$W/logs/pytest_gpu.log" 2>&1
wait
echo "elapsed $(( SECONDS - START )) s" > "$W/logs/elapsed.txt"
cp benchmarks/results/molecules_adit_throughput_cuda.json "$W/" 2>/dev/null
rm -rf "$W/adit/probe" "$W/adit/run/checkpoints" "$W/reproduce"/*/checkpoints
tar czf "$OUT/gpu_results.tgz" -C /tmp gpu_checks
tail -n 3 "$W"/logs/*.log
cat "$W/train_throughput.md" 2>/dev/null
