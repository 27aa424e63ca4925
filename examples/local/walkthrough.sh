#!/usr/bin/env bash
# The local walkthrough of examples/local/README.md, end to end on one
# machine: the devstack (local MAA, Key Vault and IMDS over TLS, a fake
# SEV-SNP TEE), a key with a release policy derived from a CCE policy, a
# dataset sealed for it, then `skrfs mount` and `skrfs run`.
#
#   examples/local/walkthrough.sh [WORKDIR]
#
# Needs root (FUSE) and skrfs on PATH (or SKRFS=/path/to/skrfs). It prints
# "walkthrough: ok" at the end; any failed step stops it with an error.
set -euo pipefail

SKRFS=${SKRFS:-skrfs}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(realpath -m "${1:-$(mktemp -d -t skrfs-walkthrough-XXXXXX)}")
mkdir -p "$WORK"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_for() { # FILE PID: wait until FILE exists, or fail if PID died
  for _ in $(seq 600); do
    [ -e "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "walkthrough: process $2 died before $1 appeared" >&2; return 1; }
    sleep 0.1
  done
  echo "walkthrough: timed out waiting for $1" >&2
  return 1
}

echo "== 1. start the devstack"
"$SKRFS" devstack --dir "$WORK/devstack" >"$WORK/devstack.log" 2>&1 &
pids+=($!)
wait_for "$WORK/devstack/ready" "${pids[-1]}"
# SKRFS_DEVSTACK_DIR, SKRFS_MAA_URL, SKRFS_VAULT_URL, SSL_CERT_FILE and a
# managed identity for DefaultAzureCredential.
. "$WORK/devstack/devstack.env"

echo "== 2. create a key whose release policy is derived from the CCE policy"
# On ACI, --cce-policy is the ccePolicy that 'az confcom acipolicygen'
# wrote; here, the devstack's fake TEE's policy. HOST_DATA = its SHA-256.
kid=$("$SKRFS" key create --vault "$SKRFS_VAULT_URL" --name my-app-key --kty RSA-HSM --size 3072 \
  --cce-policy "$SKRFS_DEVSTACK_DIR/cce-policy.rego" --authority "$SKRFS_MAA_URL")
echo "created $kid"

echo "== 3. seal a dataset with the key's public part (no TEE needed)"
mkdir -p "$WORK/plain/reports"
echo "quarterly numbers: confidential" >"$WORK/plain/reports/q3.txt"
head -c 3000000 /dev/urandom >"$WORK/plain/model.bin"
"$SKRFS" upload --key "$SKRFS_VAULT_URL/keys/my-app-key" --to "$WORK/store" "$WORK/plain/"
"$SKRFS" ls "$WORK/store"

echo "== 4. why would a release pass or fail? (attests, releases nothing)"
sed -e "s|\${SKRFS_DEVSTACK_DIR}|$SKRFS_DEVSTACK_DIR|g" -e "s|\${SKRFS_MAA_URL}|$SKRFS_MAA_URL|g" \
  -e "s|\${SKRFS_VAULT_URL}|$SKRFS_VAULT_URL|g" -e "s|\${WORK}|$WORK|g" "$HERE/skrfs.yaml" >"$WORK/skrfs.yaml"
"$SKRFS" explain --config "$WORK/skrfs.yaml" my-app-key
if "$SKRFS" explain --config "$WORK/skrfs.yaml" denied >"$WORK/explain-denied.txt"; then
  echo "walkthrough: release of 'denied' would be allowed" >&2; exit 1
fi
grep FAIL "$WORK/explain-denied.txt"

echo "== 5. mount and read with unmodified programs"
mkdir -p "$WORK/mnt"
"$SKRFS" mount --config "$WORK/skrfs.yaml" --ready-file "$WORK/mounted" "$WORK/mnt" &
pids+=($!)
wait_for "$WORK/mounted" "${pids[-1]}"
ls -l "$WORK/mnt/keys" "$WORK/mnt/app"
cat "$WORK/mnt/app/reports/q3.txt"
cmp "$WORK/mnt/app/model.bin" "$WORK/plain/model.bin"
head -1 "$WORK/mnt/keys/my-app-key.pem"
if cat "$WORK/mnt/keys/denied" >/dev/null 2>&1; then
  echo "walkthrough: keys/denied was readable" >&2; exit 1
fi
echo "keys/denied: permission denied, as its release policy wants another TEE"
kill -TERM "${pids[-1]}"; wait "${pids[-1]}"; unset 'pids[-1]'

echo "== 6. skrfs run: a private mount for one command"
"$SKRFS" run --config "$WORK/skrfs.yaml" -- sh -c 'sha256sum "$SKRFS_MOUNTPOINT/app/model.bin"' >"$WORK/run.txt"
(cd "$WORK/plain" && sha256sum model.bin) | awk '{print $1}' | grep -qf - "$WORK/run.txt"
cat "$WORK/run.txt"

echo "walkthrough: ok"
