#!/usr/bin/env python3
"""Workload and checker for the crash test.

  crash_workload.py run VOL LOGDIR SEED [--direct]
      Writes (and sometimes discards) random sector ranges of VOL until an
      I/O error (the daemon was killed) or a write limit. Every sector written
      carries a header (magic, sequence number, sector number) and bytes
      derived from both, so a reader can tell exactly which write it holds.
      Before issuing operation `seq` it appends "W|D seq offset length" to
      LOGDIR/intent; after every fsync that returned it appends "S seq" to
      LOGDIR/synced, meaning every operation up to seq is durable.

  crash_workload.py verify VOL LOGDIR BASELINE OUT
      BASELINE holds the volume's bytes before the run. For every sector, with
      D the last durable (fsynced) operation covering it, the sector must hold
      D's bytes or those of any LATER operation covering it (which may or may
      not have reached the upper); a sector no durable operation covered may
      also still hold its BASELINE bytes. Sectors no operation touched must
      equal BASELINE. Writes the volume's (now verified) bytes to OUT.
"""
import ctypes
import ctypes.util
import errno
import hashlib
import mmap
import os
import random
import struct
import sys

SECTOR = 512
MAGIC = b"OVBDCRSH"
MAX_OPS = 200000
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


def sector_bytes(seq, sector):
    head = struct.pack("<8sQQ", MAGIC, seq, sector)
    body = hashlib.blake2b(head, digest_size=64).digest() * 8
    return head + body[: SECTOR - len(head)]


def op_bytes(seq, off, length):
    first = off // SECTOR
    return b"".join(sector_bytes(seq, first + i) for i in range(length // SECTOR))


def run(vol, logdir, seed, direct):
    r = random.Random(seed)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    fd = os.open(vol, os.O_RDWR | (os.O_DIRECT if direct else 0))
    size = os.fstat(fd).st_size
    nsect = size // SECTOR
    buf = mmap.mmap(-1, 2 << 20)
    intent = open(os.path.join(logdir, "intent"), "a")
    synced = open(os.path.join(logdir, "synced"), "a")
    seq = 0
    per_sync = r.randint(1, 16)
    pending = 0
    try:
        while seq < MAX_OPS:
            seq += 1
            k = r.random()
            if k < 0.10:
                n = 1
            elif k < 0.50:
                n = 8
            elif k < 0.90:
                n = r.randint(1, 128)
            else:
                n = 2048
            if n % 8 == 0 and r.random() < 0.8:
                start = r.randrange(0, (nsect - n) // 8 + 1) * 8
            else:
                start = r.randrange(0, nsect - n + 1)
            off, length = start * SECTOR, n * SECTOR
            kind = "D" if r.random() < 0.05 else "W"
            intent.write("%s %d %d %d\n" % (kind, seq, off, length))
            intent.flush()  # in the page cache before the operation starts
            if kind == "D":
                if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, length) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, os.strerror(e))
            else:
                data = op_bytes(seq, off, length)
                if direct:
                    buf[:length] = data
                    done = os.pwritev(fd, [memoryview(buf)[:length]], off)
                else:
                    done = os.pwrite(fd, data, off)
                if done != length:
                    raise OSError(errno.EIO, "short write %d of %d" % (done, length))
            pending += 1
            if pending >= per_sync:
                os.fsync(fd)
                synced.write("S %d\n" % seq)  # only after fsync returned
                synced.flush()
                pending = 0
                per_sync = r.randint(1, 16)
    except OSError as e:
        print("workload: stopped at op %d: %s" % (seq, e), file=sys.stderr)
        return 0
    print("workload: reached %d operations without being stopped" % seq, file=sys.stderr)
    return 0


def verify(vol, logdir, baseline_path, out_path):
    ops = []
    intent = os.path.join(logdir, "intent")
    with open(intent) if os.path.exists(intent) else open(os.devnull) as f:
        for line in f:
            p = line.split()
            if len(p) == 4:  # a torn last line cannot be an issued operation
                ops.append((p[0], int(p[1]), int(p[2]), int(p[3])))
    durable = 0
    if os.path.exists(os.path.join(logdir, "synced")):
        with open(os.path.join(logdir, "synced")) as f:
            for line in f:
                p = line.split()
                if len(p) == 2:
                    durable = max(durable, int(p[1]))
    with open(baseline_path, "rb") as f:
        base = f.read()
    fd = os.open(vol, os.O_RDONLY)
    size = os.fstat(fd).st_size
    if size != len(base):
        print("verify: volume size %d, expected %d" % (size, len(base)), file=sys.stderr)
        return 1
    actual = bytearray()
    while len(actual) < size:
        chunk = os.pread(fd, 4 << 20, len(actual))
        if not chunk:
            print("verify: read returned 0 at %d" % len(actual), file=sys.stderr)
            return 1
        actual += chunk
    os.close(fd)

    # Operations covering each touched sector, in issue order.
    cover = {}
    for kind, seq, off, length in ops:
        for s in range(off // SECTOR, (off + length) // SECTOR):
            cover.setdefault(s, []).append((seq, kind))
    zero = bytes(SECTOR)
    bad = []
    newer = 0
    for s, lst in cover.items():
        got = bytes(actual[s * SECTOR : (s + 1) * SECTOR])
        d = -1
        for i, (seq, _) in enumerate(lst):
            if seq <= durable:
                d = i
        candidates = lst[d:] if d >= 0 else lst
        ok = False
        for seq, kind in candidates:
            want = zero if kind == "D" else sector_bytes(seq, s)
            if got == want:
                ok = True
                if seq != candidates[0][0]:
                    newer += 1
                break
        if not ok and d < 0 and got == base[s * SECTOR : (s + 1) * SECTOR]:
            ok = True
        if not ok:
            head = struct.unpack("<8sQQ", got[:24])
            bad.append((s, [c[0] for c in candidates][:6], d >= 0, head))
    # Untouched sectors: exactly the baseline.
    exp = bytearray(base)
    for s in cover:
        exp[s * SECTOR : (s + 1) * SECTOR] = actual[s * SECTOR : (s + 1) * SECTOR]
    if exp != actual:
        i = next(i for i in range(size) if exp[i] != actual[i])
        print("verify: byte %d (sector %d), which no operation touched, changed" % (i, i // SECTOR),
              file=sys.stderr)
        return 1
    print("verify: %d operations, durable up to %d, %d sectors checked, %d hold a write newer "
          "than their last durable one" % (len(ops), durable, len(cover), newer), file=sys.stderr)
    if bad:
        for s, cands, had_durable, head in bad[:10]:
            print("verify: sector %d (offset %d): allowed seqs %s%s; found header %r" %
                  (s, s * SECTOR, cands, "" if had_durable else " or baseline", head), file=sys.stderr)
        print("verify: %d sectors hold neither their last durable write nor a later one" % len(bad),
              file=sys.stderr)
        return 1
    with open(out_path + ".tmp", "wb") as f:
        f.write(actual)
    os.rename(out_path + ".tmp", out_path)
    return 0


def main(argv):
    direct = "--direct" in argv
    argv = [a for a in argv if a != "--direct"]
    if len(argv) >= 5 and argv[1] == "run":
        return run(argv[2], argv[3], int(argv[4]), direct)
    if len(argv) >= 6 and argv[1] == "verify":
        return verify(argv[2], argv[3], argv[4], argv[5])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
