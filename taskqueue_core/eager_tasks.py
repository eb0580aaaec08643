"""Eager tasks: a coroutine whose first step runs at once, in the caller's call.

``start_eagerly(coro, name=...)`` runs ``coro`` up to its first suspension right away (as
``asyncio.eager_task_factory`` does from Python 3.12 on) and hands the rest to a task of the
running loop. A write started this way sends its statement before the caller's code goes on,
so the database works on it while a long stretch of synchronous code (a burst of
``add_task`` calls, which never yields to the loop) runs; an ordinary task would not even
start before that code ends.

The first step runs in a copy of the caller's ``contextvars`` (the task keeps that copy), so
nothing it sets leaks into the caller. On Python 3.11, which has no eager tasks, the first
step runs while the caller's task is ``asyncio.current_task()``: the coroutine must not use
anything bound to the current task in its first step (``asyncio.timeout``; ``wait_for`` from
3.12 on, where the interpreter's eager start is used instead).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar, cast

__all__ = ["start_eagerly"]

T = TypeVar("T")


def start_eagerly(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Future[T]:
    """Run ``coro``'s first step now; return a future of its result (a task named ``name``
    of the running loop when it suspended, else a future already settled).

    An exception the first step raises is the future's, as a task's would be; only
    ``KeyboardInterrupt`` and ``SystemExit`` propagate at once.
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    if sys.version_info >= (3, 12):
        # The interpreter's own: it also makes the new task the current one for the step.
        return asyncio.Task(coro, loop=loop, name=name, context=context, eager_start=True)
    try:
        yielded = context.run(coro.send, None)
    except StopIteration as stop:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        failed: asyncio.Future[T] = loop.create_future()
        if isinstance(exc, asyncio.CancelledError):
            failed.cancel()
        else:
            failed.set_exception(exc)
        return failed
    rest = _resumed(coro, yielded)
    next(rest)  # started: a cancellation before the task's first step now reaches ``coro``
    return loop.create_task(cast(Coroutine[Any, Any, T], rest), name=name, context=context)


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Drive ``coro`` on from the suspension where its first step left it (it yielded
    ``yielded``: a future it waits on, or None), as the task would have.

    The task's first step gets ``yielded`` and waits on it. Values sent in go to ``coro``;
    exceptions thrown in (a cancellation) too, and a cancellation that came before the
    task's first step also cancels the future ``coro`` waits on, as a task does.
    """
    thrown: BaseException | None = None
    try:
        yield  # the priming ``next`` stops here; the task's first step resumes here
    except GeneratorExit:
        coro.close()
        raise
    except BaseException as exc:
        # Cancelled before its first step: the task did not cancel the future ``coro``
        # waits on, since it was not waiting on it yet.
        if isinstance(yielded, asyncio.Future):
            yielded.cancel()
        thrown = exc
    while True:
        try:
            if thrown is not None:
                error, thrown = thrown, None
                yielded = coro.throw(error)
                continue
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                thrown = exc
                continue
            yielded = coro.send(sent)
        except StopIteration as stop:
            result: T = stop.value
            return result
