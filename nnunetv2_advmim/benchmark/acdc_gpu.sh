#!/usr/bin/env bash
# The ACDC comparison for one lent GPU session (python -m nnunetv2_advmim.benchmark.acdc_gpu): per-iteration seconds
# of every arm on the dataset's plan, then validation Dice of stock nnU-Net and AdvMIM at equal iterations, inside a
# 480 s budget. The hard limit (ACDC_GPU_TIMEOUT, default 570 s; 3600 s with --cpu-smoke) stops everything before a
# 10-minute device call ends; the JSON is rewritten after every training, so a stopped run still reports what it
# measured. The script ships inside the installed package, next to the module it runs.
#
#   bash nnunetv2_advmim/benchmark/acdc_gpu.sh -d 27 -o "$OUT/acdc_gpu.json"    # GPU (nnUNet_raw etc. set)
#   bash nnunetv2_advmim/benchmark/acdc_gpu.sh -d 27 -o smoke.json --cpu-smoke  # CPU smoke run: the commands work
set -euo pipefail
limit=570
for a in "$@"; do if [ "$a" = "--cpu-smoke" ]; then limit=3600; fi; done
exec timeout --kill-after=10 "${ACDC_GPU_TIMEOUT:-$limit}" python -m nnunetv2_advmim.benchmark.acdc_gpu "$@"
