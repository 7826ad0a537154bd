#!/usr/bin/env bash
# `make run`: the emulator seeded from examples/, and the agent in `run` mode against it, writing into
# ./demo-secrets. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
REST=http://127.0.0.1:8781

"$BIN/secrets-agent" emulator --seed examples/emulator-seed.yaml --grpc-port 8780 --http-port 8781 \
  2> >(sed 's/^/[emulator] /' >&2) &
EMULATOR=$!
trap 'kill "$EMULATOR" 2>/dev/null || true; wait "$EMULATOR" 2>/dev/null || true' EXIT

for _ in $(seq 100); do
  curl -fs "$REST/emulator/v1/healthz" >/dev/null 2>&1 && break
  kill -0 "$EMULATOR" 2>/dev/null || { echo "the emulator did not start (is port 8780/8781 in use?)" >&2; exit 1; }
  sleep 0.1
done

cat <<MSG

  secrets-agent demo: the emulator serves demo-project's secrets; the agent keeps ./demo-secrets fresh.

  Look:    ls -la demo-secrets/ && cat demo-secrets/db-password demo-secrets/app.env
  Rotate:  curl -s -X POST $REST/v1/projects/demo-project/secrets/db-password:addVersion \\
             -d "{\"payload\": {\"data\": \"\$(printf new-password | base64)\"}}"
           (the agent picks it up within 5 s and swaps every file at once)
  Endpoint: curl -H "X-Secrets-Agent-Token: \$(cat demo-secrets/.token)" http://127.0.0.1:8730/v1/secrets/api-key
  Probes:   curl http://127.0.0.1:8731/readyz   and   http://127.0.0.1:8731/metrics
  Emulator API: $REST/v1/projects/demo-project/secrets   admin: $REST/emulator/v1/counters

MSG
"$BIN/secrets-agent" run --config examples/demo-agent.yaml
