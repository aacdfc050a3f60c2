#!/usr/bin/env bash
# flow-rl's prompt encoding against transformers in one run: for each configuration and
# max_sequence_length, `scripts/encoder_peer_bench.py --bench` (diffusers' encode_prompt on
# transformers' encoders, saving its output) and then `encoder_bench` (release build) on the
# same folder and prompts, comparing with that output; each in its own process, since peak RSS
# is a process maximum. Both use 2 threads.
#
#   scripts/peer_venv.sh                          # once: pinned torch/diffusers in /work/peer-venv
#   cargo build --release --example encoder_bench
#   scripts/encoder_compare.sh                    # tiny and mid, f32, batch 8, 32 prompts, L 128 and 256
#   CONFIGS=sd35 DTYPE=bf16 LENGTHS=256 PROMPTS=16 scripts/encoder_compare.sh   # ~11 GB under $WORK
#
# `REPEATS` timed runs over the prompts are averaged (default 1; the tiny sizes take
# milliseconds and want more). Folders with random weights are written under $WORK (default /tmp/encoder-bench) when
# missing, with the prompt list; the weights are seeded, so a rerun measures the same models.
# Run it on a quiet machine: the figures are wall-clock times on 2 cores. `PY` selects the
# Python interpreter, `BENCH` our binary.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-/work/peer-venv/bin/python}
BENCH=${BENCH:-target/release/examples/encoder_bench}
WORK=${WORK:-/tmp/encoder-bench}
CONFIGS=${CONFIGS:-tiny mid}
LENGTHS=${LENGTHS:-128 256}
PROMPTS=${PROMPTS:-32}
BATCH=${BATCH:-8}
DTYPE=${DTYPE:-f32}
REPEATS=${REPEATS:-1}
for tool in "$PY" "$BENCH"; do
    if [ ! -x "$tool" ]; then
        echo "missing $tool: run scripts/peer_venv.sh and cargo build --release --example encoder_bench" >&2
        exit 1
    fi
done

mkdir -p "$WORK"
prompts="$WORK/prompts-$PROMPTS.txt"
[ -f "$prompts" ] || "$PY" scripts/encoder_peer_bench.py --write-prompts "$prompts" --prompts "$PROMPTS"
for config in $CONFIGS; do
    folder="$WORK/$config-$DTYPE"
    [ -d "$folder/text_encoder_3" ] || "$PY" scripts/encoder_peer_bench.py --write "$folder" --config "$config" --dtype "$DTYPE"
    for length in $LENGTHS; do
        common=(--prompt-file "$prompts" --prompts "$PROMPTS" --batch-size "$BATCH" --max-sequence-length "$length" --repeats "$REPEATS")
        saved="$WORK/$config-$DTYPE-$length.transformers.safetensors"
        echo "=== $config $DTYPE, max_sequence_length $length, batch $BATCH, $PROMPTS prompts × $REPEATS (load: $(cut -d' ' -f1 /proc/loadavg))"
        echo "--- transformers"
        "$PY" scripts/encoder_peer_bench.py --bench "$folder" "${common[@]}" --dtype "$DTYPE" --threads 2 --save "$saved"
        echo "--- flow-rl (flex)"
        RAYON_NUM_THREADS=2 "$BENCH" --model "$folder" "${common[@]}" --precision "$DTYPE" --backend flex --compare "$saved"
    done
done
