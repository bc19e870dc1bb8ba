#!/bin/bash
# bench/certs.sh DIR: one ECDSA P-256 CA, a server cert (SAN 127.0.0.1, localhost)
# and a client cert, all made at run time with the openssl CLI (never committed).
set -euo pipefail
d=$1
mkdir -p "$d"
cd "$d"
ossl() { openssl "$@" 2>/dev/null; }
ossl ecparam -name prime256v1 -genkey -noout -out ca.key
ossl req -x509 -new -key ca.key -sha256 -days 2 -subj "/O=peerlisten-bench/CN=bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
issue() { # name subject extensions
  ossl ecparam -name prime256v1 -genkey -noout -out "$1.key.sec1"
  ossl pkcs8 -topk8 -nocrypt -in "$1.key.sec1" -out "$1.key"
  rm -f "$1.key.sec1"
  ossl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 \
    -extfile "$1.ext" -out "$1.crt"
  rm -f "$1.csr" "$1.ext"
}
issue server "/O=peerlisten-bench/CN=localhost" \
"basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
issue client "/O=peerlisten-bench/CN=bench-client" \
"basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
chmod 600 ./*.key
openssl verify -CAfile ca.crt server.crt client.crt >/dev/null
