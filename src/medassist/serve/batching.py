"""Dynamic micro-batching: concurrent requests to one model are gathered into one ONNX Runtime call.

As in Triton's dynamic batcher and TorchServe's batch inference: a request waits at most ``max_wait_ms`` for others
to join it, and at most ``max_batch`` run together. One model call runs at a time per model, on a worker thread, so
the event loop keeps accepting requests while the model computes. With ``max_batch=1`` every request runs alone
(one-at-a-time serving, the comparison the benchmark makes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MicroBatcher:
    """Gathers concurrent calls of :meth:`submit` into calls of ``run(items) -> results`` (one result per item).

    Args:
        run: computes a batch; its exceptions are given to every request of the batch.
        max_batch: most items per call (1 = no batching).
        max_wait_ms: longest time the first item of a batch waits for more.
        name: for the worker thread's name.
    """

    def __init__(
        self, run: Callable[[Sequence[Any]], Sequence[Any]], *, max_batch: int = 32, max_wait_ms: float = 2.0, name: str
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch} and {max_wait_ms}")
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._name = name
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._loop_of_task: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.items = 0
        self.pending = 0  # submitted and not yet answered

    async def start(self) -> None:
        """Start the gathering task (and the model's thread) on the running event loop."""
        self._queue = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self._name}")
        self._loop_of_task = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop gathering; requests still waiting are cancelled."""
        if self._task is not None and self._loop_of_task is asyncio.get_running_loop():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def submit(self, item: Any) -> Any:
        """The result for ``item``, computed in a batch with the other items waiting at the same time."""
        if not self.running or self._loop_of_task is not asyncio.get_running_loop():
            await self.start()  # an app run without its lifespan (or on a new event loop) starts it here
        assert self._queue is not None
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending += 1
        try:
            await self._queue.put((item, future))
            return await future
        finally:
            self.pending -= 1

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every submitted request has its answer (or ``timeout_s`` passed): a batcher being replaced
        finishes what it accepted before it stops."""
        deadline = time.perf_counter() + timeout_s
        while self.pending and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)

    async def _loop(self) -> None:
        assert self._queue is not None and self._pool is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())  # what is already waiting joins at once
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            batch = [(item, fut) for item, fut in batch if not fut.cancelled()]  # a client that went away
            if not batch:
                continue
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self._pool, self._run, items)
            except Exception as err:  # given to each request, which answers with its own error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            self.batches += 1
            self.items += len(items)
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
