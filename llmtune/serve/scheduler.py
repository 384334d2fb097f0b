"""Iteration-level batching: one worker thread owns the model and serves every request together.

Requests wait in a bounded queue (``QueueFull`` -> HTTP 429). Each iteration the worker either admits
waiting jobs into free batch slots and prefills them together, or runs one decode step for every
running row (``engine.BatchEngine``). A new request therefore joins a batch that is already decoding
at the next step instead of waiting for it to finish, and a finished or abandoned row leaves at once,
freeing its slot.

Text leaves the worker as events on the job's asyncio queue (``Delta``, ``Done``, ``Failed``), posted
thread-safely into the event loop of the request that owns it. Stop strings are cut exactly as
``llmtune generate`` cuts them (``decoding.StopWriter``): text that could be the start of a stop
string is held back until it is known not to be one.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from llmtune.decoding import StopWriter
from llmtune.dist import log
from llmtune.serve.engine import BatchEngine, Row, SamplingParams


class QueueFull(Exception):
    """The waiting queue holds ``max_queue`` jobs already."""


@dataclass
class Delta:
    """New text of choice ``index``."""

    index: int
    text: str


@dataclass
class Done:
    """Choice ``index`` finished: ``stop`` (eos or a stop string) or ``length`` (max_tokens)."""

    index: int
    finish_reason: str
    completion_tokens: int


@dataclass
class Failed:
    """The job cannot finish (a model error, or the server is stopping)."""

    message: str


class Choice:
    """One completion of a job: its row in the batch, its decoded text and stop-string cut."""

    def __init__(self, job: "Job", index: int, prompt_ids: list[int], max_new: int, params: SamplingParams) -> None:
        self.job, self.index, self.max_new = job, index, max_new
        self.row = Row(prompt_ids, params, owner=self)
        self.writer = StopWriter(lambda text: job.post(Delta(index, text)), job.stops)
        self._printed = 0
        self.finish_reason: Optional[str] = None

    def feed(self, token: int, eos_ids: set[int]) -> bool:
        """Take the row's newest token; True when this choice is finished."""
        if token in eos_ids:
            return self._finish("stop")
        self._flush(final=False)
        if self.writer.stopped:
            return self._finish("stop")
        if len(self.row.generated) >= self.max_new:
            return self._finish("length")
        return False

    def _flush(self, final: bool) -> None:
        ids = [t for t in self.row.generated if t not in self.job.eos_ids]
        text = self.job.tokenizer.decode(ids, skip_special_tokens=True)
        if text.endswith("\ufffd") and not final:
            return  # half of a multi-byte character: wait for the rest
        self.writer.write(text[self._printed:])
        self._printed = len(text)

    def _finish(self, reason: str) -> bool:
        if not self.writer.stopped:
            self._flush(final=True)
            self.writer.close()
        self.finish_reason = reason
        self.job.post(Done(self.index, reason, len(self.row.generated)))
        return True


class Job:
    """One HTTP request: its choices (prompts x n), stop strings and the queue its events arrive on."""

    def __init__(self, tokenizer: Any, eos_ids: set[int], stops: Sequence[str],
                 loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.tokenizer, self.eos_ids, self.stops = tokenizer, eos_ids, list(stops)
        self.loop = loop or asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.choices: list[Choice] = []
        self.cancelled = False
        self.created = time.perf_counter()
        self.first_token_at: Optional[float] = None

    def add_choice(self, prompt_ids: list[int], max_new: int, params: SamplingParams) -> None:
        """Add one completion to generate (its index is its position)."""
        self.choices.append(Choice(self, len(self.choices), prompt_ids, max_new, params))

    def post(self, event: Any) -> None:
        """Hand ``event`` to the request's event loop (called from the worker thread)."""
        if isinstance(event, Delta) and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled = True


class Scheduler:
    """The worker thread, its waiting queue and the running batch."""

    def __init__(self, engine: BatchEngine, max_batch_size: int, max_queue: int) -> None:
        self.engine, self.max_batch_size, self.max_queue = engine, max_batch_size, max_queue
        self._waiting: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="llmtune-serve-worker", daemon=True)
        self.steps = 0  # forward passes run (prefills + decode steps)

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for a batch slot."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Rows being generated now."""
        return self.engine.size

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Fail whatever is left (uvicorn has already waited for in-flight requests) and end the worker."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue ``job``.

        Raises:
            QueueFull: ``max_queue`` jobs are waiting already.
        """
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting already (serve.max_queue)")
            self._waiting.append(job)
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        """Abandon ``job`` (its client went away): its rows leave the batch at the next step."""
        job.cancelled = True
        with self._wake:
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._waiting and not self.engine.size:
                    self._wake.wait()
                if self._stopping:
                    break
                admitted = self._admit()
            try:
                self._iterate(admitted)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
                log(f"serve: generation failed ({type(exc).__name__}: {exc}); failing the requests in the batch")
                self._fail(admitted, f"generation failed: {type(exc).__name__}: {exc}")
        with self._wake:
            waiting, self._waiting = list(self._waiting), collections.deque()
        self._fail(waiting, "the server is shutting down")

    def _admit(self) -> list[Job]:
        """Jobs (oldest first) whose choices fit the free batch slots; abandoned ones are dropped."""
        admitted: list[Job] = []
        free = self.max_batch_size - self.engine.size
        if self.engine.size and not self.engine.can_join:
            return admitted
        while self._waiting and (self._waiting[0].cancelled or len(self._waiting[0].choices) <= free):
            job = self._waiting.popleft()
            if not job.cancelled:
                admitted.append(job)
                free -= len(job.choices)
        return admitted

    def _iterate(self, admitted: list[Job]) -> None:
        """One forward pass: prefill the admitted jobs, else one decode step for every row."""
        self._drop_cancelled()
        if admitted:
            rows = [c.row for job in admitted for c in job.choices]
            tokens = self.engine.add(rows)
        elif self.engine.size:
            rows = list(self.engine.rows)
            tokens = self.engine.step()
        else:
            return
        self.steps += 1
        finished = {id(row) for row, token in zip(rows, tokens) if row.owner.feed(token, self.engine.eos_ids)}
        self.engine.keep([i for i, row in enumerate(self.engine.rows)
                          if id(row) not in finished and not row.owner.job.cancelled])

    def _drop_cancelled(self) -> None:
        if any(row.owner.job.cancelled for row in self.engine.rows):
            self.engine.keep([i for i, row in enumerate(self.engine.rows) if not row.owner.job.cancelled])

    def _fail(self, extra: list[Job], message: str) -> None:
        """Send ``Failed`` to every job in the batch and in ``extra``; empty the batch."""
        jobs = {id(j): j for j in [r.owner.job for r in self.engine.rows] + extra}
        for job in jobs.values():
            job.post(Failed(message))
        self.engine.reset()
