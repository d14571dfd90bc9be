#!/usr/bin/env bash
# Writes a throwaway CA, a server certificate for 127.0.0.1/localhost and a
# client certificate (all PEM) into the folder given, for the TLS tests.
# Usage: scripts/tls-fixtures.sh DIR
set -euo pipefail
dir="${1:?usage: tls-fixtures.sh DIR}"
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=rolecall-test-ca" \
  -keyout ca.key -out ca.pem >/dev/null 2>&1
cat > server.ext <<'EXT'
subjectAltName = IP:127.0.0.1, DNS:localhost
extendedKeyUsage = serverAuth
EXT
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout server.key -out server.csr >/dev/null 2>&1
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -days 2 -extfile server.ext -out server.pem >/dev/null 2>&1
printf 'extendedKeyUsage = clientAuth\n' > client.ext
openssl req -newkey rsa:2048 -nodes -subj "/CN=rolecall-client" \
  -keyout client.key -out client.csr >/dev/null 2>&1
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -days 2 -extfile client.ext -out client.pem >/dev/null 2>&1
# RabbitMQ (Erlang) and rustls both read PKCS#8 keys.
for k in server client; do
  openssl pkcs8 -topk8 -nocrypt -in "$k.key" -out "$k.pk8" 2>/dev/null && mv "$k.pk8" "$k.key"
done
chmod 644 ./*.pem ./*.key
