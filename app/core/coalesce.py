"""Group commit for an event loop: calls that arrive while an earlier group with the same key is
being written wait and go together in the next group, one worker-thread hop and one
transaction for all of them.

A call that finds nothing in flight for its key starts at once (a lone request waits for
nothing); under load a group takes everything that queued while the one before it ran, up to
``max_group``. ``run_group`` answers every call of a group (an answer, or the exception that
call alone gets); when it raises, every call of the group gets that exception.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio.to_thread

Call = TypeVar("Call")


@dataclass
class _Queue(Generic[Call]):
    waiting: list[tuple[Call, asyncio.Future[Any], contextvars.Context]] = field(default_factory=list)
    running: bool = False
    drain: asyncio.Task[None] | None = None  # held here: the loop keeps only a weak reference to a task


class GroupCommit(Generic[Call]):
    def __init__(self, run_group: Callable[[Sequence[Call]], Sequence[Any]], *, max_group: int) -> None:
        self.run_group = run_group
        self.max_group = max_group
        # (event loop, key) -> its queue: futures belong to one loop (a test client runs its own).
        self._queues: dict[tuple[asyncio.AbstractEventLoop, Hashable], _Queue[Call]] = {}

    async def submit(self, key: Hashable, call: Call) -> Any:
        """``call``'s answer once its group is written; raises what its group or it alone raised."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault((loop, key), _Queue())
        answer = loop.create_future()
        queue.waiting.append((call, answer, contextvars.copy_context()))
        if not queue.running:
            queue.running = True
            queue.drain = loop.create_task(self._drain(loop, key, queue))
        return await answer

    async def _drain(self, loop: asyncio.AbstractEventLoop, key: Hashable, queue: _Queue[Call]) -> None:
        try:
            while queue.waiting:
                group, queue.waiting = queue.waiting[:self.max_group], queue.waiting[self.max_group:]
                # Run in the first call's context: what a commit notes for after the response
                # (the audit sealer's flag) reaches a request that is still waiting for it.
                first_context = group[0][2]
                try:
                    answers: Sequence[Any] = await anyio.to_thread.run_sync(
                        first_context.run, self.run_group, [call for call, _, _ in group])
                except Exception as error:  # noqa: BLE001 - every call of the group gets it
                    answers = [error] * len(group)
                for (_, future, _), answer in zip(group, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            queue.running = False
            if not queue.waiting:
                self._queues.pop((loop, key), None)
