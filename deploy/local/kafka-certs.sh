#!/usr/bin/env bash
# Throw-away certificates for the local broker's TLS listeners (deploy/local/kafka.sh with
# KAFKA_TLS_DIR), made with openssl: never use them beyond a developer's box or a test run.
#
#   deploy/local/kafka-certs.sh DIR     write into DIR (created; existing files are replaced):
#     ca.pem                  the CA that signs the rest: what clients trust (--kafka-ca-file)
#     broker-keystore.pem     the broker's key + certificate for localhost and 127.0.0.1
#     wrong-name-keystore.pem a broker key + certificate for kafka.invalid only (a listener
#                             that must fail hostname verification)
#     client.pem, client.key  a client certificate and key for mutual TLS
#     untrusted-ca.pem        a CA that signed nothing here (a client trusting only it must
#                             refuse the broker)
set -euo pipefail

dir="${1:?usage: kafka-certs.sh DIR}"
command -v openssl >/dev/null || { echo "kafka-certs: openssl not found" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
days=30

# Keys are EC P-256 in PKCS#8, unencrypted: what Kafka's PEM keystores read.
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # name subject
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -sha256 -days "$days" -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        -out "$1.pem" 2>/dev/null
}

signed() { # name subject extensions
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
        -days "$days" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "landmark-tagger local CA"
ca untrusted-ca "some other CA"
rm -f untrusted-ca.key
signed broker localhost $'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'
signed wrong-name kafka.invalid $'subjectAltName=DNS:kafka.invalid\nextendedKeyUsage=serverAuth'
signed client landmark-client $'extendedKeyUsage=clientAuth'
cat broker.key broker.pem >broker-keystore.pem
cat wrong-name.key wrong-name.pem >wrong-name-keystore.pem
rm -f broker.key broker.pem wrong-name.key wrong-name.pem ca.srl
chmod 600 ./*.key ./*keystore.pem
echo "kafka-certs: wrote ca.pem, broker-keystore.pem, wrong-name-keystore.pem, client.pem, client.key, untrusted-ca.pem in $dir"
