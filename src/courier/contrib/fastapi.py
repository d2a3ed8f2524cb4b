"""courier in a FastAPI app: a lifespan for the bus, a dependency, dispatch off the event loop.

::

    courier = Courier()                      # the bus of courier.toml's app = "..."
    app = FastAPI(lifespan=courier.lifespan)

    @app.post("/signup")
    async def signup(form: SignupForm, bus: CourierBus) -> dict[str, str]:
        envelope = await bus.dispatch(SendEmail(to=form.email))
        return {"message_id": envelope.id}

    $ courier consume email

Every transport is a blocking client, and a send waits for the broker's
confirmation: called on the event loop it would stall every other request
meanwhile. :class:`AsyncBus` runs each dispatch in a worker thread instead
(``anyio.to_thread``, with its own capacity limit so slow brokers cannot
starve FastAPI's thread pool), and the event loop carries on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from courier.bus import Bus
from courier.contrib._settings import bus_from_config
from courier.envelope import Envelope
from courier.message import Message

__all__ = ["STATE", "AsyncBus", "Courier", "CourierBus", "get_bus"]

#: The name of the bus in the lifespan state (``request.state.courier``) and ``app.state``.
STATE = "courier"

#: Dispatches that may wait for their broker at once, by default.
DEFAULT_THREADS = 32


class AsyncBus:
    """The bus for ``async def`` code: each dispatch runs in a worker thread.

    ``bus`` is the blocking :class:`~courier.bus.Bus` underneath, for
    anything else (and for plain ``def`` endpoints, which FastAPI already
    runs in a thread). A cancelled request still waits for a send that has
    started, so a message is never half-dispatched.
    """

    def __init__(self, bus: Bus, limiter: anyio.CapacityLimiter | None = None) -> None:
        self.bus = bus
        self.limiter = limiter

    async def dispatch(self, message: Message, **options: Any) -> Envelope:
        """:meth:`Bus.dispatch` in a worker thread; ``options`` are its own."""
        call = partial(self.bus.dispatch, message, **options)
        return await anyio.to_thread.run_sync(call, limiter=self.limiter)

    async def dispatch_many(self, messages: Iterable[Message], **options: Any) -> list[Envelope]:
        """:meth:`Bus.dispatch_many` in a worker thread."""
        call = partial(self.bus.dispatch_many, list(messages), **options)
        return await anyio.to_thread.run_sync(call, limiter=self.limiter)

    def __repr__(self) -> str:
        return f"<AsyncBus {self.bus!r}>"


class Courier:
    """Opens the app's bus when the app starts and closes it when it stops.

    ``bus`` is the bus itself, a factory returning one, an import string
    (``"myapp.messaging:bus"``, as ``app =`` in courier.toml), or None for
    the configuration's own ``app`` (``courier.toml``, ``COURIER_*``). A
    bus without transports gets the configuration's. A factory builds a
    fresh bus every time the app starts; a bus given as such is closed when
    the app stops, so pass a factory to an app that starts more than once.
    ``setup=True`` declares the queues at startup. ``threads`` bounds the
    dispatches waiting for their broker at once.
    """

    def __init__(
        self,
        bus: Bus | str | Callable[[], Bus] | None = None,
        *,
        setup: bool = False,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.source = bus
        self.setup = setup
        self.threads = threads

    def open(self) -> Bus:
        """The bus to serve, built now if ``bus`` was not one (blocking).

        A bus without transports gets the configuration's, as ``courier
        consume`` gives them to the app's bus.
        """
        source = self.source
        if isinstance(source, str) or source is None:
            return bus_from_config(source)
        return bus_from_config(bus=source if isinstance(source, Bus) else source())

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[dict[str, AsyncBus]]:
        """``FastAPI(lifespan=courier.lifespan)``, or ``async with`` it in your own lifespan.

        Yields the lifespan state: ``request.state.courier`` in every request.
        """
        bus = await anyio.to_thread.run_sync(self.open)
        try:
            if self.setup:
                await anyio.to_thread.run_sync(bus.setup)
            served = AsyncBus(bus, anyio.CapacityLimiter(self.threads))
            app.state.courier = served
            try:
                yield {STATE: served}
            finally:
                del app.state.courier
        finally:
            await anyio.to_thread.run_sync(bus.close)


def get_bus(connection: HTTPConnection) -> AsyncBus:
    """The dependency: the app's :class:`AsyncBus`, opened by :meth:`Courier.lifespan`.

    For HTTP endpoints and WebSockets alike.
    """
    bus = getattr(connection.state, STATE, None) or getattr(connection.app.state, STATE, None)
    if not isinstance(bus, AsyncBus):
        raise RuntimeError(
            "courier's lifespan has not run: create the app with "
            "FastAPI(lifespan=courier.lifespan) (httpx's ASGITransport does not run lifespans: "
            "use FastAPI's TestClient as a context manager, or enter app.router.lifespan_context)"
        )
    return bus


#: Annotate an endpoint's parameter with it: ``async def signup(bus: CourierBus)``.
CourierBus = Annotated[AsyncBus, Depends(get_bus)]
