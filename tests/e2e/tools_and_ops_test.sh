#!/usr/bin/env bash
# Every `ovbd` subcommand and every FUSE operation the daemon implements,
# each at least once and checked, in little time: the test that
# scripts/test.sh runs against the sanitizer build so that every code path
# a user reaches runs under ASan+UBSan (lib.sh fails it on any report).
#
#   ovbd: layer create (plain, zstd), layer info (text, --json), layer check,
#         flatten, store init, volume import/create (--size, --from)/list
#         (text, --json), snapshot/clone/resize/status/delete/gc/check on the
#         unmounted and on the mounted store, --help and --version
#   FUSE: lookup, getattr, setattr (mode, times, size), opendir, readdir,
#         releasedir, open, read, write, flush, fsync, release, fallocate
#         (punch hole), statfs
#
# It also checks that writing a volume changes its mtime (at the first write
# and at close, kept across a remount) and that open(O_TRUNC) on a volume is
# refused with EINVAL and changes nothing.
#
# E2E_CORRUPT=1 flips a byte of the flattened image: the comparison with the
# raw image must then fail.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd fallocate truncate stat cmp sha256sum
e2e_init

W=$E2E_WORK
S=$W/store
M=$W/mnt
MiB=$((1 << 20))

# ---------------------------------------------------------------- offline
log "ovbd offline subcommands"
"$OVBD" --version | grep -qE '^ovbd [0-9]+\.[0-9]+\.[0-9]+$' || fail "ovbd --version: $("$OVBD" --version)"
"$OVBDFS" --version | grep -qE '^ovbdfs [0-9]+\.[0-9]+\.[0-9]+ ' || fail "ovbdfs --version: $("$OVBDFS" --version)"
"$OVBD" --help >/dev/null || fail "ovbd --help"
"$OVBDFS" --help >/dev/null 2>&1 || fail "ovbdfs --help"
if "$OVBDFS" "$W/nosuch-store" "$W" -f >/dev/null 2>&1; then fail "ovbdfs on a missing store succeeded"; fi
if "$OVBD" gc "$W/nosuch-store" >/dev/null 2>&1; then fail "ovbd gc on a missing store succeeded"; fi

RAW=$W/raw.img
"$PY" - "$RAW" <<'EOF_PY'
import random, sys
r = random.Random(7)
with open(sys.argv[1], "wb") as f:
    f.write(r.randbytes(2 << 20))
    f.write(bytes(3 << 20))          # a hole: all-zero blocks
    f.write(r.randbytes(3 << 20))
EOF_PY
"$OVBD" layer create --from "$RAW" "$W/l1.lsmt" --message e2e >/dev/null
"$OVBD" layer create --from "$RAW" "$W/l1.zfile" --compress zstd --block-size 16K >/dev/null
"$OVBD" layer info "$W/l1.lsmt" | grep -q '^virtual size: .*8388608 bytes' || fail "layer info: $("$OVBD" layer info "$W/l1.lsmt")"
"$OVBD" layer info --json "$W/l1.zfile" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
assert d["format"] == "zfile+lsmt" and d["zfile"]["algorithm"] == "zstd" and d["virtual_size"] == 8 << 20, d
' || fail "layer info --json of the zstd layer"
"$OVBD" layer check "$W/l1.zfile" >/dev/null || fail "layer check of the zstd layer"
"$OVBD" flatten "$W/l1.lsmt" "$W/l1.zfile" -o "$W/flat.img" >/dev/null
corrupting && flip_byte "$W/flat.img" 12345
cmp -s "$RAW" "$W/flat.img" || fail "flatten of the layers differs from the raw image"

"$OVBD" store init "$S" >/dev/null
"$OVBD" volume import "$S" imp "$RAW" --compress lz4 >/dev/null
"$OVBD" volume create "$S" fromlayer --from "$W/l1.lsmt" --size 16M >/dev/null
"$OVBD" volume create "$S" vol --size 32M >/dev/null
"$OVBD" volume list "$S" | grep -qE '^fromlayer +16 MiB +1 volume$' || fail "volume list: $("$OVBD" volume list "$S")"
"$OVBD" volume list "$S" --json | "$PY" -c '
import json, sys
d = {v["name"]: v for v in json.load(sys.stdin)}
assert sorted(d) == ["fromlayer", "imp", "vol"] and d["imp"]["size"] == 8 << 20, d
' || fail "volume list --json"
"$OVBD" snapshot "$S" vol off0 >/dev/null
"$OVBD" clone "$S" vol@off0 offclone >/dev/null
"$OVBD" resize "$S" offclone 48M >/dev/null
"$OVBD" status "$S" offclone | grep -q "^offclone size=$((48 * MiB)) " || fail "status (unmounted): $("$OVBD" status "$S" offclone)"
"$OVBD" delete "$S" offclone >/dev/null
"$OVBD" gc "$S" | grep -q 'removed' || fail "gc (unmounted)"
"$OVBD" check "$S" >/dev/null || fail "check of the store"

# ---------------------------------------------------------------- mounted
start_daemon "$S" "$M"
log "FUSE operations"
ls -la "$M" >"$W/ls.out"                                     # opendir readdir releasedir lookup getattr
for n in .control .metrics imp fromlayer vol vol@off0; do
  grep -qE " $n\$" "$W/ls.out" || fail "ls -la of the mount lacks $n: $(cat "$W/ls.out")"
done
stat -f -c '%b %S' "$M" | grep -qE '^[1-9][0-9]* [1-9]' || fail "statfs: $(stat -f "$M")"   # statfs
cmp -s "$RAW" "$M/imp" || fail "the imported volume does not read as the raw image"       # open read release
cmp -s -n $((8 * MiB)) "$RAW" "$M/fromlayer" || fail "the volume over l1.lsmt does not read as the raw image"
cmp -s -i $((8 * MiB)):0 -n $((8 * MiB)) "$M/fromlayer" /dev/zero || fail "the grown part of fromlayer is not zeros"
grep -qE '^ovbdfs_read_bytes_total\{volume="imp"\} [1-9][0-9]*$' "$M/.metrics" ||        # .metrics
  fail ".metrics does not count the reads of imp: $(grep 'read_bytes' "$M/.metrics")"

chmod 640 "$M/vol"                                           # setattr mode
assert_eq 640 "$(stat -c %a "$M/vol")" "mode after chmod"
touch -d @1000000000 "$M/vol"                                # setattr times
assert_eq 1000000000 "$(stat -c %Y "$M/vol")" "mtime after touch -d"
"$PY" - "$M/vol" <<'EOF_PY' || fail "write, fsync and mtime (see above)"
import os, sys, time
p = sys.argv[1]
bad = []
fd = os.open(p, os.O_RDWR)
t0 = time.time_ns()
os.pwrite(fd, b"first write", 4096)                          # write
m1 = os.stat(p).st_mtime_ns
if m1 < t0 - 2 * 10**9:
    bad.append("mtime after the first write is %d, before the write (%d)" % (m1, t0))
os.fsync(fd)                                                 # fsync
os.pwrite(fd, b"second", 8192)
os.close(fd)                                                 # flush release
m2 = os.stat(p).st_mtime_ns
if m2 < m1:
    bad.append("mtime went back at close: %d < %d" % (m2, m1))
with open(p, "rb") as f:
    f.seek(4096)
    if f.read(11) != b"first write":
        bad.append("the first write does not read back")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF_PY
mtime=$(stat -c %Y "$M/vol")
((mtime > 1000000000)) || fail "writing the volume did not change its mtime ($mtime)"
printf 'zzzz' | dd of="$M/vol" bs=1 seek=$((3 * MiB)) conv=notrunc status=none
fallocate -p -o 4096 -l 4096 "$M/vol"                        # fallocate (punch)
cmp -s -i 4096:0 -n 4096 "$M/vol" /dev/zero || fail "a punched range does not read zeros"
assert_eq zzzz "$(dd if="$M/vol" bs=1 skip=$((3 * MiB)) count=4 status=none)" "data next to the punched range"
truncate -s 64M "$M/vol"                                     # setattr size
assert_eq $((64 * MiB)) "$(stat -c %s "$M/vol")" "size after truncate -s 64M"
sha_before=$(sha256sum <"$M/vol")
r=$(errno_of "os.close(os.open('$M/vol', os.O_WRONLY | os.O_TRUNC))")
assert_eq EINVAL "$r" "open(O_TRUNC) of a volume"
assert_eq $((64 * MiB)) "$(stat -c %s "$M/vol")" "size after open(O_TRUNC)"
assert_eq "$sha_before" "$(sha256sum <"$M/vol")" "data after open(O_TRUNC)"
mtime=$(stat -c %Y "$M/vol")

log "ovbd subcommands on the mounted store"
"$OVBD" volume create "$S" viactl --size 4M | grep -q 'viactl created' || fail "volume create (mounted)"
[[ -f $M/viactl ]] || fail "volume create (mounted) did not go through .control"
"$OVBD" snapshot "$S" vol on0 | grep -q 'vol@on0 created' || fail "snapshot (mounted)"
"$OVBD" snapshot "$S" --all grp | grep -q '@grp' || fail "snapshot --all (mounted)"
"$OVBD" clone "$S" vol@on0 onclone | grep -q 'onclone' || fail "clone (mounted)"
"$OVBD" resize "$S" onclone 80M >/dev/null || fail "resize (mounted)"
assert_eq $((80 * MiB)) "$(stat -c %s "$M/onclone")" "size after ovbd resize (mounted)"
"$OVBD" status "$S" | grep -q '^onclone size=' || fail "status (mounted)"
"$OVBD" status "$S" vol@on0 | grep -q '^vol@on0 size=' || fail "status VOL (mounted)"
"$OVBD" delete "$S" onclone >/dev/null || fail "delete (mounted)"
[[ ! -e $M/onclone ]] || fail "onclone still listed after ovbd delete"
"$OVBD" gc "$S" | grep -q 'removed' || fail "gc (mounted)"
"$OVBD" volume list "$S" | grep -q '^vol@grp ' || fail "volume list (mounted)"
if "$OVBD" check "$S" --repair >/dev/null 2>&1; then fail "check --repair of a mounted store succeeded"; fi
stop_daemon "$M"

start_daemon "$S" "$M"
assert_eq "$mtime" "$(stat -c %Y "$M/vol")" "the volume's mtime after a remount"
stop_daemon "$M"
"$OVBD" check "$S" >/dev/null || fail "check of the store after the mounted commands"
