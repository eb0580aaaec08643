"""Callable <-> stored reference: an import path, or a dill blob, always signed when keyed.

A module-level function is stored as ``module_name`` + ``function_name`` (its qualified
name), after checking that importing that path gives back the very same object. Anything
else that is a plain function (a local function, a closure, a lambda) is serialized with
dill (``recurse=True``, so the globals it uses travel with it and it loads in a process that
never imported the defining module). Bound methods are refused: the instance would be copied
silently, which is never what the caller meant.

With a secret key every reference carries an HMAC-SHA256 signature, and ``FunctionCodec.load``
refuses a reference whose signature does not match before any of its code is imported or
unpickled. Without a key references are unsigned and loading logs one warning.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import inspect
import threading
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from taskqueue_core.exceptions import FunctionNotSerializable, FunctionRefused
from taskqueue_core.models import FunctionRef

__all__ = ["FunctionCodec", "UnsignedReferenceWarning", "function_name"]

_BLOB_CACHE_SIZE = 256


class UnsignedReferenceWarning(UserWarning):
    """Function references are not signed: set QUEUE_SECRET_KEY."""


def function_name(func: Callable[..., Any]) -> str:
    """A readable default task name for ``func``: ``module.qualname``."""
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{module}.{qualname}"


class FunctionCodec:
    """Turns callables into signed ``FunctionRef`` values and back.

    Thread-safe; loaded functions are cached (import paths forever, blobs in a small LRU)
    because a worker loads the same few functions many thousands of times.
    """

    def __init__(self, secret_key: str | None) -> None:
        self._key = secret_key.encode() if secret_key else None
        self._paths: dict[tuple[str, str], Callable[..., Any]] = {}
        self._blobs: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._warned = False

    @property
    def signed(self) -> bool:
        """True when references are signed and verified."""
        return self._key is not None

    # -- dumping ---------------------------------------------------------------------------

    def dump(self, func: Callable[..., Any]) -> FunctionRef:
        """Store ``func``. Raises ``FunctionNotSerializable`` naming why it cannot be stored."""
        if isinstance(func, types.MethodType) or inspect.ismethod(func):
            raise FunctionNotSerializable(
                f"{function_name(func)} is a bound method; pass a module-level function "
                "(or a local function) and give it the object's data as arguments"
            )
        if not callable(func):
            raise FunctionNotSerializable(f"{func!r} is not callable")
        path = self._import_path(func)
        if path is not None:
            module_name, qualname = path
            return FunctionRef(
                module_name=module_name,
                function_name=qualname,
                signature=self._sign(_path_message(module_name, qualname)),
            )
        if not isinstance(func, types.FunctionType):
            raise FunctionNotSerializable(
                f"{func!r} is neither a module-level function nor a plain function that "
                "can be serialized"
            )
        blob = self._serialize(func)
        return FunctionRef(serialized_function=blob, signature=self._sign(blob))

    @staticmethod
    def _import_path(func: Callable[..., Any]) -> tuple[str, str] | None:
        module_name = getattr(func, "__module__", None)
        qualname = getattr(func, "__qualname__", None)
        if not module_name or not qualname or "<" in qualname or module_name == "__main__":
            return None
        try:
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError):
            return None
        # Same object, not merely the same name: a redefined or decorated function stored
        # by path would run something else in the worker.
        return (module_name, qualname) if target is func else None

    @staticmethod
    def _serialize(func: types.FunctionType) -> bytes:
        import dill

        try:
            blob: bytes = dill.dumps(func, recurse=True)
            dill.loads(blob)  # catches objects that pickle but cannot be rebuilt
        except Exception as exc:
            raise FunctionNotSerializable(
                f"{function_name(func)} cannot be serialized with dill: {type(exc).__name__}: {exc}"
            ) from exc
        return blob

    # -- loading ---------------------------------------------------------------------------

    def load(self, ref: FunctionRef) -> Callable[..., Any]:
        """The callable ``ref`` stands for. Raises ``FunctionRefused`` (nothing of it runs) when
        the signature does not match or the path no longer resolves."""
        if ref.serialized_function is not None:
            blob = bytes(ref.serialized_function)
            self._verify(blob, ref.signature, "serialized function")
            with self._lock:
                cached = self._blobs.get(blob)
                if cached is not None:
                    self._blobs.move_to_end(blob)
                    return cached
            func = self._deserialize(blob)
            with self._lock:
                self._blobs[blob] = func
                if len(self._blobs) > _BLOB_CACHE_SIZE:
                    self._blobs.popitem(last=False)
            return func
        if ref.module_name and ref.function_name:
            key = (ref.module_name, ref.function_name)
            cached = self._paths.get(key)
            if cached is not None and self._key is None:
                return cached
            self._verify(
                _path_message(*key), ref.signature, f"{ref.module_name}.{ref.function_name}"
            )
            if cached is not None:
                return cached
            func = self._resolve(*key)
            with self._lock:
                self._paths[key] = func
            return func
        raise FunctionRefused("the task has no function reference")

    def _verify(self, message: bytes, signature: str | None, what: str) -> None:
        if self._key is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    "QUEUE_SECRET_KEY is not set: task function references are not signed "
                    "or verified",
                    UnsignedReferenceWarning,
                    stacklevel=3,
                )
            return
        if signature is None or not hmac.compare_digest(signature, self._digest(message)):
            raise FunctionRefused(
                f"the signature of {what} does not match QUEUE_SECRET_KEY; it was not loaded"
            )

    @staticmethod
    def _resolve(module_name: str, qualname: str) -> Callable[..., Any]:
        try:
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise FunctionRefused(
                f"{module_name}.{qualname} no longer resolves: {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(target):
            raise FunctionRefused(f"{module_name}.{qualname} is not callable")
        return target  # type: ignore[no-any-return]

    @staticmethod
    def _deserialize(blob: bytes) -> Callable[..., Any]:
        import dill

        try:
            func = dill.loads(blob)
        except Exception as exc:
            raise FunctionRefused(
                f"the serialized function cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(func):
            raise FunctionRefused("the serialized function is not callable")
        return func  # type: ignore[no-any-return]

    # -- signing ---------------------------------------------------------------------------

    def _sign(self, message: bytes) -> str | None:
        return None if self._key is None else self._digest(message)

    def _digest(self, message: bytes) -> str:
        assert self._key is not None
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


def _path_message(module_name: str, qualname: str) -> bytes:
    return f"path:{module_name}:{qualname}".encode()
