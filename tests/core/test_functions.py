"""FunctionCodec: import paths, dill blobs, signatures, and what it refuses."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace

import pytest

from taskqueue_core.exceptions import FunctionNotSerializable, FunctionRefused
from taskqueue_core.functions import FunctionCodec, UnsignedReferenceWarning


def module_level(x: int) -> int:
    return x + 1


def test_a_module_level_function_is_stored_by_path_and_signed() -> None:
    codec = FunctionCodec("key")
    ref = codec.dump(module_level)
    assert (ref.module_name, ref.function_name) == (__name__, "module_level")
    assert ref.serialized_function is None
    assert ref.signature is not None and len(ref.signature) == 64
    assert codec.load(ref) is module_level


def test_a_closure_is_serialized_and_loads_in_a_process_that_never_saw_it() -> None:
    codec = FunctionCodec("key")
    offset = 41

    def local(x: int) -> int:
        return json.loads(json.dumps(x)) + offset

    ref = codec.dump(local)
    assert ref.serialized_function is not None and ref.module_name is None
    # Another interpreter, which never imported this test module, runs it.
    program = textwrap.dedent(
        f"""
        from taskqueue_core.functions import FunctionCodec
        from taskqueue_core.models import FunctionRef
        ref = FunctionRef(serialized_function=bytes.fromhex({ref.serialized_function.hex()!r}),
                          signature={ref.signature!r})
        print(FunctionCodec("key").load(ref)(1))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "42"


def test_a_lambda_is_serialized() -> None:
    codec = FunctionCodec(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsignedReferenceWarning)
        assert codec.load(codec.dump(lambda y: y * 2))(4) == 8


def test_a_redefined_name_is_not_stored_by_path() -> None:
    def module_level(x: int) -> int:  # shadows the module's function of that name
        return x - 1

    ref = FunctionCodec("key").dump(module_level)
    assert ref.module_name is None and ref.serialized_function is not None


def test_a_bound_method_is_refused_with_a_reason() -> None:
    class Mailer:
        def send(self) -> None: ...

    with pytest.raises(FunctionNotSerializable, match="is a bound method"):
        FunctionCodec("key").dump(Mailer().send)


def test_a_closure_over_a_socket_is_refused_with_dills_reason() -> None:
    sock = socket.socket()
    try:
        with pytest.raises(FunctionNotSerializable, match="cannot be serialized with dill"):
            FunctionCodec("key").dump(lambda: sock.send(b"x"))
    finally:
        sock.close()


def test_a_reference_signed_with_another_key_is_refused_before_loading() -> None:
    ref = FunctionCodec("one key").dump(lambda: 1)
    with pytest.raises(FunctionRefused, match="does not match QUEUE_SECRET_KEY"):
        FunctionCodec("another key").load(ref)
    path_ref = FunctionCodec("one key").dump(module_level)
    with pytest.raises(FunctionRefused, match="does not match"):
        FunctionCodec("another key").load(path_ref)


def test_an_unsigned_reference_is_refused_when_a_key_is_set() -> None:
    ref = replace(FunctionCodec("key").dump(module_level), signature=None)
    with pytest.raises(FunctionRefused):
        FunctionCodec("key").load(ref)


def test_a_tampered_blob_is_refused() -> None:
    codec = FunctionCodec("key")
    ref = codec.dump(lambda: 1)
    assert ref.serialized_function is not None
    tampered = replace(ref, serialized_function=ref.serialized_function + b"\x00")
    with pytest.raises(FunctionRefused):
        codec.load(tampered)


def test_a_path_that_no_longer_resolves_is_refused() -> None:
    codec = FunctionCodec(None)
    ref = replace(codec.dump(module_level), function_name="gone")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsignedReferenceWarning)
        with pytest.raises(FunctionRefused, match="no longer resolves"):
            codec.load(ref)


def test_without_a_key_loading_warns_once() -> None:
    codec = FunctionCodec(None)
    ref = codec.dump(module_level)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        codec.load(ref)
        codec.load(ref)
    assert [w.category for w in seen] == [UnsignedReferenceWarning]
