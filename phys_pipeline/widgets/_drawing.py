"""Drawing an artifact for the artifact view: in the kernel, or in a process beside it.

``draw`` turns an artifact's value into what the view shows: a matplotlib figure (or PNG bytes)
as an image, anything else as a display bundle. Drawing a figure is matplotlib's work in
Python, under the kernel's GIL: two figures drawn by two threads take as long as drawn in turn.
``DrawingProcess`` is a Python process beside the kernel that draws lazy artifacts while the
kernel draws others (the artifact view hands it the second half of the figures a run needs).
It takes an artifact only where its drawing is the one the kernel would make:

- a second core is ours (``os.sched_getaffinity``, within the container's CPU quota), and the
  process has started (lazily, after the first drawing it could have shared) and warmed up;
- it needs no module of the user's: the process imports installed code and phys_pipeline
  only (``_InstalledCodeOnly``), as a module may act on import;
- the artifact is a plain function (a closure or a lambda, as stages return): a callable
  object may count or keep what it draws, which a copy in another process would not tell;
- it pickles (cloudpickle) to at most ``max_bytes``;
- its fingerprint there (the code it reaches and the values that code reads, by the rules of
  the cache keys) is the kernel's: a module edited on disk or reloaded, or a global set in the
  notebook since the process imported it, would draw other pixels; and it is the same after
  drawing there (a plot that numbers or counts its drawings would change only the copy) and
  in the kernel when the drawing is used (the kernel's half may set what the others read);
- it draws an image (text and HTML follow the print options of the kernel's libraries,
  pandas' say, which the process does not have);
- it is drawn in the kernel's state (``_KernelState``, sent with each batch: matplotlib's
  settings, the working folder, the environment, numpy's print options), which drawing it
  leaves as it was (a plot that sets a style would set it in the kernel), and the kernel's
  matplotlib has nothing the process's lacks (unit converters, colormaps, fonts the notebook
  added), nor a pyplot figure open (a plot on pyplot's current figure would draw into it),
  and drawing it leaves none open there (a next one would draw into it in the kernel alone).

Otherwise (not eligible, not started, busy with another view's batch, the artifact raised
there, the process died), the kernel draws the artifact itself, as it would without the
process. One process serves the kernel (``shared_drawing_process``); it ignores the kernel's
interrupts, and ends when the kernel closes it (at exit) or dies (its stdin closes), or is
killed when a batch is left midway (Ctrl-C while the kernel waits: its replies would answer
the next batch, and it may be stuck in an artifact that never ends).
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..cache.figures import FIGURE_MIME_TYPES
from ..fingerprint import Fingerprinter, installed_file
from ..views import figure_png

__all__ = [
    "PNG_MAGIC",
    "Batch",
    "DrawingProcess",
    "Drawn",
    "draw",
    "shared_drawing_process",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 8 * 2**20  # an artifact pickled bigger than this is drawn in the kernel
MAX_STARTS = 3  # a process that keeps dying is not started again
_HEADER = struct.Struct("<Q")  # each message: its length, then its bytes


@dataclass(frozen=True, slots=True)
class Drawn:
    """One artifact as drawn: an image (``mime`` in FIGURE_MIME_TYPES, ``data`` its bytes) or
    anything else as a display-data bundle (``mime`` "bundle", ``data`` the bundle)."""

    mime: str
    data: Any

    @property
    def is_image(self) -> bool:
        return self.mime in FIGURE_MIME_TYPES


def draw(value: Any) -> Drawn:
    """Figures and PNG bytes as an image; anything else as HTML (if it has a repr) or text."""
    if hasattr(value, "savefig"):
        value = figure_png(value)
    if isinstance(value, bytes) and value.startswith(PNG_MAGIC):
        return Drawn("image/png", value)
    if hasattr(value, "_repr_html_"):
        return Drawn("bundle", {"text/html": value._repr_html_(), "text/plain": repr(value)})
    return Drawn("bundle", {"text/plain": value if isinstance(value, str) else repr(value)})


def usable_cores() -> int:
    """The cores this process may run on (not the machine's count: ``taskset`` may give it
    fewer, and a container's CPU limit, as Binder sets, is not in the affinity)."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    limit = _cpu_limit()
    return cores if limit is None else max(1, min(cores, limit))


_CPU_LIMITS = (  # cgroup v2, then v1: (file of "<quota> <period>", or quota and period files)
    (Path("/sys/fs/cgroup/cpu.max"),),
    (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")),
)


def _cpu_limit() -> int | None:
    """The whole cores a cgroup CPU quota allows (1.5 cores is not two), None: no quota."""
    for files in _CPU_LIMITS:
        try:
            quota, period = " ".join(f.read_text() for f in files).split()
            if quota in ("max", "-1"):
                return None
            return int(quota) // int(period)
        except (OSError, ValueError):
            continue
    return None


class _InstalledCodeOnly(importlib.abc.MetaPathFinder):
    """The drawing process imports installed code and phys_pipeline only: a module of the
    user's may act on import (open an instrument, write a file, submit a job), which must
    happen once, in the kernel. An artifact that needs one fails to unpickle there, and the
    kernel draws it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.partition(".")[0] == "phys_pipeline":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        origin = getattr(spec, "origin", None)
        if spec is None or not spec.has_location or origin is None or installed_file(origin):
            return None  # not found, built in, or installed: the usual finders go on
        raise ImportError(f"the drawing process does not import the user's module {name!r}")


def _code_digest(artifact: Any) -> str | None:
    """The digest of the artifact's fingerprint (the code it reaches, the values that code
    reads), as a cache key has it; None when something there cannot be hashed."""
    try:
        fingerprint = Fingerprinter().code(artifact)
    except Exception:  # noqa: BLE001 - what cannot be fingerprinted is drawn in the kernel
        return None
    return None if fingerprint.uncacheable else fingerprint.digest


def _pyplot_figures() -> list[int]:
    """The figures pyplot has open (none before it is imported): a plot drawing on pyplot's
    current figure draws into the last one."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    return pyplot.get_fignums() if pyplot is not None else []


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _matplotlib_extensions() -> frozenset[str]:
    """What the notebook may have added to matplotlib besides its rcParams, which the process
    has only if an import it made added it too: unit converters (pint's ``setup_matplotlib``
    converts quantities of mixed units to one; without it their magnitudes would be drawn as
    they are), each with its type and settings (matplotlib's recipe for concise date labels
    puts its own in place of the default one of a type), colormaps and fonts."""
    import matplotlib
    import matplotlib.units
    from matplotlib import font_manager

    return frozenset(
        [
            f"units {_name(t)} by {_name(type(c))} {getattr(c, '__dict__', {})!r}"
            for t, c in list(matplotlib.units.registry.items())
        ]
        + [f"colormap {name}" for name in matplotlib.colormaps]
        + [f"font {font.fname}" for font in font_manager.fontManager.ttflist]
    )


@dataclass(frozen=True, slots=True)
class _KernelState:
    """What a drawing may read of the kernel beside its own values, which the process takes
    on for each batch: matplotlib's rcParams (styles included) but its backend (the process
    draws with Agg, as ``figure_png`` does in the kernel), the working folder (a relative
    path, after ``os.chdir`` to another run's folder), the environment (which libraries read:
    ``os.path.expandvars``, the time zone) and numpy's print options (an array in a title)."""

    rc: dict[str, Any]
    folder: str
    environ: dict[str, str]
    printoptions: dict[str, Any]

    @classmethod
    def current(cls) -> _KernelState:
        import matplotlib

        rc = {k: v for k, v in matplotlib.rcParams.copy().items() if k != "backend"}
        return cls(rc, os.getcwd(), dict(os.environ), np.get_printoptions())

    def take_on(self) -> None:
        """Make it the state of this process (the drawing process)."""
        import matplotlib

        matplotlib.rcParams.update(self.rc)
        os.chdir(self.folder)
        if os.environ != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
            if hasattr(time, "tzset"):
                time.tzset()
        np.set_printoptions(**self.printoptions)


class _TooBig(Exception):
    """Raised while pickling past the size cap."""


class _CappedBuffer(io.BytesIO):
    """A pickle's destination that refuses to grow past ``cap`` bytes."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def write(self, data: Any) -> int:
        if self.tell() + memoryview(data).nbytes > self.cap:
            raise _TooBig
        return super().write(data)


def _pickled(artifact: Any, cap: int) -> bytes | None:
    """``artifact`` pickled by cloudpickle, or None if it does not pickle within ``cap``."""
    import cloudpickle

    buffer = _CappedBuffer(cap)
    try:
        cloudpickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(artifact)
    except Exception:  # noqa: BLE001 - too big, or any of the ways a pickle fails: kernel
        return None
    return buffer.getvalue()


def _send(stream: IO[bytes], message: bytes) -> None:
    stream.write(_HEADER.pack(len(message)) + message)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
    """The next message, or None when the other side has gone."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    size = _HEADER.unpack(header)[0]
    message = stream.read(size)
    return message if len(message) == size else None


class Batch:
    """Artifacts handed to the drawing process, whose drawings come back in the order sent.
    ``drawn(artifact)`` waits for one; None: draw it in the kernel (not sent, or not drawn
    there)."""

    def __init__(
        self,
        process: DrawingProcess | None = None,
        sent: Sequence[Any] = (),
        digests: Sequence[str] = (),
    ) -> None:
        self._process = process
        self._sent = list(sent)  # held: their ids index the replies
        self._digests = list(digests)  # their fingerprints when handed over
        self._index = {id(artifact): i for i, artifact in enumerate(self._sent)}
        self._replies: list[Drawn | None] = []

    def __len__(self) -> int:
        return len(self._sent)

    def drawn(self, artifact: Any) -> Drawn | None:
        index = self._index.get(id(artifact))
        if index is None:
            return None
        self._receive_until(index)
        if _code_digest(artifact) != self._digests[index]:
            return None  # the kernel changed what it reads since: the copy drew the old
        return self._replies[index]

    def _receive_until(self, index: int) -> None:
        while len(self._replies) <= index:
            reply = self._process._reply() if self._process is not None else None
            if reply is None:  # the process has gone: the kernel draws what is left
                self._process = None
                self._replies += [None] * (len(self._sent) - len(self._replies))
                return
            self._replies.append(reply if isinstance(reply, Drawn) else None)

    def finish(self) -> None:
        """Take every reply left (the process is then free for the next batch)."""
        self._receive_until(len(self._sent) - 1)


class DrawingProcess:
    """A Python process beside the kernel that draws lazy artifacts (see the module
    docstring), started on first use and reused (``starts`` counts them: one that keeps dying
    is not started again past ``MAX_STARTS``). ``batch(artifacts)`` hands it those it can
    draw; ``close()`` ends it."""

    def __init__(self, *, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.starts = 0
        self._lock = threading.Lock()  # one batch at a time; held while starting or closing
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._answered = threading.Event()  # the process said it is ready, or died trying
        self._closed = False
        self._extensions: frozenset[str] = frozenset()  # the process's (_matplotlib_extensions)
        self._owed = 0  # replies the process owes the batch in flight

    @property
    def pid(self) -> int | None:
        """The process's id while it runs."""
        process = self._process
        return process.pid if process is not None else None

    @property
    def ready(self) -> bool:
        """Started and warmed up: the next batch goes to it."""
        return self._ready and self._process is not None

    def wait_ready(self, timeout: float) -> bool:
        """Whether it is ready, once it has warmed up or died trying (at most ``timeout`` s)."""
        self._answered.wait(timeout)
        return self.ready

    def start(self, preload: Iterable[str] = ()) -> None:
        """Start the process in the background (if it is not running), importing the modules
        ``preload`` names (those the artifacts to come are defined in) while it warms up."""
        with self._lock:
            self._start(preload)

    def _start(self, preload: Iterable[str]) -> None:
        if self._closed or self._process is not None or self.starts >= MAX_STARTS:
            return
        if usable_cores() < 2:  # it would only take turns with the kernel
            return
        self.starts += 1
        boot = f"import sys; sys.path[:] = {sys.path!r}; from {__name__} import serve; serve()"
        self._ready = False
        self._answered.clear()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except OSError:  # no process to be had (a limit, no memory): the kernel draws
            self._answered.set()
            return
        self._process = process
        with suppress(OSError):  # gone already: its reader sees it
            _send(process.stdin, pickle.dumps(sorted(set(preload))))  # type: ignore[arg-type]
        threading.Thread(
            target=self._await_ready, args=(process,), name="phys-pipeline-drawing", daemon=True
        ).start()

    def _await_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Wait (on a thread of its own, that ends then) for the process to have warmed up."""
        message = _receive(process.stdout)  # type: ignore[arg-type]
        if message is not None:
            self._extensions = pickle.loads(message)  # our own child's: trusted
            self._ready = True
        else:
            with self._lock:
                if self._process is process:
                    self._discard()
        self._answered.set()

    @contextmanager
    def batch(self, artifacts: Sequence[Any]) -> Iterator[Batch]:
        """Hand the process those of ``artifacts`` it can draw (see the module docstring),
        in order; the batch gives their drawings back. An empty batch when the process is
        busy with another batch or not ready (it is started afterwards, if it can be)."""
        if not self._lock.acquire(blocking=False):
            yield Batch()
            return
        batch = Batch()
        try:
            if self.ready:
                batch = self._hand_over(artifacts)
            yield batch
            batch.finish()
        finally:
            try:
                if self._owed:  # left midway (Ctrl-C, or a failure) before the last reply
                    self._abandon()
                if self._process is None:
                    self._start(_defined_in(artifacts))
            finally:
                self._lock.release()

    def _hand_over(self, artifacts: Sequence[Any]) -> Batch:
        if not _matplotlib_extensions() <= self._extensions:
            return Batch()  # the notebook extended matplotlib since: the kernel draws
        if _pyplot_figures():
            return Batch()  # which a plot on pyplot's current figure draws into, here alone
        jobs, sent, digests = [], [], []
        for artifact in artifacts:
            if not isinstance(artifact, types.FunctionType):
                continue
            payload = _pickled(artifact, self.max_bytes)
            digest = _code_digest(artifact) if payload is not None else None
            if digest is not None:
                jobs.append((payload, digest))
                sent.append(artifact)
                digests.append(digest)
        if not jobs:
            return Batch()
        try:
            message = pickle.dumps((_KernelState.current(), jobs), pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - a state that does not pickle: the kernel draws
            return Batch()
        self._owed = len(jobs)
        try:
            _send(self._process.stdin, message)  # type: ignore[union-attr, arg-type]
        except OSError:  # it has gone
            self._discard()
            return Batch()
        return Batch(self, sent, digests)

    def _reply(self) -> Drawn | str | None:
        """The next drawing of the batch in flight, or why it was not drawn (lock held);
        None if the process has gone."""
        process = self._process
        message = _receive(process.stdout) if process is not None else None  # type: ignore[arg-type]
        if message is None:
            self._discard()
            return None
        self._owed -= 1
        status, *value = pickle.loads(message)
        return Drawn(*value) if status == "drawn" else value[0]

    def _abandon(self) -> None:
        """Kill the process, whose replies to a batch left midway would answer the next batch
        (lock held): it may be stuck in an artifact that never ends, which the kernel's Ctrl-C
        interrupted the wait for."""
        with suppress(OSError):
            self._process.kill()  # type: ignore[union-attr]
        self._discard()

    def _discard(self) -> None:
        """Stop the process (lock held); a later batch may start another."""
        process, self._process = self._process, None
        self._ready = False
        self._owed = 0
        if process is None:
            return
        with suppress(OSError):
            process.stdin.close()  # type: ignore[union-attr]
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]

    def close(self) -> None:
        """End the process (it finishes the artifact it draws); no other is started."""
        with self._lock:
            self._closed = True
            self._discard()


def _defined_in(artifacts: Iterable[Any]) -> set[str]:
    """The modules the artifacts' functions come from, for a new process to import early."""
    modules = {getattr(artifact, "__module__", None) for artifact in artifacts}
    return {m for m in modules if isinstance(m, str) and m != "__main__"}


_shared: DrawingProcess | None = None
_shared_lock = threading.Lock()


def shared_drawing_process() -> DrawingProcess:
    """The kernel's drawing process, for every artifact view (closed at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = DrawingProcess()
            atexit.register(_shared.close)
        return _shared


# --- in the drawing process ----------------------------------------------------------------


def serve() -> None:
    """The drawing process: warm up, then draw each batch from stdin, one reply per artifact
    on stdout; end when stdin closes (the kernel closed it, or died)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the kernel's interrupt reaches its group
    requests, replies = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what drawing code prints goes to the kernel's log, not into the replies
    with open(os.devnull, "rb") as nothing:
        os.dup2(nothing.fileno(), 0)
    sys.meta_path.insert(0, _InstalledCodeOnly())
    preload = _receive(requests)
    if preload is None:
        return
    _warm_up(pickle.loads(preload))
    _send(replies, pickle.dumps(_matplotlib_extensions(), pickle.HIGHEST_PROTOCOL))
    applied: _KernelState | None = None
    while (message := _receive(requests)) is not None:
        state, jobs = pickle.loads(message)
        failed: tuple[str, str] | None = None
        if state != applied:
            try:
                state.take_on()
                applied = state
            except OSError as exc:  # its folder gone, say: the kernel draws the batch
                applied, failed = None, ("skipped", f"{type(exc).__name__}: {exc}")
        for payload, digest in jobs:
            reply = failed or _draw_job(payload, digest, state)
            _send(replies, pickle.dumps(reply, pickle.HIGHEST_PROTOCOL))


def _draw_job(
    payload: bytes, digest: str, state: _KernelState
) -> tuple[str, ...] | tuple[str, str, Any]:
    """("drawn", mime, data), or ("skipped", why) for the kernel to draw it."""
    try:
        artifact = pickle.loads(payload)
        if _code_digest(artifact) != digest:
            return ("skipped", "its code or what the code reads differs from the kernel's")
        drawn = draw(artifact())
        if _code_digest(artifact) != digest:  # in the kernel, the drawing would change it there
            return ("skipped", "drawing it changed what its code reads")
        if _KernelState.current() != state:  # matplotlib.style.use, os.chdir: in the kernel
            return ("skipped", "drawing it changed the state the kernel's drawings read")
        if not drawn.is_image:  # text, HTML: printed by the kernel's options (pandas', ...)
            return ("skipped", "not an image")
        if _pyplot_figures():  # in the kernel, the next plot on pyplot's would draw into it
            return ("skipped", "it left a pyplot figure open")
    except Exception as exc:  # noqa: BLE001 - the kernel draws it again and shows the failure
        return ("skipped", f"{type(exc).__name__}: {exc}")
    finally:  # the next artifact is drawn in the kernel's state, no pyplot figure open
        if _KernelState.current() != state:
            state.take_on()
        if _pyplot_figures():
            sys.modules["matplotlib.pyplot"].close("all")
    return ("drawn", drawn.mime, drawn.data)


def _warm_up(modules: Iterable[str]) -> None:
    """Pay the first drawing's one-off costs (fonts, text layout, the fingerprint's reading
    of installed distributions, the artifacts' modules) before any artifact waits on them."""
    import importlib

    import matplotlib

    matplotlib.use("agg")  # not the kernel's inline backend, which pyplot would load
    from matplotlib.figure import Figure

    for name in modules:
        with suppress(Exception):
            importlib.import_module(name)
    figure = Figure(figsize=(3, 2), layout="constrained")
    axes = figure.subplots()
    axes.plot([0.0, 1.0], [0.0, 1.0], label="warm-up")
    axes.set_xlabel("x (fs)")
    axes.legend()
    figure_png(figure)
    _code_digest(_warm_up)
