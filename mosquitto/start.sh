#!/bin/sh
# Entry point of the mosquitto service (docker-compose.yml). Mosquitto 2 reads its password and
# ACL files after dropping root for the `mosquitto` user, so the exported files, owned by
# whoever ran the export on the host, are copied to where that user can read them and others
# cannot. To load a new export without a restart:
#   docker compose exec mosquitto sh /mosquitto/config/start.sh reload
set -eu
install_auth() {
    mkdir -p /mosquitto/auth
    cp /mosquitto/export/passwd /mosquitto/export/acl /mosquitto/auth/
    chown -R mosquitto:mosquitto /mosquitto/auth
    chmod 0700 /mosquitto/auth
    chmod 0600 /mosquitto/auth/passwd /mosquitto/auth/acl
}
install_auth
if [ "${1:-}" = reload ]; then
    kill -HUP 1
    exit 0
fi
chown -R mosquitto:mosquitto /mosquitto/data
exec /usr/sbin/mosquitto -c /mosquitto/config/mosquitto.conf
