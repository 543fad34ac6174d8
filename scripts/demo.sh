#!/usr/bin/env bash
# The main job on built-in defaults: set up, write a synthetic MIMIC-shaped cohort, prepare the
# training cache, train the demo model on the CPU, export and verify the bundle, and replay a
# synthetic bedside recording through `bedside replay`, printing the alerts and where they were logged.
# Everything is written under demo/ (or $DEMO_DIR), which is cleared first.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT=${DEMO_DIR:-demo}
SUBJECTS=${DEMO_SUBJECTS:-1000}
rm -rf "$OUT"
mkdir -p "$OUT"
step() { printf '\n==> %s (%ds)\n' "$1" "$(( $(date +%s) - t0 ))"; }

step "synthetic cohort ($SUBJECTS subjects, SYNTHETIC data, not clinical)"
trainer synth --out "$OUT/mimic" --subjects "$SUBJECTS" --seed 0
step "cohort preparation: pairing, splits, cache"
trainer prepare --mimic-root "$OUT/mimic" --out "$OUT/cache" --seed 0
step "training on the CPU (configs/demo.toml)"
trainer run --config configs/demo.toml --cache "$OUT/cache" --out "$OUT/run"
step "evaluation report"
trainer report "$OUT/run"
step "a demo signing key; the bedside trusts only its public half (in $OUT/keys)"
trainer keygen --out "$OUT/signing/demo-signing.key"
mkdir -p "$OUT/keys"
cp "$OUT/signing/demo-signing.key.pub" "$OUT/keys/"
step "export to a signed model bundle"
trainer export "$OUT/run" --out "$OUT/model.onnx" --sign "$OUT/signing/demo-signing.key"
MODEL="$OUT/model.int8.onnx"  # the CPU bundle when INT8 passed its AUROC gate, else the FP32 one
[ -f "$MODEL" ] || MODEL="$OUT/model.onnx"
bedside verify "$MODEL" --trust "$OUT/keys"
step "a synthetic 5-minute bedside recording (risks ramp up; one lead-off episode)"
trainer synth-record --out "$OUT/records/bed7" --minutes 5 --seed 0
step "bedside replay"
bedside replay "$OUT/records/bed7" --model "$MODEL" --trust "$OUT/keys" --db "$OUT/alerts.db" --bed demo-bed-7
step "alarm log"
bedside alerts --db "$OUT/alerts.db" --format table
printf '\nDemo finished in %ds. Alerts logged to %s\n' "$(( $(date +%s) - t0 ))" "$(realpath "$OUT/alerts.db")"
