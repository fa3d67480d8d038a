#!/usr/bin/env bash
# Before/after pairs of two netproxy binaries with the shared bench kit, interleaved, with A/A
# pairs of the first binary measured the same way (the method's own noise).
#
#   scripts/bench-pair.sh BEFORE_BIN AFTER_BIN [ROUNDS] [WORKLOADS]
#
# Each round runs the kit (`--quick`, netproxy only) on BEFORE, AFTER and BEFORE again, in that
# order, so each round gives one before/after pair (B1 vs A) and one A/A pair (B1 vs B2). The
# output is one line per round and workload, then per workload the mean and range of the
# after/before ratio and of the A/A ratio. Everything stays on loopback (the kit's rule).
set -euo pipefail
before=${1:?before binary}
after=${2:?after binary}
rounds=${3:-3}
workloads=${4:-idle-connect,http-1k,connect-rate}
kit="$(cd "$(dirname "$0")/../.." && pwd)/shared/bench"
out=${BENCH_PAIR_OUT:-$(mktemp -d /tmp/bench-pair.XXXXXX)}
mkdir -p "$out"
echo "results in $out" >&2

run() { # label binary round
  local dir="$out/r$3-$1"
  NETPROXY_BIN="$2" "$kit/compare.sh" --quick --peers netproxy --workloads "$workloads" \
    --out "$dir" >"$dir.log" 2>&1 || { echo "kit failed: $dir.log" >&2; exit 1; }
}

for r in $(seq 1 "$rounds"); do
  run b1 "$before" "$r"
  run a "$after" "$r"
  run b2 "$before" "$r"
done

python3 - "$out" "$rounds" "$workloads" <<'EOF'
import json, os, statistics, sys
out, rounds, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
def value(r, label, w):
    with open(os.path.join(out, f"r{r}-{label}", "results.json")) as f:
        return json.load(f)["summary"][w]["targets"]["netproxy"]["value"]
pairs = {w: [] for w in workloads}
aa = {w: [] for w in workloads}
for r in range(1, rounds + 1):
    for w in workloads:
        b1, a, b2 = (value(r, l, w) for l in ("b1", "a", "b2"))
        pairs[w].append(a / b1)
        aa[w].append(b2 / b1)
        print(f"round {r} {w}: before {b1:.2f}  after {a:.2f}  before again {b2:.2f}")
for w in workloads:
    p, q = pairs[w], aa[w]
    print(f"{w}: after/before mean {statistics.mean(p):.3f} (range {min(p):.3f}-{max(p):.3f}); "
          f"A/A mean {statistics.mean(q):.3f} (range {min(q):.3f}-{max(q):.3f})")
EOF
