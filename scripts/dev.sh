#!/usr/bin/env bash
# `make dev`: emulators up (reused if running), Twilio simulator (if built),
# then the local API gateway serving the real function binaries, in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=target/debug/cc-local
STATE="${CC_STATE_DIR:-.local}"

"$CC" up --state-dir "$STATE"
set -a
# shellcheck disable=SC1091
. "$STATE/env"
set +a

if [ -x target/debug/twilio-sim ]; then
  pidfile="$STATE/twilio-sim.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "twilio-sim already running (pid $(cat "$pidfile"))"
  else
    mkdir -p "$STATE/logs"
    # Own process group (setsid) so `cc-local down` stops it by its pid file.
    TWILIO_SIM_AUTH_TOKEN="$TWILIO_AUTH_TOKEN" TWILIO_SIM_API_KEY_SECRET="$TWILIO_API_KEY_SECRET" \
      setsid target/debug/twilio-sim --port "$TWILIO_SIM_PORT" \
        --account-sid "$TWILIO_ACCOUNT_SID" --api-key-sid "$TWILIO_API_KEY_SID" \
        --voice-url "$PUBLIC_BASE_URL/twilio/voice/inbound" \
        >>"$STATE/logs/twilio-sim.log" 2>&1 < /dev/null &
    echo $! >"$pidfile"
    # Wait for it (bounded poll, no fixed sleep).
    for _ in $(seq 1 300); do
      if curl -s -o /dev/null "http://127.0.0.1:$TWILIO_SIM_PORT/" 2>/dev/null; then break; fi
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "twilio-sim exited; see $STATE/logs/twilio-sim.log"; break; }
      sleep 0.1
    done
    echo "twilio-sim on http://127.0.0.1:$TWILIO_SIM_PORT (log: $STATE/logs/twilio-sim.log)"
  fi
else
  echo "twilio-sim not built: calls to TWILIO_API_BASE_URL=$TWILIO_API_BASE_URL will fail"
fi

cat <<MSG

Local contact center
  API (gateway)      $PUBLIC_BASE_URL
  Twilio simulator   $TWILIO_API_BASE_URL
  DynamoDB Local     $AWS_ENDPOINT_URL_DYNAMODB   table  $TABLE_NAME
  S3 (s3s-fs)        $AWS_ENDPOINT_URL_S3   bucket $RECORDINGS_BUCKET
  SQS + Cognito      $AWS_ENDPOINT_URL_SQS   queue  $OFFLOAD_QUEUE_URL
  Env for your shell:  . $STATE/env   (then e.g. aws --endpoint-url \$AWS_ENDPOINT_URL_DYNAMODB dynamodb scan --table-name \$TABLE_NAME)
  Sign in as an agent:  TOKEN=\$($CC mint-token --state-dir $STATE --user alice --group agents)
                        (supervisors: --group supervisors; see docs/auth.md), then
                        curl -H "Authorization: Bearer \$TOKEN" -X POST $PUBLIC_BASE_URL/token
  Fire the recording sweep: curl -X POST $PUBLIC_BASE_URL/_local/schedule/RecordingOffloadFunction
  Stop: Ctrl-C (gateway), then \`make down\` (emulators, simulator).

MSG
exec "$CC" gateway --state-dir "$STATE" --port "${CC_GATEWAY_PORT:-3000}" ${CC_GATEWAY_ARGS:-}
