"""The agent ⇄ gateway protocol in code: one typed frame per message type (docs/agent-protocol.md).

Both sides build what they send with these constructors (``Frame.frame()`` is the JSON object,
``Frame.to_json()`` its text) and read what they receive with :func:`parse`, which checks the
type, the direction (``sender``), the required fields and every field's JSON type, and raises
:class:`ProtocolError` naming the frame type and the field. A frame that fails is refused as a
whole: nothing of it is applied. Unknown extra fields are ignored (an older peer may meet a newer
one).

Standard library only: the gateway (``cellgate.gateway``) and the agent (``cellgate.agent``)
both import it, and it imports neither.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self

#: who sends a frame
AGENT = "agent"
GATEWAY = "gateway"
#: the ``error`` code of a frame refused as invalid (the connection stays open)
INVALID_FRAME = 4400
#: the ``error``/close code of a connection whose first frame is not a valid ``hello``
CLOSE_NOT_HELLO = 4000
#: Jupyter channels: all of them from the kernel (agent → gateway); towards the kernel, not iopub
CHANNELS = ("iopub", "shell", "control", "stdin")
CHANNELS_TO_KERNEL = ("shell", "control", "stdin")
#: Jupyter iopub messages that are a cell's output (what both sides count against a task's output cap)
OUTPUT_TYPES = frozenset({"stream", "display_data", "execute_result", "error", "update_display_data", "clear_output"})
#: ``kernel_status.state``
KERNEL_STATES = ("restarting", "dead")
#: ``hello.tasks[].state``: the request reached the kernel and no end is known yet, or it ended
TASK_STATES = ("started", "ended")


class ProtocolError(ValueError):
    """A frame that is not valid protocol. ``message`` names the frame type and the field;
    ``req_id`` is the frame's own (when it had a string one), so a request can be answered."""

    def __init__(self, message: str, *, frame_type: str | None = None, field: str | None = None,
                 req_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.frame_type = frame_type
        self.field = field
        self.req_id = req_id


class _Bad(Exception):
    """A field check failed: ``path`` below the field (``[1].kind``) and what was wrong."""

    def __init__(self, what: str, path: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.path = path


Check = Callable[[Any], Any]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _want(expected: str, value: Any) -> _Bad:
    return _Bad(f"must be {expected}, got {_json_type(value)}")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _want("a string", value)
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise _want("a non-empty string", value)
    if not value:
        raise _Bad("must not be empty")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _want("an integer", value)
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _want("a number", value)
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _want("a boolean", value)
    return value


def _list_of(check: Check) -> Check:
    def _list(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _want("an array", value)
        out = []
        for i, item in enumerate(value):
            try:
                out.append(check(item))
            except _Bad as exc:
                raise _Bad(exc.what, f"[{i}]{exc.path}") from None
        return out
    _list.part = getattr(check, "part", None)  # type: ignore[attr-defined]
    return _list


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _want("an object", value)
    for key, item in value.items():
        if not isinstance(item, str):
            raise _Bad(f"must be a string, got {_json_type(item)}", f".{key}")
    return value


def _one_of(*allowed: str) -> Check:
    def _choice(value: Any) -> str:
        if value not in allowed:
            raise _Bad(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        chosen: str = value  # one of the allowed strings
        return chosen
    return _choice


def _jupyter(value: Any) -> dict[str, Any]:
    """A Jupyter message as JSON: ``header`` with ``msg_id`` and ``msg_type``; ``parent_header``,
    ``metadata`` and ``content`` objects when present. Passed on as is (not copied)."""
    if not isinstance(value, dict):
        raise _want("an object", value)
    header = value.get("header")
    if not isinstance(header, dict):
        raise _Bad(f"must be an object, got {_json_type(header)}", ".header")
    for key in ("msg_id", "msg_type"):
        if not isinstance(header.get(key), str):
            raise _Bad(f"must be a string, got {_json_type(header.get(key))}", f".header.{key}")
    for key in ("parent_header", "metadata", "content"):
        if key in value and not isinstance(value[key], dict):
            raise _Bad(f"must be an object, got {_json_type(value[key])}", f".{key}")
    return value


def _part(cls: type[_Part]) -> Check:
    def _nested(value: Any) -> _Part:
        if not isinstance(value, dict):
            raise _want("an object", value)
        try:
            return cls._from(value, None)
        except _Bad as exc:
            raise _Bad(exc.what, f".{exc.path}") from None
    _nested.part = cls  # type: ignore[attr-defined]
    return _nested


def _f(check: Check, *, required: bool | None = None, default: Any = MISSING,
       factory: Any = MISSING, omit_none: bool = False, sender: str | None = None) -> Any:
    """A frame field: its check, whether the frame must carry it (default: when it has no
    default), whether ``None`` is left out of the frame, and (``sender``) the one side that sends it."""
    if required is None:
        required = default is MISSING and factory is MISSING
    metadata = {"check": check, "required": required, "omit_none": omit_none, "sender": sender,
                "part": getattr(check, "part", None)}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _encode(value: Any) -> Any:
    if isinstance(value, _Part):
        return value.to_dict()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _read(cls: type, data: Mapping[str, Any], sender: str | None) -> dict[str, Any]:
    """The constructor arguments for ``cls`` out of ``data``; raises :class:`_Bad` with the field."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        md = f.metadata
        if md["sender"] is not None and sender is not None and md["sender"] != sender:
            continue  # not this side's to send: ignored like any unknown field
        if f.name not in data or (data[f.name] is None and not md["required"]):  # null: as if left out
            if md["required"]:
                raise _Bad("is missing", f.name)
            continue
        try:
            kwargs[f.name] = md["check"](data[f.name])
        except _Bad as exc:
            raise _Bad(exc.what, f.name + exc.path) from None
    return kwargs


class _Part:
    """A nested object of a frame (a hello's target, a welcome's refusal, kernel_start's limits)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata["omit_none"]:
                continue
            out[f.name] = _encode(value)
        return out

    @classmethod
    def _from(cls, data: Mapping[str, Any], sender: str | None) -> Self:
        return cls(**_read(cls, data, sender))


class Frame(_Part):
    """A protocol frame: ``type`` names it on the wire."""

    __slots__ = ()
    type: ClassVar[str]

    def frame(self) -> dict[str, Any]:
        """The JSON object sent on the wire."""
        return {"type": self.type, **self.to_dict()}

    def to_json(self, **dumps: Any) -> str:
        return json.dumps(self.frame(), **dumps)


# ------------------------------------------------------------------------------- nested parts

@dataclass(frozen=True, slots=True)
class TargetAnnouncement(_Part):
    """A target an agent announces in ``hello`` (no secret)."""
    name: str = _f(_name)
    kind: str = _f(_str)
    language: str = _f(_str, default="")
    display_name: str = _f(_str, default="")
    dialect: str | None = _f(_str, default=None)


@dataclass(frozen=True, slots=True)
class Refusal(_Part):
    """A target the gateway refused in ``welcome``, and why."""
    target: str = _f(_str)
    reason: str = _f(_str)


@dataclass(frozen=True, slots=True)
class Limits(_Part):
    """The target policy's limits a ``kernel_start`` carries (they only tighten the agent's own)."""
    max_rows: int | None = _f(_int, default=None)
    timeout: float | None = _f(_number, default=None)


@dataclass(frozen=True, slots=True)
class TaskReport(_Part):
    """A task the agent's journal knows of and whose end the gateway has not acknowledged (``hello``)."""
    task_id: int = _f(_int)
    kernel_id: str = _f(_str)
    state: str = _f(_one_of(*TASK_STATES))
    #: when the request was handed to the kernel (seconds since the epoch)
    started_at: float = _f(_number)
    #: the execute_reply's status (``ok``, ``error``, ``aborted``) when ended
    status: str | None = _f(_str, default=None)
    ename: str | None = _f(_str, default=None)
    evalue: str | None = _f(_str, default=None)
    ended_at: float | None = _f(_number, default=None)
    #: the highest output ``seq`` the agent numbered for the task
    last_seq: int = _f(_int, default=0)
    #: frames of the task the agent still holds unacknowledged and resends after ``welcome``
    unacked: int = _f(_int, default=0)
    #: the request's ``msg_id`` (its frames' parent): a restarted gateway tracks the task again by it
    msg_id: str | None = _f(_str, default=None, omit_none=True)


# ------------------------------------------------------------------------- agent → gateway

@dataclass(frozen=True, slots=True)
class Hello(Frame):
    type: ClassVar[str] = "hello"
    agent_id: str = _f(_str)
    version: str = _f(_str, default="")
    tags: list[str] = _f(_list_of(_str), factory=list)
    targets: list[TargetAnnouncement] = _f(_list_of(_part(TargetAnnouncement)), factory=list)
    kernels: list[str] = _f(_list_of(_str), factory=list)
    #: hosted kernels that died (their tasks end ``failed``; a restart revives them)
    dead_kernels: list[str] = _f(_list_of(_str), factory=list)
    tasks: list[TaskReport] = _f(_list_of(_part(TaskReport)), factory=list)


@dataclass(frozen=True, slots=True)
class Reply(Frame):
    type: ClassVar[str] = "reply"
    req_id: str = _f(_name)
    ok: bool = _f(_bool)
    error: str | None = _f(_str, default=None, omit_none=True)
    #: explain: one estimate of affected rows per statement
    rows: list[float] | None = _f(_list_of(_number), default=None, omit_none=True)


@dataclass(frozen=True, slots=True)
class KernelStatus(Frame):
    type: ClassVar[str] = "kernel_status"
    kernel_id: str = _f(_str)
    state: str = _f(_one_of(*KERNEL_STATES))
    reason: str | None = _f(_str, default=None, omit_none=True)


@dataclass(frozen=True, slots=True)
class Pong(Frame):
    type: ClassVar[str] = "pong"
    ts: float | None = _f(_number, default=None)


# ------------------------------------------------------------------------ both directions

@dataclass(frozen=True, slots=True)
class KernelMsg(Frame):
    """A Jupyter message from the kernel (agent → gateway, any channel) or to it (gateway →
    agent: shell, control, stdin; ``task_id`` and ``max_bytes`` on an approved ``execute_request``).
    From the agent, a message parented to a task's request carries ``task_id`` and ``seq`` (1, 2, …
    per task), and is kept by the agent until an ``ack`` covers it."""
    type: ClassVar[str] = "kernel_msg"
    kernel_id: str = _f(_str)
    channel: str = _f(_one_of(*CHANNELS))
    msg: dict[str, Any] = _f(_jupyter)
    task_id: int | None = _f(_int, default=None, omit_none=True)
    seq: int | None = _f(_int, default=None, omit_none=True, sender=AGENT)
    #: the task's output cap in bytes, enforced by the agent before it sends
    max_bytes: int | None = _f(_int, default=None, omit_none=True, sender=GATEWAY)


# ------------------------------------------------------------------------- gateway → agent

@dataclass(frozen=True, slots=True)
class Welcome(Frame):
    type: ClassVar[str] = "welcome"
    agent_id: str = _f(_str)
    targets: list[str] = _f(_list_of(_str))
    refused: list[Refusal] = _f(_list_of(_part(Refusal)), factory=list)
    #: the hosted kernels the gateway adopted; None (left out): keep them all
    kernels: list[str] | None = _f(_list_of(_str), default=None, omit_none=True)


@dataclass(frozen=True, slots=True)
class Error(Frame):
    type: ClassVar[str] = "error"
    code: int = _f(_int)
    message: str = _f(_str)


@dataclass(frozen=True, slots=True)
class Ping(Frame):
    type: ClassVar[str] = "ping"
    ts: float = _f(_number)


@dataclass(frozen=True, slots=True)
class Ack(Frame):
    """Every frame of ``task_id`` up to ``seq`` is stored; ``ended``: so is the task's end (the agent
    forgets the task)."""
    type: ClassVar[str] = "ack"
    task_id: int = _f(_int)
    seq: int = _f(_int)
    ended: bool = _f(_bool, default=False)


# Requests: each carries a ``req_id`` (set by the gateway's ``AgentConnection.request``, last on
# the wire as always) and is answered by a ``reply`` with it.

@dataclass(frozen=True, slots=True)
class KernelStart(Frame):
    type: ClassVar[str] = "kernel_start"
    kernel_id: str = _f(_str)
    target: str = _f(_str)
    env: dict[str, str] = _f(_str_map, factory=dict)
    limits: Limits | None = _f(_part(Limits), default=None, omit_none=True)
    req_id: str = _f(_name, default="", required=True)


@dataclass(frozen=True, slots=True)
class Explain(Frame):
    type: ClassVar[str] = "explain"
    target: str = _f(_str)
    statements: list[str] = _f(_list_of(_str))
    req_id: str = _f(_name, default="", required=True)


@dataclass(frozen=True, slots=True)
class KernelStop(Frame):
    type: ClassVar[str] = "kernel_stop"
    kernel_id: str = _f(_str)
    req_id: str = _f(_name, default="", required=True)


@dataclass(frozen=True, slots=True)
class KernelInterrupt(Frame):
    type: ClassVar[str] = "kernel_interrupt"
    kernel_id: str = _f(_str)
    req_id: str = _f(_name, default="", required=True)


@dataclass(frozen=True, slots=True)
class KernelRestart(Frame):
    type: ClassVar[str] = "kernel_restart"
    kernel_id: str = _f(_str)
    req_id: str = _f(_name, default="", required=True)


Request = KernelStart | Explain | KernelStop | KernelInterrupt | KernelRestart

#: the frame types each side may send (docs/agent-protocol.md, one table each)
AGENT_SENDS: dict[str, type[Frame]] = {c.type: c for c in (Hello, Reply, KernelMsg, KernelStatus, Pong)}
GATEWAY_SENDS: dict[str, type[Frame]] = {c.type: c for c in (
    Welcome, Error, KernelStart, Explain, KernelStop, KernelInterrupt, KernelRestart, KernelMsg, Ping, Ack)}
SENDS = {AGENT: AGENT_SENDS, GATEWAY: GATEWAY_SENDS}
FRAMES: dict[str, type[Frame]] = {**AGENT_SENDS, **GATEWAY_SENDS}
REQUESTS: frozenset[str] = frozenset(c.type for c in (KernelStart, Explain, KernelStop, KernelInterrupt, KernelRestart))


def fields_of(cls: type[_Part], sender: str | None = None) -> list[str]:
    """The wire field names of a frame (or part) as ``sender`` sends it, in wire order."""
    return [f.name for f in fields(cls)  # type: ignore[arg-type]
            if f.metadata["sender"] is None or sender is None or f.metadata["sender"] == sender]


def part_of(cls: type[_Part], name: str) -> type[_Part] | None:
    """The nested object type of field ``name`` (a hello's ``targets`` → TargetAnnouncement), if any."""
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name == name:
            part: type[_Part] | None = f.metadata["part"]
            return part
    return None


def parse(raw: str | bytes | Mapping[str, Any], sender: str | None = None) -> Frame:
    """The typed frame of ``raw`` (JSON text or an already decoded object).

    ``sender`` (:data:`AGENT` or :data:`GATEWAY`): the side it came from; a type that side may
    not send is refused, and so are fields only the other side sends (ignored). Raises
    :class:`ProtocolError` for text that is not JSON, anything but an object, a missing or
    unknown type, and a missing or mistyped field; the message names the frame type and field.
    """
    if isinstance(raw, (str, bytes, bytearray)):
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"the frame is not JSON ({exc})") from None
        except RecursionError:
            raise ProtocolError("the frame is nested too deep to be read") from None
    else:
        data = raw
    if not isinstance(data, Mapping):
        raise ProtocolError(f"a frame must be a JSON object, got {_json_type(data)}")
    req_id = data.get("req_id") if isinstance(data.get("req_id"), str) and data.get("req_id") else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(f"the frame has no \"type\" (must be a string, got {_json_type(kind)})",
                            field="type", req_id=req_id)
    table = FRAMES if sender is None else SENDS[sender]
    cls = table.get(kind)
    if cls is None:
        if kind in FRAMES:
            raise ProtocolError(f"{kind} frame: the {sender} may not send it", frame_type=kind, field="type",
                                req_id=req_id)
        raise ProtocolError(f"unknown frame type {kind!r}", frame_type=kind, field="type", req_id=req_id)
    try:
        kwargs = _read(cls, data, sender)
    except _Bad as exc:
        raise ProtocolError(f"{kind} frame: field {exc.path!r} {exc.what}", frame_type=kind,
                            field=exc.path, req_id=req_id) from None
    if isinstance(cls, type) and issubclass(cls, KernelMsg) and sender == GATEWAY \
            and kwargs["channel"] not in CHANNELS_TO_KERNEL:
        raise ProtocolError(f"kernel_msg frame: field 'channel' must be one of "
                            f"{', '.join(map(repr, CHANNELS_TO_KERNEL))} towards a kernel, got {kwargs['channel']!r}",
                            frame_type=kind, field="channel", req_id=req_id)
    return cls(**kwargs)
