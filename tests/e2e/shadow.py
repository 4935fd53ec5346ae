#!/usr/bin/env python3
"""Keeps a volume file and a plain "shadow" file in step and compares them.

  shadow.py write VOL SHADOW OFF LEN SEED [--direct]   same random bytes to both
  shadow.py zero SHADOW OFF LEN                        zeros into the shadow only
  shadow.py readcmp VOL SHADOW COUNT SEED [--direct]   random unaligned reads agree
  shadow.py fullcmp VOL SHADOW                         whole contents agree

Exit status 1 with a message naming the first mismatching offset.
"""
import mmap
import os
import random
import sys

CHUNK = 4 << 20


def die(msg):
    print("shadow.py: " + msg, file=sys.stderr)
    sys.exit(1)


def open_vol(path, flags, direct):
    return os.open(path, flags | (os.O_DIRECT if direct else 0))


def pread_all(fd, n, off, direct):
    """Reads up to n bytes at off (short only at EOF). With O_DIRECT the
    buffer is page-aligned memory; the offset and length stay unaligned."""
    out = bytearray()
    buf = mmap.mmap(-1, max(n, 1)) if direct else None
    while len(out) < n:
        want = n - len(out)
        if direct:
            got = os.preadv(fd, [memoryview(buf)[:want]], off + len(out))
            chunk = buf[:got]
        else:
            chunk = os.pread(fd, want, off + len(out))
            got = len(chunk)
        if got == 0:
            break
        out += chunk
    return bytes(out)


def pwrite_all(fd, data, off, direct):
    done = 0
    buf = None
    if direct:
        buf = mmap.mmap(-1, max(len(data), 1))
        buf[: len(data)] = data
    while done < len(data):
        if direct:
            n = os.pwritev(fd, [memoryview(buf)[done : len(data)]], off + done)
        else:
            n = os.pwrite(fd, data[done:], off + done)
        if n <= 0:
            die("short write at %d" % (off + done))
        done += n


def first_diff(a, b):
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return i
    return min(len(a), len(b))


def cmd_write(vol, shadow, off, length, seed, direct):
    data = random.Random(seed).randbytes(length)
    fd = open_vol(vol, os.O_RDWR, direct)
    pwrite_all(fd, data, off, direct)
    os.fsync(fd)
    os.close(fd)
    fd = os.open(shadow, os.O_RDWR)
    os.pwrite(fd, data, off)
    os.close(fd)


def cmd_zero(shadow, off, length):
    fd = os.open(shadow, os.O_RDWR)
    os.pwrite(fd, bytes(length), off)
    os.close(fd)


def cmd_readcmp(vol, shadow, count, seed, direct):
    r = random.Random(seed)
    size = os.stat(shadow).st_size
    if os.stat(vol).st_size != size:
        die("sizes differ: volume %d, shadow %d" % (os.stat(vol).st_size, size))
    fv = open_vol(vol, os.O_RDONLY, direct)
    fs = os.open(shadow, os.O_RDONLY)
    cases = [(0, 1), (1, 1), (511, 2), (4095, 2), (size - 1, 1), (size - 3, 100), (size, 10),
             (size - 4096, 4096)]
    for _ in range(count):
        kind = r.random()
        if kind < 0.4:
            ln = r.randint(1, 9000)
        elif kind < 0.8:
            ln = r.randint(1, 300000)
        else:
            ln = r.randint(1, 3 << 20)
        cases.append((r.randrange(0, size), ln))
    for off, ln in cases:
        a = pread_all(fv, ln, off, direct)
        b = pread_all(fs, ln, off, False)
        if a != b:
            i = first_diff(a, b)
            die("read(off=%d, len=%d%s) differs at byte %d (offset %d): volume gave %d bytes, "
                "shadow %d" % (off, ln, ", O_DIRECT" if direct else "", i, off + i, len(a), len(b)))
    os.close(fv)
    os.close(fs)


def cmd_fullcmp(vol, shadow):
    size = os.stat(shadow).st_size
    if os.stat(vol).st_size != size:
        die("sizes differ: volume %d, shadow %d" % (os.stat(vol).st_size, size))
    fv = os.open(vol, os.O_RDONLY)
    fs = os.open(shadow, os.O_RDONLY)
    off = 0
    while off < size:
        a = os.pread(fv, CHUNK, off)
        b = os.pread(fs, CHUNK, off)
        if a != b:
            die("contents differ at offset %d" % (off + first_diff(a, b)))
        if not a:
            die("volume read returned 0 bytes at %d" % off)
        off += len(a)


def main(argv):
    direct = "--direct" in argv
    argv = [a for a in argv if a != "--direct"]
    if len(argv) < 2:
        die(__doc__)
    cmd = argv[1]
    if cmd == "write":
        cmd_write(argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]), direct)
    elif cmd == "zero":
        cmd_zero(argv[2], int(argv[3]), int(argv[4]))
    elif cmd == "readcmp":
        cmd_readcmp(argv[2], argv[3], int(argv[4]), int(argv[5]), direct)
    elif cmd == "fullcmp":
        cmd_fullcmp(argv[2], argv[3])
    else:
        die("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
