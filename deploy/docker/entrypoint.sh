#!/bin/sh
# Container entrypoint: `availability` with the container's arguments, after one check.
# With AVAILABILITY_REDIS_URL empty the service would start an embedded redis-server inside
# the container, whose data (the stock ledger) vanishes with the container: refuse instead.
set -eu
if [ -z "${AVAILABILITY_REDIS_URL:-}" ]; then
    echo "availability: AVAILABILITY_REDIS_URL is empty; containers use an external Redis (see deploy/README.md)" >&2
    exit 64
fi
exec availability "$@"
