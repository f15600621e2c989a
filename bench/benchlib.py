"""benchlib.py — what the bench scripts share: the repository root (and
tests/reference on sys.path, for vae_ref), the machine's CPU name, and the
log helpers of the scripts that write their printed output into --out."""
import os
import platform
import shlex
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

LOG = []  # every line say() printed, for --out


def say(msg=""):
    print(msg, flush=True)
    LOG.append(msg)


def q(cmd):
    """A command line as a shell would take it."""
    return " ".join(shlex.quote(str(c)) for c in cmd)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
