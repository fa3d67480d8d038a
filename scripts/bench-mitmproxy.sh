#!/usr/bin/env bash
# Starts mitmproxy for `cargo xtask bench mitm`: the shared kit's mitmproxy peer
# (peers/start-mitmproxy.sh: the same mitmproxy version from the kit's requirements file, the
# same options and allowlist addon) except that it intercepts TLS (no `--ignore-hosts '.*'`) and
# verifies the benchmark origin against the run's test CA.
#
#   scripts/bench-mitmproxy.sh RUNDIR ORIGIN_CA_PEM
#
# Leaves RUNDIR/mitmproxy-tls.{pid,json,log} (the kit's conventions) and mitmproxy's own CA in
# RUNDIR/mitmproxy-tls/conf/mitmproxy-ca-cert.pem. Stop it with the kit's
# `peers/stop.sh RUNDIR mitmproxy-tls`. Exit 3: mitmproxy cannot be installed or run here.
# Port: MITMPROXY_TLS_PORT (default 18121, on 127.0.0.1).
NAME=mitmproxy-tls
KIT=${BENCH_KIT:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/bench"}
[[ -f $KIT/peers/lib.sh ]] || { echo "$NAME: the bench kit is not at $KIT" >&2; exit 3; }
ORIGIN_CA=${2:?usage: $0 RUNDIR ORIGIN_CA_PEM}
# The venv goes to a cache folder, never into the kit: the kit's own test (`-w`) is true for
# root even where shared/ is laid read-only. BENCH_STATE overrides, as for the kit.
export BENCH_STATE=${BENCH_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/netproxy-bench}
# shellcheck source=/dev/null
source "$KIT/peers/lib.sh"
[[ -f $ORIGIN_CA ]] || die "no origin CA at $ORIGIN_CA"
PORT=${MITMPROXY_TLS_PORT:-18121}
VENV="$BENCH_STATE/.venv-mitmproxy"
if [[ ! -x "$VENV/bin/mitmdump" ]]; then
  need python3 "apt-get install python3-venv"
  echo "$NAME: installing mitmproxy into $VENV" >&2
  { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q -r "$PEERS_DIR/requirements-mitmproxy.txt"; } >&2 \
    || unavailable "could not install mitmproxy (pip)"
fi
require_free "$PORT"
D="$RUNDIR/$NAME"
mkdir -p "$D/conf"
"$VENV/bin/mitmdump" --mode regular --listen-host 127.0.0.1 --listen-port "$PORT" \
  --set confdir="$D/conf" --set termlog_verbosity=warn --set flow_detail=0 \
  --set ssl_verify_upstream_trusted_ca="$ORIGIN_CA" \
  -s "$PEERS_DIR/mitm_allowlist.py" > "$RUNDIR/$NAME.log" 2>&1 &
started $! "$PORT" -
# mitmproxy writes its CA into confdir at start; wait for it (the port opens after).
for _ in $(seq 100); do
  [[ -s "$D/conf/mitmproxy-ca-cert.pem" ]] && exit 0
  sleep 0.1
done
kill "$(cat "$RUNDIR/$NAME.pid")" 2>/dev/null || true
die "no CA certificate in $D/conf after 10 s"
