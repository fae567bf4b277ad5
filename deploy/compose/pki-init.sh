#!/bin/sh
# The compose `pki` one-shot (runs in the Vallum image as user vallum). It makes,
# in the shared `pki` volume:
#   ca.pem, ca-key.pem                 the internal CA (`vallum ca init`)
#   <service>.pem, <service>-key.pem   mTLS certificates of authenticate, authorize
#                                      and proxy, naming their compose host names
#   proxy-server.pem (+ -key)          the proxy's server certificate for the route hosts
#   demo-idp.pem (+ -key)              the demo IdP's server certificate (DEVELOPMENT ONLY)
#   secrets/                           shared_secret, cookie_secret, signing_key.pem,
#                                      idp_client_secret, postgres_password, postgres_dsn
# Idempotent: whatever exists is kept, so `docker compose up` again changes nothing.
# To rotate something, delete it from the volume and run `docker compose run --rm pki`.
set -eu

PKI="${PKI:-/etc/vallum/pki}"
SECRETS="$PKI/secrets"
# The host names in the proxy's server certificate: every route host and the
# authenticate host of deploy/compose/config.yaml (keep the two lists in step).
ROUTE_HOSTS="authenticate.localhost verify.localhost admins.localhost localhost"

umask 077
mkdir -p "$PKI" "$SECRETS"

if [ ! -f "$PKI/ca.pem" ]; then
  vallum ca init --dir "$PKI"
fi
if [ ! -f "$PKI/authenticate.pem" ]; then
  vallum ca issue --dir "$PKI" --out "$PKI" --service authenticate --dns authenticate
fi
if [ ! -f "$PKI/authorize.pem" ]; then
  vallum ca issue --dir "$PKI" --out "$PKI" --service authorize --dns authorize
fi
if [ ! -f "$PKI/proxy.pem" ]; then
  vallum ca issue --dir "$PKI" --out "$PKI" --service proxy --dns proxy
fi
if [ ! -f "$PKI/proxy-server.pem" ]; then
  # shellcheck disable=SC2086 # one argument per host name
  vallum ca issue --dir "$PKI" --out "$PKI" --name proxy-server --server $ROUTE_HOSTS
fi
if [ ! -f "$PKI/demo-idp.pem" ]; then
  vallum ca issue --dir "$PKI" --out "$PKI" --name demo-idp --server idp.localhost localhost
fi

# 32 random bytes, base64: what shared_secret and cookie_secret require.
random_base64() {
  head -c32 /dev/urandom | base64 | tr -d '\n'
}
write_secret() {
  # $1 file name in $SECRETS, $2 value; never replaces an existing secret.
  if [ ! -s "$SECRETS/$1" ]; then
    printf '%s\n' "$2" > "$SECRETS/$1.tmp"
    mv "$SECRETS/$1.tmp" "$SECRETS/$1"
    echo "generated $SECRETS/$1"
  fi
}
write_secret shared_secret "$(random_base64)"
write_secret cookie_secret "$(random_base64)"
write_secret idp_client_secret "$(random_base64)"
if [ ! -s "$SECRETS/postgres_password" ]; then
  write_secret postgres_password "$(head -c24 /dev/urandom | base64 | tr -d '\n/+=')"
fi
write_secret postgres_dsn \
  "postgresql://vallum:$(cat "$SECRETS/postgres_password")@postgres:5432/vallum"
if [ ! -s "$SECRETS/signing_key.pem" ]; then
  # The key that signs the identity JWT (ES256), with the cryptography package
  # Vallum already depends on.
  python -c '
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP256R1())
print(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()).decode(), end="")
' > "$SECRETS/signing_key.pem.tmp"
  mv "$SECRETS/signing_key.pem.tmp" "$SECRETS/signing_key.pem"
  echo "generated $SECRETS/signing_key.pem"
fi
echo "pki: ready in $PKI (trust $PKI/ca.pem in your browser for the demo)"
