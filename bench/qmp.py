#!/usr/bin/env python3
"""A minimal QMP client for the benchmark scripts of bench/.

    qmp.py SOCKET stream NODE [--timeout S] [--quit]
        block-stream of NODE (its whole backing chain into it); waits for the
        job's BLOCK_JOB_COMPLETED event and fails if the event carries an
        error. With --quit the daemon is then told to quit, which closes (and
        so flushes) every block node. Prints the seconds from the command to
        the event on stdout.
    qmp.py SOCKET quit [--timeout S]
    qmp.py SOCKET query-jobs [--timeout S]
        prints the reply of query-jobs as JSON.

QMP in short: the server greets with {"QMP": ...}; the client must send
{"execute": "qmp_capabilities"} before anything else; each command gets one
{"return": ...} or {"error": ...} reply, matched here by "id"; asynchronous
events ({"event": ...}) may arrive at any time in between.
"""
import argparse
import json
import socket
import sys
import time


class QmpError(Exception):
    pass


class Qmp:
    def __init__(self, path, timeout):
        self.deadline = time.monotonic() + timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The daemon creates its socket after it starts: retry until the deadline.
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= self.deadline:
                    raise QmpError(f"cannot connect to {path}")
                time.sleep(0.02)
        self.buf = b""
        self.events = []
        self.next_id = 0
        greeting = self._read()
        if "QMP" not in greeting:
            raise QmpError(f"unexpected greeting: {greeting}")
        self.command("qmp_capabilities")

    def _read(self):
        """One JSON message from the socket, bounded by the deadline."""
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise QmpError("timed out waiting for the daemon")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise QmpError("timed out waiting for the daemon") from None
            if not chunk:
                raise QmpError("the daemon closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        if not line.strip():
            return self._read()
        return json.loads(line)

    def command(self, name, **args):
        self.next_id += 1
        cid = f"c{self.next_id}"
        msg = {"execute": name, "id": cid}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            m = self._read()
            if "event" in m:
                self.events.append(m)
                continue
            if m.get("id") != cid:
                continue
            if "error" in m:
                raise QmpError(f"{name}: {m['error'].get('desc', m['error'])}")
            return m.get("return")

    def wait_event(self, name, match):
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name and match(e.get("data", {})):
                    return self.events.pop(i)
            m = self._read()
            if "event" in m:
                self.events.append(m)


def main():
    p = argparse.ArgumentParser(description="minimal QMP client")
    p.add_argument("socket")
    p.add_argument("action", choices=["stream", "quit", "query-jobs"])
    p.add_argument("node", nargs="?")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--quit", action="store_true")
    a = p.parse_args()
    try:
        q = Qmp(a.socket, a.timeout)
        if a.action == "quit":
            q.command("quit")
        elif a.action == "query-jobs":
            print(json.dumps(q.command("query-jobs")))
        else:
            if not a.node:
                p.error("stream needs NODE")
            job = "stream-" + a.node
            start = time.monotonic()
            q.command("block-stream", **{"job-id": job, "device": a.node})
            ev = q.wait_event("BLOCK_JOB_COMPLETED", lambda d: d.get("device") == job)
            elapsed = time.monotonic() - start
            data = ev.get("data", {})
            if "error" in data:
                raise QmpError(f"block-stream failed: {data['error']}")
            if data.get("offset") != data.get("len"):
                raise QmpError(f"block-stream ended at {data.get('offset')} of {data.get('len')}")
            if a.quit:
                q.command("quit")
            print(f"{elapsed:.3f}")
    except (QmpError, OSError) as e:
        print(f"qmp.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
