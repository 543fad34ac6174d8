"""Build, validate and parse the bed's HL7 v2.6 messages (docs/hl7.md has the layout and examples).

- PCD-04 "Report Alarm" (IHE PCD ACM): ``ORU^R40^ORU_R01``, one per committed alarm transition.
- PCD-01 "Communicate PCD Data" (IHE PCD DEC): ``ORU^R01^ORU_R01``, one per analysed window.
- ``ACK^R01^ACK`` / ``ACK^R40^ACK`` with MSA-1 AA (accepted), AE (error) or AR (rejected).

Messages are assembled as ER7 text (:func:`escape` for every text value); every kind is checked
against the v2.6 structures by :func:`validate` (hl7apy, strict) in the tests. :func:`parse` (the
receiving side) reads with :mod:`bedside.hl7.parsing` (python-hl7's containers, our checks), and
validates with hl7apy first when asked (``strict=True``). :func:`ack` and :func:`read_ack` read the
three or four MSH/MSA fields they need by hand: an ACK must be made even for text python-hl7 cannot
split, and a second python-hl7 parse per message would double the central's reading CPU.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from bedside.errors import BedsideError
from bedside.hl7 import codes as C
from bedside.hl7.model import AlarmReport, Envelope, ObservationReport

VERSION = "2.6"
SENDING_APPLICATION = "CROMOTEX"
RECEIVING_APPLICATION = "CROMOTEX-CENTRAL"
#: Longest alarm text sent (characters); a longer AlarmChange.message is cut with "...".
MAX_TEXT = 199
ACK_CODES = ("AA", "AE", "AR")

# bed alarm state -> (MDC_ATTR_ALARM_STATE, MDC_ATTR_ALARM_INACTIVATION_STATE)
STATES = {
    "active": ("active", "enabled"),
    "AUDIO PAUSED": ("active", "audio-paused"),
    "ACKNOWLEDGED": ("active", "alert-acknowledged"),
    "latched": ("latched", "enabled"),
    "cleared": ("inactive", "enabled"),
}


class Hl7Error(BedsideError):
    """A message that is not one of ours, or not valid HL7 v2.6; ``reason`` says what is wrong."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# -- encoding helpers ---------------------------------------------------------------------------------

_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))
_UNESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}


def escape(text: str) -> str:
    """ER7-escape a text value; control characters (a CR would end the segment) become spaces.

    Not hl7apy's ST escaping: it leaves a backslash that looks like a formatting sequence ("\\H\\")
    as it is, so a literal "\\F\\" in an alarm text would come back as "|".
    """
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    for char, seq in _ESCAPES:
        text = text.replace(char, seq)
    return text


def unescape(text: str) -> str:
    """Undo :func:`escape` (only its five sequences); for :func:`ack` / :func:`read_ack`."""
    return re.sub(r"\\([FSTRE])\\", lambda m: _UNESCAPES[m.group(1)], text)


def _cwe(code: tuple[str, ...], alt: tuple[str, ...] | None = None) -> str:
    return "^".join(escape(x) for x in (code + alt if alt else code))


def dtm(wall_time: float) -> str:
    """HL7 DTM with milliseconds, UTC: 20261129231401.123+0000."""
    d = datetime.fromtimestamp(wall_time, timezone.utc)
    return d.strftime("%Y%m%d%H%M%S.") + f"{d.microsecond // 1000:03d}+0000"


def parse_dtm(text: str) -> float:
    """UNIX time (s) of an HL7 DTM to the second or finer, UTC when it has no offset.

    Not python-hl7's ``parse_datetime``: it accepts a bare year as a time, and gives "-0030" the sign of
    "+0030" (the sign is taken from the hours, which are 0).
    """
    m = re.fullmatch(r"(\d{14})(?:\.(\d{1,4}))?([+-]\d{4})?", text)
    if not m:
        raise Hl7Error(f"time {text!r} is not an HL7 DTM (YYYYMMDDHHMMSS[.SSS][+ZZZZ])")
    try:
        d = datetime.strptime(m.group(1), "%Y%m%d%H%M%S")
    except ValueError as exc:  # 14 digits, but month 13, February 30, hour 25...
        raise Hl7Error(f"time {text!r} is not a date and time ({exc})") from exc
    tz = m.group(3) or "+0000"
    offset_s = (int(tz[1:3]) * 3600 + int(tz[3:5]) * 60) * (1 if tz[0] == "+" else -1)
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return d.replace(tzinfo=timezone.utc).timestamp() - offset_s + frac


def _num(x: float | None, digits: int) -> str:
    if x is None or not math.isfinite(x):
        return ""
    return f"{round(float(x), digits):.{digits}f}".rstrip("0").rstrip(".") or "0"


def _seg(name: str, *fields: str) -> str:
    out = list(fields)
    while out and out[-1] == "":
        out.pop()
    return "|".join([name, *out])


def _msh(env: Envelope, trigger: str, profile: tuple[str, ...], wall_time: float) -> str:
    return _seg("MSH", "^~\\&", f"{SENDING_APPLICATION}^{escape(env.report.bed_id)}", "", RECEIVING_APPLICATION, "",
                dtm(wall_time), "", f"ORU^{trigger}^ORU_R01", escape(env.control_id), "P", VERSION,
                str(env.bed_seq), "", "AL", "NE", "", "UNICODE UTF-8", "", "", "^".join(profile))


def _patient(bed_id: str) -> list[str]:
    # No patient identifiers leave the bed: the central binds the patient by bed and time.
    # PID-3 and PID-5 are required in v2.6: "unknown" identifier (CX-5 U), PID-31 identity unknown = Y.
    pid = ["", "", "UNKNOWN^^^CROMOTEX^U", "", "UNKNOWN"] + [""] * 25 + ["Y"]
    return [_seg("PID", *pid), _seg("PV1", "", "I", f"^^{escape(bed_id)}")]


def _obx(i: int, vtype: str, code: tuple[str, ...], sub_id: str, value: str, *, units: str = "", ref: str = "",
         flags: str = "", status: str = "F", when: str = "", method: str = "") -> str:
    return _seg("OBX", str(i), vtype if value else "", _cwe(code[:3], code[3:] or None),
                sub_id, value, units, ref, flags, "", "", status if value or status == "X" else "X", "", "", when,
                "", "", method)


# -- PCD-04 ---------------------------------------------------------------------------------------

def _phase(r: AlarmReport) -> str:
    if r.state == "cleared":
        return "end"
    if r.previous in (None, "cleared"):
        return "start"
    return "update"


def _alarm_event(r: AlarmReport) -> tuple[str, str, str]:
    if r.alarm in C.MDC_EVENTS:
        return C.MDC_EVENTS[r.alarm]
    if r.kind == "physiological":  # a risk label: its smoothed risk above the bundle's threshold
        return C.EVT_HI_GT_LIM
    return C.alarm_code(r.alarm)


def _alarm_source(r: AlarmReport) -> tuple[tuple[str, str, str], str, str]:
    """(code, units, value type) of the source-identification OBX."""
    if r.alarm in C.HEART_RATE_ALARMS:
        return C.HEART_RATE, _cwe(C.BEAT_PER_MIN), "NM"
    if r.kind == "physiological":
        return C.risk_code(r.alarm), _cwe(C.DIMLESS), "NM"
    return C.MDS, "", "NM"


def build_alarm(env: Envelope) -> str:
    r = env.report
    assert isinstance(r, AlarmReport)
    when = dtm(r.wall_time)
    event = _alarm_event(r)
    alt = None if event[2] == C.LOCAL else C.alarm_code(r.alarm)
    text = r.text if len(r.text) <= MAX_TEXT else r.text[:MAX_TEXT - 3] + "..."
    priority, atype = C.PRIORITY[r.priority], C.ALERT_TYPE[r.kind]
    source, units, vtype = _alarm_source(r)
    limit = "" if r.threshold is None else ((">" if event == C.EVT_LO_LT_LIM else "<") + _num(r.threshold, 4))
    state, inactivation = STATES[r.state]
    sub = "1.0.0.0"
    obx = [
        _obx(1, "ST", event + alt if alt else event, f"{sub}.1", escape(text), flags=f"{priority}~{atype}", when=when),
        _obx(2, vtype, source, f"{sub}.2", _num(r.score, 4), units=units if r.score is not None else "", ref=limit,
             when=when),
        _obx(3, "ST", C.ATTR_EVENT_PHASE, f"{sub}.3", _phase(r), when=when),
        _obx(4, "ST", C.ATTR_ALARM_STATE, f"{sub}.4", state, when=when),
        _obx(5, "ST", C.ATTR_INACTIVATION_STATE, f"{sub}.5", inactivation, when=when),
        _obx(6, "ST", C.ATTR_ALARM_PRIORITY, f"{sub}.6", priority, when=when),
        _obx(7, "ST", C.ATTR_ALERT_TYPE, f"{sub}.7", atype, when=when),
        _obx(8, "ST", C.BED_STATE, f"{sub}.8", escape(r.state), when=when),
        _obx(9, "ST", C.PREVIOUS_STATE, f"{sub}.9", escape(r.previous or ""), when=when),
        _obx(10, "ST", C.CAUSE, f"{sub}.10", escape(r.cause), when=when),
        _obx(11, "NM", C.SIGNAL_TIME, f"{sub}.11", _num(r.t_s, 3), units=_cwe(C.SECOND), when=when),
    ]
    obr = _seg("OBR", "1", "", f"{escape(r.bed_id)}.{r.session_id}.A{r.seq}^CROMOTEX", _cwe(C.EVT_ALARM), "", "", when)
    return "\r".join([_msh(env, "R40", C.PROFILE_PCD04, r.wall_time), *_patient(r.bed_id), obr, *obx])


# -- PCD-01 ---------------------------------------------------------------------------------------

def build_observation(env: Envelope) -> str:
    r = env.report
    assert isinstance(r, ObservationReport)
    when = dtm(r.wall_time)
    obx = [
        _obx(1, "", C.MDS, "1.0.0.0", "", status="X", when=when),
        _obx(2, "NM", C.SIGNAL_TIME, "1.0.0.1", _num(r.t_s, 3), units=_cwe(C.SECOND), when=when),
        _obx(3, "ST", C.ANALYSIS, "1.0.0.2", escape("scored" if r.scored else r.reason or "not scored"), when=when),
        _obx(4, "NM", C.HEART_RATE, "1.0.1.1", _num(r.hr_bpm, 2),
             units=_cwe(C.BEAT_PER_MIN) if r.hr_bpm is not None else "", when=when),
        _obx(5, "NM", C.SQI_MIN, "1.0.1.2", _num(r.sqi_min, 3), units=_cwe(C.DIMLESS) if r.sqi_min is not None else "",
             ref="0-1" if r.sqi_min is not None else "", when=when),
    ]
    labels = sorted(set(r.risks) | set(r.thresholds))
    for k, label in enumerate(labels, start=1):
        risk, thr = r.risks.get(label), r.thresholds.get(label)
        validated = r.validated.get(label, False)
        method = _cwe(C.VALIDATED if validated else C.NOT_VALIDATED)
        high = risk is not None and thr is not None and math.isfinite(risk) and risk > thr
        obx.append(_obx(len(obx) + 1, "NM", C.risk_code(label), f"1.0.2.{k}", _num(risk, 4),
                        units=_cwe(C.DIMLESS) if risk is not None else "", flags="H" if high else "",
                        status="F" if validated else "R", when=when, method=method))
        obx.append(_obx(len(obx) + 1, "NM", C.threshold_code(label), f"1.0.3.{k}", _num(thr, 4),
                        units=_cwe(C.DIMLESS) if thr is not None else "", when=when, method=method))
    obr = _seg("OBR", "1", "", f"{escape(r.bed_id)}.{r.session_id}.W{r.window_index}^CROMOTEX", _cwe(C.MONITORING),
               "", "", when)
    return "\r".join([_msh(env, "R01", C.PROFILE_PCD01, r.wall_time), *_patient(r.bed_id), obr, *obx])


def build(env: Envelope) -> str:
    """The ER7 text of a report (segments joined by CR)."""
    if isinstance(env.report, AlarmReport):
        return build_alarm(env)
    if isinstance(env.report, ObservationReport):
        return build_observation(env)
    raise TypeError(f"not a report: {type(env.report).__name__}")


def new_control_id() -> str:
    """A fresh MSH-10 (32 hex digits, unique without coordination between beds)."""
    return uuid.uuid4().hex


# -- validating and parsing ------------------------------------------------------------------------

def validate(text: str) -> Any:
    """Parse ``text`` with hl7apy against the HL7 v2.6 structures (strict) and validate it; the hl7apy
    message. Raises :class:`Hl7Error` naming what is wrong."""
    from hl7apy.consts import VALIDATION_LEVEL  # imported here: the bed builds without it
    from hl7apy.parser import parse_message

    if not text.startswith("MSH|"):
        raise Hl7Error(f"not an HL7 v2 message (starts {text[:8]!r}, not 'MSH|')")
    try:
        msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        msg.validate()
    except Exception as exc:  # hl7apy raises many types (ValidationError, ParserError, ValueError...)
        raise Hl7Error(f"invalid HL7 v{VERSION}: {type(exc).__name__}: {exc}") from exc
    if msg.msh.msh_12.to_er7() != VERSION:
        raise Hl7Error(f"MSH-12 version {msg.msh.msh_12.to_er7()!r}, expected {VERSION}")
    return msg


def parse(text: str, *, strict: bool = False) -> Envelope:
    """The report an ORU^R01 / ORU^R40 from a bed carries; :class:`Hl7Error` for anything else.

    Reads with :func:`bedside.hl7.parsing.parse_report` (about 1.3 ms of CPU: python-hl7 splits and
    unescapes, our code checks the fields the central uses); ``strict`` first validates against the v2.6
    structures with hl7apy (:func:`validate`, 20-35 ms of CPU a message).
    """
    from bedside.hl7.parsing import parse_report

    if strict:
        validate(text.rstrip("\r\n"))
    return parse_report(text)


# -- acknowledgements ------------------------------------------------------------------------------

def ack(text_or_control_id: str, code: str, reason: str = "", *, wall_time: float | None = None) -> str:
    """The ACK for a message (its text, or just its MSH-10): MSA-1 ``code`` (AA, AE, AR), MSA-2 its
    control ID, MSA-3 and ERR-8 the reason (for AE/AR)."""
    if code not in ACK_CODES:
        raise ValueError(f"ack code {code!r}: expected one of {ACK_CODES}")
    control_id, trigger, receiver = text_or_control_id, "R01", ""
    if text_or_control_id.startswith("MSH|"):
        fields = text_or_control_id.split("\r", 1)[0].split("|")
        control_id = unescape(fields[9]) if len(fields) > 9 else ""
        mtype = fields[8].split("^") if len(fields) > 8 else []
        trigger = mtype[1] if len(mtype) > 1 and re.fullmatch(r"[A-Z0-9]{3}", mtype[1]) else "R01"
        receiver = fields[2] if len(fields) > 2 else ""
    segs = [_seg("MSH", "^~\\&", RECEIVING_APPLICATION, "", receiver, "", dtm(time.time() if wall_time is None else wall_time),
                 "", f"ACK^{trigger}^ACK", new_control_id(), "P", VERSION),
            _seg("MSA", code, escape(control_id), escape(reason[:MAX_TEXT]))]
    if code != "AA":
        segs.append(_seg("ERR", "", "", "207^Application internal error^HL70357", "E" if code == "AE" else "F",
                         "", "", "", escape(reason[:MAX_TEXT])))
    return "\r".join(segs)


def read_ack(text: str) -> tuple[str, str, str]:
    """(control ID acknowledged, code, reason) of an ACK; :class:`Hl7Error` if it is not one."""
    segs = {s.split("|", 1)[0]: s.split("|") for s in re.split(r"[\r\n]+", text) if s}
    if "MSH" not in segs or "MSA" not in segs:
        raise Hl7Error(f"not an ACK (segments {sorted(segs)}; need MSH and MSA)")
    msa = segs["MSA"] + ["", "", ""]
    if msa[1] not in ACK_CODES + ("CA", "CE", "CR"):
        raise Hl7Error(f"MSA-1 {msa[1]!r}: expected AA, AE or AR")
    code = {"CA": "AA", "CE": "AE", "CR": "AR"}.get(msa[1], msa[1])
    return unescape(msa[2]), code, unescape(msa[3])
