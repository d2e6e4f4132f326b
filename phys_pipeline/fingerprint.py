"""Code fingerprints: everything a stage's code reads, so that an edit that can change its
result changes its key.

A stage's fingerprint follows, transitively, the code its class reaches in **user code**
(notebook cells, ``__main__``, and any module outside the standard library and
site-packages): methods and base classes, the config's class, functions and classes named as
globals, lambdas, ``functools.partial`` objects, decorated functions (``__wrapped__``), bound
methods, callable instances and containers of callables. Every global that code reads
(``LOAD_GLOBAL``, attributes read off a user module such as ``consts.C``, names bound by
``from mod import C``, imports inside a function) is hashed **by value**, and so is every
attribute the stage instance holds beside its ``cfg``. Values are hashed when a plan is made,
so an in-place change (``PARAMS["k"] = 5``) is seen.

Library code (site-packages) is not walked: it is identified by its distribution's name and
version (``ignore_library_version`` opts a distribution out). Objects that carry no data a
result depends on (modules, loggers, locks, pools, open files, sockets, clients, progress bars)
are skipped by type. Anything else that cannot be hashed makes the node uncacheable: the
fingerprint lists it in ``uncacheable`` and the plan reruns the node, with a warning, unless
the stage names it in its ``untracked`` class attribute.

Besides the key digest (Merkle: each object's digest folds in the digests of what it reads),
a fingerprint keeps flat ``parts`` (label -> digest of that object alone), so a changed key
can be explained as ``global SCALE changed`` or ``helper mypkg.physics.gain changed``.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import decimal
import dis
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import site
import sys
import sysconfig
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, NamedTuple

import numpy as np

from .errors import UnhashableValueError
from .hashing import (
    IMMUTABLE_LEAVES,
    Hasher,
    digest,
    feed,
    feed_bytes,
    immutable,
    new_hasher,
    qualname,
    registered_base,
)

__all__ = [
    "Fingerprint",
    "Fingerprinter",
    "code_version",
    "ignore_library_version",
    "register_library_state",
    "installed_file",
    "skip_type",
    "stale_parts",
    "untracked_of",
]

# --- where code comes from ------------------------------------------------------------------


def _site_dirs() -> tuple[str, ...]:
    dirs = {*site.getsitepackages(), site.getusersitepackages()}
    paths = sysconfig.get_paths()
    dirs |= {paths["purelib"], paths["platlib"]}
    return tuple(sorted(os.path.realpath(d) + os.sep for d in dirs if d))


def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib")})


_SITE_DIRS = _site_dirs()
_STDLIB_DIRS = _stdlib_dirs()
_FRAMEWORK = "phys_pipeline"


def installed_file(file: str) -> bool:
    """Whether ``file`` is installed code (the standard library, site-packages), not the
    user's own (a notebook's folder, a checkout installed in editable mode)."""
    path = os.path.realpath(file)
    return path.startswith(_SITE_DIRS) or path.startswith(_STDLIB_DIRS)


_UNVERSIONED: set[str] = set()


def ignore_library_version(distribution: str) -> None:
    """Key code from ``distribution`` (e.g. ``"scipy"``) by its name only, so that upgrading
    it does not invalidate cached results. Its code is never walked either way."""
    _UNVERSIONED.add(_normalise(distribution))
    _library_label.cache_clear()
    _ORIGINS.clear()
    _class_origin.clear()
    _REUSABLE.clear()


# distribution (or standard-library module) -> a reader of the settings it keeps in module
# state, read at each plan for every stage whose code uses it
_LIBRARY_STATE: dict[str, Callable[[], Any]] = {}


def register_library_state(library: str, read: Callable[[], Any]) -> None:
    """Key every stage whose code uses ``library`` (a distribution's name, or a standard
    library module's) by ``read()`` as well, read afresh at each plan. For settings a library
    keeps in module state, which change what its functions return while every value the
    stage holds stays the same: mpmath's working precision, decimal's context, astropy's
    default cosmology are registered already. ``read`` returns plain data, and should not
    import anything (``sys.modules.get``): it runs only once the stage's code uses the
    library. xarray's options are registered too."""
    _LIBRARY_STATE[_normalise(library)] = read
    Fingerprinter._library.cache_clear()  # walks that named the library without its state
    _library_parts.clear()
    _REUSABLE.clear()


def _decimal_context() -> tuple:
    context = decimal.getcontext()  # this thread's: the one an inline run computes in
    traps = sorted(trap.__name__ for trap, on in context.traps.items() if on)
    return (context.prec, context.rounding, context.Emin, context.Emax, context.clamp, traps)


def _mpmath_precision() -> Any:
    mpmath = sys.modules.get("mpmath")
    return None if mpmath is None else mpmath.mp.prec


def _xarray_options() -> Any:
    options = sys.modules.get("xarray.core.options")
    return None if options is None else dict(options.OPTIONS)


def _astropy_science_state() -> Any:
    cosmology = sys.modules.get("astropy.cosmology")
    return None if cosmology is None else repr(cosmology.default_cosmology.get())


_LIBRARY_STATE.update(
    decimal=_decimal_context,
    mpmath=_mpmath_precision,
    astropy=_astropy_science_state,
    xarray=_xarray_options,
)


def _normalise(distribution: str) -> str:
    return distribution.lower().replace("_", "-")


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def _library_label(top_level: str) -> str | None:
    """``"numpy==2.1.0"`` for an importable top-level package installed by a distribution;
    None when no distribution claims it (its code is then walked like the user's)."""
    if top_level == _FRAMEWORK:
        from ._version import __version__

        names = ["phys-pipeline"]
        versions = [__version__]
    else:
        try:  # most distributions are named as their package: no scan of every installed one
            names, versions = [top_level], [importlib.metadata.version(top_level)]
        except importlib.metadata.PackageNotFoundError:
            names = sorted(_distributions().get(top_level, ()))
            if not names:
                return None
            versions = []
            for name in names:
                try:
                    versions.append(importlib.metadata.version(name))
                except importlib.metadata.PackageNotFoundError:
                    versions.append("?")
    return " ".join(
        _normalise(name) if _normalise(name) in _UNVERSIONED else f"{_normalise(name)}=={v}"
        for name, v in zip(names, versions, strict=True)
    )


@functools.cache
def _stdlib_module(top_level: str) -> bool:
    return top_level in sys.stdlib_module_names or top_level == "builtins"


_ORIGINS: dict[str, str | None] = {}  # module name -> library label ("" for stdlib), None: user


def _origin(module: str | None, file: str | None = None) -> str | None:
    """The library label of the code in ``module`` ("" for the standard library), or None
    when it is user code that must be walked."""
    if not module or module == "__main__":
        return None
    known = _ORIGINS.get(module, False)
    if known is not False:
        return known  # type: ignore[return-value]
    top = module.partition(".")[0]
    if top == _FRAMEWORK:
        label: str | None = _library_label(top)
    else:
        if file is None:
            file = getattr(sys.modules.get(module), "__file__", None)
        if file is None:
            # builtin and frozen modules, or code exec'd under a made-up module name
            label = "" if _stdlib_module(top) else None
            if label is None:
                return None  # not memoised: the module may be imported properly later
        else:
            path = os.path.realpath(file)
            if path.startswith(_SITE_DIRS):
                label = _library_label(top)
            elif path.startswith(_STDLIB_DIRS):
                label = ""
            else:
                label = None
    _ORIGINS[module] = label
    return label


def _function_origin(fn: types.FunctionType) -> str | None:
    """Where a function's code lives, read from its globals (``functools.wraps`` copies
    ``__module__`` from the function it wraps; code exec'd without a module has no name)."""
    namespace = fn.__globals__
    name = namespace.get("__name__")
    return None if name is None else _origin(name, namespace.get("__file__"))


class _PerClass:
    """A memo of something about classes, by identity (never by equality: a metaclass may
    make a new class equal to an old one, or unhashable); an entry goes with its class."""

    def __init__(self, compute: Callable[[type], Any]) -> None:
        self._compute = compute
        self._entries: dict[int, tuple[weakref.ref, Any]] = {}

    def __call__(self, cls: type) -> Any:
        entry = self._entries.get(id(cls))
        if entry is not None and entry[0]() is cls:
            return entry[1]
        value = self._compute(cls)
        key, entries = id(cls), self._entries

        def forget(reference: weakref.ref) -> None:
            if entries.get(key, (None,))[0] is reference:
                entries.pop(key, None)

        entries[key] = (weakref.ref(cls, forget), value)
        return value

    def clear(self) -> None:
        self._entries.clear()


def _find_class_origin(cls: type) -> str | None:
    """Where a class's code lives: that of the functions defined in its body, else its
    ``__module__``."""
    prefix = f"{cls.__qualname__}."
    for member in vars(cls).values():
        function = _method_function(member)
        if isinstance(function, types.FunctionType) and function.__qualname__.startswith(prefix):
            return _function_origin(function)
    # no code of its own to tell: a type written in C (generator, ndarray) is its module's;
    # a class written in Python is a library's only if that library exports it (a class can
    # claim any __module__)
    if not cls.__flags__ & _HEAP_TYPE or _published(cls):
        return _origin(cls.__module__)
    # a class a library builds at run time (pint's Quantity of each registry): named after
    # that library, and hashed by a hasher registered for a class the library publishes
    base = registered_base(cls)
    if base is not None and base is not cls and _published(base):
        label = _origin(cls.__module__)
        if label is not None and label == _origin(base.__module__):
            return label
    return None


_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on classes created at run time, unset on C's
_class_origin = _PerClass(_find_class_origin)


# --- what carries no data -------------------------------------------------------------------

# by qualified type name, so that optional libraries are never imported to check
_SKIPPED_TYPE_NAMES = frozenset(
    {
        "logging.Logger",
        "logging.LoggerAdapter",
        "logging.Handler",
        "_thread.lock",
        "_thread.RLock",
        "threading.Condition",
        "threading.Event",
        "threading.Semaphore",
        "threading.Barrier",
        "threading.Thread",
        "multiprocessing.synchronize.SemLock",
        "multiprocessing.synchronize.Condition",
        "multiprocessing.synchronize.Event",
        "multiprocessing.pool.Pool",
        "concurrent.futures._base.Executor",
        "_io._IOBase",
        "_socket.socket",
        "asyncio.events.AbstractEventLoop",
        "tqdm.std.tqdm",
        "distributed.client.Client",
        "redis.client.Redis",
        "redis.cluster.RedisCluster",
        "redis.connection.ConnectionPool",
    }
)
_SKIPPED_TYPES: set[type] = set()


def skip_type(cls: type) -> type:
    """Declare that values of ``cls`` (and its subclasses) carry no data a result depends on
    (a client, a handle, a cache of your own): fingerprints skip them. Usable as a decorator."""
    _SKIPPED_TYPES.add(cls)
    _skipped.clear()
    return cls


def _skips(cls: type) -> bool:
    return any(
        klass in _SKIPPED_TYPES or qualname(klass) in _SKIPPED_TYPE_NAMES for klass in cls.__mro__
    )


_skipped = _PerClass(_skips)


# --- code objects ---------------------------------------------------------------------------

_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_ATTRIBUTE_LOADS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_LOCAL_STORES = frozenset({"STORE_FAST", "STORE_NAME", "STORE_DEREF"})
_LOCAL_LOADS = frozenset({"LOAD_FAST", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLOSURE"})


class _Reference(NamedTuple):
    """A name a code object reads: a global (``module`` None) or an imported module
    (``module`` and its import ``level``), then the attributes read off it."""

    name: str
    chain: tuple[str, ...]
    module: str | None = None
    level: int = 0


class _CodeFacts(NamedTuple):
    """What a code object is (bytecode, constants, names, signature; its first constant apart,
    since that is a function's docstring) and which globals and modules it reads."""

    body: bytes
    first_const: bytes
    references: tuple[_Reference, ...]


_CODE_FACTS: weakref.WeakKeyDictionary[types.CodeType, _CodeFacts] = weakref.WeakKeyDictionary()


def _facts(code: types.CodeType) -> _CodeFacts:
    known = _CODE_FACTS.get(code)
    if known is None:
        known = _CODE_FACTS[code] = _analyse(code)
    return known


def _attribute_chain(instructions: list[dis.Instruction], start: int) -> tuple[str, ...]:
    chain = []
    for ins in instructions[start:]:
        if ins.opname not in _ATTRIBUTE_LOADS:
            break
        chain.append(ins.argval)
    return tuple(chain)


def _analyse(code: types.CodeType) -> _CodeFacts:
    h = new_hasher()
    feed_bytes(h, b"co", code.co_code)
    feed_bytes(h, b"ex", getattr(code, "co_exceptiontable", b""))
    feed_bytes(h, b"nm", "\0".join(code.co_names).encode())
    n_args = code.co_argcount + code.co_kwonlyargcount
    n_args += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # *args, **kwargs
    signature = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags)
    feed(h, signature)
    feed_bytes(h, b"vn", "\0".join(code.co_varnames[:n_args]).encode())
    feed_bytes(h, b"fv", "\0".join((*code.co_freevars, *code.co_cellvars)).encode())
    references: dict[_Reference, None] = {}
    consts = code.co_consts
    for const in consts[1:]:
        _feed_const(h, const, references)
    first = new_hasher()
    if consts:
        _feed_const(first, consts[0], references)

    instructions = list(dis.get_instructions(code))
    imported: dict[str, _Reference] = {}  # local name -> the module (or member) it holds
    for i, ins in enumerate(instructions):
        op = ins.opname
        if op in _GLOBAL_LOADS and ins.argval not in imported:
            references[_Reference(ins.argval, _attribute_chain(instructions, i + 1))] = None
        elif op in _LOCAL_LOADS and ins.argval in imported:
            base = imported[ins.argval]
            chain = base.chain + _attribute_chain(instructions, i + 1)
            references[base._replace(chain=chain)] = None
        elif op == "IMPORT_NAME":
            level = instructions[i - 2].argval if i >= 2 else 0
            module = _Reference(ins.argval, (), ins.argval, level if isinstance(level, int) else 0)
            _bind_import(instructions, i + 1, module, imported, references)
        elif ins.argval in ("import_module", "__import__") and op in _IMPORT_CALLER_LOADS:
            # importlib.import_module("pkg.mod"), __import__(...): all of the module is read;
            # a name computed at run time (f"pkg.{cfg.model}") cannot be known
            name = _imported_name(instructions, i + 1)
            if name is None:
                references[_Reference(_COMPUTED_IMPORT, ())] = None
            else:
                stripped = name.lstrip(".")
                level = len(name) - len(stripped)
                references[_Reference(stripped, (), stripped, level)] = None
    return _CodeFacts(h.digest(), first.digest(), tuple(references))


_IMPORT_CALLER_LOADS = _GLOBAL_LOADS | _ATTRIBUTE_LOADS
_CALLS = frozenset({"PRECALL", "CALL", "CALL_FUNCTION", "CALL_METHOD"})
_COMPUTED_IMPORT = "<import by a computed name>"


def _imported_name(instructions: list[dis.Instruction], start: int) -> str | None:
    """The module name an import call at ``start`` is given as a constant, or None when it
    is computed (or the call is not made here)."""
    window = instructions[start : start + 2]
    if (
        len(window) == 2
        and window[0].opname == "LOAD_CONST"
        and isinstance(window[0].argval, str)
        and window[1].opname in _CALLS
    ):
        return window[0].argval
    return None


def _bind_import(
    instructions: list[dis.Instruction],
    start: int,
    module: _Reference,
    imported: dict[str, _Reference],
    references: dict[_Reference, None],
) -> None:
    """Follow an import inside a function: the local names it binds read the module (or its
    member) wherever they are loaded later. ``import a.b`` binds ``a``; ``import a.b as c``
    binds ``c`` to ``a.b``; ``from m import x as y`` binds ``y`` to ``m.x``; ``from m import
    *`` reads all of ``m``."""
    fromlist = instructions[start - 2].argval if start >= 2 else None
    following = instructions[start:]
    if not following:
        return
    if following[0].opname == "IMPORT_STAR":
        references[module] = None
        return
    if not fromlist:
        store = next((ins for ins in following if ins.opname not in _IMPORT_PLUMBING), None)
        aliased = following[0].opname == "IMPORT_FROM"
        if store is not None and store.opname in _LOCAL_STORES | {"STORE_GLOBAL"}:
            head = module.name if aliased else module.name.partition(".")[0]
            bound = module._replace(name=head, module=head)
            if store.opname == "STORE_GLOBAL":
                references[bound] = None
            else:
                imported[store.argval] = bound
        return
    for ins, store in zip(following[::2], following[1::2], strict=False):
        if ins.opname != "IMPORT_FROM":
            break
        member = module._replace(chain=(ins.argval,))
        if store.opname in _LOCAL_STORES:
            imported[store.argval] = member
        else:
            references[member] = None


_IMPORT_PLUMBING = frozenset({"IMPORT_FROM", "SWAP", "POP_TOP", "ROT_TWO"})


def _feed_const(h: Hasher, const: Any, references: dict[_Reference, None]) -> None:
    if isinstance(const, types.CodeType):
        facts = _facts(const)
        h.update(facts.body)
        h.update(facts.first_const)
        references.update(dict.fromkeys(facts.references))
        return
    try:
        feed(h, const, "code constant")
    except UnhashableValueError:
        feed_bytes(h, b"?", _stable_repr(const).encode())


def _stable_repr(value: Any) -> str:
    """``repr(value)``, or its type's name where the repr shows a memory address (which
    differs between processes and runs)."""
    text = repr(value)
    return qualname(type(value)) if " at 0x" in text else text


# --- fingerprints ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A stage's code and the values it reads: ``digest`` feeds the node's key; ``parts``
    (label -> digest of that object alone) explain a change; ``uncacheable`` names what could
    not be hashed (when not empty, the node is not cached)."""

    digest: str
    parts: Mapping[str, str]
    uncacheable: tuple[str, ...] = ()

    def changes(self, before: Fingerprint) -> list[str]:
        """What differs from ``before``, as ``"<label> changed"`` (or added/removed)."""
        reasons = [
            f"{label} changed" if label in before.parts else f"{label} added"
            for label, value in self.parts.items()
            if before.parts.get(label) != value
        ]
        reasons += [f"{label} removed" for label in before.parts if label not in self.parts]
        return sorted(reasons)


class _Walked(NamedTuple):
    """One object's Merkle digest, with the parts and unhashable values under it. ``stable``:
    it depends only on code and immutable values, so a later plan may reuse it as long as the
    bindings it read still hold (see ``_Reusable``)."""

    digest: bytes
    parts: Mapping[str, str]
    problems: tuple[str, ...]
    stable: bool = False


class _ClassCode(NamedTuple):
    """A stage class's code fingerprint in one plan, for stages holding a ``cfg_class``
    config and pinned to ``pinned`` (``nested``: the config fields that may hold models whose
    code the stage may call)."""

    stage_class: type
    cfg_class: type
    pinned: str | None
    fingerprint: Fingerprint
    plain: bool  # no slots on its instances, no models in its config: only __dict__ to look at
    nested: tuple[str, ...]
    stateful: bool  # its code uses a library whose module state is read into the key


class _Reusable(NamedTuple):
    """A stable walk of a function or class kept between plans, with what must still hold for
    it to stand: ``checks`` (each binding it read is still the same object, see ``_holds``)
    and ``children`` (the functions and classes it read, themselves still valid). It holds
    its object and what it read weakly where it can, so a redefined helper or class is freed
    with its entry."""

    owner: weakref.ref
    walked: _Walked
    checks: tuple[tuple, ...]
    children: tuple[Any, ...]


_MISSING, _DEAD = object(), object()
# reusable walks by id of the function or class walked (never by equality: a metaclass may make
# a new class equal to an old one), one table per set of untracked names
_REUSABLE: dict[frozenset[str], dict[int, _Reusable]] = {}


class _Strong(NamedTuple):
    """A value that cannot be weakly referenced (numbers, strings, tuples), held as is."""

    value: Any

    def __call__(self) -> Any:
        return self.value


def _pin(value: Any) -> Any:
    """A reference to ``value`` for a check: weak where it can be."""
    if value is _MISSING:
        return _Strong(_MISSING)
    try:
        return weakref.ref(value)
    except TypeError:
        return _Strong(value)


def _pinned(reference: Any) -> Any:
    value = reference()
    return _DEAD if value is None and type(reference) is not _Strong else value


def _holds(check: tuple, owner: Any) -> bool:
    """Whether a binding read during a walk of ``owner`` is still the same object."""
    kind = check[0]
    if kind == "own":  # an attribute of the object walked: its code, defaults, mro, ...
        return getattr(owner, check[1], _MISSING) is _pinned(check[2])
    if kind == "key":  # a name in a namespace (globals, a module, sys.modules, a dict)
        return check[1].get(check[2], _MISSING) is _pinned(check[3])
    if kind == "cell":
        try:
            return check[1].cell_contents is _pinned(check[2])
        except ValueError:
            return _pinned(check[2]) is _MISSING
    if kind == "items":  # a mapping's keys and values (a function's __dict__, kwdefaults)
        mapping = check[1]
        return tuple(mapping) == check[2] and _same(mapping.values(), check[3])
    if kind == "members":  # a class's member names, and the members the walk read
        klass = _pinned(check[1])
        if klass is _DEAD:
            return False
        members = vars(klass)
        return tuple(members) == check[2] and all(
            members.get(name, _MISSING) is _pinned(pin) for name, pin in check[3]
        )
    if kind == "attr":  # an attribute of something the walk read (a cached_property's func)
        holder = _pinned(check[1])
        return holder is not _DEAD and getattr(holder, check[2], _MISSING) is _pinned(check[3])
    if kind == "mro":
        return _same(owner.__mro__, check[1])
    if kind == "abc":  # no class registered with an ABC since
        return abc.get_cache_token() == check[1]
    return False  # "never": a read no binding check can cover (a module's __getattr__)


def _same(objects: Iterable[Any], pins: tuple) -> bool:
    """Whether ``objects`` are, one by one, the very objects ``pins`` refer to."""
    objects = tuple(objects)
    return len(objects) == len(pins) and all(
        obj is _pinned(pin) for obj, pin in zip(objects, pins, strict=True)
    )


def _items_check(mapping: Mapping[str, Any]) -> tuple:
    return ("items", mapping, tuple(mapping), tuple(map(_pin, mapping.values())))


_EMPTY: Mapping[str, str] = types.MappingProxyType({})
# class members that are the interpreter's, abc's or pydantic's bookkeeping, not user code
_CLASS_BOOKKEEPING = frozenset(
    {"_abc_impl", "model_config", "model_fields", "model_computed_fields"}
)
_METHOD_WRAPPERS = (staticmethod, classmethod)
# class attributes named like the interpreter's that are data, read by the interpreter or numpy
_BEHAVIOUR_DATA = frozenset({"__match_args__", "__array_priority__"})


def _abc_registered(cls: type) -> list[type]:
    """The classes ``cls.register`` has registered and that still live."""
    registry = abc._get_dump(cls)[0]  # type: ignore[attr-defined]
    return [klass for klass in (ref() for ref in registry) if klass is not None]


# slots, getset and a NamedTuple's field accessors (their positions are in its ``_fields``)
_DESCRIPTORS = (
    types.MemberDescriptorType,
    types.GetSetDescriptorType,
    type(NamedTuple("_Probe", [("field", int)]).field),
)
_BUILTIN_CALLABLES = (
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    types.MethodWrapperType,
)
_TYPING_TYPES = (types.GenericAlias, types.UnionType, typing.TypeVar)


def _label(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    return name if module in (None, "__main__") else f"{module}.{name}"


def _global_label(module: str | None, name: str) -> str:
    return name if module in (None, "__main__") else f"{module}.{name}"


def untracked_of(cls: type) -> tuple[str, ...]:
    """The names a stage class declares ``untracked`` (left out of its fingerprint)."""
    declared = getattr(cls, "untracked", ())
    return (declared,) if isinstance(declared, str) else tuple(declared or ())


def stale_parts(
    stage: Any, planned: Fingerprint, pinned: str | None = None, *, own_state: bool = True
) -> list[str]:
    """What ``stage``'s fingerprint, worked out afresh in another process (a worker), says
    differs from the plan's ``planned``: a function, class or global both name but whose
    digests differ (a module edited and reloaded in the driver, still the old one here; a
    module constant changed at run time). Labels only one side has are passed over: a class
    sent by value (cloudpickle) comes without its ``__qualname__``, and the code it carries
    is the driver's anyway. Without ``own_state``, the stage's and its config's own
    attributes are passed over too (a stage may keep what it builds on first use on itself)."""
    now = Fingerprinter(untracked_of(type(stage))).stage(stage, stage.cfg, pinned)
    if now.digest == planned.digest:
        return []
    return sorted(
        label
        for label, value in planned.parts.items()
        if now.parts.get(label, value) != value
        and (own_state or not label.startswith(_OWN_STATE_LABELS))
    )


# the labels ``Fingerprinter.stage`` gives a stage's and its config's own attributes
_OWN_STATE_LABELS = ("attribute ", "config attribute ")


class Fingerprinter:
    """Fingerprints for one plan. Each function, class and global is walked once per plan
    (a notebook may redefine any of them between plans), and values are hashed afresh."""

    def __init__(self, untracked: Iterable[str] = ()) -> None:
        self.untracked = frozenset(untracked)
        self._done: dict[int, _Walked] = {}
        self._active: dict[int, int] = {}  # id -> depth, for objects being walked
        self._keep: list[Any] = []  # objects memoised by id stay alive for this plan
        self._low = sys.maxsize  # the shallowest unfinished walk the current one leaned on
        # id of a stage class -> the fingerprint of its code (by id: a metaclass may make two
        # classes equal); the classes stay alive for the plan, in its nodes
        self._codes: dict[int, _ClassCode] = {}
        self._reusable = _REUSABLE.setdefault(self.untracked, {})
        self._valid: dict[int, bool] = {}  # id -> whether its reusable walk still stands
        self._states: dict[str, Any] = {}  # library -> its module state, read in this plan

    # -- entry points --

    def stage(self, stage: Any, cfg: Any, pinned: str | None = None) -> Fingerprint:
        """The fingerprint of ``stage``: its class's code (unless ``pinned``, a version the
        user set by hand), the class of its config ``cfg`` (hashed by value elsewhere), and
        the attributes it holds beside ``cfg``."""
        cls, cfg_class = type(stage), type(cfg)
        known = self._codes.get(id(cls))
        if known is None or known[0] is not cls or known[1] is not cfg_class or known[2] != pinned:
            known = self._codes[id(cls)] = self._class_code(cls, cfg_class, pinned)
        _, _, _, code, plain, nested, stateful = known  # one unpacking: runs for every node
        # a pydantic config's private attributes (set by hand, or derived in model_post_init)
        # are not fields, so not in its hash: they are read by value here, like attributes
        private = getattr(cfg, "__pydantic_private__", None)
        if plain and not private and not stateful:
            held = getattr(stage, "__dict__", None)
            if held is not None and len(held) == 1 and "cfg" in held:
                return code  # most stages hold nothing but their cfg
        attributes = [
            (f"{_OWN_STATE_LABELS[0]}{name}", value)
            for name, value in _instance_attributes(stage, ("cfg",))
            if name not in self.untracked
        ]
        if private:
            attributes += [
                (f"{_OWN_STATE_LABELS[1]}{name}", value)
                for name, value in sorted(private.items())
                if name not in self.untracked
            ]
        if nested and pinned is None:  # cfg.medium.index(w): the code of the models it holds
            attributes += _config_models(cfg, nested)
        if attributes:
            code = self._extended(code, attributes)
        elif not stateful:
            return code
        states = self._library_states(code.parts)
        return self._extended(code, states) if states else code

    def _extended(self, code: Fingerprint, items: list[tuple[str, Any]]) -> Fingerprint:
        """``code`` with the labelled ``items`` (attributes, library states) hashed in."""
        more = self._fingerprint(("code", code.digest), items, labelled=True)
        return Fingerprint(
            more.digest,
            {**code.parts, **more.parts},
            tuple(dict.fromkeys((*code.uncacheable, *more.uncacheable))),
        )

    def _library_states(self, parts: Mapping[str, str]) -> list[tuple[str, Any]]:
        """The module state of each library in ``parts`` that keeps some, read once a plan."""
        states = []
        for label in parts:
            library = _stateful_library(label)
            if library is None:
                continue
            state = self._states.get(library, _UNREAD)
            if state is _UNREAD:
                try:
                    state = _LIBRARY_STATE[library]()
                except Exception as exc:  # noqa: BLE001 - a reader must not fail the plan
                    state = _Uncoverable(f"{type(exc).__name__} reading it")
                self._states[library] = state
            states.append((f"state of {library}", state))
        return states

    def _class_code(self, cls: type, cfg_class: type, pinned: str | None) -> _ClassCode:
        items: list[tuple[str, Any]] = []
        if pinned is None:
            items.append((_label(cls), cls))
            if _class_origin(cfg_class) is None:
                items.append((_label(cfg_class), cfg_class))
        fingerprint = self._fingerprint(("pin", pinned or ""), items, labelled=False)
        nested = _model_fields(cfg_class)
        plain = not (_slotted(cls) or nested)
        stateful = any(_stateful_library(label) for label in fingerprint.parts)
        return _ClassCode(cls, cfg_class, pinned, fingerprint, plain, nested, stateful)

    def _fingerprint(
        self, head: tuple[str, str], items: list[tuple[str, Any]], *, labelled: bool
    ) -> Fingerprint:
        """Fold ``items`` (label, value) into one fingerprint; ``labelled``: each item's
        digest is a part of its own, under its label."""
        h = new_hasher()
        feed(h, head)
        parts: dict[str, str] = {}
        problems: list[str] = []
        for label, value in items:
            walked = self._reference(value, label)
            feed_bytes(h, b"item", label.encode())
            h.update(walked.digest)
            parts.update(walked.parts)
            if labelled:
                parts[label] = walked.digest.hex()
            problems += walked.problems
        return Fingerprint(h.hexdigest(), parts, tuple(dict.fromkeys(problems)))

    def code(self, cls: type) -> Fingerprint:
        walked = self._reference(cls, _label(cls))
        return Fingerprint(walked.digest.hex(), walked.parts, walked.problems)

    # -- the walk --

    def _reference(self, obj: Any, where: str) -> _Walked:
        """The digest of a value some code reads: code by what it is, data by value."""
        if type(obj) in IMMUTABLE_LEAVES:
            return _Walked(digest(obj, where), _EMPTY, (), True)
        key = id(obj)
        done = self._done.get(key)
        if done is not None:
            return done
        depth = self._active.get(key)
        if depth is not None:  # recursion: named here, its content is being hashed above
            self._low = min(self._low, depth)
            return _Walked(digest(("cycle", _label(obj))), _EMPTY, ())
        kept = self._kept_walk(obj) if isinstance(obj, types.FunctionType | type) else None
        if kept is not None:
            self._done[key] = kept
            self._keep.append(obj)
            return kept
        depth = self._active[key] = len(self._active)
        outer_low, self._low = self._low, sys.maxsize
        try:
            walked = self._walk(obj, where)
        finally:
            del self._active[key]
        if self._low >= depth:  # nothing under it leaned on an unfinished walk above it
            self._done[key] = walked
            self._keep.append(obj)
        elif walked.stable:
            walked = walked._replace(stable=False)
        self._low = min(outer_low, self._low)
        return walked

    def _kept_walk(self, obj: Any) -> _Walked | None:
        """The walk of ``obj`` kept from an earlier plan, if it still stands."""
        entry = self._reusable.get(id(obj))
        if entry is None or entry.owner() is not obj or not self._still_valid(obj):
            return None
        return entry.walked

    def _still_valid(self, obj: Any) -> bool:
        """Whether a walk of ``obj`` kept from an earlier plan still stands: every binding it
        read is the same object, and so (recursively) for the code it read. Library code,
        never walked, always stands; user code with no kept walk does not."""
        known = self._valid.get(id(obj))
        if known is None:
            entry = self._reusable.get(id(obj))
            if entry is None or entry.owner() is not obj:
                known = _library_code(obj)
            else:
                children = [_pinned(child) for child in entry.children]
                known = (
                    all(_holds(check, obj) for check in entry.checks)
                    and _DEAD not in children
                    and all(map(self._still_valid, children))
                )
                self._keep += children  # ids in self._valid must stay theirs for this plan
                if not known:
                    self._reusable.pop(id(obj), None)  # another plan may drop it too
            self._valid[id(obj)] = known
        return known

    def _keep_for_later(
        self, obj: Any, walked: _Walked, checks: list[tuple], children: list[Any]
    ) -> _Walked:
        """Keep a stable walk for later plans, with what must still hold for it to stand; the
        entry goes when its function or class does."""
        if walked.stable:
            table, key = self._reusable, id(obj)

            def forget(reference: weakref.ref) -> None:
                entry = table.get(key)
                if entry is not None and entry.owner is reference:
                    table.pop(key, None)

            # library code never changes under a binding that holds: only user code is rechecked
            own_code = tuple(_pin(child) for child in children if not _library_code(child))
            self._reusable[key] = _Reusable(
                weakref.ref(obj, forget), walked, tuple(checks), own_code
            )
            self._valid[key] = True
        return walked

    def _walk(self, obj: Any, where: str) -> _Walked:
        """Any failure while looking at an odd object (a mock, a proxy, a half-built
        dataclass) makes it a value that cannot be hashed: it never fails the plan."""
        try:
            return self._walk_object(obj, where)
        except Exception as exc:  # noqa: BLE001 - whatever the object raises
            problem = f"{where} (a {qualname(type(obj))}: {type(exc).__name__} when read)"
            return _Walked(digest(("unhashable", where)), _EMPTY, (problem,))

    def _walk_object(self, obj: Any, where: str) -> _Walked:
        cls = type(obj)
        if _skipped(cls):
            return _Walked(digest(("skipped", qualname(cls))), _EMPTY, (), True)
        if cls is _Uncoverable:
            return _Walked(digest(("outside", obj.what)), _EMPTY, (f"{where}: {obj.what}",))
        if isinstance(obj, types.FunctionType):
            return self._function(obj)
        if isinstance(obj, type):
            return self._class(obj)
        if isinstance(obj, types.ModuleType):
            return self._module(obj)
        if isinstance(obj, functools.partial):
            return self._combine(
                "partial",
                [("func", obj.func), ("args", obj.args), ("keywords", obj.keywords)],
                where,
            )
        if isinstance(obj, types.MethodType):
            return self._combine("method", [("func", obj.__func__), ("self", obj.__self__)], where)
        if isinstance(obj, _BUILTIN_CALLABLES):
            return self._builtin(obj, where)
        if isinstance(obj, _TYPING_TYPES):
            # Detector[float]: the classes it names are code (typing's own print as themselves)
            arguments = (typing.get_origin(obj), *typing.get_args(obj))
            return self._combine("typing", [("repr", repr(obj)), ("names", arguments)], where)
        if isinstance(obj, collections.defaultdict) and obj.default_factory is not None:
            # what a missing key reads is the factory's code
            items = [("items", dict(obj)), ("factory", obj.default_factory)]
            return self._combine("defaultdict", items, where)
        user_class = _class_origin(cls) is None
        try:
            value = digest(obj, where)
        except UnhashableValueError:
            value = None
        if value is not None and not user_class:
            return _Walked(value, _library_parts(cls), (), immutable(obj))
        container = isinstance(obj, list | tuple | set | frozenset | Mapping)
        if user_class or _is_stage(obj):
            # a callable instance, a material model, a decorator object, a stage held by
            # another, a dict subclass: its code, its content and the attributes beside it
            # (a State: its hashable_repr)
            items: list[tuple[str, Any]] = [("class", cls)]
            if value is None and container:
                value = self._container(obj, where).digest
            if value is not None:
                items.append(("data", value))
            if value is None or not hasattr(obj, "hashable_repr"):
                items += _instance_attributes(obj)
            return self._combine("instance", items, where)
        if container:
            return self._container(obj, where)
        wrapped = getattr(obj, "__wrapped__", None) if callable(obj) else None
        if wrapped is not None:  # a library's wrapper (functools.lru_cache) around user code
            return self._combine(
                "wrapped", [("wrapper", qualname(cls)), ("wrapped", wrapped)], where
            )
        library = _class_origin(cls)
        if library is not None and callable(obj) and _published(obj):  # np.exp, np.sum
            return self._library(library, _label(obj))
        problem = f"{where} (a {qualname(cls)})"
        return _Walked(digest(("unhashable", where)), _EMPTY, (problem,))

    def _combine(self, kind: str, items: list[tuple[str, Any]], where: str) -> _Walked:
        h = new_hasher()
        feed_bytes(h, b"kind", kind.encode())
        parts: dict[str, str] = {}
        problems: list[str] = []
        for name, value in items:
            walked = self._reference(value, f"{where}.{name}" if kind != "instance" else where)
            feed_bytes(h, b"item", name.encode())
            h.update(walked.digest)
            parts.update(walked.parts)
            problems += walked.problems
        return _Walked(h.digest(), parts or _EMPTY, tuple(problems))

    def _container(self, obj: Any, where: str) -> _Walked:
        if isinstance(obj, Mapping):  # keys may be classes (a dispatch table) or functions
            entries = sorted(
                ((self._reference(k, where).digest, v) for k, v in obj.items()),
                key=lambda entry: entry[0],
            )
            items = [(k.hex(), v) for k, v in entries]
        elif isinstance(obj, set | frozenset):
            walked = sorted(self._reference(item, where).digest for item in obj)
            items = [(str(i), d) for i, d in enumerate(walked)]
        else:
            items = [(str(i), item) for i, item in enumerate(obj)]
        return self._combine(type(obj).__name__, items, where)

    def _builtin(self, obj: Any, where: str) -> _Walked:
        """``len``, ``math.sin``, ``RESULTS.append``: identified by name; a method bound to
        data (``__self__`` not a module or type) also by that data."""
        module = getattr(obj, "__module__", None) or qualname(type(getattr(obj, "__self__", None)))
        h = new_hasher()
        library = _origin(module)
        feed(h, ("builtin", library or "", module, _label(obj)))
        if library is None:  # a compiled extension of the user's (Cython, f2py)
            file = getattr(sys.modules.get(module), "__file__", None)
            if file is not None:  # rebuilt in place: its file is its code
                feed(h, Path(file))
        bound = getattr(obj, "__self__", None)
        if bound is not None and not isinstance(bound, types.ModuleType | type):
            walked = self._reference(bound, where)
            h.update(walked.digest)
            return _Walked(h.digest(), walked.parts, walked.problems)
        return _Walked(h.digest(), _EMPTY, (), True)

    def _module(self, module: types.ModuleType) -> _Walked:
        """A user module read as a whole (``getattr(consts, name)``): every global in it.
        A library module: its distribution and version."""
        name = module.__name__
        library = _origin(name, getattr(module, "__file__", None))
        if library is not None:
            return self._library(library, name)
        items = [
            (attr, value)
            for attr, value in sorted(vars(module).items())
            if not (attr.startswith("__") and attr.endswith("__"))
            and not (isinstance(value, types.ModuleType) and _origin(value.__name__) is not None)
        ]
        walked = self._combine("module", items, name)
        parts = {**walked.parts, f"module {name}": walked.digest.hex()}
        return walked._replace(parts=parts)

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _library(library: str, name: str) -> _Walked:
        """Library code by its distribution and version; the standard library by name."""
        if not library:
            top = name.partition(".")[0]
            parts = (  # named only when it keeps state a stage's key reads
                types.MappingProxyType({f"library {top}": top}) if top in _LIBRARY_STATE else _EMPTY
            )
            return _Walked(digest(("stdlib", name)), parts, (), True)
        parts = types.MappingProxyType({f"library {library}": library})
        return _Walked(digest(("library", library, name)), parts, (), True)

    def _function(self, fn: types.FunctionType) -> _Walked:
        library = _function_origin(fn)
        if library is not None:
            outside = _outside_state(fn.__module__ or "", fn.__name__)
            if outside:  # from os import getenv
                return _Walked(digest(("outside", outside)), _EMPTY, (f"{_label(fn)}: {outside}",))
            held = _function_attributes(fn)
            if not held:
                return self._library(library, _label(fn))
            # a library's wrapper around user code (functools.singledispatch and its
            # registry, contextlib.contextmanager): the library, and what it holds
            return self._combine("library function", [("code", (library, _label(fn))), *held], "")
        # each binding is read once: what is hashed is what the checks hold (a concurrent edit
        # between the two would otherwise keep a walk of the old code under the new binding)
        code, defaults, keyword_defaults, closure = (
            fn.__code__,
            fn.__defaults__,
            fn.__kwdefaults__,
            fn.__closure__,
        )
        attributes = fn.__dict__
        checks: list[tuple] = [
            ("own", "__code__", _pin(code)),
            ("own", "__defaults__", _pin(defaults)),
            ("own", "__kwdefaults__", _pin(keyword_defaults)),
            ("own", "__closure__", _pin(closure)),
            ("own", "__dict__", _pin(attributes)),
            _items_check(attributes),
        ]
        facts = _facts(code)
        h = new_hasher()
        feed_bytes(h, b"fn", fn.__qualname__.encode())
        h.update(facts.body)
        if not (isinstance(fn.__doc__, str) and code.co_consts and fn.__doc__ is code.co_consts[0]):
            h.update(facts.first_const)
        label = _label(fn)
        parts: dict[str, str] = {f"{_function_kind(fn)} {label}": h.copy().hexdigest()}
        problems: list[str] = []
        children: list[Any] = []
        stable = True

        def read(name: str, value: Any, where: str, label: str | None) -> None:
            nonlocal stable
            walked = self._reference(value, where)
            feed_bytes(h, b"ref", name.encode())
            h.update(walked.digest)
            parts.update(walked.parts)
            if label is not None:
                parts[label] = walked.digest.hex()
            problems.extend(walked.problems)
            stable = stable and walked.stable
            if isinstance(value, types.FunctionType | type):
                children.append(value)

        # positional and keyword-only defaults (``*, scale=2.0``) are part of the behaviour
        if defaults:
            read("defaults", defaults, f"defaults of {label}", None)
        held = _held_attributes(attributes)  # attributes set on the function (gain.factor = 3)
        if held:
            read("attributes", tuple(held), f"attributes of {label}", None)
        if keyword_defaults:
            checks.append(_items_check(keyword_defaults))
            read("kwdefaults", tuple(keyword_defaults.items()), f"defaults of {label}", None)
        if closure:
            for name, cell in zip(code.co_freevars, closure, strict=True):
                if name == "__class__":  # the class super() refers to: walked already
                    continue
                if name in self.untracked:
                    continue
                try:
                    value = cell.cell_contents
                except ValueError:  # a variable the enclosing function had not yet bound
                    checks.append(("cell", cell, _pin(_MISSING)))
                    continue
                checks.append(("cell", cell, _pin(value)))
                read(f"cell {name}", value, f"variable {name} of {label}", None)
        for ref in facts.references:
            target = self._resolve(ref, fn.__globals__, checks)
            if target is _UNRESOLVED:
                if ref.module is None and ref.name in _BY_NAME and ref.name not in self.untracked:
                    # globals()["X"], eval("X"): which globals it reads cannot be known
                    problems.append(f"{label} reads globals by name ({ref.name})")
                elif ref.name == _COMPUTED_IMPORT:
                    problems.append(f"{label} imports a module by a name computed at run time")
                continue
            value, as_read, where = target
            if ref.name in self.untracked or as_read in self.untracked:
                continue
            read(
                f"{as_read}:{ref.module}:{ref.level}",
                value,
                f"global {where}",
                None if _is_code(value) else f"global {where}",
            )
        walked = _Walked(h.digest(), parts, tuple(problems), stable and not problems)
        return self._keep_for_later(fn, walked, checks, children)

    @staticmethod
    def _resolve(ref: _Reference, namespace: dict[str, Any], checks: list[tuple]) -> Any:
        """``(value, as_read, label)`` for a reference: the global (or imported module), then
        the attributes read off it while they are read off a user module; ``as_read`` is the
        dotted name the code uses, ``label`` where the value lives. Each binding it reads
        (a missing one too: a builtin may be shadowed later) goes to ``checks``."""
        if ref.module is None:
            value = namespace.get(ref.name, _MISSING)
            checks.append(("key", namespace, ref.name, _pin(value)))
            if value is _MISSING:
                return _UNRESOLVED  # a builtin, or a name not defined yet
            home = namespace.get("__name__")
        else:
            try:
                name = importlib.util.resolve_name(
                    "." * ref.level + ref.module, namespace.get("__package__")
                )
                value = importlib.import_module(name)
            except (ImportError, ValueError):
                return _UNRESOLVED  # the stage will fail to import it, and say so
            checks.append(("key", sys.modules, name, _pin(value)))
            home = None
        steps = 0
        for attr in ref.chain:
            if not isinstance(value, types.ModuleType):
                break
            if _origin(value.__name__, getattr(value, "__file__", None)) is not None:
                # a library module: its version stands for all of it, except the process
                # state some of its functions read (os.environ, numpy's global random state)
                outside = _outside_read(value, ref.chain[steps:])
                if outside:
                    return _Uncoverable(outside), ".".join((ref.name, *ref.chain)), outside
                # unless the user put their own code there (np.sinc = my_sinc): the
                # binding is checked, so a patch made after this walk is seen
                module_vars = vars(value)
                bound = module_vars.get(attr, _MISSING)
                checks.append(("key", module_vars, attr, _pin(bound)))
                if isinstance(bound, types.FunctionType | type) and not _library_code(bound):
                    home, value, steps = value.__name__, bound, steps + 1
                break
            home = value.__name__
            module_vars = vars(value)
            bound = module_vars.get(attr, _MISSING)  # read once: hashed and checked alike
            if bound is _MISSING:
                # a submodule not imported yet, or what a module __getattr__ returns: no
                # binding to check, so the walk is not kept (a "never" check)
                value = _module_member(value, attr)
                checks.append(("never",))
                if value is _UNRESOLVED:
                    return _UNRESOLVED
            else:
                value = bound
                checks.append(("key", module_vars, attr, _pin(bound)))
            steps += 1
        as_read = ".".join((ref.name, *ref.chain[:steps]))
        name = ref.chain[steps - 1] if steps else ref.name
        return value, as_read, _global_label(home, name)

    def _class(self, cls: type) -> _Walked:
        library = _class_origin(cls)
        if library is not None:
            return self._library(library, _label(cls))
        h = new_hasher()
        own = new_hasher()
        parts: dict[str, str] = {}
        problems: list[str] = []
        mro = cls.__mro__  # each binding read once: what is hashed is what the checks hold
        checks: list[tuple] = [("mro", tuple(map(_pin, mro)))]
        children: list[Any] = []
        stable = True
        metaclass = type(cls)
        if _class_origin(metaclass) is None:  # its __call__, __init_subclass__ run too
            walked = self._reference(metaclass, f"metaclass of {_label(cls)}")
            feed_bytes(h, b"meta", b"")
            h.update(walked.digest)
            parts.update(walked.parts)
            problems += walked.problems
            stable = walked.stable
            checks.append(("own", "__class__", _pin(metaclass)))
            children.append(metaclass)
        for klass in mro:
            if klass is object:
                continue
            library = _class_origin(klass)
            if library is not None:
                walked = self._library(library, _label(klass))
                h.update(walked.digest)
                parts.update(walked.parts)
                continue
            feed_bytes(h, b"cls", _label(klass).encode())
            feed_bytes(own, b"cls", _label(klass).encode())
            members = tuple(vars(klass).items())
            read: list[tuple[str, Any]] = []  # the members this walk reads, pinned below
            for name, member in sorted(members, key=lambda item: item[0]):
                if name in _CLASS_BOOKKEEPING or isinstance(member, _DESCRIPTORS):
                    continue
                function = _method_function(member)
                if isinstance(member, functools.cached_property):  # its func may be replaced
                    checks.append(("attr", _pin(member), "func", _pin(function)))
                dunder = name.startswith("__") and name.endswith("__")
                if function is None or (
                    dunder
                    and not isinstance(function, types.FunctionType)
                    and name not in _BEHAVIOUR_DATA
                ):
                    continue
                if name in self.untracked and not _is_code(function):
                    continue  # an untracked class attribute (never code: that is always read)
                read.append((name, _pin(member)))
                walked = self._reference(function, f"{_label(klass)}.{name}")
                feed_bytes(h, b"m", name.encode())
                h.update(walked.digest)
                parts.update(walked.parts)
                problems += walked.problems
                stable = stable and walked.stable
                if isinstance(function, types.FunctionType | type):
                    children.append(function)
                if not _is_code(function):
                    # class-level constants (FACTOR = 2.0)
                    parts[f"constant {_label(klass)}.{name}"] = walked.digest.hex()
                else:
                    feed_bytes(own, b"m", name.encode())
            if "_abc_impl" in vars(klass):  # isinstance(x, klass) is true of what it registers
                registered = sorted(_abc_registered(klass), key=_label)
                walked = self._reference(tuple(registered), f"classes {_label(klass)} registers")
                feed_bytes(h, b"abc", b"")
                h.update(walked.digest)
                parts.update(walked.parts)
                problems += walked.problems
                checks.append(("abc", abc.get_cache_token()))  # any register() anywhere
            feed_bytes(own, b"end", b"")
            names = tuple(name for name, _ in members)  # one added or removed: walked afresh
            checks.append(("members", _pin(klass), names, tuple(read)))
        parts[f"class {_label(cls)}"] = own.hexdigest()
        walked = _Walked(h.digest(), parts, tuple(problems), stable and not problems)
        return self._keep_for_later(cls, walked, checks, children)


_UNRESOLVED = object()


class _Uncoverable(NamedTuple):
    """Something a stage reads that no key can cover (environment variables, a global random
    state, a config whose models cannot be read): it makes the node uncacheable."""

    what: str


_BY_NAME = frozenset({"globals", "eval", "exec"})  # builtins that read globals by name
_ENVIRONMENT = frozenset({"environ", "environb", "getenv", "getenvb"})
_SEEDED_RANDOM = {
    "numpy.random": frozenset(
        {"default_rng", "Generator", "SeedSequence", "BitGenerator", "RandomState"}
        | {"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"}
    ),
    "random": frozenset({"Random", "SystemRandom"}),
}


_UNREAD = object()


def _find_library_parts(cls: type) -> Mapping[str, str]:
    """A library value's part naming its library, when that library keeps module state the
    key reads (``a + b`` of two DataArrays reads xarray's options), else none."""
    library = _class_origin(cls)
    if library and _stateful_library(f"library {library}"):
        return types.MappingProxyType({f"library {library}": library})
    return _EMPTY


_library_parts = _PerClass(_find_library_parts)


def _stateful_library(label: str) -> str | None:
    """The library a part's label names (``"library mpmath==1.3.0"``), if it keeps module
    state the key reads."""
    if not label.startswith("library "):
        return None
    library = _normalise(label[8:].partition("==")[0])
    return library if library in _LIBRARY_STATE else None


def _outside_state(module: str, attr: str) -> str:
    """What ``module.attr`` reads outside the program, or ""."""
    if module == "os" and attr in _ENVIRONMENT:
        return f"the environment (os.{attr})"
    if module == "sys" and attr == "modules":  # sys.modules["consts"].C: which module, unknown
        return "modules by name (sys.modules)"
    seeded = _SEEDED_RANDOM.get(module)
    if seeded is not None and attr not in seeded and not attr.startswith("_"):
        return f"the global random state ({module}.{attr})"
    return ""


def _outside_read(module: types.ModuleType, chain: tuple[str, ...]) -> str:
    """What reading ``chain`` off a library ``module`` reads outside the program, or ""."""
    for attr in chain:
        what = _outside_state(module.__name__, attr)
        if what:
            return what
        module = getattr(module, attr, None)
        if not isinstance(module, types.ModuleType):
            return ""
    return ""


# types pydantic validates a value into exactly; with arrays and paths, the data types
_COERCED_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None)})
_DATA_TYPES = _COERCED_TYPES | {np.ndarray, PurePath}
_LABEL_FIELDS = frozenset({"name", "tags"})  # StageConfig's own: labels, never models


def _find_model_fields(cfg_class: type) -> tuple[str, ...]:
    """The fields of a config class whose type admits a model or a dataclass (whose methods
    a stage may call), as opposed to plain data (numbers, strings, arrays, paths)."""
    fields = getattr(cfg_class, "model_fields", None)
    if isinstance(fields, Mapping):
        annotations = {name: info.annotation for name, info in fields.items()}
    elif dataclasses.is_dataclass(cfg_class):  # not validated: a field may hold anything
        return tuple(f.name for f in dataclasses.fields(cfg_class) if f.name not in _LABEL_FIELDS)
    else:
        return ()
    return tuple(
        name
        for name, annotation in annotations.items()
        if name not in _LABEL_FIELDS and not _plain_data_type(annotation)
    )


_model_fields = _PerClass(_find_model_fields)
_slotted = _PerClass(lambda cls: any(klass.__dict__.get("__slots__") for klass in cls.__mro__))


def _plain_data_type(annotation: Any) -> bool:
    """A type whose values pydantic validates into that very type (never a subclass: an
    ``np.ndarray`` or ``Path`` field keeps the subclass it is given)."""
    if isinstance(annotation, type):
        return annotation in _COERCED_TYPES
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return True
    if origin is None:
        return False
    arguments = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _plain_data_type(arguments[0])
    return origin in (typing.Union, types.UnionType, list, tuple, dict, set, frozenset) and all(
        argument is Ellipsis or _plain_data_type(argument) for argument in arguments
    )


def _config_models(cfg: Any, fields: tuple[str, ...]) -> list[tuple[str, Any]]:
    """The user code held in ``cfg``'s ``fields`` (classes of the values, factories) and the
    private attributes of the models held there, which their hash leaves out."""
    found: dict[Any, None] = {}
    private: list[tuple[str, Any]] = []
    try:
        for name in fields:
            _model_classes(getattr(cfg, name, None), name, found, private, set())
    except Exception as exc:  # noqa: BLE001 - an odd value must not fail the plan
        return [("config models", _Uncoverable(f"{type(exc).__name__} reading them"))]
    return [(f"config model {_label(model)}", model) for model in found] + private


def _model_classes(
    value: Any, path: str, found: dict[Any, None], private: list[tuple[str, Any]], seen: set[int]
) -> None:
    """The user code inside a config value at ``path``, into ``found``: the class of every
    value whose class is the user's (a model's, a dataclass's, a NamedTuple's, a float
    subclass's methods, which a stage may call) and a defaultdict's factory (what a missing
    key reads); a nested model's private attributes (set by hand, or derived) into
    ``private``."""
    cls = type(value)
    if cls in _DATA_TYPES or id(value) in seen:
        return
    seen.add(id(value))
    user_class = _class_origin(cls) is None
    if user_class:
        found[cls] = None
    if isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            _model_classes(item, f"{path}[{index}]", found, private, seen)
    elif isinstance(value, Mapping):
        factory = getattr(value, "default_factory", None)
        if factory is not None:
            found[factory] = None
        for key, item in value.items():
            _model_classes(item, f"{path}[{key!r}]", found, private, seen)
    elif user_class and not isinstance(value, type):  # a library's value: its hash covers it
        held = getattr(value, "__pydantic_private__", None) or {}
        label = f"{_OWN_STATE_LABELS[1]}{path}"
        private += [(f"{label}.{n}", item) for n, item in sorted(held.items())]
        for name, item in (*_instance_attributes(value), *held.items()):
            _model_classes(item, f"{path}.{name}", found, private, seen)


def _function_attributes(fn: types.FunctionType) -> list[tuple[str, Any]]:
    """What a function holds in its ``__dict__`` beyond what ``functools.wraps`` copies."""
    return _held_attributes(getattr(fn, "__dict__", None) or {})


def _held_attributes(held: Mapping[str, Any]) -> list[tuple[str, Any]]:
    if not held:
        return []
    return [
        (name, value)
        for name, value in sorted(held.items())
        if name == "__wrapped__" or not (name.startswith("__") and name.endswith("__"))
    ]


def _library_code(obj: types.FunctionType | type) -> bool:
    """A library's function or class: keyed by its distribution, never walked."""
    if isinstance(obj, types.FunctionType):
        return _function_origin(obj) is not None
    return _class_origin(obj) is not None


def _module_member(module: types.ModuleType, attr: str) -> Any:
    """``module.attr``, importing it first when it is a submodule not imported yet."""
    try:
        return getattr(module, attr)
    except AttributeError:
        pass
    if hasattr(module, "__path__"):
        try:
            return importlib.import_module(f"{module.__name__}.{attr}")
        except ImportError:
            pass
    return _UNRESOLVED


def _function_kind(fn: types.FunctionType) -> str:
    """``method`` for a function defined in a class body, else ``helper``."""
    owner = fn.__qualname__.rpartition(".")[0]
    return "method" if owner and not owner.endswith("<locals>") else "helper"


def _published(obj: Any) -> bool:
    """Whether ``obj`` is what its module exports under its name (``np.exp``, ``np.sum``):
    a library's own function, not an object built at run time from user data."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if module is None or not isinstance(name, str):
        return False
    target: Any = module
    for part in name.split("."):
        target = getattr(target, part, _UNRESOLVED)
    return target is obj


def _is_stage(obj: Any) -> bool:
    """A stage (``process`` and ``cfg``), such as one a pipeline holds: it holds user data
    whatever library its class comes from."""
    return callable(getattr(obj, "process", None)) and hasattr(obj, "cfg")


def _is_code(value: Any) -> bool:
    return isinstance(
        value, types.FunctionType | type | types.MethodType | functools.partial | types.ModuleType
    )


def _method_function(member: Any) -> Any:
    """The function behind a method-like class member (None for a property without
    getter); other members (constants) as they are."""
    if isinstance(member, _METHOD_WRAPPERS):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    if isinstance(member, functools.cached_property):
        return member.func
    return member


def _instance_attributes(obj: Any, skip: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """What an object holds (but ``skip``): its ``__dict__`` and ``__slots__`` values."""
    values = getattr(obj, "__dict__", None)
    items = [(k, v) for k, v in values.items() if k not in skip] if values else []
    for klass in type(obj).__mro__[:-1]:
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__", *skip) and hasattr(obj, name):
                items.append((name, getattr(obj, name)))
    return sorted(items, key=lambda item: item[0])


def code_version(obj: Any) -> str:
    """A digest of the code behind ``obj``'s class and everything it reads (see the module
    docstring). Computed afresh on every call: a notebook may redefine a helper or change a
    global while the class object stays the same."""
    cls = obj if isinstance(obj, type) else type(obj)
    return Fingerprinter(getattr(cls, "untracked", ())).code(cls).digest
