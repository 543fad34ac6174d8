"""Screen states of issue 12 (items 4-7), driven through Textual's Pilot with the scripted events of
``tests/ui_scenes.py``: the failure dialog, stale values after a disconnect, a terminal too small, a
lead off on a lead not drawn, risks near their threshold, fixed gain, HR limits and the audio state.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import ui_scenes as scenes
from ui_pilot import feed, make_app as pilot_app, sync
from bedside.alarm_config import AlarmConfigError, load_alarm_config
from bedside.events import AlarmChange, AlarmKind, AlarmState
from bedside.ui.alarm_banner import AlarmBanner
from bedside.ui.alarm_list import AlarmList
from bedside.ui.app import MonitorApp, run_ui
from bedside.ui.braille import braille_rows
from bedside.ui.dialogs import AlarmDetail, FailureDialog
from bedside.ui.heart_rate import ElectrodeStatus, HeartRate
from bedside.ui.help_screen import HelpScreen
from bedside.ui.risk_panel import RiskPanel
from bedside.ui.status_bar import StatusBar
from bedside.ui.waveform import LeadBar, WaveformPanel, calibration_pulse, fixed_range

pytestmark = pytest.mark.skipif(not (scenes.RECORD.parent / "s0010_re.hea").is_file(),
                                reason=f"real recording not found at {scenes.RECORD} (see ../shared/data/README.md)")


def make_app(**kw) -> tuple[MonitorApp, dict[str, float]]:
    """``ui_pilot.make_app`` with audio on and the packaged alarm settings (HR limits, action texts)."""
    kw.setdefault("audio", True)
    kw.setdefault("alarm_config", load_alarm_config())
    return pilot_app(**kw)


def text_of(widget) -> str:
    return widget.render().plain


def screen_text(app: MonitorApp) -> str:
    """What the terminal shows, as plain text (one line per row)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


def bad_record(tmp_path: Path) -> Path:
    """A record header the engine refuses (0 Hz)."""
    (tmp_path / "s0099.hea").write_text("s0099 12 0 1000\n")
    return tmp_path / "s0099"


@sync
async def test_engine_refusal_shows_a_dialog_with_the_full_reason(tmp_path: Path, caplog) -> None:
    from bedside.records import open_record

    record = bad_record(tmp_path)
    app, _ = make_app(factory=lambda: open_record(record), fps=20)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if isinstance(app.screen, FailureDialog):
                break
        assert isinstance(app.screen, FailureDialog)
        for _ in range(40):  # the dialog is pushed before the compositor has drawn it
            if screen_text(app):
                break
            await pilot.pause(0.05)
        reason = str(app.screen.query_one("#failure-reason").render())
        # the whole reason, not a truncated banner: the value, the file line and what to do
        assert reason.startswith("RecordError: record s0099: sampling frequency '0'") and "Correct the header" in reason
        assert "ENGINE STOPPED" in screen_text(app)  # the banner stays visible above the dialog
        await pilot.press("escape")
        assert not isinstance(app.screen, FailureDialog)
        assert app.state.alarms["engine_failed"].change.state is AlarmState.ACTIVE
        assert app.state.link == "stopped"
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and "sampling frequency '0'" in (app.screen.failure or "")
        # the log line (which the help lists under "Recent log warnings") names the reason, not just "failed"
        assert any("sampling frequency '0'" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
        await pilot.press("ctrl+q")
    assert app.return_value == 1


def test_run_ui_prints_the_failure_after_the_screen_closes(tmp_path: Path, monkeypatch, capsys) -> None:
    from bedside.records import open_record

    record = bad_record(tmp_path)
    original_run = MonitorApp.run

    async def quit_when_failed(pilot) -> None:
        for _ in range(100):
            await pilot.pause(0.05)
            if pilot.app.failure is not None:
                break
        await pilot.press("ctrl+q")

    monkeypatch.setattr(MonitorApp, "run", lambda self: original_run(self, headless=True, size=(80, 24),
                                                                       auto_pilot=quit_when_failed))
    code = run_ui(lambda: open_record(record), bed_id="ICU-07", user="nurse.kim")
    assert code == 1
    err = capsys.readouterr().err
    assert "monitoring stopped" in err and "RecordError: record s0099: sampling frequency '0'" in err


@sync
async def test_values_go_stale_with_their_age_after_a_disconnect() -> None:
    app, wall = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await feed(app, pilot, scenes.normal_scene())
        hr = app.screen.query_one(HeartRate)
        assert str(hr.query_one("#hr-digits").value) == "72"
        assert "all 9 on" in text_of(app.screen.query_one(ElectrodeStatus))
        await feed(app, pilot, [scenes.status("connected")] + scenes.disconnected_scene()[-2:])
        wall["now"] += 10.0  # ten more seconds without a sample
        await feed(app, pilot)
        age = int(app.state.stale_s())
        assert age >= 10
        assert str(hr.query_one("#hr-digits").value) == "---"
        assert f"({age} s)" in str(hr.query_one("#hr-limits").render())
        assert text_of(app.screen.query_one(ElectrodeStatus)) == f"Electrodes: --- ({age} s)"
        assert f"SQI --- ({age} s)" == str(hr.query_one("#hr-quality").render())
        risks = text_of(app.screen.query_one(RiskPanel))
        assert risks.startswith(f"Risk --- ({age} s)") and "0.22" not in risks  # no old risk value left
        assert all(t._labels("")[2][0] == "q---" for t in app.screen.query_one(WaveformPanel).traces())
        assert "disconnected" in text_of(app.screen.query_one(StatusBar))


@sync
async def test_status_bar_follows_the_log_when_the_device_is_back() -> None:
    app, wall = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await feed(app, pilot, scenes.reconnected_scene())
        assert "device_disconnected" not in app.state.alarms  # the log says: reconnected
        assert app.state.status.link == "disconnected"  # ... while the last Status did not say so
        bar = text_of(app.screen.query_one(StatusBar))
        assert "connected" in bar and "disconnected" not in bar
        assert app.state.stale_s() is not None  # still stale: nothing analysed since the loss
        x, fs = scenes.record_signal(2.0)
        fresh = scenes.window(scenes.END_S + 10.0, {"edema": 0.3, "pleural_effusion": 0.2, "cardiomegaly": 0.3}, hr=75.0)
        await feed(app, pilot, scenes.sample_blocks(x, fs, scenes.END_S + 8.0) + [fresh])
        assert app.state.stale_s() is None
        assert str(app.screen.query_one(HeartRate).query_one("#hr-digits").value) == "75"


@sync
async def test_too_small_terminal_says_so_and_quit_stays_reachable() -> None:
    app, _ = make_app()
    async with app.run_test(size=(60, 20)) as pilot:
        await feed(app, pilot, scenes.alarm_scene())
        shown = screen_text(app)
        assert "Terminal 60x20 is too small (need 80x24)" in shown
        assert "^q Quit" in shown.splitlines()[-1]  # the footer's first key
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert "too small" not in screen_text(app)
        await pilot.resize_terminal(60, 20)
        await pilot.pause()
        await pilot.press("ctrl+q")
    assert app.return_value == 0


@sync
async def test_lead_off_on_a_lead_not_drawn_is_marked() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await feed(app, pilot, scenes.undrawn_lead_off_scene())
        bar = app.screen.query_one(LeadBar)
        assert "V3 OFF, not drawn" in text_of(bar)
        assert text_of(app.screen.query_one(ElectrodeStatus)) == "OFF: V3✗ (not drawn)"
        assert str(app.screen.query_one(HeartRate).query_one("#hr-digits").value) == "71"  # lead II is clean
        text, _ = app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL, 80)
        assert "LEAD OFF" in text and "Check electrode V3" in text and len(text) <= 79
        for _ in range(3):  # II V1 V5 -> I II III -> aVR aVL aVF -> V1 V2 V3
            await pilot.press("l")
        await feed(app, pilot)
        assert app.screen.leads == ("V1", "V2", "V3")
        assert "not drawn" not in text_of(bar)
        v3 = app.screen.query_one(WaveformPanel).traces()[2]
        assert ("OFF", "bold reverse red") in v3._labels("")
        assert text_of(app.screen.query_one(ElectrodeStatus)) == "OFF: V3✗"


@pytest.mark.parametrize("edema, mark", [(0.251, "0.251 ≥0.250"), (0.249, "0.249 <0.250"), (0.25, "0.250 ≥0.250")])
@sync
async def test_risk_near_its_threshold_shows_the_side_it_is_on(edema: float, mark: str) -> None:
    app, _ = make_app(thresholds=scenes.NEAR_THRESHOLDS)
    async with app.run_test(size=(80, 24)) as pilot:
        await feed(app, pilot, scenes.near_threshold_scene(edema))
        panel = app.screen.query_one(RiskPanel)
        line = next(li for li in text_of(panel).splitlines() if li.startswith("Edema"))
        assert line.endswith(mark) and len(line) <= panel.size.width
        name_style = panel.render().spans  # the name is reversed while the alarm is on, whatever the value
        assert any(s.style.reverse for s in name_style if panel.render().plain[s.start:s.end].startswith("Edema"))


@sync
async def test_fixed_gain_draws_a_calibration_pulse() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await feed(app, pilot, scenes.normal_scene())
        await pilot.press("g")
        await feed(app, pilot)
        assert "gain 10 mm/mV (g)" in text_of(app.screen.query_one(LeadBar))
        trace = app.screen.query_one(WaveformPanel).traces()[0]
        assert trace._labels("10mm")[1][0] == "10mm"
        assert "10mm" in trace.render().plain
        assert "┆" in trace.render().plain  # the 1 s grid
        first_cells = [row[:3] for row in trace.last_rows]
        assert any(c.strip() for c in first_cells)  # the pulse at the left edge


def test_fixed_gain_is_ten_dots_per_millivolt() -> None:
    lo = np.zeros(40, dtype=np.float32)
    hi = np.zeros(40, dtype=np.float32)
    v_min, v_max = fixed_range(lo, hi, 4 * 4, 10.0)
    calibration_pulse(lo, hi, v_min, v_max)
    rows = braille_rows(lo, hi, 4, v_min, v_max)
    col0 = [(ord(ch) - 0x2800) if ch != " " else 0 for ch in (row[0] for row in rows)]
    dots = sum(bin(b & 0x47).count("1") for b in col0)  # left dot column of cell 0: bits 0,1,2,6
    assert dots == 11  # 1 mV = 10 dot pitches at 10 mm/mV: 11 dots from base to top


@sync
async def test_hr_limits_audio_indicator_and_pause_feedback() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await feed(app, pilot, scenes.normal_scene())
        hr = app.screen.query_one(HeartRate)
        limits = str(hr.query_one("#hr-limits").render())
        assert "hi 120" in limits and "lo  45" in limits  # bedside/alarms.toml
        assert str(hr.query_one("#audio").render()) == "♪ on"
        await pilot.press("p")
        await pilot.pause()
        assert any("Nothing is sounding" in n.message for n in app._notifications)
        await feed(app, pilot, [e for e in scenes.alarm_scene() if isinstance(e, AlarmChange)])
        assert str(hr.query_one("#audio").render()).startswith("♪ paused ")
    app, _ = make_app(audio=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await feed(app, pilot, scenes.normal_scene())
        assert str(app.screen.query_one(HeartRate).query_one("#audio").render()) == "♪ OFF"


@sync
async def test_alarm_detail_and_action_from_the_settings() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await feed(app, pilot, scenes.disconnected_scene())
        table = app.screen.query_one(AlarmList)
        assert str(table.get_cell("device_disconnected", "action")) == "Check cable/device"
        text, _ = app.screen.query_one(AlarmBanner).line(AlarmKind.TECHNICAL, 80)
        assert "DEVICE DISCONNECTED" in text and "Check cable/device" in text and len(text) <= 79
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, AlarmDetail)
        assert "Device disconnected: /dev/ttyUSB0, no frames for 1 s" in app.screen.text()
        await pilot.press("escape")
        assert not isinstance(app.screen, AlarmDetail)


@pytest.mark.skipif("carried_over_from" not in {f.name for f in fields(AlarmChange)},
                    reason="AlarmChange has no carried_over marker yet")
@sync
async def test_carried_over_alarm_is_tagged() -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        c = scenes.change(scenes.END_S, "edema", AlarmState.ACTIVE, None, "Edema risk 0.66 > 0.55")
        from dataclasses import replace
        await feed(app, pilot, scenes.normal_scene() + [replace(c, state=AlarmState.LATCHED, carried_over_from=3)])
        assert "carried over" in str(app.screen.query_one(AlarmList).get_cell("edema", "alarm"))
        assert "(carried over)" in app.screen.query_one(AlarmBanner).line(AlarmKind.PHYSIOLOGICAL)[0]
        await pilot.press("enter")
        await pilot.pause()
        assert "carried over from session 3" in app.screen.text()


def test_action_texts_are_checked(tmp_path: Path) -> None:
    import tomllib

    from bedside.alarm_config import parse_alarm_config

    data = tomllib.loads((Path(__file__).parents[1] / "bedside" / "alarms.toml").read_text())
    config = parse_alarm_config(data, "alarms.toml", "0")
    assert config.actions(("edema",))["edema"] == "Assess patient"
    del data["technical"]["signal_gap"]["action"]
    assert parse_alarm_config(data, "alarms.toml", "0").technical["signal_gap"].action == "Check equipment"
    data["technical"]["lead_off"]["action"] = "Check every electrode of the patient now please"
    with pytest.raises(AlarmConfigError, match=r"\[technical.lead_off\] action: must be a one-line text of 1-28"):
        parse_alarm_config(data, "alarms.toml", "0")


def test_action_names_the_electrode_that_is_off() -> None:
    from bedside.ui.monitor_state import MonitorState

    state = MonitorState()
    state.actions = {"lead_off": "Check electrode {electrodes}"}
    flat = scenes.change(1.0, "lead_off", AlarmState.ACTIVE, None, "Lead off: lead V3 without signal for 5 s",
                         kind=AlarmKind.TECHNICAL)
    assert state.action(flat) == "Check electrode V3"  # named only in the message
    state.apply(scenes.window(10.0, {}, scored=False, reason="lead off",
                              lead_off={e: e in ("LA", "V5") for e in scenes.ELECTRODES}))
    assert state.action(flat) == "Check electrode LA V5"  # the electrodes reported off win
