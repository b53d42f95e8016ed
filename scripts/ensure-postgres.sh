#!/usr/bin/env bash
# Make sure the PostgreSQL server the tests use (POWERNODE_TEST_POSTGRES_URL, by default
# postgres@127.0.0.1:5432 with trust auth) answers. `make test` and `.ci/run` call this.
#
# - Already answering: nothing to do.
# - A cluster exists but is stopped: start it.
# - No server installed (a fresh Debian machine) and we are root: install Debian's `postgresql`,
#   let local connections of the `postgres` role in without a password on the cluster we just
#   created (test machines only: it is our own, new, loopback-only cluster) and start it.
# - Otherwise say exactly what is missing and fail, since the PostgreSQL tests would fail anyway.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432

pg_ready() {
    command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

newest_cluster_version() {
    ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

wait_ready() {
    for _ in $(seq 30); do
        pg_ready && return 0
        sleep 1
    done
    echo "PostgreSQL is not accepting connections on $PG_HOST:$PG_PORT after 30 s" >&2
    return 1
}

pg_ready && exit 0

version="$(newest_cluster_version)"
if [ -z "$version" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "no PostgreSQL server on $PG_HOST:$PG_PORT and none installed:" >&2
        echo "  install it with: sudo apt-get install postgresql  (then rerun make test)" >&2
        echo "  or point POWERNODE_TEST_POSTGRES_URL at a server you can create databases on" >&2
        exit 1
    fi
    echo "installing PostgreSQL (Debian's postgresql package) for the tests"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
    version="$(newest_cluster_version)"
    if [ -z "$version" ]; then
        pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -n 1)" main
        version="$(newest_cluster_version)"
    fi
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    # First match wins in pg_hba.conf: these lines go before Debian's password rules.
    {
        echo "# added by powernode scripts/ensure-postgres.sh for the test suite"
        echo "host all postgres 127.0.0.1/32 trust"
        cat "$hba"
    } >"$hba.new"
    mv "$hba.new" "$hba"
    chown postgres:postgres "$hba"
    chmod 0640 "$hba"
fi

echo "starting PostgreSQL $version (cluster main)"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
wait_ready
