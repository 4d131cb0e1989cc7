#!/bin/sh
# The services' entrypoint in the images (Dockerfile): runs its arguments with NATS_PASSWORD read
# from the file NATS_PASSWORD_FILE names, when that is set (compose: the password file nats-init
# wrote into the service's own volume, scripts/nats-init.mjs). A missing or unreadable file stops
# the container before the service starts (fail closed). See docs/deployment.md.
set -eu
if [ -n "${NATS_PASSWORD_FILE:-}" ]; then
  NATS_PASSWORD="$(cat "$NATS_PASSWORD_FILE")"
  export NATS_PASSWORD
fi
exec "$@"
