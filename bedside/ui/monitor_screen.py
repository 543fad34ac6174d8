"""The main monitor screen: status bar, alarm banner, waveforms, heart rate, risks, alarm list, keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from bedside.ui.alarm_banner import AlarmBanner
from bedside.ui.alarm_list import AlarmList
from bedside.ui.dialogs import AlarmDetail
from bedside.ui.heart_rate import HeartRate
from bedside.ui.monitor_state import MonitorState
from bedside.ui.risk_panel import RiskPanel
from bedside.ui.status_bar import StatusBar
from bedside.ui.wave_buffer import WaveBuffer
from bedside.ui.waveform import GAINS_MM_PER_MV, WaveformPanel

#: The smallest terminal the screen is laid out for; below it a notice says so (quitting still works).
MIN_SIZE = (80, 24)

#: The lead sets the ``l`` key cycles through (three traces each, like a bedside monitor's pages).
LEAD_SETS: tuple[tuple[str, ...], ...] = (
    ("II", "V1", "V5"), ("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"),
)


def lead_cycle(first: Sequence[str]) -> list[tuple[str, ...]]:
    """The lead sets to cycle through, starting with ``first`` (kept even when it is not a preset)."""
    first = tuple(first)
    return [first] + [s for s in LEAD_SETS if s != first]


class MonitorScreen(Screen):
    """What the nurse watches. Keys act on the engine through the app; nothing here blocks."""

    CSS_PATH = "monitor_screen.tcss"
    BINDINGS = [
        Binding("ctrl+q", "app.quit", "Quit"),  # first, so that a narrow footer still shows it
        Binding("a", "acknowledge", "Acknowledge"),
        Binding("p", "app.pause_audio", "Pause audio"),
        Binding("l", "next_leads", "Leads"),
        Binding("g", "next_gain", "Gain"),
        Binding("h", "app.history", "History"),
        Binding("question_mark,f1", "app.help", "Help", key_display="?"),
    ]

    def __init__(self, state: MonitorState, buffer: WaveBuffer, *, bed_id: str, user: str,
                 leads: Sequence[str], tz: tzinfo | None, gain_mm_per_mv: float | None = None) -> None:
        super().__init__(id="monitor")
        self.state = state
        self.buffer = buffer
        self.bed_id = bed_id
        self.user = user
        self.tz = tz
        self.lead_sets = lead_cycle(leads)
        self.lead_set_index = 0
        self.gains = [gain_mm_per_mv] + [g for g in GAINS_MM_PER_MV if g != gain_mm_per_mv]
        self.gain_index = 0

    def compose(self) -> ComposeResult:
        yield StatusBar(self.state, bed_id=self.bed_id, user=self.user, id="status")
        yield AlarmBanner(self.state, tz=self.tz, id="banner")
        yield Static("", id="too-small")
        with Horizontal(id="main"):
            yield WaveformPanel(self.lead_sets[0], self.buffer, self.state, id="waves")
            with Vertical(id="side"):
                yield HeartRate(self.state, id="hr")
                yield RiskPanel(self.state, id="risks")
        yield AlarmList(self.state, tz=self.tz, id="alarm-list")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(AlarmList).focus()
        self.query_one(HeartRate).set_drawn(self.leads)
        if self.gains[0] is not None:
            self.query_one(WaveformPanel).set_gain(self.gains[0])
        self._check_size()

    def on_resize(self) -> None:
        """Use more space when there is more: a wider side panel, a taller alarm list."""
        self.set_class(self.size.width >= 120, "-wide")
        self.set_class(self.size.height >= 36, "-tall")
        self._check_size()

    def _check_size(self) -> None:
        """Below ``MIN_SIZE`` a notice on top says so and how to quit."""
        w, h = self.app.size  # the terminal, not this screen's region
        small = w < MIN_SIZE[0] or h < MIN_SIZE[1]
        self.set_class(small, "-too-small")
        if small:
            self.query_one("#too-small", Static).update(
                f"Terminal {w}x{h} is too small (need {MIN_SIZE[0]}x{MIN_SIZE[1]}): enlarge it. Ctrl+Q quits.")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on an alarm: show it in full."""
        entry = self.state.alarms.get(str(event.row_key.value))
        if entry is not None:
            self.app.push_screen(AlarmDetail(self.state, entry, self.tz))

    @property
    def leads(self) -> tuple[str, ...]:
        return self.query_one(WaveformPanel).leads

    def update_view(self, changed: set[str]) -> None:
        """Redraw the parts whose data changed ("window", "alarms", "status"); the banner every time."""
        self.query_one(HeartRate).update_view()  # also every frame: a heart rate goes stale with time
        if "window" in changed:
            self.query_one(RiskPanel).refresh()
        if "alarms" in changed:
            self.query_one(AlarmList).update_view()
        elif self.state.any_audio_paused():
            self.query_one(AlarmList).refresh_countdowns()
        self.query_one(AlarmBanner).update_view()
        self.query_one(StatusBar).update_view()

    def show_frame(self, end_index: int) -> None:
        """Scroll the traces to sample ``end_index``."""
        self.query_one(WaveformPanel).show_frame(end_index)

    def action_acknowledge(self) -> None:
        """Acknowledge the alarm under the list's cursor."""
        alarm = self.query_one(AlarmList).selected_alarm()
        if alarm is None:
            self.notify("No alarm to acknowledge", severity="warning")
            return
        self.app.acknowledge(alarm)  # type: ignore[attr-defined]

    def action_next_leads(self) -> None:
        """Show the next set of leads."""
        self.lead_set_index = (self.lead_set_index + 1) % len(self.lead_sets)
        self.query_one(WaveformPanel).set_leads(self.lead_sets[self.lead_set_index])
        self.query_one(HeartRate).set_drawn(self.leads)

    def action_next_gain(self) -> None:
        """Next gain: auto, 10, 20, 5 mm/mV (fixed gains draw a 1 mV calibration pulse and a grid)."""
        self.gain_index = (self.gain_index + 1) % len(self.gains)
        self.query_one(WaveformPanel).set_gain(self.gains[self.gain_index])
