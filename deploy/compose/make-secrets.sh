#!/usr/bin/env bash
# Make the secret files deploy/compose.yaml mounts, once, as root (they must be owned by the uids
# that read them: Docker Compose bind-mounts file secrets with the host's owner and mode).
#   gateway (uid 10001): master_key (0400), pgpass (0400; libpq ignores a group- or world-readable one)
#   gateway (uid 10001): redis_password (0400; quotas.redis_password_file)
#   postgres (uid 999 in the postgres image): pg_password (0400)
#   redis (uid 999 in the redis image): redis.conf (0400: the same password as `requirepass`)
# Existing files are kept: a new master key would not open the vault the old one sealed.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
key() { python3 -c 'import base64, secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())'; }
if [ ! -e secrets/master_key ]; then
  key > secrets/master_key
  chown 10001:10001 secrets/master_key && chmod 0400 secrets/master_key
fi
if [ ! -e secrets/pg_password ]; then
  password="$(key)"
  printf '%s\n' "$password" > secrets/pg_password
  printf 'postgres:5432:mcp_gateway:mcp_gateway:%s\n' "$password" > secrets/pgpass
  chown 999:999 secrets/pg_password && chmod 0400 secrets/pg_password
  chown 10001:10001 secrets/pgpass && chmod 0400 secrets/pgpass
fi
if [ ! -e secrets/redis_password ]; then
  password="$(key)"
  printf '%s\n' "$password" > secrets/redis_password
  printf 'requirepass %s\nappendonly yes\nsave ""\n' "$password" > secrets/redis.conf
  chown 10001:10001 secrets/redis_password && chmod 0400 secrets/redis_password
  chown 999:999 secrets/redis.conf && chmod 0400 secrets/redis.conf
fi
ls -ln secrets
