#!/usr/bin/env bash
# A self-signed certificate for the compose demo's TLS listener (nginx, port 8443).
#   deploy/tls/make-self-signed.sh [OUTPUT_DIR] [HOST_NAME]
# Writes OUTPUT_DIR/tls.crt and OUTPUT_DIR/tls.key (mode 0600; default: this directory).
# Browsers and curl will not trust it (curl --cacert deploy/tls/tls.crt ...): it is for trying
# the set-up only. In production put a real certificate and key under the same two names.
# Never commit the key: .gitignore keeps tls.key and tls.crt out of git.
set -euo pipefail
out="${1:-$(dirname "$0")}"
host="${2:-localhost}"
mkdir -p "$out"
umask 077
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 30 \
  -subj "/CN=${host}" \
  -addext "subjectAltName=DNS:${host},IP:127.0.0.1" \
  -keyout "$out/tls.key" -out "$out/tls.crt" 2>/dev/null
chmod 0600 "$out/tls.key"
chmod 0644 "$out/tls.crt"
echo "wrote $out/tls.crt and $out/tls.key (self-signed for ${host}, 30 days)"
