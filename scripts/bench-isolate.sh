#!/usr/bin/env bash
# `netproxy run --isolate` against `netproxy run` without isolation, in the same run: the shared
# kit's loadgen as the child, through the proxy variables `run` gives it, for http-1k (32
# keep-alive connections, absolute-form GET of 1 KiB) and connect-rate (16 workers: CONNECT,
# 16 bytes echoed, close), interleaved; then the start-up cost of isolation, as the wall time
# of `netproxy run [--isolate] -- true` over repeated runs.
#
#   scripts/bench-isolate.sh NETPROXY_BIN [REPS] [SECS] [STARTS]
#
# Prints one line per run and the medians with the isolated/plain ratios. Everything stays on
# loopback: loadgen's servers listen on 127.0.0.1 ports 18280 (HTTP) and 18281 (echo) of the
# host, and the child, isolated or not, reaches them only through netproxy.
set -euo pipefail
bin=$(realpath "${1:?netproxy binary}")
reps=${2:-5}
secs=${3:-5}
starts=${4:-50}
kit="$(cd "$(dirname "$0")/../.." && pwd)/shared/bench"
state=${BENCH_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/netproxy-bench}
if [[ -w $kit/loadgen ]]; then target=$kit/loadgen/target; else target=$state/loadgen-target; fi
CARGO_TARGET_DIR=$target cargo build --release --quiet --locked \
  --manifest-path "$kit/loadgen/Cargo.toml"
lg=$target/release/loadgen
out=$(mktemp -d /tmp/bench-isolate.XXXXXX)
echo "results in $out" >&2
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$lg" serve --http 127.0.0.1:18280 --echo 127.0.0.1:18281 --ready-file "$out/ready" \
  >"$out/servers.log" 2>&1 &
servers=$!
trap 'kill $servers 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -s $out/ready ]] && break; sleep 0.05; done
[[ -s $out/ready ]] || { echo "loadgen's servers did not start" >&2; exit 1; }

policy=(-c allow_local_binding=true --allow 127.0.0.1 --quiet)
# The child reads the proxy's address from the variables `run` sets.
http_1k='exec "$0" http-forward --proxy "${HTTP_PROXY#http://}" --url http://127.0.0.1:18280/1k --secs "$1" --warmup 1'
connect_rate='exec "$0" connect-rate --proxy "${HTTP_PROXY#http://}" --target 127.0.0.1:18281 --secs "$1" --warmup 1'

for r in $(seq "$reps"); do
  for mode in plain isolate; do
    flag=()
    [[ $mode == isolate ]] && flag=(--isolate)
    "$bin" run "${flag[@]}" "${policy[@]}" -- sh -c "$http_1k" "$lg" "$secs" \
      >"$out/http-1k-$mode-$r.json"
    "$bin" run "${flag[@]}" "${policy[@]}" -- sh -c "$connect_rate" "$lg" "$secs" \
      >"$out/connect-rate-$mode-$r.json"
  done
done

# Start-up: the whole `run -- true`, alternating, in milliseconds.
for i in $(seq "$starts"); do
  for mode in plain isolate; do
    flag=()
    [[ $mode == isolate ]] && flag=(--isolate)
    t0=$(date +%s%N)
    "$bin" run "${flag[@]}" --quiet -- true
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000 ))" >>"$out/start-$mode.us"
  done
done

python3 - "$out" "$reps" <<'EOF'
import json, os, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.loads(f.read().strip().splitlines()[-1])
for w, key in (("http-1k", "rps"), ("connect-rate", "tunnels_per_s")):
    vals = {"plain": [], "isolate": []}
    for r in range(1, reps + 1):
        for mode in vals:
            j = load(f"{w}-{mode}-{r}.json")
            errors = j.get("errors", {}).get("total", 0)
            vals[mode].append(j[key])
            print(f"{w} rep {r} {mode}: {j[key]:.0f}/s (errors {errors})")
    p, i = statistics.median(vals["plain"]), statistics.median(vals["isolate"])
    print(f"{w}: plain {p:.0f}/s, isolated {i:.0f}/s, ratio {i / p:.3f}")
starts = {}
for mode in ("plain", "isolate"):
    with open(os.path.join(out, f"start-{mode}.us")) as f:
        starts[mode] = [int(x) / 1000 for x in f.read().split()]
p, i = statistics.median(starts["plain"]), statistics.median(starts["isolate"])
print(f"start-up (run -- true, {len(starts['plain'])} runs each): plain {p:.1f} ms, "
      f"isolated {i:.1f} ms, isolation adds {i - p:.1f} ms (median)")
EOF
