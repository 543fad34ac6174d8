"""The monitor app driven through Textual's Pilot with fixed event sequences (no engine thread).

The real engine's path (alarm raised, acknowledged and logged) is in ``test_ui_engine.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import ui_scenes as scenes
from ui_pilot import feed, make_app, sync
from bedside.events import AlarmKind, AlarmState, Samples
from bedside.ui.alarm_banner import AlarmBanner
from bedside.ui.alarm_list import AlarmList
from bedside.ui.app import MonitorApp
from bedside.ui.dialogs import FailureDialog
from bedside.ui.heart_rate import HeartRate
from bedside.ui.help_screen import HelpScreen
from bedside.ui.history_screen import HistoryScreen
from bedside.ui.monitor_screen import MonitorScreen
from bedside.ui.status_bar import StatusBar
from bedside.ui.waveform import WaveformPanel

pytestmark = pytest.mark.skipif(not (scenes.RECORD.parent / "s0010_re.hea").is_file(),
                                reason=f"real recording not found at {scenes.RECORD} (see ../shared/data/README.md)")


def cell(app: MonitorApp, alarm: str, column: str) -> str:
    table = app.screen.query_one(AlarmList)
    return str(table.get_cell(alarm, column))


@sync
async def test_lead_switch_changes_the_traces() -> None:
    app, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await feed(app, pilot, scenes.normal_scene())
        panel = app.screen.query_one(WaveformPanel)
        before = [(t.lead, list(t.last_rows)) for t in panel.traces()]
        assert [lead for lead, _ in before] == ["II", "V1", "V5"]
        await pilot.press("l")
        app.tick()
        await pilot.pause()
        after = [(t.lead, list(t.last_rows)) for t in panel.traces()]
        assert [lead for lead, _ in after] == ["I", "II", "III"]
        assert all(a[1] != b[1] for a, b in zip(after, before))  # every trace now draws another lead
        for _ in range(4):
            await pilot.press("l")
        assert panel.leads == ("II", "V1", "V5")  # the cycle comes back to the first set


@sync
async def test_audio_pause_counts_down_with_the_signal() -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await feed(app, pilot, scenes.alarm_scene())
        assert cell(app, "pleural_effusion", "state") == "AUDIO PAUSED 1:50"
        x, fs = scenes.record_signal(20.0)
        more = scenes.sample_blocks(x, fs, scenes.END_S)  # 20 s more signal
        await feed(app, pilot, more)
        assert cell(app, "pleural_effusion", "state") == "AUDIO PAUSED 1:30"
        banner = app.screen.query_one(AlarmBanner)
        text, cls = banner.line(AlarmKind.PHYSIOLOGICAL)
        assert text.startswith("**  PATIENT   EDEMA  ACTIVE") and "+1 more" in text and cls == "banner--medium"


@sync
async def test_device_disconnect_shows_the_technical_alarm_and_blank_traces() -> None:
    app, wall = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await feed(app, pilot, scenes.normal_scene())
        assert app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL)[1] == "banner--quiet"
        events = scenes.disconnected_scene()
        await feed(app, pilot, events[events.index(next(e for e in events[1:] if getattr(e, "link", "") ==
                                                         "disconnected")):])
        wall["now"] = scenes.FROZEN_NOW + 2.0  # 6 s without samples on a live link
        app.tick()
        await pilot.pause()
        text, cls = app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL)
        assert "DEVICE DISCONNECTED" in text and cls == "banner--medium"
        assert "disconnected" in app.screen.query_one(StatusBar).render().plain
        for trace in app.screen.query_one(WaveformPanel).traces():
            assert all(not row.strip() for row in trace.last_rows)  # blank, never a flat line
            assert "NO SIGNAL" in trace.render().plain


@sync
async def test_a_gap_in_the_stream_is_drawn_blank() -> None:
    app, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        x, fs = scenes.record_signal(12.0)
        x[:, int(6 * fs):int(9 * fs)] = np.nan  # 3 s gap as the engine publishes it (NaN)
        await feed(app, pilot, scenes.sample_blocks(x, fs, 0.0))
        trace = app.screen.query_one(WaveformPanel).traces()[0]
        n_cells = len(trace.last_rows[0])  # the trace ends at 12 s, 25 dots/s, 2 dots a cell
        gap = slice(n_cells - int(5.9 * 12.5), n_cells - int(3.1 * 12.5))
        assert all(not row[gap].strip() for row in trace.last_rows)
        assert any(row[n_cells - 30:].strip() for row in trace.last_rows)


@sync
async def test_engine_failure_becomes_a_visible_technical_alarm(tmp_path: Path) -> None:
    from bedside.bundle import load_bundle

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")

    def factory():
        load_bundle(bad)  # refused: the engine cannot be built

    app, _ = make_app(factory=factory, fps=20)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if "engine_failed" in app.state.alarms:
                break
        entry = app.state.alarms["engine_failed"]
        assert entry.change.kind is AlarmKind.TECHNICAL and entry.change.priority.marker == "***"
        assert "model bundle refused" in entry.change.message
        await pilot.pause()
        assert isinstance(app.screen, FailureDialog)  # the reason in a dialog the nurse cannot miss
        assert "model bundle refused (checksum check failed)" in str(app.screen.query_one("#failure-reason").render())
        await pilot.press("escape")  # closes the dialog; the alarm stays
        text, cls = app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL)
        assert "ENGINE STOPPED" in text and cls == "banner--high"
        await pilot.press("a")  # a UI-raised alarm is acknowledged on the screen itself
        await pilot.pause()
        assert app.state.alarms["engine_failed"].change.state is AlarmState.ACKNOWLEDGED
        assert app.is_running
        await pilot.press("ctrl+q")
    assert app.return_value == 1


@sync
async def test_bad_events_never_reach_the_engine_or_take_the_screen_down(caplog) -> None:
    app, _ = make_app()
    caplog.set_level(logging.CRITICAL)
    async with app.run_test(size=(100, 30)) as pilot:
        app.post_event(Samples(t_s=0.0, fs_hz=250.0, first_index=0, data_mv=np.zeros((3, 10), np.float32)))
        assert app.dropped_events == 1  # counted, not raised into the engine's thread
        await feed(app, pilot, ["not an event"])
        assert "ui_error" in app.state.alarms and app.is_running


@sync
async def test_history_and_help_keep_the_alarm_banner_on_screen() -> None:
    app, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await feed(app, pilot, scenes.alarm_scene())
        await pilot.press("h")
        assert isinstance(app.screen, HistoryScreen)
        assert app.screen.query_one("#history-table").row_count == len(app.state.history) == 4
        assert "EDEMA" in app.screen.query_one(AlarmBanner).line(AlarmKind.PHYSIOLOGICAL)[0]
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL)[1] == "banner--low"
        await pilot.press("escape")
        assert isinstance(app.screen, MonitorScreen)


@sync
async def test_every_key_is_in_the_footer() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        from textual.widgets._footer import FooterKey

        keys = list(app.screen.query(FooterKey))
        shown = {(k.key_display, k.description) for k in keys}
        assert {("a", "Acknowledge"), ("p", "Pause audio"), ("l", "Leads"), ("h", "History"), ("?", "Help"),
                ("^q", "Quit")} <= shown
        assert max(k.region.right for k in keys) <= 80  # all of them fit an 80-column terminal


@sync
async def test_heart_rate_is_large_and_goes_blank_when_stale() -> None:
    app, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await feed(app, pilot, scenes.normal_scene())
        digits = app.screen.query_one(HeartRate).query_one("#hr-digits")
        assert digits.value == "72" and digits.size.height == 3
        x, fs = scenes.record_signal(20.0)
        await feed(app, pilot, scenes.sample_blocks(x, fs, scenes.END_S))  # 20 s with no new window
        assert digits.value == "---"


@sync
async def test_log_records_go_to_the_screen_not_over_it() -> None:
    import threading

    from bedside.ui.app import UiLogHandler

    app, _ = make_app()
    logger = logging.getLogger("bedside.test_ui")
    logger.propagate = False
    handler = UiLogHandler(app)
    logger.addHandler(handler)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            t = threading.Thread(target=lambda: [logger.warning("provider skipped: %s", "CUDA"),
                                                 logger.warning("provider skipped: %s", "CUDA"),
                                                 logger.error("database locked")])
            t.start()
            t.join()
            await feed(app, pilot, [])
            assert list(app.log_notes) == ["bedside.test_ui: provider skipped: CUDA",
                                           "bedside.test_ui: database locked"]  # the repeat is shown once
            assert [n.message for n in app._notifications] == ["bedside.test_ui: database locked"]
            await pilot.press("question_mark")
            assert "provider skipped: CUDA" in app.screen.query_one("Markdown")._markdown
    finally:
        logger.removeHandler(handler)
