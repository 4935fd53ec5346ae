#!/usr/bin/env python3
"""Workload and checker for kill9_control_test.sh.

  control_workload.py run MNT LOG SEED TAG
      Issues snapshot / snapshot --all / clone / delete commands through
      MNT/.control (and fsynced writes to MNT/vol between them) until an
      error (the daemon is killed). Every command is logged before it is sent ("start KIND NAME")
      and after it returned ("done KIND NAME"); after a snapshot or clone is
      created, its sha256 is logged ("sha NAME HEX"). New names carry TAG so
      they never collide with earlier iterations' names. Exits 3 on the first
      error, after logging it ("error ...").

  control_workload.py killer LOG N PID SEED
      Polls LOG every millisecond until N commands have been started, waits
      a random 0..8 ms and sends SIGKILL to PID, so the kill lands anywhere
      in, before or after that command. Exits 1 if the workload fails first
      or does not get there in 120 s.

  control_workload.py verify MNT LOG BEFORE KNOWN KNOWN_OUT
      After the crash and a remount: BEFORE lists the names that existed when
      the workload started, KNOWN the sha256 of those that were verified
      before. Checks that every name whose creation was acknowledged and whose
      deletion was never started exists, that no name whose deletion was
      acknowledged (or that was never created) exists, that every listed file
      reads completely, that snapshots and clones read what they held when
      they were made, and that each `snapshot --all` group exists for all
      its volumes or for none. Writes the verified sha256s to KNOWN_OUT.
"""
import errno
import hashlib
import os
import random
import sys
import time

VOL_SIZE = 8 << 20
ERRNAME = lambda e: errno.errorcode.get(e, str(e))


def sha_of(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def control(mnt, line):
    fd = os.open(os.path.join(mnt, ".control"), os.O_RDWR)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def run(mnt, logpath, seed, tag):
    r = random.Random(seed)
    log = open(logpath, "a", buffering=1)
    names = [n for n in os.listdir(mnt) if not n.startswith(".")]  # .control, .metrics
    snaps = [n for n in names if "@" in n]
    vols = [n for n in names if "@" not in n]          # vol and clones
    clones = [n for n in vols if n != "vol"]
    k = 0

    def cmd(kind, name, line):
        log.write("start %s %s %.3f\n" % (kind, name, time.time()))
        deadline = time.monotonic() + 10
        while True:
            try:
                control(mnt, line)
                break
            except OSError as e:
                # A file closed just before is released asynchronously.
                if e.errno == errno.EBUSY and kind == "delete" and time.monotonic() < deadline:
                    log.write("busy %s %s\n" % (kind, name))
                    time.sleep(0.02)
                    continue
                log.write("error %s %s %s\n" % (kind, name, ERRNAME(e.errno)))
                sys.exit(3)
        log.write("done %s %s %.3f\n" % (kind, name, time.time()))

    def record_sha(name):
        try:
            log.write("sha %s %s\n" % (name, sha_of(os.path.join(mnt, name))))
        except OSError as e:
            log.write("error sha %s %s\n" % (name, ERRNAME(e.errno)))
            sys.exit(3)

    while True:
        k += 1
        x = r.random()
        crowded = len(snaps) + len(clones) > 10
        if x < 0.3:
            off = r.randrange(0, VOL_SIZE // 4096 - 16) * 4096
            try:
                fd = os.open(os.path.join(mnt, "vol"), os.O_RDWR)
                os.pwrite(fd, r.randbytes(r.choice([4096, 65536])), off)
                os.fsync(fd)
                os.close(fd)
            except OSError as e:
                log.write("error write vol %s\n" % ERRNAME(e.errno))
                sys.exit(3)
        elif x < 0.35 and not crowded:
            # One instant for every volume: logged per snapshot it makes.
            made = ["%s@a%s_%d" % (v, tag, k) for v in vols]
            for n in made:
                log.write("start snapshot %s\n" % n)
            try:
                control(mnt, "snapshot --all a%s_%d" % (tag, k))
            except OSError as e:
                log.write("error snapshot --all %s\n" % ERRNAME(e.errno))
                sys.exit(3)
            for n in made:
                log.write("done snapshot %s\n" % n)
            snaps.extend(made)
            record_sha(made[0])
        elif x < 0.55 and not crowded:
            src = r.choice(vols) if r.random() < 0.3 else "vol"
            name = "%s@s%s_%d" % (src, tag, k)
            cmd("snapshot", name, "snapshot %s s%s_%d" % (src, tag, k))
            snaps.append(name)
            record_sha(name)
        elif x < 0.75 and snaps and not crowded:
            src = r.choice(snaps)
            name = "c%s_%d" % (tag, k)
            cmd("clone", name, "clone %s %s" % (src, name))
            vols.append(name)
            clones.append(name)
            record_sha(name)
        elif snaps or clones:
            name = r.choice(snaps + clones)
            cmd("delete", name, "delete " + name)
            if name in snaps:
                snaps.remove(name)
            else:
                clones.remove(name)
                vols.remove(name)


def killer(logpath, n, pid, seed):
    r = random.Random(seed)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with open(logpath) as f:
                started = sum(1 for line in f if line.startswith("start "))
                # stop waiting once the workload has given up
                f.seek(0)
                failed = any(line.startswith("error ") for line in f)
        except FileNotFoundError:
            started, failed = 0, False
        if started >= n:
            time.sleep(r.uniform(0, 0.008))
            os.kill(pid, 9)
            return 0
        if failed:
            return 1
        time.sleep(0.001)
    return 1


def verify(mnt, logpath, before_path, known_path, known_out):
    before = set(open(before_path).read().split())
    known = {}
    if os.path.exists(known_path):
        for line in open(known_path):
            n, h = line.split()
            known[n] = h
    created, create_started, deleted, delete_started = set(), set(), set(), set()
    for line in open(logpath):
        w = line.split()
        if len(w) < 3:
            continue                      # a line torn by the kill
        if w[0] == "start":
            (delete_started if w[1] == "delete" else create_started).add(w[2])
        elif w[0] == "done":
            (deleted if w[1] == "delete" else created).add(w[2])
        elif w[0] == "sha" and len(w) == 3 and len(w[2]) == 64:
            known[w[1]] = w[2]
    listed = set(n for n in os.listdir(mnt) if not n.startswith("."))
    problems = []
    for n in sorted((before | created) - delete_started):
        if n not in listed:
            problems.append("%s: acknowledged, never deleted, but missing" % n)
    for n in sorted(deleted):
        if n in listed:
            problems.append("%s: deletion acknowledged, but still listed" % n)
    for n in sorted(listed - before - create_started):
        problems.append("%s: listed, but never created" % n)
    # A `snapshot --all` group (snapshot names "a<tag>_<k>") is all or none,
    # whether or not the command was acknowledged before the kill.
    groups = {}
    for n in create_started:
        if "@a" in n:
            groups.setdefault(n.split("@", 1)[1], set()).add(n)
    for g, members in sorted(groups.items()):
        members -= delete_started
        present = members & listed
        if present and present != members:
            problems.append("snapshot --all %s: only %s of %s exist"
                            % (g, sorted(present), sorted(members)))
    out = {}
    for n in sorted(listed):
        path = os.path.join(mnt, n)
        try:
            size = os.stat(path).st_size
            h = sha_of(path)
        except OSError as e:
            problems.append("%s: cannot be read completely: %s" % (n, e))
            continue
        if n != "vol" and size != VOL_SIZE:
            problems.append("%s: size %d, expected %d" % (n, size, VOL_SIZE))
        if n == "vol":
            continue                      # written all along; only read
        if n in known and known[n] != h:
            problems.append("%s: reads sha256 %s, held %s when made" % (n, h[:16], known[n][:16]))
        out[n] = h
    with open(known_out, "w") as f:
        for n, h in sorted(out.items()):
            f.write("%s %s\n" % (n, h))
    print("verify: %d names listed, %d with a recorded sha256, %d problems"
          % (len(listed), sum(1 for n in listed if n in known), len(problems)), file=sys.stderr)
    for p in problems:
        print("  PROBLEM: " + p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1] == "killer":
        sys.exit(killer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    elif sys.argv[1] == "verify":
        sys.exit(verify(*sys.argv[2:7]))
    else:
        sys.exit("usage: control_workload.py run|verify ...")
