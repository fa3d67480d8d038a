#!/usr/bin/env bash
# The audit export benchmark of issue 6 (docs/benchmarks.md): http-forward 1 KiB through
# netproxy for SECS seconds, without audit sinks and with `audit_log` plus OTLP/HTTP export to a
# loopback collector, interleaved REPS times; then every decision is counted in the file, at the
# collector and in netproxy's own metrics. Everything listens on 127.0.0.1.
#
#   scripts/bench-audit.sh [SECS] [REPS]      (defaults 60 and 2)
#
# SLICE=N alternates the load between two live instances in N-second turns (see alternate()).
#
# WORKLOAD=connect-rate runs loadgen connect-rate instead (a CONNECT tunnel per decision, to
# the origin's echo-close port; --close server) of http-forward.
#
# AA=1 runs a second instance without sinks in place of the audited one: the method's own noise.
#
# The last lines give each pair's cost and, over several pairs, their mean with its 95% interval.
# Each run also gives netproxy's CPU per decision by kind of thread (workers, of which user
# space, file, otlp, other).
#
# Needs: target/release/netproxy, target/release/examples/otlp_count
# (cargo build --release -p proxy-bin && cargo build --release -p proxy-audit --example otlp_count)
# and the bench kit's loadgen (../shared/bench/loadgen/target/release/loadgen).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
REPS=${2:-2}
NETPROXY=target/release/netproxy
COUNT=target/release/examples/otlp_count
LOADGEN=${LOADGEN:-../shared/bench/loadgen/target/release/loadgen}
for b in "$NETPROXY" "$COUNT" "$LOADGEN"; do
  [ -x "$b" ] || { echo "missing $b (see the header of this script)" >&2; exit 2; }
done
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

"$LOADGEN" serve --http 127.0.0.1:18180 --echo 127.0.0.1:18181 --sink 127.0.0.1:18182 \
  --echo-close 127.0.0.1:18183 --udp-echo 127.0.0.1:18184 >/dev/null 2>&1 &
PIDS+=($!)
"$COUNT" 127.0.0.1:18190 "$WORK/collected" &
COLLECTOR=$!
PIDS+=($COLLECTOR)
sleep 0.5

run() { # run NAME EXTRA_TOML -> prints "rps decisions file_lines collected"
  local name=$1 extra=$2 dir="$WORK/$1-$3"
  mkdir -p "$dir/home"
  printf '[network]\nallow_local_binding = true\nenable_socks5 = false\n%s\n[network.domains]\n"127.0.0.1" = "allow"\n' "$extra" >"$dir/netproxy.toml"
  if [ "$name" = audited ] || [ "$name" = otlp ]; then
    printf '[otel]\nexporter = "otlp-http"\nendpoint = "http://127.0.0.1:18190"\n' >>"$dir/netproxy.toml"
  fi
  NETPROXY_HOME="$dir/home" NETPROXY_SYSTEM_DIR="$dir/sys" NETPROXY_ADMIN_TOKEN=bench RUST_LOG=warn \
    "$NETPROXY" serve --config "$dir/netproxy.toml" --http 127.0.0.1:0 --admin 127.0.0.1:0 \
    --ready-file "$dir/ready.json" 2>"$dir/stderr" &
  local np=$!
  for _ in $(seq 100); do [ -s "$dir/ready.json" ] && break; sleep 0.1; done
  local http admin
  http=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['http'])" "$dir/ready.json")
  admin=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['admin'])" "$dir/ready.json")
  local before=0
  [ -f "$WORK/collected" ] && before=$(cat "$WORK/collected")
  local stat0
  stat0=$(head -1 /proc/stat)
  if [ "${WORKLOAD:-http-forward}" = connect-rate ]; then
    "$LOADGEN" connect-rate --proxy "$http" --target 127.0.0.1:18183 --close server --conns 16 --secs "$SECS" >"$dir/load.json"
  else
    "$LOADGEN" http-forward --proxy "$http" --url http://127.0.0.1:18180/1k --conns 32 --secs "$SECS" >"$dir/load.json"
  fi
  local stat1
  stat1=$(head -1 /proc/stat)
  local decisions
  decisions=$(curl -s --noproxy '*' -H 'Authorization: Bearer bench' "http://$admin/metrics" |
    awk '/^netproxy_requests_total/ {s+=$2} END {print s+0}')
  # CPU seconds of netproxy's threads and of the collector (same machine) during the run.
  local ticks cticks hz
  hz=$(getconf CLK_TCK)
  ticks=$(awk '{print $14+$15}' "/proc/$np/stat")
  cticks=$(awk '{print $14+$15}' "/proc/$COLLECTOR/stat")
  # The same per thread kind (runtime workers, audit file writer, OTLP pump, the rest).
  local threads
  threads=$(for t in /proc/"$np"/task/*; do echo "$(tr ' ' _ <"$t/comm") $(awk '{print $14+$15, $14}' "$t/stat")"; done |
    awk -v d="$decisions" -v hz="$hz" '{k = $1 ~ /rt-worker/ ? "workers" : $1 ~ /audit/ ? "file" : $1 ~ /otlp/ ? "otlp" : "other"; a[k] += $2; if (k == "workers") a["workers_user"] += $3}
      END {s = ""; for (k in a) s = s sprintf("%s%s:%.2f", s ? "," : "", k, a[k] / hz / d * 1e6); print s}')
  kill -TERM "$np"; wait "$np" || true
  local lines=0 collected=0
  [ -f "$dir/audit.jsonl" ] && lines=$(wc -l <"$dir/audit.jsonl")
  # Counted: delete it now, so that the kernel does not spend the next runs writing it back.
  rm -f "$dir/audit.jsonl"
  if [ "$name" = audited ] || [ "$name" = otlp ]; then
    sleep 1
    collected=$(( $(cat "$WORK/collected") - before ))
  fi
  local rps
  rps=$(python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print(round(d.get('rps', d.get('tunnels_per_s', 0))))" "$dir/load.json")
  local cpu
  cpu=$(python3 -c "import sys;t,d,hz=map(float,sys.argv[1:]);print(round(t/hz/d*1e6,1))" "$ticks" "$decisions" "$hz")
  local collector_cpu=$(( cticks - ${LAST_CTICKS:-$cticks} ))
  LAST_CTICKS=$cticks
  # The whole machine's CPU during the run, per decision: user, system (with softirq) and idle.
  local machine
  machine=$(python3 -c "
import sys
a, b = ([int(x) for x in s.split()[1:]] for s in sys.argv[1:3])
d = [y - x for x, y in zip(a, b)]
n, hz = float(sys.argv[3]), float(sys.argv[4])
us = lambda t: round(t / hz / n * 1e6, 1)
print(f'machine_us_per_decision=user:{us(d[0] + d[1])},system:{us(d[2] + d[5] + d[6])},idle:{us(d[3] + d[4])}')
" "$stat0" "$stat1" "$decisions" "$hz")
  echo "$name rps=$rps decisions=$decisions file_lines=$lines collected=$collected netproxy_cpu_us_per_decision=$cpu threads_us_per_decision=$threads collector_cpu_ticks=$collector_cpu $machine" | tee -a "$WORK/results"
}

# SLICE=N: both netproxy instances run at once, and the load alternates between them in N-second
# turns (no sinks, sinks, sinks, no sinks, ...) until each has had SECS seconds, with a
# one-second pause after each turn. Drift of the machine's speed then hits both alike.
start() { # start NAME EXTRA_TOML REP -> sets NP_PID NP_HTTP NP_ADMIN NP_DIR
  local name=$1 extra=$2
  NP_DIR="$WORK/$1-$3"
  mkdir -p "$NP_DIR/home"
  printf '[network]\nallow_local_binding = true\nenable_socks5 = false\n%s\n[network.domains]\n"127.0.0.1" = "allow"\n' "$extra" >"$NP_DIR/netproxy.toml"
  if [ "$name" = audited ]; then
    printf '[otel]\nexporter = "otlp-http"\nendpoint = "http://127.0.0.1:18190"\n' >>"$NP_DIR/netproxy.toml"
  fi
  NETPROXY_HOME="$NP_DIR/home" NETPROXY_SYSTEM_DIR="$NP_DIR/sys" NETPROXY_ADMIN_TOKEN=bench RUST_LOG=warn \
    "$NETPROXY" serve --config "$NP_DIR/netproxy.toml" --http 127.0.0.1:0 --admin 127.0.0.1:0 \
    --ready-file "$NP_DIR/ready.json" 2>"$NP_DIR/stderr" &
  NP_PID=$!
  for _ in $(seq 100); do [ -s "$NP_DIR/ready.json" ] && break; sleep 0.1; done
  NP_HTTP=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['http'])" "$NP_DIR/ready.json")
  NP_ADMIN=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['admin'])" "$NP_DIR/ready.json")
}

alternate() { # alternate SLICE REP
  local slice=$1 rep=$2
  local before=0
  [ -f "$WORK/collected" ] && before=$(cat "$WORK/collected")
  start baseline "" "$rep"
  local b_pid=$NP_PID b_http=$NP_HTTP b_admin=$NP_ADMIN b_dir=$NP_DIR
  start audited "audit_log = \"$WORK/audited-$rep/audit.jsonl\"" "$rep"
  local a_pid=$NP_PID a_http=$NP_HTTP a_admin=$NP_ADMIN a_dir=$NP_DIR
  local turns=$(( SECS / slice )) t order
  for t in $(seq "$turns"); do
    if [ $((t % 2)) = 1 ]; then order="b a"; else order="a b"; fi
    for w in $order; do
      if [ "$w" = b ]; then
        "$LOADGEN" http-forward --proxy "$b_http" --url http://127.0.0.1:18180/1k --conns 32 --secs "$slice" >"$b_dir/load-$t.json"
      else
        "$LOADGEN" http-forward --proxy "$a_http" --url http://127.0.0.1:18180/1k --conns 32 --secs "$slice" >"$a_dir/load-$t.json"
      fi
      sleep 1
    done
  done
  local name pid admin dir decisions ticks rps lines collected
  for name in baseline audited; do
    if [ "$name" = baseline ]; then pid=$b_pid admin=$b_admin dir=$b_dir; else pid=$a_pid admin=$a_admin dir=$a_dir; fi
    decisions=$(curl -s --noproxy '*' -H 'Authorization: Bearer bench' "http://$admin/metrics" |
      awk '/^netproxy_requests_total/ {s+=$2} END {print s+0}')
    ticks=$(awk '{print $14+$15}' "/proc/$pid/stat")
    kill -TERM "$pid"; wait "$pid" || true
    rps=$(python3 -c "
import json, sys
r = [json.load(open(f))['rps'] for f in sys.argv[1:]]
print(round(sum(r) / len(r)), ' '.join(str(round(x)) for x in r))" "$dir"/load-*.json)
    lines=0 collected=0
    [ -f "$dir/audit.jsonl" ] && lines=$(wc -l <"$dir/audit.jsonl")
    rm -f "$dir/audit.jsonl"
    if [ "$name" = audited ]; then sleep 1; collected=$(( $(cat "$WORK/collected") - before )); fi
    echo "$name rps=${rps%% *} turns=[${rps#* }] decisions=$decisions file_lines=$lines collected=$collected netproxy_cpu_us_per_decision=$(python3 -c "import sys;t,d,hz=map(float,sys.argv[1:]);print(round(t/hz/d*1e6,1))" "$ticks" "$decisions" "$(getconf CLK_TCK)")"
  done
}

if [ -n "${SLICE:-}" ]; then
  for rep in $(seq "$REPS"); do alternate "$SLICE" "$rep"; done
  exit 0
fi

for rep in $(seq "$REPS"); do
  run baseline "" "$rep"
  if [ -n "${AA:-}" ]; then
    # The method's own noise: a second run without sinks where the audited one would be.
    run control "" "$rep"
  elif [ -z "${ONLY_SEPARATE:-}" ]; then
    run audited "audit_log = \"$WORK/audited-$rep/audit.jsonl\"" "$rep"
  fi
  if [ -n "${SEPARATE:-}" ]; then
    run file "audit_log = \"$WORK/file-$rep/audit.jsonl\"" "$rep"
    run otlp "" "$rep"
  fi
done

# Each pair's cost (the second run's req/s against the first's), and their mean with its 95%
# interval (Student's t) when there are several.
python3 - "$WORK/results" <<'PY'
import math, re, statistics, sys
runs = [l.split() for l in open(sys.argv[1]) if re.match(r"(baseline|audited|control) rps=", l)]
costs = []
base = None
for fields in runs:
    name, value = fields[0], float(fields[1].split("=")[1])
    if name == "baseline":
        base = value
    elif base:
        costs.append(100 * (1 - value / base))
        base = None
if costs:
    print("cost per pair: " + " ".join(f"{c:.1f}%" for c in costs))
if len(costs) >= 2:
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}
    m, sd = statistics.mean(costs), statistics.stdev(costs)
    half = t.get(len(costs), 2.0) * sd / math.sqrt(len(costs))
    print(f"mean {m:.1f}% (95% interval {m - half:.1f}% to {m + half:.1f}%) over {len(costs)} pairs")
PY
