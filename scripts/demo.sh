#!/usr/bin/env bash
# `make demo`: a control plane on the embedded SQLite default with three local nodes whose
# agents enroll over mTLS and go running. Ctrl-C stops the nodes' agents and the control plane.
set -euo pipefail

DEMO_DIR=${DEMO_DIR:?set DEMO_DIR}
VENV=${VENV:-.venv}
PN="$VENV/bin/powernode"
export POWERNODE_DATA_DIR="$DEMO_DIR"
NODES=(demo-1 demo-2 demo-3)

"$PN" init
# Its own session: Ctrl-C reaches this script, which stops the nodes through the API first.
setsid "$PN" serve --log-level warning &
SERVE=$!

stop_all() {
    trap - EXIT INT TERM
    echo
    echo "stopping the demo nodes and the control plane..."
    for node in "${NODES[@]}"; do
        "$PN" node action "$node" stop >/dev/null 2>&1 || true
    done
    # Any agent the API could not reach (the control plane already gone) is stopped directly.
    for pidfile in "$DEMO_DIR"/nodes/*/agent.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    kill "$SERVE" 2>/dev/null || true
    wait "$SERVE" 2>/dev/null || true
}
trap stop_all EXIT INT TERM

for _ in $(seq 1 100); do
    "$PN" node list >/dev/null 2>&1 && break
    sleep 0.2
done

for node in "${NODES[@]}"; do
    if ! "$PN" node show "$node" >/dev/null 2>&1; then
        "$PN" node create "$node" --provider local --label demo=yes >/dev/null
    else  # from an earlier demo: make sure its agent runs again
        "$PN" node action "$node" stop >/dev/null 2>&1 || true
        "$PN" node action "$node" start >/dev/null 2>&1 || true
    fi
done

echo "waiting for the agents to enroll..."
for _ in $(seq 1 150); do
    running=$("$PN" node list -l demo=yes -o json | "$VENV/bin/python" -c \
        'import json,sys; print(sum(n["state"] == "running" for n in json.load(sys.stdin)))')
    [ "$running" = "${#NODES[@]}" ] && break
    sleep 0.2
done
"$PN" node list -l demo=yes

cat <<TEXT

powernode demo is running (data in $DEMO_DIR). In another shell:
  export POWERNODE_DATA_DIR=$DEMO_DIR
  $PN node list
  $PN events list
  $PN events tail -f
  $PN task create shell --node demo-1 --payload '{"argv": ["uname", "-a"]}'
Ctrl-C here stops it.
TEXT
wait "$SERVE"
