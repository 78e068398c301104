"""Native model code (llama.cpp, torch loading weights) runs in a child process, so a crash there is an
error message in the caller instead of a dead caller.

A segmentation fault in a compiled runtime (a build that uses a CPU instruction this machine's
hypervisor does not allow, a bad kernel for one CPU family) kills the process it happens in, with no
Python exception and often no output. Running that code in a child turns the crash into
:class:`RuntimeCrash`: which runtime and version, which signal, this CPU's model and vector flags, what
the runtime printed last, and what to try. The caller (a stage, a test, ``distill doctor``) survives
to say so, and everything it finished before (cached oracle answers) is kept.

:func:`call_isolated` runs one function in a fresh interpreter (``multiprocessing`` spawn) and returns
its result; the local oracle keeps a long-lived worker of its own (:mod:`distill.providers.local`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import multiprocessing
import os
import platform
import signal
import traceback
from collections.abc import Callable
from typing import Any

from distill.errors import DistillError

#: CPU flags worth naming when a native runtime dies (vector extensions the builds dispatch on)
_FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                      "avx512vbmi", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")

#: what every crash message suggests, besides the runtime's own advice
GENERAL_HINT = "run `distill doctor` to check this machine's runtimes one by one"


class RuntimeCrash(DistillError):
    """A native runtime died in a child process. ``exit_status`` is what a stage exits with (3),
    distinct from the 2 of a configuration or input error."""

    exit_status = 3

    def __init__(self, message: str, *, signal_name: str | None = None, returncode: int | None = None):
        super().__init__(message)
        self.signal_name = signal_name
        self.returncode = returncode


@functools.lru_cache(maxsize=1)
def cpu_summary() -> str:
    """This CPU's model name and the vector flags it reports (``/proc/cpuinfo``)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    shown = [f for f in _FLAGS_OF_INTEREST if f in flags]
    return f"{model}; {os.cpu_count()} cores; flags: {' '.join(shown) or 'unknown'}"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_exit(returncode: int | None) -> str:
    """``killed by SIGSEGV`` / ``exited with status 1`` for a child's return code."""
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def signal_name(returncode: int | None) -> str | None:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def crash_message(runtime: str, doing: str, returncode: int | None, *, hint: str = "",
                  last_output: str = "") -> str:
    """The message of a :class:`RuntimeCrash`: what died doing what, on which CPU, and what to try."""
    lines = [f"{runtime} {describe_exit(returncode)} while {doing}.", f"CPU: {cpu_summary()}."]
    if last_output.strip():
        tail = "\n".join(last_output.strip().splitlines()[-6:])
        lines.append(f"Its last output:\n{tail}")
    lines.append("Try: " + "; ".join(h for h in (hint, GENERAL_HINT) if h) + ".")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- one call in a child
def _child(conn, target: str, kwargs: dict[str, Any]) -> None:
    import logging
    import sys

    # OpenMP threads (torch's) that spin while waiting for work slow everything down when other
    # processes share the cores, as on CI machines: measured on 2 busy cores, generating 40 tokens with
    # the 135M student took 25 s spinning and 6 s passive (the same 6 s as one thread); set before any
    # OpenMP runtime loads, so it applies
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    logging.basicConfig(level=os.environ.get("DISTILL_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        module, _, name = target.partition(":")
        fn = getattr(importlib.import_module(module), name)
        conn.send(("ok", fn(**kwargs)))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent as data
        payload = e if isinstance(e, DistillError) else None
        try:
            conn.send(("error", (type(e).__name__, str(e), traceback.format_exc(), payload)))
        except Exception:  # noqa: BLE001 - the exception itself does not pickle
            conn.send(("error", (type(e).__name__, str(e), traceback.format_exc(), None)))
    finally:
        conn.close()


def call_isolated(target: str | Callable[..., Any], *, runtime: str, doing: str, hint: str = "",
                  **kwargs: Any) -> Any:
    """Run ``target(**kwargs)`` (``"package.module:function"``, or a module-level function) in a
    fresh interpreter and return its result (which must pickle).

    A :class:`DistillError` raised there is raised here unchanged; another exception becomes a
    ``DistillError`` carrying its traceback; a child killed by a signal becomes :class:`RuntimeCrash`
    naming ``runtime`` and what it was ``doing``.
    """
    if callable(target):
        target = f"{target.__module__}:{target.__qualname__}"
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, target, kwargs), daemon=False)
    proc.start()
    child.close()
    try:
        try:
            status, payload = parent.recv()
        except EOFError:  # the child died before it could answer
            proc.join()
            raise RuntimeCrash(crash_message(runtime, doing, proc.exitcode, hint=hint),
                               signal_name=signal_name(proc.exitcode), returncode=proc.exitcode) from None
        proc.join()
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status == "ok":
        return payload
    name, message, tb, error = payload
    if error is not None:
        raise error
    raise DistillError(f"{runtime} failed while {doing}: {name}: {message}\n{tb}")
