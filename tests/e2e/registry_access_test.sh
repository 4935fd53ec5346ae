#!/usr/bin/env bash
# Remote layers from registries that want more than anonymous plain HTTP,
# and from servers that misbehave; every read goes through a real mount.
#
# Store A holds a small ext4 image (a tree of random files), imported and
# snapshotted; `ovbd push` sends it to each registry below. Store B gets a
# volume per case with `ovbd volume create --from registry://...` (layers
# left remote), a daemon mounts B with a cache of its own, and the whole
# volume is read through the mount (O_DIRECT) and compared with the image:
#  1. Basic auth (docker-registry with an htpasswd file): with a docker
#     config.json (`--credentials`, `-o credentials=`) push and reads work;
#     without it push is refused and a read fails with EIO while `.control`
#     still answers. Neither the password nor its base64 form is ever in a
#     daemon log (at debug level) or in what ovbd prints.
#  2. Bearer tokens (tests/util/token_server.py issues ES256 JWTs the
#     registry trusts): the volume is created through the mounted store's
#     .control (the daemon fetches the manifest) and read; the token
#     server issued tokens; no token (nor the password) is in the log or
#     in the status text.
#  3. TLS: nginx in front of a registry, with a certificate signed by a CA
#     the test makes. A registry_config naming the loopback registry under
#     "https" with ca_file set: push and reads work; without ca_file the
#     read fails and the log says the certificate is not trusted.
#  4. A mirror that is down (a closed port) listed first: reads come from
#     the origin, quickly.
#  5. Hostile servers on the port of the registry a volume came from (the
#     registry stopped, the server started on its port): one that accepts
#     and never answers, one that cuts each body half way, one that sends
#     bodies with altered bytes. For each: a volume opened while the real
#     registry served gets EIO on reading the rest (the hanging one within
#     the registry_config's timeout x attempts, while stat and `.control`
#     answer meanwhile); a daemon with an empty cache gets EIO opening and
#     reading it; never wrong data. With the real registry back on the
#     port, that daemon (and cache) reads the volume right.
#  6. Not root: a user with their own store, their own docker config.json
#     (~/.docker, the default) and cache (~/.cache/ovbdfs, the default)
#     creates a volume from the Basic-auth registry, mounts it with plain
#     `ovbdfs` (fusermount3) and opens the ext4 in it with fuse2fs; a file
#     read from inside matches. (Sets /dev/fuse 0666 for its duration.)
#
# E2E_CORRUPT=1 flips a byte of the largest blob pushed to the Basic-auth
# registry: the first read through the mount must then fail, so the test
# fails.
. "$(dirname "$0")/lib.sh"
require_root "creating a user and setting /dev/fuse's mode"
require_fuse
require_cmd docker-registry htpasswd openssl mkfs.ext4 fuse2fs useradd runuser
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || skip "nginx is not installed (Debian package nginx-light)"
e2e_init
"$PY" -c 'import cryptography' 2>/dev/null || skip "python3-cryptography is not installed (the token server needs it)"
TOKEN_SERVER=$E2E_DIR/../util/token_server.py
[[ -f $TOKEN_SERVER ]] || fail "no $TOKEN_SERVER"

W=$E2E_WORK
chmod 755 "$W" # the non-root user reads the registry config and the tree
# No docker config of root's own is ever read: only the files given.
export DOCKER_CONFIG=$W/no-docker-config

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_up() { # http_up URL [CAFILE]: any HTTP answer (401 included)
  "$PY" -c '
import ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else None
try:
    urllib.request.urlopen(sys.argv[1], timeout=2, context=ctx)
except urllib.error.HTTPError:
    pass' "$@" 2>/dev/null
}

# start_registry NAME AUTH [PORT]: docker-registry on 127.0.0.1 (a free
# port, or PORT) with its config and storage in $W/NAME; AUTH is none,
# basic (htpasswd $W/NAME/htpasswd) or token (the token server's realm).
# Sets REG_PORT and REG_PID.
REG_PORT='' REG_PID=''
start_registry() {
  local name=$1 auth=$2 port=${3:-} d=$W/$1 try
  mkdir -p "$d/data"
  for try in 1 2 3; do
    local p=${port:-$(free_port)}
    {
      printf 'version: 0.1\nlog:\n  level: info\n'
      printf 'storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n' "$d/data"
      printf 'http:\n  addr: 127.0.0.1:%s\n  secret: ovbd-e2e-upload-secret\n' "$p"
      case $auth in
        basic) printf 'auth:\n  htpasswd:\n    realm: ovbd-e2e\n    path: %s\n' "$d/htpasswd" ;;
        token) printf 'auth:\n  token:\n    realm: http://127.0.0.1:%s/token\n    service: ovbd-e2e\n    issuer: ovbd-e2e-issuer\n    rootcertbundle: %s\n' \
          "$TOKEN_PORT" "$W/token/token.crt" ;;
      esac
    } >"$d/config.yml"
    docker-registry serve "$d/config.yml" >>"$d/registry.log" 2>&1 &
    REG_PID=$!
    E2E_PIDS+=("$REG_PID")
    REG_PORT=$p
    if wait_until 30 "registry $name answers on $p" _reg_up "$REG_PID" "$p"; then
      proc_alive "$REG_PID" && { log "docker-registry $name ($auth) on 127.0.0.1:$p (pid $REG_PID)"; return 0; }
    fi
    reap "$REG_PID" || true
    [[ -z $port ]] || break # a fixed port: no other to try
  done
  tail -20 "$d/registry.log" >&2
  fail "docker-registry $name did not start"
}
_reg_up() { proc_gone "$1" || http_up "http://127.0.0.1:$2/v2/"; }
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait_until 15 "pid $1 exits" proc_gone "$1" || kill -KILL "$1" 2>/dev/null || true
  reap "$1" || true
}

# fetched MNT: bytes the daemon on MNT fetched from the network so far.
fetched() {
  echo status >"$1/.control"
  "$PY" -c '
import re, sys
t = open(sys.argv[1] + "/.control").read()
print(sum(int(m) for m in re.findall(r"^remote \S+ .*fetched=(\d+)", t, re.M)))' "$1"
}

# read_errno FILE [LEN]: LEN bytes (default 1 MiB) at offset 0 with
# O_DIRECT (the page cache cannot answer): "ok", or the errno name of the
# failed open or read.
read_errno() {
  "$PY" -c '
import errno, mmap, os, sys
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 20
buf = mmap.mmap(-1, n)
try:
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
    try:
        os.preadv(fd, [buf], 0)
    finally:
        os.close(fd)
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))' "$@"
}

# volume_sha MNT VOL: sha256 of the whole volume read through the mount,
# or "EIO"/... when the read fails.
volume_sha() {
  local out
  if out=$(sha_direct "$1/$2" 2>"$W/sha.err"); then
    echo "$out"
  else
    "$PY" -c 'import re,sys; m=re.search(r"\[Errno \d+\] ([^:]+)", open(sys.argv[1]).read()); print(m.group(1) if m else "failed")' "$W/sha.err"
  fi
}

# error_line LOG VOL: the daemon's first error line about volume VOL (its
# open, or a read or write of it).
error_line() { grep -m1 -E "\[error\] (open $2: |I/O error on volume $2: )" "$1" || true; }
# tail_of TEXT: its last 160 characters (an error message's cause comes last).
tail_of() { local t=$1; ((${#t} <= 160)) || t=${t: -160}; echo "$t"; }

# no_secret WHAT SECRET FILE...: SECRET appears in none of the files.
no_secret() {
  local what=$1 secret=$2 f
  shift 2
  for f in "$@"; do
    if grep -qF -- "$secret" "$f"; then
      grep -nF -- "$secret" "$f" | head -3 >&2
      fail "$what appears in $(basename "$f")"
    fi
  done
}

# mount_b CACHE RC [OPTIONS]: store B on $W/mB with a cache of its own
# ($W/cache-CACHE), registry config RC and more -o OPTIONS; logs at debug.
mount_b() {
  local o="cache_dir=$W/cache-$1,registry_config=$2,log_level=debug${3:+,$3}"
  start_daemon "$W/B" "$W/mB" -o "$o"
}

# ---- the image: ext4 with a tree, imported and snapshotted on A ------------------------
make_tree "$W/tree" 24 384 23
truncate -s 24M "$W/base.img"
mkfs.ext4 -q -F -d "$W/tree" "$W/base.img"
IMG_SHA=$(sha256sum <"$W/base.img" | cut -c1-64)
"$OVBD" store init "$W/A" >/dev/null
"$OVBD" volume import "$W/A" base "$W/base.img" >/dev/null
"$OVBD" snapshot "$W/A" base v1 >/dev/null
"$OVBD" store init "$W/B" >/dev/null
log "image: 24 MiB ext4 with $(find "$W/tree" -type f | wc -l) files, sha256 ${IMG_SHA:0:16}…; base@v1 on store A"

# Timeouts for every client of this test: failures are quick.
cat >"$W/rc.json" <<JSON
{"timeout_ms": 5000, "connect_timeout_ms": 2000, "retries": 1}
JSON
chmod 644 "$W/rc.json"

# ==== 1. Basic auth ======================================================================
log "case 1: Basic auth (htpasswd) with and without a credentials file"
B_USER=e2e-basic-user
B_PASS="Basic-Pa55-$RANDOM$RANDOM-word"
B_AUTH=$(printf '%s:%s' "$B_USER" "$B_PASS" | base64 -w0)
mkdir -p "$W/basic"
htpasswd -Bbn "$B_USER" "$B_PASS" >"$W/basic/htpasswd" 2>/dev/null
start_registry basic basic
BASIC=127.0.0.1:$REG_PORT
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$BASIC" "$B_AUTH" >"$W/creds-basic.json"
chmod 600 "$W/creds-basic.json"

if "$OVBD" --registry-config "$W/rc.json" push "$W/A" base@v1 "registry://$BASIC/e2e/basic:v1" >"$W/push-anon.out" 2>&1; then
  fail "push to the Basic-auth registry without credentials succeeded"
fi
log "push without credentials refused: $(head -1 "$W/push-anon.out")"
"$OVBD" --registry-config "$W/rc.json" --credentials "$W/creds-basic.json" \
  push "$W/A" base@v1 "registry://$BASIC/e2e/basic:v1" >"$W/push-basic.out" 2>&1 ||
  { cat "$W/push-basic.out" >&2; fail "push with credentials"; }
grep -q ': pushed' "$W/push-basic.out" || { cat "$W/push-basic.out" >&2; fail "push uploaded nothing"; }
if corrupting; then
  # The registry keeps blobs by digest under blobs/sha256/XX/HEX/data.
  f=$(find "$W/basic/data" -path '*/blobs/sha256/*/data' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
  flip_byte "$f" $(($(stat -c %s "$f") / 2))
fi
"$OVBD" --registry-config "$W/rc.json" --credentials "$W/creds-basic.json" --cache-dir "$W/cache-tool" \
  volume create "$W/B" basic --from "registry://$BASIC/e2e/basic:v1" >"$W/create-basic.out" 2>&1 ||
  { cat "$W/create-basic.out" >&2; fail "volume create --from the Basic-auth registry"; }

mount_b basic1 "$W/rc.json" "credentials=$W/creds-basic.json"
got=$(volume_sha "$W/mB" basic)
assert_eq "$IMG_SHA" "$got" "the volume read through the mount (Basic auth, credentials given)"
n=$(fetched "$W/mB")
((n > 0)) || fail "the read fetched nothing from the registry"
log "with credentials: the whole volume matches the image ($n bytes fetched)"
LOG_BASIC1=$DAEMON_LOG
stop_daemon "$W/mB"

mount_b basic2 "$W/rc.json"
got=$(read_errno "$W/mB/basic")
assert_eq EIO "$got" "a read without credentials"
timeout 5 cat "$W/mB/.control" >/dev/null || fail ".control does not answer after the refused read"
echo "status basic" >"$W/mB/.control"
grep -q '^basic ' "$W/mB/.control" || { cat "$W/mB/.control" >&2; fail "status basic after the refused read"; }
msg=$(error_line "$DAEMON_LOG" basic)
[[ $msg == *"wants credentials"* ]] || { tail "$DAEMON_LOG" >&2; fail "the log does not say the registry wants credentials"; }
log "without credentials: EIO; log: …$(tail_of "$msg")"
LOG_BASIC2=$DAEMON_LOG
stop_daemon "$W/mB"
for s in "$B_PASS" "$B_AUTH"; do
  no_secret "the Basic password" "$s" "$LOG_BASIC1" "$LOG_BASIC2" "$W/push-anon.out" "$W/push-basic.out" "$W/create-basic.out"
done
log "the password (plain or base64) is in no log and no ovbd output"

# ==== 2. Bearer tokens ===================================================================
log "case 2: Bearer token flow (token_server.py, ES256 JWTs)"
T_USER=e2e-token-user
T_PASS="Token-Pa55-$RANDOM$RANDOM-word"
mkdir -p "$W/token"
"$PY" "$TOKEN_SERVER" --port 0 --port-file "$W/token/port" --cert "$W/token/token.crt" \
  --log "$W/token/issued" --user "$T_USER" --password "$T_PASS" --service ovbd-e2e \
  --issuer ovbd-e2e-issuer >"$W/token/server.log" 2>&1 &
TOKEN_PID=$!
E2E_PIDS+=("$TOKEN_PID")
_token_up() { [[ -s $W/token/port ]] && http_up "http://127.0.0.1:$(cat "$W/token/port")/healthz"; }
wait_until 20 "token server" _token_up || { cat "$W/token/server.log" >&2; fail "token server did not start"; }
TOKEN_PORT=$(cat "$W/token/port")
start_registry tokenreg token
TOKREG=127.0.0.1:$REG_PORT
T_AUTH=$(printf '%s:%s' "$T_USER" "$T_PASS" | base64 -w0)
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$TOKREG" "$T_AUTH" >"$W/creds-token.json"
# Every token of this server starts with the same JWT header (its
# certificate rides in x5c): fetch one to know what to look for.
JWT_HEADER=$("$PY" -c '
import base64, json, sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:%s/token?service=ovbd-e2e&scope=repository:probe:pull" % sys.argv[1],
                             headers={"Authorization": "Basic " + sys.argv[2]})
print(json.load(urllib.request.urlopen(req, timeout=5))["token"].split(".")[0])' "$TOKEN_PORT" "$T_AUTH")
[[ ${#JWT_HEADER} -gt 100 ]] || fail "token server gave no usable token"
issued0=$(wc -l <"$W/token/issued")

"$OVBD" --registry-config "$W/rc.json" --credentials "$W/creds-token.json" \
  push "$W/A" base@v1 "registry://$TOKREG/e2e/token:v1" >"$W/push-token.out" 2>&1 ||
  { cat "$W/push-token.out" >&2; fail "push to the token-auth registry"; }
# Created through .control: the daemon itself fetches the manifest.
mount_b token "$W/rc.json" "credentials=$W/creds-token.json"
"$OVBD" volume create "$W/B" token --from "registry://$TOKREG/e2e/token:v1" >"$W/create-token.out" 2>&1 ||
  { cat "$W/create-token.out" >&2; fail "volume create --from the token-auth registry through .control"; }
got=$(volume_sha "$W/mB" token)
assert_eq "$IMG_SHA" "$got" "the volume read through the mount (Bearer token)"
status_txt=$(echo status >"$W/mB/.control" && cat "$W/mB/.control")
issued=$(($(wc -l <"$W/token/issued") - issued0))
((issued > 0)) || fail "the token server issued no token: the Bearer flow was not used"
grep -q '"sub": "'"$T_USER"'"' "$W/token/issued" || fail "tokens were not issued to $T_USER"
printf '%s\n' "$status_txt" >"$W/status-token.txt"
LOG_TOKEN=$DAEMON_LOG
stop_daemon "$W/mB"
for s in "$JWT_HEADER" "$T_PASS" "$T_AUTH"; do
  no_secret "a token or the token user's password" "$s" "$LOG_TOKEN" "$W/status-token.txt" "$W/push-token.out" "$W/create-token.out"
done
if grep -qE 'eyJ[A-Za-z0-9_-]{16,}\.eyJ' "$LOG_TOKEN" "$W/status-token.txt"; then
  fail "a JWT appears in the daemon log or status"
fi
log "Bearer: the volume matches; $issued token(s) issued; no token or password in log or status"

# ==== 3. TLS through nginx with a CA made here ===========================================
log "case 3: TLS (nginx with a certificate from a test CA)"
start_registry plain none
PLAIN_PORT=$REG_PORT
PLAIN_PID=$REG_PID
PLAIN=127.0.0.1:$PLAIN_PORT
T=$W/tls
mkdir -p "$T"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$T/ca.key" \
  -out "$T/ca.pem" -days 2 -subj "/CN=ovbd e2e test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>"$T/openssl.log"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$T/server.key" \
  -out "$T/server.csr" -subj "/CN=127.0.0.1" 2>>"$T/openssl.log"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$T/ext.cnf"
openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
  -out "$T/server.pem" -days 2 -extfile "$T/ext.cnf" 2>>"$T/openssl.log"
openssl verify -CAfile "$T/ca.pem" "$T/server.pem" >/dev/null || fail "the test CA does not verify its own certificate"
for try in 1 2 3; do
  TLS_PORT=$(free_port)
  cat >"$T/nginx.conf" <<NGX
daemon off;
master_process off;
worker_processes 1;
pid $T/nginx.pid;
error_log $T/nginx.log info;
events { worker_connections 64; }
http {
  access_log $T/access.log;
  client_body_temp_path $T/body;
  proxy_temp_path $T/proxy;
  fastcgi_temp_path $T/fastcgi;
  uwsgi_temp_path $T/uwsgi;
  scgi_temp_path $T/scgi;
  server {
    listen 127.0.0.1:$TLS_PORT ssl;
    ssl_certificate $T/server.pem;
    ssl_certificate_key $T/server.key;
    client_max_body_size 0;
    location / {
      proxy_pass http://127.0.0.1:$PLAIN_PORT;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-Proto https;
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}
NGX
  "$NGINX" -e "$T/nginx.log" -p "$T" -c "$T/nginx.conf" >"$T/nginx.out" 2>&1 &
  NGINX_PID=$!
  E2E_PIDS+=("$NGINX_PID")
  _tls_up() { proc_gone "$NGINX_PID" || http_up "https://127.0.0.1:$TLS_PORT/v2/" "$T/ca.pem"; }
  wait_until 20 "nginx on $TLS_PORT" _tls_up && proc_alive "$NGINX_PID" && break
  reap "$NGINX_PID" || true
  ((try < 3)) || { cat "$T/nginx.log" >&2; fail "nginx did not start"; }
done
TLSREG=127.0.0.1:$TLS_PORT
log "nginx TLS on $TLSREG in front of $PLAIN (pid $NGINX_PID)"
# A loopback registry is spoken to over plain HTTP unless listed in https.
cat >"$W/rc-tls.json" <<JSON
{"https": ["$TLSREG"], "ca_file": "$T/ca.pem", "timeout_ms": 5000, "connect_timeout_ms": 2000, "retries": 1}
JSON
cat >"$W/rc-tls-noca.json" <<JSON
{"https": ["$TLSREG"], "timeout_ms": 5000, "connect_timeout_ms": 2000, "retries": 1}
JSON
"$OVBD" --registry-config "$W/rc-tls.json" push "$W/A" base@v1 "registry://$TLSREG/e2e/tls:v1" >"$W/push-tls.out" 2>&1 ||
  { cat "$W/push-tls.out" >&2; fail "push through TLS"; }
"$OVBD" --registry-config "$W/rc-tls.json" --cache-dir "$W/cache-tool" \
  volume create "$W/B" tls --from "registry://$TLSREG/e2e/tls:v1" >"$W/create-tls.out" 2>&1 ||
  { cat "$W/create-tls.out" >&2; fail "volume create --from through TLS"; }
before=$(grep -c ' /v2/e2e/tls/blobs/' "$T/access.log" || true)
mount_b tls1 "$W/rc-tls.json"
got=$(volume_sha "$W/mB" tls)
assert_eq "$IMG_SHA" "$got" "the volume read through the mount (TLS, ca_file set)"
after=$(grep -c ' /v2/e2e/tls/blobs/' "$T/access.log" || true)
((after > before)) || fail "the reads did not go through nginx (TLS)"
stop_daemon "$W/mB"
log "TLS with ca_file: the volume matches ($((after - before)) blob requests through nginx)"
mount_b tls2 "$W/rc-tls-noca.json"
got=$(read_errno "$W/mB/tls")
assert_eq EIO "$got" "a read through TLS without the CA"
grep -q 'certificate not trusted' "$DAEMON_LOG" || { tail "$DAEMON_LOG" >&2; fail "no 'certificate not trusted' in the log"; }
log "TLS without ca_file: read failed ($got); the log says: $(grep -m1 -o 'TLS: server certificate not trusted[^"]*' "$DAEMON_LOG" | cut -c1-160)"
stop_daemon "$W/mB"

# ==== 4. A mirror that is down, listed first =============================================
log "case 4: a mirror on a closed port listed first"
"$OVBD" --registry-config "$W/rc.json" push "$W/A" base@v1 "registry://$PLAIN/e2e/plain:v1" >"$W/push-plain.out" 2>&1 ||
  { cat "$W/push-plain.out" >&2; fail "push to the plain registry"; }
"$OVBD" --registry-config "$W/rc.json" --cache-dir "$W/cache-tool" \
  volume create "$W/B" plain --from "registry://$PLAIN/e2e/plain:v1" >/dev/null || fail "volume create --from the plain registry"
DEAD=$(free_port)
cat >"$W/rc-mirror.json" <<JSON
{"mirrors": {"$PLAIN": ["http://127.0.0.1:$DEAD"]}, "timeout_ms": 5000, "connect_timeout_ms": 2000, "retries": 1}
JSON
mount_b mirror "$W/rc-mirror.json"
start=${EPOCHREALTIME/./}
got=$(volume_sha "$W/mB" plain)
el=$(((${EPOCHREALTIME/./} - start) / 1000))
assert_eq "$IMG_SHA" "$got" "the volume read through the mount (first mirror down)"
((el < 20000)) || fail "reading past a mirror that is down took ${el} ms"
stop_daemon "$W/mB"
log "mirror 127.0.0.1:$DEAD down: the volume matches, read from the origin in ${el} ms"

# ==== 6. Not root (before 5, which takes the plain registry away) ========================
log "case 6: a non-root user, their own store, ovbdfs and fuse2fs"
open_dev_fuse
U=ovbdra$$
add_user "$U"
UH=$(getent passwd "$U" | cut -d: -f6)
mkdir -p "$W/bin"
install -m 755 "$OVBD" "$W/bin/ovbd"
install -m 755 "$OVBDFS" "$W/bin/ovbdfs"
FUSE2FS=$(command -v fuse2fs)
# The user's own docker config (the default place), for the Basic registry.
install -d -m 700 -o "$U" -g "$U" "$UH/.docker"
install -m 600 -o "$U" -g "$U" "$W/creds-basic.json" "$UH/.docker/config.json"
UW=$W/user
install -d -m 755 -o "$U" -g "$U" "$UW"
US=$UW/store UM=$UW/disks UF=$UW/fs
E2E_FUSE_MOUNTS+=("$UM" "$UF")
u() { as_user "$U" "$@"; }
u mkdir "$UM" "$UF"
u "$W/bin/ovbd" store init "$US" >/dev/null || fail "ovbd store init as $U"
u "$W/bin/ovbd" --registry-config "$W/rc.json" volume create "$US" disk --from "registry://$BASIC/e2e/basic:v1" \
  >"$W/create-user.out" 2>&1 || { cat "$W/create-user.out" >&2; fail "volume create --from as $U"; }
mounted_for_u() { u timeout 10 mountpoint -q "$1"; }
# In the foreground, so its log is kept (and searched for sanitizer reports).
U_LOG=$W/ovbdfs.user.log
E2E_LOG_OF["$UM"]=$U_LOG
u "$W/bin/ovbdfs" "$US" "$UM" -f -o "registry_config=$W/rc.json,log_level=debug" >"$U_LOG" 2>&1 &
U_OVBDFS=$!
E2E_PIDS+=("$U_OVBDFS")
_u_mounted() { proc_gone "$U_OVBDFS" || mounted_for_u "$UM"; }
if ! wait_until 30 "$U's ovbdfs mount" _u_mounted || proc_gone "$U_OVBDFS"; then
  cat "$U_LOG" >&2
  fail "$U's ovbdfs did not mount"
fi
u "$FUSE2FS" -o ro,fakeroot "$UM/disk" "$UF" || fail "fuse2fs as $U on the volume"
wait_until 30 "fuse2fs mount" mounted_for_u "$UF" || fail "fuse2fs did not mount"
U_FUSE2FS=$(pids_of "$FUSE2FS" "$UM/disk")
f1=$(cd "$W/tree" && find . -type f -size +100k | LC_ALL=C sort | head -1)
[[ -n $f1 ]] || fail "no file over 100k in the tree"
u cmp "$W/tree/$f1" "$UF/$f1" || fail "$f1 read through fuse2fs as $U differs"
u test -d "$UH/.cache/ovbdfs/blobs" || fail "the user's default cache (~/.cache/ovbdfs) was not used"
u fusermount3 -u "$UF" || fail "fusermount3 -u of fuse2fs"
[[ -z $U_FUSE2FS ]] || wait_until 30 "fuse2fs exits" proc_gone "$U_FUSE2FS" || fail "fuse2fs did not exit"
u fusermount3 -u "$UM" || fail "fusermount3 -u of $U's ovbdfs"
wait_until 60 "$U's ovbdfs exits" proc_gone "$U_OVBDFS" || fail "$U's ovbdfs did not exit"
reap "$U_OVBDFS" || { cat "$U_LOG" >&2; fail "$U's ovbdfs exited with an error"; }
no_secret "the Basic password" "$B_PASS" "$U_LOG"
no_secret "the Basic password (base64)" "$B_AUTH" "$U_LOG"
log "as $U: $f1 read through ovbdfs and fuse2fs matches (default credentials and cache)"
check_sanitizers

# ==== 5. Hostile servers on the registry's own port ======================================
log "case 5: hostile servers on the port of the registry a volume came from"
cat >"$W/hostile.py" <<'EOF'
# hostile.py MODE PORT BLOBDIR STATEFILE: a "registry" on 127.0.0.1:PORT.
#   hang:    accepts every connection and never answers
#   cut:     answers range reads with the right headers, sends half the
#            body, closes
#   garble:  answers range reads in full, every 512th byte inverted
# STATEFILE holds the number of connections accepted.
import os, re, socket, sys, threading
mode, port, blobdir, state = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock = threading.Lock()
accepted = 0
held = []

def note():
    global accepted
    with lock:
        accepted += 1
        with open(state + ".tmp", "w") as f:
            f.write(str(accepted))
        os.replace(state + ".tmp", state)

def serve(c):
    try:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            m = re.search(r"/blobs/sha256:([0-9a-f]{64})$", path)
            if not m:
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                continue
            data = open(os.path.join(blobdir, m.group(1)[:2], m.group(1), "data"), "rb").read()
            r = re.match(r"bytes=(\d+)-(\d+)$", hdrs.get("range", ""))
            if method == "HEAD" or not r:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data))
                if method != "HEAD":
                    c.sendall(data)
                continue
            a, b = int(r.group(1)), min(int(r.group(2)), len(data) - 1)
            body = bytearray(data[a:b + 1])
            c.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\nContent-Range: bytes %d-%d/%d\r\n"
                      b"Content-Type: application/octet-stream\r\n\r\n" % (len(body), a, b, len(data)))
            if mode == "cut":
                c.sendall(body[:len(body) // 2])
                return
            for i in range(0, len(body), 512):
                body[i] ^= 0xFF
            c.sendall(body)
    except OSError:
        pass
    finally:
        c.close()

s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
with open(state + ".tmp", "w") as f:
    f.write("0")
os.replace(state + ".tmp", state)
while True:
    c, _ = s.accept()
    note()
    if mode == "hang":
        held.append(c)
    else:
        threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
BLOBDIR=$W/plain/data/docker/registry/v2/blobs/sha256
[[ -d $BLOBDIR ]] || fail "no blob directory $BLOBDIR"
stop_pid "$NGINX_PID"
HOSTILE_PID=
# swap_to_hostile MODE: the registry on $PLAIN leaves, the hostile server
# takes its port. swap_to_registry: and back (same port, same storage).
swap_to_hostile() {
  stop_pid "$PLAIN_PID"
  rm -f "$W/hostile.state"
  "$PY" "$W/hostile.py" "$1" "$PLAIN_PORT" "$BLOBDIR" "$W/hostile.state" >"$W/hostile-$1.log" 2>&1 &
  HOSTILE_PID=$!
  E2E_PIDS+=("$HOSTILE_PID")
  wait_until 10 "hostile server ($1)" test -s "$W/hostile.state" || { cat "$W/hostile-$1.log" >&2; fail "hostile server ($1) did not start"; }
  log "hostile server '$1' now on $PLAIN (pid $HOSTILE_PID)"
}
swap_to_registry() {
  stop_pid "$HOSTILE_PID"
  start_registry plain none "$PLAIN_PORT"
  PLAIN_PID=$REG_PID
}
accepted() { [[ $(cat "$W/hostile.state" 2>/dev/null || echo 0) -gt 0 ]]; }
# A reader holding the volume open: opens it and reads its first 4 KiB
# (the layer's header and index are fetched and cached then), creates
# READY, and once GO exists reads the whole volume (O_DIRECT, 1 MiB at a
# time). Prints "ok SHA256", or "ERRNO MS OFFSET" for the read that failed.
hold_and_read() {
  "$PY" -c '
import errno, hashlib, mmap, os, sys, time
path, ready, go = sys.argv[1:4]
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)
os.preadv(fd, [memoryview(buf)[:4096]], 0)
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("never told to read")
    time.sleep(0.01)
h, off, t0 = hashlib.sha256(), 0, time.monotonic()
try:
    while True:
        n = os.preadv(fd, [buf], off)
        if n <= 0:
            break
        h.update(memoryview(buf)[:n])
        off += n
    print("ok", h.hexdigest())
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)), int((time.monotonic() - t0) * 1000), off)
' "$@"
}

# Short timeouts: a server that never answers costs 2 x 1.5 s per read.
cat >"$W/rc-short.json" <<JSON
{"timeout_ms": 1500, "connect_timeout_ms": 1000, "retries": 1}
JSON
for mode in hang cut garble; do
  # (a) A volume open and read while the real registry serves; then the
  #     hostile server takes its place and the rest of the volume is read.
  mount_b "$mode-a" "$W/rc-short.json"
  rm -f "$W/ready" "$W/go"
  hold_and_read "$W/mB/plain" "$W/ready" "$W/go" >"$W/reader.out" 2>&1 &
  READER=$!
  E2E_PIDS+=("$READER")
  wait_until 20 "the reader opened the volume" test -e "$W/ready" || { cat "$W/reader.out" >&2; fail "the reader could not open the volume"; }
  swap_to_hostile "$mode"
  touch "$W/go"
  if [[ $mode == hang ]]; then
    wait_until 10 "the daemon connects to the hanging server" accepted || fail "the daemon never connected"
    t0=${EPOCHREALTIME/./}
    timeout 3 stat "$W/mB/plain" >/dev/null || fail "stat of the volume stuck while a read hangs on the server"
    timeout 3 cat "$W/mB/.control" >/dev/null || fail ".control stuck while a read hangs on the server"
    timeout 3 bash -c "echo 'status plain' >'$W/mB/.control' && grep -q '^plain ' '$W/mB/.control'" ||
      fail "status through .control stuck while a read hangs on the server"
    t1=${EPOCHREALTIME/./}
    proc_alive "$READER" || fail "the read was over before stat and .control were tried (not 'meanwhile')"
    log "while the read hangs: stat, .control and status answered in $(((t1 - t0) / 1000)) ms"
  fi
  wait_until 20 "the reader finishes" proc_gone "$READER" || fail "the read did not end within 20 s"
  reap "$READER" || { cat "$W/reader.out" >&2; fail "the reader failed"; }
  read -r err ms off <"$W/reader.out"
  [[ $err != ok ]] || fail "the whole volume was read from the '$mode' server (sha ${ms:0:16}; expected a failure)"
  assert_eq EIO "$err" "a read of the open volume from the '$mode' server"
  accepted || fail "the daemon never connected to the '$mode' server"
  if [[ $mode == hang ]]; then
    # Two attempts of 1.5 s and a backoff of at most 0.2 s.
    ((ms >= 1400 && ms < 6000)) || fail "the read failed after ${ms} ms (timeout_ms 1500, retries 1)"
  fi
  msg=$(grep -m1 -E '\[error\] I/O error on volume plain: ' "$DAEMON_LOG" || true)
  [[ -n $msg ]] || { tail "$DAEMON_LOG" >&2; fail "the failed read from the '$mode' server was not logged"; }
  log "'$mode', open volume: read at offset $off failed with EIO after $ms ms; log: …$(tail_of "$msg")"
  stop_daemon "$W/mB"

  # (b) A daemon with an empty cache opens the volume: the layer's header
  #     comes from the hostile server.
  mount_b "$mode-b" "$W/rc-short.json"
  start=${EPOCHREALTIME/./}
  got=$(read_errno "$W/mB/plain")
  el=$(((${EPOCHREALTIME/./} - start) / 1000))
  assert_eq EIO "$got" "opening and reading the volume from the '$mode' server with an empty cache"
  ((el < 6000)) || fail "the open took ${el} ms (timeout_ms 1500, retries 1)"
  timeout 3 cat "$W/mB/.control" >/dev/null || fail ".control stuck after the failed open ('$mode')"
  msg=$(error_line "$DAEMON_LOG" plain)
  [[ -n $msg ]] || { tail "$DAEMON_LOG" >&2; fail "the failed open from the '$mode' server was not logged"; }
  log "'$mode', empty cache: EIO after ${el} ms; log: …$(tail_of "$msg")"
  # The real registry back: the same daemon and cache read the right
  # bytes (nothing the hostile server sent stayed in the cache as good).
  swap_to_registry
  got=$(volume_sha "$W/mB" plain)
  assert_eq "$IMG_SHA" "$got" "the volume with the registry back (same mount and cache, after '$mode')"
  log "'$mode': the registry back, the same mount and cache read the volume right"
  stop_daemon "$W/mB"
done

"$OVBD" check "$W/B" >"$W/checkB.out" 2>&1 || { cat "$W/checkB.out" >&2; fail "ovbd check B"; }
log "PASS"
