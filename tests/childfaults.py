"""Objects that break a bench child process on purpose, for the tests of what a parent does then.

A bench child unpickles its job, then reads `job.artifact.path` first thing; these stand-ins do their harm
there (or on unpickling), in the child only.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace


def die(sig: int) -> None:
    os.kill(os.getpid(), sig)


class DieOnArrival:
    """Unpickles into a signal to the process that unpickles it."""

    def __init__(self, sig: int) -> None:
        self.sig = sig

    def __reduce__(self):
        return die, (self.sig,)


class SlowArtifact:
    """An artifact whose `path` takes `seconds` to read: the child sits in it, well after it armed its lifeline."""

    origin = "test"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @property
    def path(self):
        time.sleep(self.seconds)
        raise RuntimeError("slow artifact read")


def fake_plan() -> SimpleNamespace:
    return SimpleNamespace(precision="fp32", runtime="transformers", spec=None, placement=SimpleNamespace(label="cpu"))
