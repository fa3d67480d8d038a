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

# The CPU time of `run` and everything it waited for (netproxy, the holder, loadgen), on stderr:
# netproxy's own share is that minus loadgen's (`loadgen_cpu_s`), a figure that contention for
# the two cores moves far less than the rates.
cpu() { python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "w"), check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime + r.ru_stime, file=open(sys.argv[1] + ".cpu", "w"))' "$@"; }

for r in $(seq "$reps"); do
  for mode in plain isolate; do
    flag=()
    [[ $mode == isolate ]] && flag=(--isolate)
    cpu "$out/http-1k-$mode-$r.json" \
      "$bin" run "${flag[@]}" "${policy[@]}" -- sh -c "$http_1k" "$lg" "$secs"
    cpu "$out/connect-rate-$mode-$r.json" \
      "$bin" run "${flag[@]}" "${policy[@]}" -- sh -c "$connect_rate" "$lg" "$secs"
  done
done

# Start-up: the whole `run -- true`, alternating, in milliseconds.
for i in $(seq "$starts"); do
  for mode in plain isolate; do
    flag=()
    [[ $mode == isolate ]] && flag=(--isolate)
    t0=$(date +%s%N)
    "$bin" run "${flag[@]}" "${policy[@]}" -- true
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
for w, key, count in (("http-1k", "rps", "requests_all"), ("connect-rate", "tunnels_per_s", "tunnels_all")):
    vals = {"plain": [], "isolate": []}
    cpu = {"plain": [], "isolate": []}
    for r in range(1, reps + 1):
        for mode in vals:
            j = load(f"{w}-{mode}-{r}.json")
            errors = j.get("errors", {}).get("total", 0)
            with open(os.path.join(out, f"{w}-{mode}-{r}.json.cpu")) as f:
                total = float(f.read())
            # netproxy's CPU per operation, warm-up included (the count is of the whole run).
            ops = j.get(count) or 1
            us = (total - j["loadgen_cpu_s"]) / ops * 1e6
            vals[mode].append(j[key])
            cpu[mode].append(us)
            print(f"{w} rep {r} {mode}: {j[key]:.0f}/s (errors {errors}), netproxy {us:.1f} us CPU/op")
    p, i = statistics.median(vals["plain"]), statistics.median(vals["isolate"])
    cp, ci = statistics.median(cpu["plain"]), statistics.median(cpu["isolate"])
    print(f"{w}: plain {p:.0f}/s, isolated {i:.0f}/s, ratio {i / p:.3f}; "
          f"netproxy CPU/op plain {cp:.1f} us, isolated {ci:.1f} us, ratio {ci / cp:.3f}")
starts = {}
for mode in ("plain", "isolate"):
    with open(os.path.join(out, f"start-{mode}.us")) as f:
        starts[mode] = [int(x) / 1000 for x in f.read().split()]
p, i = statistics.median(starts["plain"]), statistics.median(starts["isolate"])
print(f"start-up (run -- true, {len(starts['plain'])} runs each): plain {p:.1f} ms, "
      f"isolated {i:.1f} ms, isolation adds {i - p:.1f} ms (median)")
EOF
