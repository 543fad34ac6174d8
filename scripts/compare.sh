#!/usr/bin/env bash
# The comparison on the synthetic cohort (configs/demo-compare.toml): every baseline including the
# crude-feature floor, both input scalings and the low-label protocol, three seeds, then the report.
# The seeds run side by side, one process each (one torch thread each), into compare/seed_<k>;
# `trainer report` reads them together. Uses the demo's cohort and cache when scripts/demo.sh made
# them (same subjects and seed), else makes its own. Everything goes under compare/ (or $COMPARE_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT=${COMPARE_DIR:-compare}
SUBJECTS=${DEMO_SUBJECTS:-1000}
SEEDS=${COMPARE_SEEDS:-"0 1 2"}
step() { printf '\n==> %s (%ds)\n' "$1" "$(( $(date +%s) - t0 ))"; }
mkdir -p "$OUT"
CACHE=${COMPARE_CACHE:-demo/cache}
if [ ! -f "$CACHE/manifest.json" ]; then
    CACHE="$OUT/cache"
    if [ ! -f "$CACHE/manifest.json" ]; then
        step "synthetic cohort ($SUBJECTS subjects, SYNTHETIC data, not clinical) and its cache"
        trainer synth --out "$OUT/mimic" --subjects "$SUBJECTS" --seed 0
        trainer prepare --mimic-root "$OUT/mimic" --out "$CACHE" --seed 0
    fi
fi
step "training seeds [$SEEDS] side by side (configs/demo-compare.toml, cache $CACHE)"
pids=()
dirs=()
for s in $SEEDS; do
    trainer run --config configs/demo-compare.toml --cache "$CACHE" --out "$OUT/seed_$s" --seed "$s" --no-progress \
        >"$OUT/seed_$s.log" 2>&1 &
    pids+=("$!")
    dirs+=("$OUT/seed_$s")
done
failed=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "seed run ${dirs[$i]} failed; its log: ${dirs[$i]}.log" >&2
        tail -n 20 "${dirs[$i]}.log" >&2
        failed=1
    fi
done
[ "$failed" -eq 0 ] || exit 1
for d in "${dirs[@]}"; do grep -A20 "^WARNING" "$d.log" || true; done
step "report"
trainer report "${dirs[@]}" --out "$OUT/report"
printf '\nComparison finished in %ds: %s\n' "$(( $(date +%s) - t0 ))" "$(realpath "$OUT/report/report.md")"
