"""The HL7 sender against a real asyncio MLLP server that answers AA/AE/AR, drops connections and goes
down and up: everything arrives, is accepted once, in outbox order; central_unreachable; restarts."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from bedside.alarm_config import load_alarm_config
from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, WindowResult
from bedside.hl7 import messages, mllp
from bedside.hl7.outbox import Outbox
from bedside.hl7.sender import Sender, SenderSettings
from bedside.hl7.settings import Hl7Settings, OutboxSettings
from bedside.replay import ReplayOptions, build_replay_engine
from bedside.store import Store
from tests.engine_helpers import wait_until

Policy = Callable[[str, int], "str | None"]  # (message, times this control ID was seen) -> AA/AE/AR, None: hang up


def msh(text: str, field: int) -> str:
    return text.split("\r", 1)[0].split("|")[field - 1]


class AckServer:
    """A real MLLP server (asyncio streams, its own loop in a thread) acting as the central station."""

    def __init__(self, policy: Policy | None = None):
        self.policy: Policy = policy or (lambda text, n: "AA")
        self.received: list[str] = []  # every message received, retries included
        self.accepted: list[str] = []  # the messages answered AA, in the order answered, each once (MSH-10)
        self.accepted_ids: set[str] = set()
        self.duplicates: list[str] = []  # accepted again after an AA that never reached the bed
        self.seen: Counter[str] = Counter()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.up()

    def _call(self, coro):  # run on the server's loop, wait for the result
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                text = await mllp.read_message(reader)
                if text is None:
                    break
                self.received.append(text)
                control_id = msh(text, 10)
                self.seen[control_id] += 1
                code = self.policy(text, self.seen[control_id])
                if code is None:
                    break  # hang up without an ACK
                if code == "AA" and control_id in self.accepted_ids:
                    self.duplicates.append(text)  # its AA was lost (we went down): the central drops it
                elif code == "AA":
                    self.accepted.append(text)
                    self.accepted_ids.add(control_id)
                await mllp.write_message(writer, messages.ack(text, code, "" if code == "AA" else "test says no"))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _up(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _down(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.close()
            await self.server.wait_closed()
            self.server = None

    def up(self) -> None:
        self._call(self._up())

    def down(self) -> None:
        self._call(self._down())

    def close(self) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def central():
    server = AckServer()
    yield server
    server.close()




def outbox_rows(db: Path) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("select id, control_id, kind from hl7_outbox order by id").fetchall()
    finally:
        conn.close()


def fill_outbox(db: Path, bed: str = "bed-1", windows: int = 12, max_messages: int = 20_000) -> list[str]:
    """A session of ``windows`` windows and a transition every 3rd; returns the control IDs in outbox order."""
    store = Store(db, outbox=Outbox(thresholds={"edema": 0.5}, validated={"edema": True},
                                    settings=OutboxSettings(max_messages=max_messages)))
    sid = store.open_session(bed_id=bed, source_kind="live", device="test", fs_hz=500.0, bundle_sha256=None,
                             bundle_version=None, provider=None, hop_s=5.0, config_sha256="x", resume_key=None,
                             engine_version="test", wall_time=time.time())
    seq = 0
    for i in range(windows):
        w = WindowResult(t_s=10.0 + 5 * i, index=i, scored=True, reason="", smoothed={"edema": 0.1 * (i % 10)},
                         hr_bpm=70.0, quality={"I": 0.9})
        changes = []
        if i % 3 == 2:
            seq += 1
            changes.append((i, AlarmChange(t_s=w.t_s, wall_time=time.time(), alarm="edema",
                                           kind=AlarmKind.PHYSIOLOGICAL, priority=Priority.MEDIUM,
                                           state=AlarmState.ACTIVE if seq % 2 else AlarmState.CLEARED,
                                           previous=None if seq % 2 else AlarmState.ACTIVE,
                                           message=f"Edema risk {seq}", seq=seq)))
        store.commit(sid, [w], time.time(), changes, [])
    store.close()
    return [r[1] for r in outbox_rows(db)]


def fast(server: AckServer, **kw) -> SenderSettings:
    return SenderSettings(host="127.0.0.1", port=server.port, backoff_s=0.01, max_backoff_s=0.05, timeout_s=2.0,
                          **kw)


def test_everything_arrives_once_in_order_through_ae_ar_hangups_and_an_outage(tmp_path, central):
    db = tmp_path / "bed.db"
    ids = fill_outbox(db, windows=30)
    assert len(ids) == 40
    # the first try of every 4th message is answered AE, of every 5th AR, of every 7th by hanging up
    order = {cid: i for i, cid in enumerate(ids)}

    def policy(text: str, n: int) -> str | None:
        i = order[msh(text, 10)]
        if n == 1 and i % 7 == 3:
            return None
        if n == 1 and i % 4 == 1:
            return "AE"
        if n == 1 and i % 5 == 2:
            return "AR"
        return "AA"

    central.policy = policy
    central.down()  # the central is down when the bed starts
    sender = Sender(db, "bed-1", fast(central)).start()
    try:
        assert wait_until(lambda: sender.failures >= 3)
        assert central.received == []
        central.up()
        assert wait_until(lambda: len(central.accepted) >= 15)
        central.down()  # and down again in the middle
        time.sleep(0.2)
        central.up()
        assert wait_until(lambda: outbox_rows(db) == [])
    finally:
        sender.stop()
    accepted = [msh(t, 10) for t in central.accepted]
    assert accepted == ids  # every message accepted, once after de-duplication by MSH-10, in outbox order
    assert len(central.duplicates) <= 1  # at most the one whose AA was in flight when the central went down
    seqs = [int(msh(t, 13)) for t in central.accepted]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    retried = {cid for cid, n in central.seen.items() if n > 1}
    assert retried and retried <= set(ids)  # AE, AR and hang-ups were sent again (same MSH-10)
    conn = sqlite3.connect(db)
    assert conn.execute("select delivered from hl7_outbox_state where bed_id = 'bed-1'").fetchone()[0] == 40


def test_a_message_is_kept_until_aa_and_retried_with_capped_backoff(tmp_path, central):
    db = tmp_path / "bed.db"
    ids = fill_outbox(db, windows=3)
    central.policy = lambda text, n: "AE"
    sender = Sender(db, "bed-1", fast(central)).start()
    try:
        assert wait_until(lambda: central.seen[ids[0]] >= 5)
        conn = sqlite3.connect(db)
        attempts, error = conn.execute("select attempts, last_error from hl7_outbox where control_id = ?",
                                       [ids[0]]).fetchone()
        assert attempts >= 4 and "AE" in error
        assert set(central.seen) == {ids[0]}  # never skips ahead of a message the central refused
        assert len(outbox_rows(db)) == len(ids)
        central.policy = lambda text, n: "AA"
        assert wait_until(lambda: outbox_rows(db) == [])
    finally:
        sender.stop()
    assert [msh(t, 10) for t in central.accepted] == ids


def test_central_unreachable_before_the_bound_and_observations_dropped_first(tmp_path, central):
    db = tmp_path / "bed.db"
    central.down()
    sender = Sender(db, "bed-1", fast(central, unreachable_after_s=0.2), OutboxSettings(max_messages=12))
    assert sender.condition() == {"central_unreachable": (False, "")}
    ids = fill_outbox(db, windows=15, max_messages=12)
    kinds = Counter(r[2] for r in outbox_rows(db))
    assert kinds == {"alarm": 5, "observation": 7}  # 20 written, 8 oldest observations dropped
    conn = sqlite3.connect(db)
    assert conn.execute("select dropped_observations from hl7_outbox_state").fetchone()[0] == 8
    sender.start()
    try:
        assert wait_until(lambda: sender.condition()["central_unreachable"][0])
        present, detail = sender.condition()["central_unreachable"]
        assert f"127.0.0.1:{central.port}" in detail and "12" in detail
        central.up()
        assert wait_until(lambda: outbox_rows(db) == [])
        assert sender.condition() == {"central_unreachable": (False, "")}
    finally:
        sender.stop()
    assert [msh(t, 10) for t in central.accepted] == ids
    alarms = [messages.parse(t).report for t in central.accepted if msh(t, 9).startswith("ORU^R40")]
    assert [a.seq for a in alarms] == [1, 2, 3, 4, 5]  # no alarm transition was dropped


def test_a_restarted_bed_continues_where_it_stopped(tmp_path, central):
    db = tmp_path / "bed.db"
    ids = fill_outbox(db, windows=20)
    stop_after = 8
    central.policy = lambda text, n: "AA" if len(central.accepted) < stop_after else None
    first = Sender(db, "bed-1", fast(central)).start()
    assert wait_until(lambda: len(central.accepted) == stop_after and first.failures > 0)
    first.stop()  # the bed stops (a kill -9 leaves the same rows: each delete is its own transaction)
    more = fill_outbox(db, windows=3)[len(ids) - stop_after:]  # a new session after the restart
    central.policy = lambda text, n: "AA"
    second = Sender(db, "bed-1", fast(central)).start()
    try:
        assert wait_until(lambda: outbox_rows(db) == [])
    finally:
        second.stop()
    assert [msh(t, 10) for t in central.accepted] == ids + more
    seqs = [int(msh(t, 13)) for t in central.accepted]
    assert seqs == sorted(seqs)


def test_a_replay_with_hl7_delivers_every_window_and_transition(tmp_path, central, bundle_path, step_record):
    db = tmp_path / "replay.db"
    engine = build_replay_engine(ReplayOptions(record=str(step_record), model=str(bundle_path), db=str(db),
                                               bed_id="bed-9", hl7=Hl7Settings("127.0.0.1", central.port, drain_s=60)))
    summary = engine.run()
    engine.close()  # drains the outbox
    assert outbox_rows(db) == []
    reports = [messages.parse(t).report for t in central.accepted]
    windows = [r for r in reports if hasattr(r, "window_index")]
    alarms = [r for r in reports if hasattr(r, "alarm")]
    assert [w.window_index for w in windows] == list(range(summary.windows))
    assert [(a.alarm, a.state, a.seq) for a in alarms] == [(c.alarm, c.state.value, c.seq) for c in summary.transitions]
    assert any(a.alarm == "edema" and a.state == "active" for a in alarms)
    assert {r.bed_id for r in reports} == {"bed-9"}


def test_a_replay_raises_central_unreachable_and_keeps_everything(tmp_path, central, bundle_path, step_record):
    db = tmp_path / "replay.db"
    alarms = tmp_path / "alarms.toml"
    text = (Path(load_alarm_config.__code__.co_filename).parent / "alarms.toml").read_text()
    alarms.write_text(re.sub(r"(\[technical\.central_unreachable\][^\[]*?)after_s = [0-9.]+", r"\1after_s = 0.0", text))
    assert load_alarm_config(str(alarms)).technical["central_unreachable"].after_s == 0.0
    central.down()
    engine = build_replay_engine(ReplayOptions(record=str(step_record), model=str(bundle_path), db=str(db),
                                               bed_id="bed-3", alarms=str(alarms), speed=60.0,
                                               hl7=Hl7Settings("127.0.0.1", central.port, drain_s=60,
                                                               backoff_s=0.05, max_backoff_s=0.1)))
    summary = engine.run()
    raised = [c for c in summary.transitions if c.alarm == "central_unreachable"]
    assert raised and raised[0].state == AlarmState.ACTIVE and raised[0].kind == AlarmKind.TECHNICAL
    central.up()
    engine.close()
    assert outbox_rows(db) == []
    reports = [messages.parse(t).report for t in central.accepted]
    assert [r.seq for r in reports if hasattr(r, "alarm")] == [c.seq for c in summary.transitions]
    assert any(getattr(r, "alarm", "") == "central_unreachable" for r in reports)
