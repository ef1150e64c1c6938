"""A model timed in a process of its own.

Runtimes keep thread pools that live as long as the process (ExecuTorch's defaults to every core and is
process-wide; onnxruntime's and OpenVINO's spin after a run). Two runtimes timed in one process therefore
disturb each other, and a ratio measured that way is not what either runtime gives alone. ``RunnerProcess``
opens one model on one runtime in a child (``python -m edgezoo.profile.worker``) and times it there on
request, so that ``edgezoo bench --vs``, ``edgezoo compare`` and the benchmarks interleave rounds across
processes: only the process being timed runs.

The protocol is JSON lines on the child's stdin and on a private copy of its stdout (its fd 1 is pointed at
fd 2, so that a runtime's own prints cannot corrupt it); arrays travel in .npy files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.errors import EdgezooError


def runner_json(model: str, runner) -> dict[str, Any]:
    """What a report says about an active runner: runtime, backend, size, settings, tensors, metadata."""
    meta = runner.model_metadata()
    return {
        "model": model, "runtime": runner.name, "backend": runner.describe(),
        "size_bytes": runner.model_size_bytes(), "settings": runner.settings(),
        "inputs": [i.to_dict() for i in runner.inputs],
        "outputs": [o.to_dict() for o in runner.outputs],
        "metadata": {"model": meta.model, "input_size": meta.input_size, "mean": meta.mean, "std": meta.std,
                     "precision": meta.precision} if meta else None,
    }


class RunnerProcess:
    """One model on one runtime in a child process: ``open``, ``prepare`` inputs, ``time`` runs, ``close``."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edgezoo-worker-")
        self._proc = subprocess.Popen([sys.executable, "-m", "edgezoo.profile.worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info: dict[str, Any] | None = None

    def _ask(self, **msg) -> dict[str, Any]:
        try:
            self._proc.stdin.write(json.dumps(msg) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            code = self._proc.wait()
            raise EdgezooError(f"the process timing the model stopped (exit code {code})",
                               "run with --verbose to see what the runtime printed")
        reply = json.loads(line)
        if "error" in reply:
            e = EdgezooError(reply["error"]["message"], reply["error"].get("hint"))
            e.exit_code = reply["error"].get("exit_code", 2)
            raise e
        return reply

    def open(self, model: str, runtime: str | None, **opts) -> dict[str, Any]:
        """Open ``model`` as ``edgezoo.export.loaders.open_model`` would; returns ``runner_json``."""
        self.info = self._ask(cmd="open", model=os.fspath(model), runtime=runtime, opts=opts)["info"]
        return self.info

    def prepare(self, key: str, feeds: dict[str, np.ndarray] | None = None, batch: int = 1,
                input_size=None) -> None:
        """Inputs under ``key``: the given arrays, or ``feeds_for(runner, batch, input_size)``; checked and run
        once (a bad size fails here, before any timing)."""
        paths = None
        if feeds is not None:
            paths = {}
            for k, (name, arr) in enumerate(feeds.items()):
                p = Path(self._tmp.name) / f"{key}-{k}.npy"
                np.save(p, np.ascontiguousarray(arr))
                paths[name] = str(p)
        self._ask(cmd="prepare", key=key, feeds=paths, batch=batch,
                  input_size=list(input_size) if input_size else None)

    def time(self, key: str, runs: int) -> list[float]:
        """``runs`` timed calls on the inputs ``key``; milliseconds each."""
        return self._ask(cmd="time", key=key, runs=runs)["ms"]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for f in (self._proc.stdin, self._proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._tmp.cleanup()

    def __enter__(self) -> "RunnerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve() -> None:
    import time

    from edgezoo.export.loaders import open_model
    from edgezoo.runtimes.inputs import feeds_for

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop, and stops us
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    runner, feeds, clock = None, {}, time.perf_counter
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                break
            if msg["cmd"] == "open":
                opts = dict(msg["opts"])
                if opts.get("input_size") is not None:
                    opts["input_size"] = tuple(opts["input_size"])
                runner = open_model(msg["model"], msg["runtime"], **opts).activate()
                out: dict[str, Any] = {"info": runner_json(msg["model"], runner)}
            elif msg["cmd"] == "prepare":
                if msg["feeds"] is not None:
                    f = {name: np.load(p) for name, p in msg["feeds"].items()}
                else:
                    size = tuple(msg["input_size"]) if msg["input_size"] else None
                    f = feeds_for(runner, batch=msg["batch"], input_size=size)
                runner.check_feeds(f)
                runner.infer(f)
                feeds[msg["key"]] = f
                out = {"ok": True}
            elif msg["cmd"] == "time":
                f, ms = feeds[msg["key"]], []
                for _ in range(msg["runs"]):
                    t0 = clock()
                    runner.infer(f)
                    ms.append((clock() - t0) * 1e3)
                out = {"ms": ms}
            else:
                out = {"error": {"message": f"unknown command {msg['cmd']!r}"}}
        except EdgezooError as e:
            out = {"error": {"message": e.message, "hint": e.hint, "exit_code": e.exit_code}}
        except Exception as e:  # noqa: BLE001 - the parent tells the user; a traceback here helps nobody
            out = {"error": {"message": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}}
        reply.write(json.dumps(out) + "\n")
    if runner is not None:
        runner.deactivate()


if __name__ == "__main__":
    _serve()
