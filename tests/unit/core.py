"""Driving the reconciler (registrar.reconciler) by hand: messages in, effects out, on a clock the test sets.

The requests it asks for wait in ``out`` until the test answers them (``answer``), from Docker and Consul
in memory; so a race is an ordering the test writes down, not a thread that happens to lose.
"""

from __future__ import annotations

from typing import Any, TypeVar

from registrar.effects import Effect, Inspect, ListContainers, ReadAgent, Send
from registrar.messages import AgentRead, Inspected, Listed, Message, Written
from registrar.model import Deregister, DockerEvent, HealthUpdate, Maintenance, Register, TtlPass, Write
from registrar.observe import observed_from_inspect
from registrar.reconciler import Reconciler, Timing
from registrar.settings import Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker

S = Settings(hostname="vm")
Request = Inspect | ListContainers | ReadAgent | Send
R = TypeVar("R", Inspect, ListContainers, ReadAgent, Send)


class Driven:
    """A reconciler at time ``now``, its requests out (``out``), Docker and Consul in memory to answer them."""

    def __init__(self, *containers: dict[str, Any], settings: Settings = S, timing: Timing | None = None) -> None:
        self.docker, self.consul = MemoryDocker(*containers), MemoryConsul()
        self.now = 0.0
        self.core = Reconciler(settings, timing or Timing(), self.now)
        self.out: list[Request] = []
        self.effects: list[Effect] = []
        """Every effect returned so far."""

    def _keep(self, effects: list[Effect]) -> list[Effect]:
        self.effects += effects
        self.out += [e for e in effects if isinstance(e, Inspect | ListContainers | ReadAgent | Send)]
        return effects

    def step(self, *messages: Message, at: float | None = None) -> list[Effect]:
        """The loop's turn at ``at`` (default: now), with these messages."""
        self.now = self.now if at is None else at
        return self._keep(self.core.step(list(messages), self.now))

    def handle(self, message: Message) -> list[Effect]:
        """A message that succeeded, taken where it arrived."""
        return self._keep(self.core.handle(message, self.now))

    def event(self, action: str, container_id: str, exit_code: int | None = None, signal: str = "") -> list[Effect]:
        name = str(self.docker.containers.get(container_id, {}).get("Name", "")).lstrip("/")
        return self.handle(DockerEvent(action, container_id, name, exit_code, signal))

    def take(self, kind: type[R], key: str = "") -> R:
        """Take the first request out of this kind (about ``key``: a container or service ID)."""
        for request in self.out:
            if isinstance(request, kind) and (not key or key in _about(request)):
                assert isinstance(request, kind)
                self.out.remove(request)
                return request
        raise AssertionError(f"no {kind.__name__} {key} out: {self.out}")

    def answer(self, kind: type[R], key: str = "") -> list[Effect]:
        """Answer the first request out of this kind (about ``key``) now, from Docker and Consul in memory."""
        return self.handle(self.result(self.take(kind, key)))

    def result(self, request: Request) -> Message:
        """What the request gets from Docker or Consul now (a write is made on the memory agent)."""
        match request:
            case Inspect(container_id=cid, fingerprint=fingerprint):
                c = self.docker.inspect(cid)
                return Inspected(cid, observed_from_inspect(c, self.core.settings, fingerprint) if c else None)
            case ListContainers():
                return Listed(self.docker.list_containers())
            case ReadAgent(skip_digest=skip):
                digest, services = self.consul.read_services(skip)
                return AgentRead(services, digest)
            case Send(write=write):
                _apply(self.consul, write)
                return Written(write)
        raise AssertionError(request)

    def answer_all(self) -> None:
        """Answer every request out, and those they lead to, until none is out."""
        while self.out:
            self.handle(self.result(self.out.pop(0)))

    def writes(self, since: int = 0) -> list[Write]:
        """The writes asked for, from the ``since``-th effect on."""
        return [e.write for e in self.effects[since:] if isinstance(e, Send)]


def _about(request: Request) -> str:
    match request:
        case Inspect(container_id=cid):
            return cid
        case Send(write=write):
            return repr(write)
    return ""


def _apply(consul: MemoryConsul, write: Write) -> None:
    match write:
        case Register(service=s):
            consul.register(s)
        case Deregister(service_id=service_id):
            consul.deregister(service_id)
        case Maintenance(service_id=service_id, enable=enable):
            consul.maintenance(service_id, enable)
        case TtlPass(check_id=check_id):
            consul.pass_ttl(check_id)
        case HealthUpdate(health=health):
            consul.set_health(health)


def started(*containers: dict[str, Any], settings: Settings = S) -> Driven:
    """A reconciler whose first full reconcile is done: these containers registered, nothing out."""
    driven = Driven(*containers, settings=settings)
    driven.step()
    driven.answer_all()
    assert driven.core.ready and not driven.out
    return driven
