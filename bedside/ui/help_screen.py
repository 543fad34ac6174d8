"""Help: the keys, what the markers and colours mean, the alarm states, and how gaps are drawn."""

from __future__ import annotations

from datetime import tzinfo

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Markdown

from bedside.ui.alarm_banner import AlarmBanner
from bedside.ui.monitor_state import MonitorState
from bedside.ui.status_bar import StatusBar

HELP_TEXT = """\
## Keys
| key | does |
|---|---|
| `a` | acknowledge the alarm under the cursor of the alarm list (`↑` `↓` move it) |
| `p` | pause the audio of all current alarms (AUDIO PAUSED, counts down) |
| `l` | next set of leads: II V1 V5 · I II III · aVR aVL aVF · V1 V2 V3 · V4 V5 V6 |
| `g` | gain: auto · 10 · 20 · 5 mm/mV (a fixed gain draws a 1 mV calibration pulse and a 1 s grid) |
| `Enter` | the selected alarm in full (message, action, times, who) |
| `h` | alarm history (this session) |
| `?` `F1` | this help |
| `Esc` | back to the monitor |
| `Ctrl+Q` | quit |

## Alarms
`***` high (red): respond immediately. `**` medium (yellow): respond promptly. `*` low (cyan): be aware.
PATIENT (physiological) and EQUIPMENT (technical) alarms have a banner line each.
States: ACTIVE; AUDIO PAUSED m:ss (sound paused for the time shown); ACKNOWLEDGED (seen, sound off
until the condition ends); LATCHED (the condition is over but it stays until acknowledged).
Each alarm says what to do (its action, e.g. "Check cable/device"); Enter shows its full message.
`♪ on` / `♪ OFF` / `♪ paused m:ss` beside HR is the audio; `p` with nothing sounding says so.
Acknowledgements and audio pauses are logged by the engine with your user name and the time.

## Traces
25 dots per second = 25 mm/s (1 dot = 1 mm; a `·` tick every 0.2 s and a labelled tick every second
on the scale below the traces). Auto gain: the figure beside each lead is the full height of its
trace; a fixed gain shows `10mm` (10 mm/mV: 1 mV = 10 dots = 2.5 rows) and a 1 mV calibration pulse. A gap in the signal is left blank, never
drawn as a line; NO SIGNAL means nothing arrived for the last second. `q93` is the lead's signal
quality (0-100), `OFF` a lead off. An electrode off on a lead that is not drawn is named above the
traces (`V3 OFF, not drawn`: press `l`) and under HR. After a device loss every value shows
`---` with the age of the last one (`--- (12 s)`), never the old value.

## Risks
Current risk `≥` or `<` the model's threshold (three decimals: 0.251 ≥0.250), the name reversed while
its alarm is on, and the last hour's trend on a fixed 0-1 scale (the dotted
line is the threshold; a blank column means no window was scored then).
"""


class HelpScreen(Screen):
    """Keys and meanings, under the alarm banner (never hidden)."""

    CSS_PATH = "help_screen.tcss"
    BINDINGS = [
        Binding("escape,question_mark,f1", "app.pop_screen", "Back", key_display="Esc"),
        Binding("p", "app.pause_audio", "Pause audio"),
        Binding("h", "app.history", "History"),
    ]

    def __init__(self, state: MonitorState, *, bed_id: str, user: str, tz: tzinfo | None,
                 log_notes: list[str] | None = None, failure: str | None = None) -> None:
        super().__init__(id="help")
        self.log_notes = log_notes or []
        self.failure = failure
        self.state = state
        self.bed_id = bed_id
        self.user = user
        self.tz = tz

    def compose(self) -> ComposeResult:
        yield StatusBar(self.state, bed_id=self.bed_id, user=self.user, id="status")
        yield AlarmBanner(self.state, tz=self.tz, id="banner")
        with VerticalScroll(id="help-body"):
            notes = "".join(f"- {n}\n" for n in self.log_notes) or "none\n"
            failure = ""
            if self.failure:
                failure = ("## MONITORING STOPPED: the engine failed\n```text\n" + self.failure
                           + "\n```\nNo ECG is analysed and no alarm is raised. Call the technician.\n\n")
            yield Markdown(failure + HELP_TEXT + "\n## Recent log warnings\n" + notes)
        yield Footer()

    def update_view(self, changed: set[str]) -> None:
        self.query_one(AlarmBanner).update_view()
        self.query_one(StatusBar).update_view()

    def show_frame(self, end_index: int) -> None:
        if self.state.any_audio_paused():
            self.query_one(AlarmBanner).update_view()
