"""Every wait of the gateway is a ``Gateway`` trait that reaches the parts (gateway/timeouts.py)."""

from __future__ import annotations

import dataclasses

import pytest
from traitlets import TraitError

from cellgate.gateway.app import TIMEOUT_FIELDS, Gateway, assemble, make_app
from cellgate.gateway.store import Store
from cellgate.gateway.timeouts import Timeouts


def test_every_timeout_has_exactly_one_trait_with_its_default() -> None:
    assert sorted(TIMEOUT_FIELDS.values()) == sorted(f.name for f in dataclasses.fields(Timeouts))
    assert Gateway().timeouts() == Timeouts()


def test_a_configured_timeout_reaches_every_part_that_waits() -> None:
    app = Gateway(agent_grace=4.5, explain_timeout=0.5, kernel_start_timeout=7.0, task_poll_interval=0.25,
                  client_ping_interval=5.0)
    timeouts = app.timeouts()
    assert (timeouts.agent_grace, timeouts.explain, timeouts.kernel_start, timeouts.task_poll, timeouts.client_ping) == \
        (4.5, 0.5, 7.0, 0.25, 5.0)
    store = Store("sqlite://")
    try:
        parts = assemble(store, "http://gw.test", timeouts=timeouts)
        for part in (parts.flow, parts.relay, parts.lifecycle, parts.sessions, parts.scripts):
            assert part.timeouts is timeouts
        assert parts.settings()["timeouts"] is timeouts and parts.cells.task_poll == 0.25
        assert make_app(parts).settings["websocket_ping_interval"] == timeouts.client_ping
    finally:
        store.close()


@pytest.mark.parametrize("value", [0, -1.0, 86401])
def test_a_timeout_out_of_range_is_refused_naming_it(value: float) -> None:
    with pytest.raises(TraitError, match=r"Gateway\.agent_grace must be more than 0 and at most 86400 seconds"):
        Gateway(agent_grace=value)


def test_the_store_settings_reach_the_store_and_the_recorders() -> None:
    app = Gateway(store_timeout=3.0, store_pool_timeout=4.0, store_retry_max=2.0, recorder_buffer_bytes=2 << 20,
                  sweep_interval=5.0, sweep_margin=7.0)
    timeouts = app.timeouts()
    store = Store("sqlite://", timeouts=timeouts)
    try:
        assert store.timeouts.store_call == 3.0
        parts = assemble(store, "http://gw.test", timeouts=timeouts, recorder_bytes=app.recorder_buffer_bytes)
        assert parts.relay.recorder_bytes == 2 << 20 and parts.sweeper.timeouts.sweep_margin == 7.0
    finally:
        store.close()


def test_a_recorder_buffer_under_one_mib_is_refused_naming_it() -> None:
    with pytest.raises(TraitError, match=r"Gateway\.recorder_buffer_bytes must be at least 1048576"):
        Gateway(recorder_buffer_bytes=1000)
