#!/bin/bash
# Single- or multi-node pretraining with torchrun (no SLURM):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 GPUS=8 bash pretrain/torchrun.sh configs/pretrain/scot_t_ns.yaml
# The strategy is the config's (DDP, or FSDP2 in configs/pretrain/scot_b_fsdp.yaml).
set -euo pipefail
CONFIG=${1:?usage: bash pretrain/torchrun.sh CONFIG.yaml [extra sciformer args]}
shift
NNODES=${NNODES:-1}; GPUS=${GPUS:-1}
torchrun --nnodes "$NNODES" --nproc_per_node "$GPUS" --node_rank "${NODE_RANK:-0}" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  -m sciformer.cli fit -c "$CONFIG" --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS" "$@"
