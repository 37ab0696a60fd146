"""A small discrete-event core: tasks with dependencies on single-server resources.

The model (``model.py``) turns one training iteration into a handful of *tasks*: a gradient
on a device, a copy on a link, an optimizer update. Each task has a *work* in seconds (its
duration when it runs alone), a resource, and the tasks it depends on. The engine runs them:

- **Resources are single servers.** A device (or a CPU pool) runs one task at a time; a link
  carries one copy at a time in each direction (``D→A`` and ``A→D`` are two resources). Two
  plan roles on the same hardware map to one resource, so their work is *time-sliced*: it runs
  one task after the other, as the executor does on a shared pool.
- **Order.** A task is ready when its last dependency completes. An idle resource starts the
  ready task with the smallest ``order`` (its position in the program a sequential executor
  runs, given by the model), ties broken by a creation counter, so a run is deterministic.
  At each instant the engine first completes everything that completes then, and only then
  starts what is ready. (Ordering by readiness instead lets a shared pool run two ascents
  back to back and then two descents, which no executor does.)
- **Contention (processor sharing).** Two compute resources on one socket slow each other:
  while ``other`` computes, ``device`` progresses at rate ``1 / slowdown(device, other)``
  (``CostModel.slowdown``; with several partners the factors multiply). A running task keeps
  its remaining work; whenever a partner starts or stops, the remaining work is advanced at
  the old rate and the finish time is recomputed at the new one (a fluid model). So the factor
  applies to exactly the overlapped interval: ``t_end`` solves
  ``∫ rate(s) ds = work`` over ``[t_start, t_end]``. Stale finish events are skipped by version.

Why not SimPy: SimPy 4 resources are FIFO servers whose finish times are fixed when a
``timeout`` is scheduled; processor sharing needs interrupts and re-arming per rate change, and
each SimPy request/release/timeout costs several generator resumptions. The measured difference
on the same AsyncSAM workload is in ``examples/bench_simulator.py``.

This module is pure Python and imports nothing from hetsam or torch.
"""

from __future__ import annotations

from heapq import heappop, heappush

__all__ = ["Engine", "Resource", "Task"]


class Resource:
    """A single-server resource: a device, a CPU pool or one direction of a link."""

    __slots__ = ("name", "kind", "compute", "queue", "running", "busy", "since", "partners", "watchers", "dirty")

    def __init__(self, name: str, kind: str, compute: bool):
        self.name = name
        self.kind = kind  # "device" or "link"
        self.compute = compute  # compute resources take part in contention
        self.queue: list = []  # heap of (order, seq, task)
        self.running: Task | None = None
        self.busy = 0.0  # busy seconds, up to `since` when running
        self.since = 0.0
        self.partners: list[tuple[Resource, float]] = []  # (other, my slowdown while other computes)
        self.watchers: list[Resource] = []  # resources whose rate depends on this one computing
        self.dirty = False

    def busy_at(self, now: float) -> float:
        """Busy seconds from time 0 to ``now``."""
        return self.busy + (now - self.since if self.running is not None else 0.0)

    def __repr__(self) -> str:
        return f"Resource({self.name!r})"


class Task:
    """One piece of work. ``work`` is its duration when it runs alone (seconds)."""

    __slots__ = (
        "name", "category", "resource", "work", "iteration", "seq", "pending", "succ", "done",
        "ready", "start", "end", "left", "rate", "stamp", "version", "on_done", "chain", "wait",
        "busy_mark", "tail", "order",
    )

    def __init__(self, name, category, resource, work, iteration, seq, order, on_done=None, chain=None, tail=0.0):
        self.name = name
        self.category = category  # "descent", "ascent", "copy", "update", "loader"
        self.resource = resource
        self.work = work
        self.iteration = iteration
        self.seq = seq
        self.pending = 0
        self.succ: list[Task] = []
        self.done = False
        self.ready = self.start = self.end = 0.0
        self.left = work
        self.rate = 1.0
        self.stamp = 0.0
        self.version = 0
        self.on_done = on_done
        # `chain`: the task whose end this one would start after if it had no other
        # dependency; the idle time of this resource between the two is a *wait*
        self.chain = chain
        self.wait = 0.0
        self.busy_mark = 0.0
        self.tail = tail  # trailing part of `work` shown as an update in the timeline
        self.order = order  # program position: the smallest ready one runs first

    def __repr__(self) -> str:
        return f"Task({self.name!r}, it={self.iteration}, work={self.work:.6g})"


class Engine:
    """The event loop. Build resources, add tasks (also from ``on_done`` callbacks), ``run()``."""

    def __init__(self, *, record_until_iteration: int = 0):
        self.now = 0.0
        self.resources: list[Resource] = []
        self._heap: list = []  # (time, counter, task, version)
        self._counter = 0  # event tie-breaks
        self._seq = 0  # task creation order
        self._dirty: list[Resource] = []
        self.stopped = False
        self.events = 0  # finish events processed, stale ones included
        self.tasks = 0
        self.record_until = record_until_iteration
        self.records: list[tuple] = []  # (resource, name, category, start, end, iteration, tail, wait, ready, work)

    # ---- building -----------------------------------------------------------------------
    def resource(self, name: str, kind: str = "device", *, compute: bool = True) -> Resource:
        res = Resource(name, kind, compute)
        self.resources.append(res)
        return res

    def contend(self, a: Resource, b: Resource, a_slowdown: float, b_slowdown: float) -> None:
        """While both compute, ``a`` runs ``a_slowdown`` times slower and ``b`` ``b_slowdown`` times."""
        if a is b:
            raise ValueError("a resource cannot contend with itself; shared hardware is one resource")
        for s in (a_slowdown, b_slowdown):
            if not s > 0:
                raise ValueError(f"slowdown {s!r} must be > 0")
        if not (a.compute and b.compute):
            raise ValueError("only compute resources contend")
        if a_slowdown != 1.0:
            a.partners.append((b, a_slowdown))
            b.watchers.append(a)
        if b_slowdown != 1.0:
            b.partners.append((a, b_slowdown))
            a.watchers.append(b)

    def add(self, name, category, resource, work, iteration, deps=(), *, order=None, on_done=None, chain=None,
            tail=0.0) -> Task:
        """Create a task that runs on ``resource`` once every task in ``deps`` is done.

        ``None`` entries in ``deps`` are ignored (a dependency on "before time 0"). ``order``
        ranks ready tasks on one resource (default: creation order).
        """
        if work < 0:
            raise ValueError(f"task {name!r} has negative work {work!r}")
        self._seq += 1
        task = Task(name, category, resource, work, iteration, self._seq, self._seq if order is None else order,
                    on_done, chain, tail)
        self.tasks += 1
        n = 0
        for d in deps:
            if d is not None and not d.done:
                d.succ.append(task)
                n += 1
        if n:
            task.pending = n
        else:
            self._ready(task)
        return task

    # ---- running ------------------------------------------------------------------------
    def _ready(self, task: Task) -> None:
        now = self.now
        task.ready = now
        chain = task.chain
        if chain is not None and chain.done and now > chain.end:
            # idle time of this resource between the chain predecessor's end and now
            idle = (now - chain.end) - (task.resource.busy_at(now) - chain.busy_mark)
            if idle > 0.0:
                task.wait = idle
        task.chain = None  # only needed here; keeping it would link every past task (memory grows with T)
        res = task.resource
        heappush(res.queue, (task.order, task.seq, task))
        if not res.dirty and res.running is None:
            res.dirty = True
            self._dirty.append(res)

    def _schedule(self, task: Task) -> None:
        self._counter += 1
        heappush(self._heap, (self.now + task.left / task.rate, self._counter, task, task.version))

    def _retime(self, task: Task) -> None:
        """Advance ``task`` at its old rate to now, then re-derive its rate and finish time."""
        now = self.now
        left = task.left - (now - task.stamp) * task.rate
        task.left = left if left > 0.0 else 0.0
        task.stamp = now
        rate = 1.0
        for other, factor in task.resource.partners:
            if other.running is not None:
                rate /= factor
        if rate != task.rate:
            task.rate = rate
            task.version += 1
            self._schedule(task)

    def _start(self, res: Resource) -> None:
        _, _, task = heappop(res.queue)
        now = self.now
        res.running = task
        res.since = now
        task.start = task.stamp = now
        if res.partners:
            rate = 1.0
            for other, factor in res.partners:
                if other.running is not None:
                    rate /= factor
            task.rate = rate
        self._counter += 1
        heappush(self._heap, (now + task.left / task.rate, self._counter, task, task.version))
        for other in res.watchers:  # they now compute slower
            if other.running is not None:
                self._retime(other.running)

    def _finish(self, task: Task) -> None:
        now = self.now
        res = task.resource
        task.done = True
        task.end = now
        res.busy += now - res.since
        res.running = None
        task.busy_mark = res.busy
        for other in res.watchers:  # they now compute faster
            if other.running is not None:
                self._retime(other.running)
        if task.iteration < self.record_until:
            self.records.append((res, task.name, task.category, task.start, now, task.iteration, task.tail, task.wait,
                                 task.ready, task.work))
        if task.on_done is not None:
            task.on_done(task)
        for s in task.succ:
            s.pending -= 1
            if s.pending == 0:
                self._ready(s)
        task.succ = ()  # drop references: nothing depends on a done task any more
        if res.queue and not res.dirty:
            res.dirty = True
            self._dirty.append(res)

    def _dispatch(self) -> None:
        dirty = self._dirty
        while dirty:
            self._dirty = []
            for res in dirty:
                res.dirty = False
                if res.running is None and res.queue:
                    self._start(res)
            dirty = self._dirty

    def run(self) -> None:
        """Run until no event is left or a callback sets ``stopped``."""
        heap = self._heap
        finish = self._finish
        events = 0
        if self._dirty:
            self._dispatch()
        while heap and not self.stopped:
            t, _, task, version = heappop(heap)
            events += 1
            if version != task.version:
                continue
            self.now = t
            finish(task)
            # complete everything else that completes at this instant before starting anything
            while heap and heap[0][0] == t and not self.stopped:
                _, _, task, version = heappop(heap)
                events += 1
                if version == task.version:
                    finish(task)
            if self._dirty:
                self._dispatch()
        self.events += events
