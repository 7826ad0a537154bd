#!/usr/bin/env bash
# `make run`: the emulator seeded from examples/, and the agent in `run` mode against it, writing into
# ./demo-secrets. Once the agent listens, it prints where everything is and what to try. Ctrl-C stops both.
#
# Ports (environment variables; `make run` passes its variables of the same names; 0 = any free port):
#   EMULATOR_GRPC_PORT (8780), EMULATOR_HTTP_PORT (8781), AGENT_PORT (8730), PROBES_PORT (8731)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
GRPC_PORT=${EMULATOR_GRPC_PORT:-8780}
HTTP_PORT=${EMULATOR_HTTP_PORT:-8781}
AGENT_PORT=${AGENT_PORT:-8730}
PROBES_PORT=${PROBES_PORT:-8731}
for port in "$GRPC_PORT" "$HTTP_PORT" "$AGENT_PORT" "$PROBES_PORT"; do
  [[ $port =~ ^[0-9]+$ ]] && ((port <= 65535)) || { echo "demo: not a port number: '$port'" >&2; exit 2; }
done

STATE=$(mktemp -d "${TMPDIR:-/tmp}/secrets-agent-demo.XXXXXX")
LOG=$STATE/emulator.log
AGENT_LOG=$STATE/agent.log
EMULATOR=
READY=
cleanup() {
  [[ -z $READY ]] || kill "$READY" 2>/dev/null || true
  [[ -z $EMULATOR ]] || { kill "$EMULATOR" 2>/dev/null || true; wait "$EMULATOR" 2>/dev/null || true; }
  rm -rf "$STATE"
}
trap cleanup EXIT

# Each line of the emulator's log prefixed as it comes (a read loop: `sed` would hold lines back in its
# buffer when stderr is not a terminal).
prefixed() { trap '' INT; while IFS= read -r line; do printf '%s %s\n' "$1" "$line"; done; }

echo "demo: starting the emulator (demo-project, seeded from examples/emulator-seed.yaml)..."
"$BIN/secrets-agent" emulator --seed examples/emulator-seed.yaml --grpc-port "$GRPC_PORT" \
  --http-port "$HTTP_PORT" 2> >(tee -i "$LOG" | prefixed '[emulator]' >&2) &
EMULATOR=$!

# Our emulator, not whatever answers on its port: wait for the line this very process prints once it
# listens, and take the addresses from it (an emulator already running on 8781 would otherwise pass for
# ours, and the agent would then crash against it; with port 0 it is the only way to learn the ports).
LISTENING=
for _ in $(seq 300); do
  LISTENING=$(grep -m1 -o 'listening: gRPC on [^,]*, REST on [^ ]*' "$LOG" || true)
  [[ -n $LISTENING ]] && break
  if ! kill -0 "$EMULATOR" 2>/dev/null; then
    echo "demo: the emulator did not start (ports $GRPC_PORT/$HTTP_PORT in use? choose others:" \
      "make run EMULATOR_GRPC_PORT=... EMULATOR_HTTP_PORT=..., 0 = any free port)" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z $LISTENING ]]; then
  echo "demo: the emulator did not say it was listening within 30 s" >&2
  exit 1
fi
GRPC=${LISTENING#listening: gRPC on }
GRPC=${GRPC%%,*}
REST=${LISTENING##*REST on }

ENDPOINT=http://127.0.0.1:$AGENT_PORT
PROBES=http://127.0.0.1:$PROBES_PORT
if [[ $AGENT_PORT == 0 ]]; then ENDPOINT="http://127.0.0.1:PORT (the port: see 'local endpoint listening on')"; fi
if [[ $PROBES_PORT == 0 ]]; then PROBES="http://127.0.0.1:PORT (the port: see 'probes listening on')"; fi

cat <<MSG

  secrets-agent demo: the emulator serves demo-project's secrets; the agent keeps ./demo-secrets fresh.

  Emulator: gRPC on $GRPC, REST on $REST (seeded from examples/emulator-seed.yaml)
  Agent:    examples/demo-agent.yaml; files in ./demo-secrets, the endpoint's token in demo-secrets/.token
  Look:     ls -la demo-secrets/ && cat demo-secrets/db-password demo-secrets/app.env
            cat demo-secrets/db/url demo-secrets/config/app.yaml   (keys and templates: examples/demo-agent.yaml)
  Endpoint: curl -H "X-Secrets-Agent-Token: \$(cat demo-secrets/.token)" $ENDPOINT/v1/secrets/api-key
  Rotate:   curl -s -X POST $REST/v1/projects/demo-project/secrets/db-password:addVersion \\
              -H 'Content-Type: application/json' \\
              -d "{\"payload\": {\"data\": \"\$(printf new-password | base64)\"}}"
            (within 5 s the agent swaps every file at once: cat demo-secrets/db-password)
  Probes:   curl $PROBES/readyz   and   $PROBES/metrics
  Emulator API: $REST/v1/projects/demo-project/secrets   admin: $REST/emulator/v1/counters
  Stop:     Ctrl-C stops the agent and the emulator (demo-secrets/ stays; the next run adopts it)

MSG

# One line once the agent listens and its start-up lines are out (the first snapshot, "serving N of N"),
# so that the last thing on the screen says it is ready, and where (with port 0 only its log says).
ready() {
  local endpoint="" probes="" size=-1 quiet=0
  for _ in $(seq 600); do
    endpoint=$(grep -m1 -o 'local endpoint listening on http://[^ ]*' "$AGENT_LOG" 2>/dev/null || true)
    probes=$(grep -m1 -o 'probes listening on [^ ]*' "$AGENT_LOG" 2>/dev/null || true)
    [[ -n $endpoint && -n $probes ]] && break
    sleep 0.1
  done
  [[ -n $endpoint && -n $probes ]] || return 0
  for _ in $(seq 30); do
    ((size == $(wc -c <"$AGENT_LOG"))) && ((++quiet >= 3)) && break
    size=$(wc -c <"$AGENT_LOG")
    sleep 0.1
  done
  echo "demo: ready: the endpoint on ${endpoint#local endpoint listening on }," \
    "the probes on http://${probes#probes listening on }; try the commands above; Ctrl-C to stop"
}
ready &
READY=$!

echo "demo: starting the agent (run mode, examples/demo-agent.yaml) against the emulator at $GRPC..."
"$BIN/secrets-agent" run --config examples/demo-agent.yaml --endpoint "$GRPC" \
  --listen "127.0.0.1:$AGENT_PORT" --probes-listen "127.0.0.1:$PROBES_PORT" 2> >(tee -i "$AGENT_LOG" >&2)
