"""Log lines go to stderr, prefixed, so that stdout carries only the ready line."""

import sys
import time


def log(msg: str) -> None:
    sys.stderr.write(f"local-ec2 {time.strftime('%H:%M:%S')} {msg}\n")
    sys.stderr.flush()
