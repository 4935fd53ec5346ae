"""Helpers for the python snippets of the end-to-end tests (lib.sh puts this
directory on PYTHONPATH): `from e2e_io import read_to_eof`."""
import os


def read_to_eof(fd, chunk=65536):
    """Everything fd returns until a read returns nothing, in reads of chunk bytes."""
    out = b""
    while True:
        b = os.read(fd, chunk)
        if not b:
            return out
        out += b
