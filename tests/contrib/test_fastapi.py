"""courier.contrib.fastapi, with FastAPI's TestClient and httpx's ASGI transport.

The end-to-end cases run the example (``examples/fastapi_app``) on SQLite
and on RabbitMQ: a request dispatches, a real ``courier consume``
subprocess sends the mail. The
event-loop case measures the loop's lag with a ticker task while 200
concurrent requests each dispatch one message to a transport whose send
takes half a second, and checks the same probe does see a blocking
dispatch stall the loop.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ClassVar

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket

from courier import Bus, Envelope, Message
from courier.contrib.fastapi import AsyncBus, Courier, CourierBus, get_bus
from courier.transports.memory import MemoryTransport

SLOW_SEND = 0.5


class Ping(Message):
    message_name: ClassVar[str] = "fastapi.ping"
    n: int


class SlowTransport(MemoryTransport):
    """A broker that takes ``SLOW_SEND`` to confirm each message, and says when it closed."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.closed = False

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        time.sleep(SLOW_SEND)
        return super().send(envelope, queue)

    def close(self) -> None:
        self.closed = True
        super().close()


def slow_bus() -> Bus:
    bus = Bus()
    bus.add_transport("jobs", SlowTransport(name="jobs", serializer=bus.serializer))
    bus.route(Ping, "jobs")
    return bus


def ping_app(courier: Courier, *, blocking: bool = False) -> FastAPI:
    app = FastAPI(lifespan=courier.lifespan)

    @app.post("/ping/{n}", status_code=202)
    async def ping(n: int, bus: CourierBus) -> dict[str, str]:
        if blocking:  # what the dependency exists to avoid
            return {"id": bus.bus.dispatch(Ping(n=n)).id}
        return {"id": (await bus.dispatch(Ping(n=n))).id}

    return app


def TestClient(app: FastAPI) -> Any:
    """FastAPI's TestClient, imported here so conftest's warning filter applies (see there)."""
    from fastapi.testclient import TestClient as Client

    return Client(app)


@pytest.fixture
def fastapi_example(
    example_project: Any, email_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    project = example_project("fastapi_app", COURIER_TRANSPORTS__EMAIL=email_dsn)
    monkeypatch.chdir(project.root)
    monkeypatch.syspath_prepend(str(project.root))
    monkeypatch.setenv("COURIER_TRANSPORTS__EMAIL", email_dsn)
    try:
        yield project
    finally:
        sys.modules.pop("signup_fastapi", None)


def test_a_request_dispatches_and_courier_consume_handles_it(fastapi_example: Any) -> None:
    import signup_fastapi

    with TestClient(signup_fastapi.app) as client:
        response = client.post("/signup", json={"email": "ada@example.com"})
        assert response.status_code == 202
        assert len(response.json()["message_id"]) == 32
        assert client.post("/signup", json={"email": "nobody"}).status_code == 400

    fastapi_example.run(
        "courier", "consume", "email", "--limit", "1", "--time-limit", "60", "--no-progress"
    )

    [mail] = fastapi_example.mails()
    assert "To: ada@example.com" in mail


def test_the_lifespan_opens_the_bus_and_closes_its_transports() -> None:
    opened: list[Bus] = []

    def factory() -> Bus:
        opened.append(slow_bus())
        return opened[-1]

    app = ping_app(Courier(factory))
    for round_ in (1, 2):  # a factory gives every start a fresh bus
        with TestClient(app) as client:
            assert isinstance(app.state.courier, AsyncBus)
            assert app.state.courier.bus is opened[-1]
            assert client.post("/ping/1").status_code == 202
            assert not opened[-1].transport("jobs").closed
        assert len(opened) == round_
        assert opened[-1].transport("jobs").closed
        assert not hasattr(app.state, "courier")


def test_a_websocket_endpoint_gets_the_bus_too() -> None:
    bus = slow_bus()
    app = FastAPI(lifespan=Courier(bus).lifespan)

    @app.websocket("/pings")
    async def pings(websocket: WebSocket, bus: CourierBus) -> None:
        await websocket.accept()
        envelope = await bus.dispatch(Ping(n=await websocket.receive_json()))
        await websocket.send_text(envelope.id)

    with TestClient(app) as client, client.websocket_connect("/pings") as websocket:
        websocket.send_json(5)
        assert websocket.receive_text() == bus.transport("jobs").sent[0].id  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_two_hundred_concurrent_dispatches_do_not_stall_the_event_loop() -> None:
    bus = slow_bus()
    app = ping_app(Courier(bus))
    lag = await measure_loop_lag(app, requests=200)

    assert lag.statuses == [202] * 200
    assert len(bus.transport("jobs").sent) == 200  # type: ignore[attr-defined]
    # A blocking send holds the loop SLOW_SEND per request, so every tick would be
    # that late. In threads none is; the 1% allowed is this shared machine's own
    # scheduling hiccups (two cores, other test runs), not the dispatches.
    late = [seconds for seconds in lag.lags if seconds > SLOW_SEND / 2]
    assert len(late) <= len(lag.lags) // 100, (
        f"{len(late)} of {len(lag.lags)} ticks were late by {SLOW_SEND / 2}s or more "
        f"(worst {lag.worst:.3f}s, median {lag.median * 1000:.1f}ms)"
    )
    assert lag.median < 0.05
    assert lag.elapsed < 200 * SLOW_SEND / 4  # and the sends overlap


@pytest.mark.anyio
async def test_the_lag_probe_does_see_a_blocking_dispatch_stall_the_loop() -> None:
    lag = await measure_loop_lag(ping_app(Courier(slow_bus()), blocking=True), requests=4)

    assert lag.statuses == [202] * 4
    assert lag.worst >= SLOW_SEND * 0.9
    late = [seconds for seconds in lag.lags if seconds > SLOW_SEND / 2]
    assert len(late) > len(lag.lags) // 100  # the other test's criterion fails here


class Lag:
    """How late each tick of the ticker was, and what the requests answered."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.elapsed = 0.0
        self.statuses: list[int] = []

    @property
    def worst(self) -> float:
        return max(self.lags, default=0.0)

    @property
    def median(self) -> float:
        return sorted(self.lags)[len(self.lags) // 2] if self.lags else 0.0


async def measure_loop_lag(app: FastAPI, *, requests: int, tick: float = 0.01) -> Lag:
    """Fire ``requests`` concurrent requests through httpx's ASGI transport; time a ticker.

    ``lags`` are how long each tick waited beyond its ``tick``: how long the
    event loop was kept from running anything else.
    """
    lag = Lag()
    done = anyio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await anyio.sleep(tick)
            lag.lags.append(time.perf_counter() - started - tick)

    async def one(client: httpx.AsyncClient, n: int) -> None:
        response = await client.post(f"/ping/{n}")
        lag.statuses.append(response.status_code)

    # httpx's ASGI transport does not run lifespans: enter it as the server would.
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=app)
        transport.app = _with_state(app, state)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            started = time.perf_counter()
            async with anyio.create_task_group() as group:
                group.start_soon(ticker)
                async with anyio.create_task_group() as requests_group:
                    for n in range(requests):
                        requests_group.start_soon(one, client, n)
                        # Let the loop turn between starts: 200 requests begun in one
                        # turn would be a burst of the requests' own work, not a stall.
                        await anyio.sleep(0)
                lag.elapsed = time.perf_counter() - started
                done.set()
    return lag


def _with_state(app: FastAPI, state: Any) -> Callable[..., Any]:
    """The app, with the lifespan's state in each request's scope (what servers do)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope = {**scope, "state": dict(state or {})}
        await app(scope, receive, send)

    return asgi


@pytest.mark.anyio
async def test_without_the_lifespan_the_dependency_says_what_to_do() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(bus: Annotated[AsyncBus, Depends(get_bus)]) -> None:
        pass

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(RuntimeError, match=r"courier's lifespan has not run: create the app"):
            await client.get("/")


@pytest.mark.anyio
async def test_dispatch_many_runs_in_a_thread_too() -> None:
    bus = slow_bus()
    envelopes = await AsyncBus(bus).dispatch_many([Ping(n=1), Ping(n=2)])
    assert [e.message for e in bus.transport("jobs").sent] == [Ping(n=1), Ping(n=2)]  # type: ignore[attr-defined]
    assert [e.message for e in envelopes] == [Ping(n=1), Ping(n=2)]


class TestWithThePytestPlugin:
    """``courier_bus`` on a FastAPI app: its bus swapped for memory, then given back unclosed."""

    bus = slow_bus()
    handled: ClassVar[list[int]] = []

    @pytest.fixture
    def courier_app(self) -> Bus:
        @self.bus.handler(Ping)
        def ping(message: Ping) -> None:
            self.handled.append(message.n)

        return self.bus

    def test_requests_are_recorded_and_drained(self, courier_bus: Any) -> None:
        with TestClient(ping_app(Courier(self.bus))) as client:
            assert client.post("/ping/3").status_code == 202
        courier_bus.assert_dispatched(Ping, n=3)
        courier_bus.drain()
        assert self.handled == [3]

    def test_the_app_s_own_transport_was_not_closed(self) -> None:
        assert isinstance(self.bus.transport("jobs"), SlowTransport)
        assert not self.bus.transport("jobs").closed  # type: ignore[attr-defined]
