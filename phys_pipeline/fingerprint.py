"""Code fingerprints: what a stage's code is, so that an edited method, helper or constant
changes the stage's cache key."""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

from .errors import UnhashableValueError
from .hashing import Hasher, digest, feed, feed_bytes, new_hasher, qualname

# --- code -----------------------------------------------------------------------------------

# base classes whose code is ours, not the user's: a library upgrade is not a stage change
_FRAMEWORK_MODULES = ("phys_pipeline.types", "phys_pipeline.pipeline", "abc", "typing")
_LIBRARY_ROOTS = ("numpy", "scipy", "pydantic", *_FRAMEWORK_MODULES)


def _feed_code(h: Hasher, code: types.CodeType, module: str, globals_: dict, seen: set) -> None:
    feed_bytes(h, b"co", code.co_code)
    feed_bytes(h, b"nm", "\0".join(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(h, const, module, globals_, seen)
        else:
            _feed_or_repr(h, const, "code constant")
    # same-module helpers the code calls are part of its behaviour
    for name in code.co_names:
        target = globals_.get(name)
        if _is_user_code(target, module) and id(target) not in seen:
            seen.add(id(target))
            _feed_object_code(h, target, seen)


def _feed_or_repr(h: Hasher, value: Any, where: str, tag: bytes = b"?") -> None:
    """Feed ``value`` canonically, or its stable repr under ``tag`` when it cannot hash: code
    constants and defaults may be any object, and must still version the code."""
    try:
        feed(h, value, where)
    except UnhashableValueError:
        feed_bytes(h, tag, _stable_repr(value).encode())


def _stable_repr(value: Any) -> str:
    """``repr(value)``, or its type's name where the repr shows a memory address (which
    differs between processes and runs)."""
    text = repr(value)
    return qualname(type(value)) if " at 0x" in text else text


def _is_user_code(obj: Any, module: str) -> bool:
    return (
        isinstance(obj, types.FunctionType | type)
        and getattr(obj, "__module__", None) == module
        # code exec'd without a __name__ in its globals has __module__ None
        and not (module or "").startswith(_LIBRARY_ROOTS)
    )


def _is_own_code(obj: Any) -> bool:
    """A function or class from neither a known library nor the standard library: one whose
    code a class attribute or closure cell brings into the behaviour being versioned."""
    module = getattr(obj, "__module__", None) or ""
    return (
        isinstance(obj, types.FunctionType | type)
        and not module.startswith(_LIBRARY_ROOTS)
        and module.partition(".")[0] not in sys.stdlib_module_names
    )


def _feed_referenced(h: Hasher, value: Any, seen: set) -> None:
    """A value a class attribute or closure cell holds: own functions and classes by their
    code, other values by content, falling back to a stable repr when they cannot hash."""
    if isinstance(value, types.FunctionType | type):
        feed_bytes(h, b"ref", f"{value.__module__}.{value.__qualname__}".encode())
        if _is_own_code(value) and id(value) not in seen:
            seen.add(id(value))
            _feed_object_code(h, value, seen)
        return
    try:
        h.update(digest(value, "class attribute"))
    except UnhashableValueError:
        feed_bytes(h, b"?", _stable_repr(value).encode())


def _feed_object_code(h: Hasher, obj: Any, seen: set) -> None:
    if isinstance(obj, types.FunctionType):
        feed_bytes(h, b"fn", obj.__qualname__.encode())
        _feed_code(h, obj.__code__, obj.__module__, obj.__globals__, seen)
        # positional and keyword-only defaults (``*, scale=2.0``) are part of the behaviour
        for tag, defaults in ((b"?", obj.__defaults__), (b"?kw", obj.__kwdefaults__)):
            if defaults:
                _feed_or_repr(h, defaults, "defaults", tag)
        if obj.__closure__:
            for name, cell in zip(obj.__code__.co_freevars, obj.__closure__, strict=True):
                if name == "__class__":  # the class super() refers to: being versioned
                    continue
                try:
                    value = cell.cell_contents
                except ValueError:  # a variable the enclosing function had not yet bound
                    continue
                feed_bytes(h, b"cell", name.encode())
                _feed_referenced(h, value, seen)
    elif isinstance(obj, type):
        _feed_class_code(h, obj, seen)


# names the interpreter, abc, dataclasses and pydantic set on a class: not the user's code
_SKIPPED_ATTRIBUTES = frozenset({"_abc_impl", "model_config"})
# method wrappers without a function, and the descriptors __slots__ and __dict__ create
_NOT_CONSTANTS = (
    staticmethod,
    classmethod,
    property,
    functools.cached_property,
    types.MemberDescriptorType,
    types.GetSetDescriptorType,
)


def _method_function(member: Any) -> Any:
    """The function behind a method-like class member (None for a property without getter)."""
    if isinstance(member, staticmethod | classmethod):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    if isinstance(member, functools.cached_property):
        return member.func
    return member


def _feed_class_code(h: Hasher, cls: type, seen: set) -> None:
    for klass in cls.__mro__:
        if klass is object or klass.__module__.startswith(_LIBRARY_ROOTS):
            continue
        feed_bytes(h, b"cls", qualname(klass).encode())
        for name, member in sorted(vars(klass).items()):
            function = _method_function(member)
            if isinstance(function, types.FunctionType):
                feed_bytes(h, b"m", name.encode())
                _feed_object_code(h, function, seen)
            elif not (
                isinstance(member, _NOT_CONSTANTS)
                or (name.startswith("__") and name.endswith("__"))
                or name in _SKIPPED_ATTRIBUTES
            ):
                # class-level constants (FACTOR = 2.0) are part of the behaviour
                feed_bytes(h, b"a", name.encode())
                _feed_referenced(h, member, seen)


def code_version(obj: Any) -> str:
    """A digest of the code behind ``obj``'s class: methods' bytecode, constants and names, the
    same-module functions they call, class-level constants and closure cells. Works for classes
    defined in notebook cells, which have no source file; a redefined class, constant or helper
    gets a new digest. Not memoised globally, since a notebook may redefine a helper while the
    class object stays the same."""
    cls = obj if isinstance(obj, type) else type(obj)
    h = new_hasher()
    _feed_class_code(h, cls, {id(cls)})
    return h.hexdigest()
