"""Read a bed's ORU^R01 / ORU^R40 on the receiving side: python-hl7 (``hl7.parse``) splits the ER7 text
into message -> segments -> fields -> repetitions -> components and undoes its escapes (``Message.unescape``);
on top, checks of exactly the fields the central uses (docs/hl7.md, "What the central checks").

Why python-hl7 and not hl7apy here: building hl7apy's element tree costs 20-33 ms of CPU a message whatever
the validation level (strict, tolerant without groups, or segment by segment), so a central parsing with it
accepts about 30 messages/s per core; python-hl7 builds plain lists (about 1.3 ms a message with our
checks, scripts/bench_hl7.py), far above the 6.4 messages/s of 32 beds. The bed's messages are checked
against the v2.6 structures with hl7apy where they are written (tests, ``messages.validate``) and, on
request, by the central (``parse(text, strict=True)``, ``bedside central --strict``).

The checks are ours, not the library's (it accepts any delimiters, segments and values): this module refuses
(:class:`~bedside.hl7.messages.Hl7Error` with the reason) anything the central could misread: other
delimiters, segments other than MSH PID PV1 OBR OBX or out of their order, another message type or HL7
version, a missing or non-numeric MSH-10/MSH-13, no bed in PV1-3, an OBR-3 that is not
``<bed>.<session>.A<seq>|W<window>``, bad timestamps, OBX set ids out of order, value types other than NM
and ST, a non-numeric NM value, a value without a type, an unknown result status, and OBX-3 codes this
central does not know (a newer bed's message is refused, not half read). Anything python-hl7 raises
becomes an :class:`Hl7Error` naming the segment and field.
"""

from __future__ import annotations

import re

import hl7

from bedside.hl7 import codes as C
from bedside.hl7.messages import STATES, VERSION, Hl7Error, parse_dtm
from bedside.hl7.model import AlarmReport, Envelope, ObservationReport

#: MSH-1 and MSH-2 of every message we read: the HL7 default delimiters.
_HEADER = "MSH|^~\\&|"
_TYPES = {"ORU^R01^ORU_R01": "R01", "ORU^R40^ORU_R01": "R40"}
#: Segment order of our messages: MSH PID PV1 OBR OBX+ (one of each but OBX).
_ORDER = ("MSH", "PID", "PV1", "OBR", "OBX")
_NM = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")  # HL7 NM: optional sign, digits, optional decimal point
_STATUSES = frozenset("FRXCPIDNUW")  # HL7 table 0085 (observation result status)
_OBR3 = re.compile(r"(.*)\.(\d+)\.([AW])(\d+)")
#: Fixed OBX-3 codes a PCD-01 observation may carry (risk.<label> / threshold.<label> besides).
_OBSERVATION_CODES = frozenset(c[0] for c in (C.MDS, C.SIGNAL_TIME, C.ANALYSIS, C.HEART_RATE, C.SQI_MIN))
#: OBX-3 codes of a PCD-04 report after its alarm-identification OBX.
_ALARM_CODES = frozenset(c[0] for c in (
    C.HEART_RATE, C.MDS, C.ATTR_EVENT_PHASE, C.ATTR_ALARM_STATE, C.ATTR_INACTIVATION_STATE, C.ATTR_ALARM_PRIORITY,
    C.ATTR_ALERT_TYPE, C.BED_STATE, C.PREVIOUS_STATE, C.CAUSE, C.SIGNAL_TIME))
_ALARM_EVENTS = frozenset(c[0] for c in (*C.MDC_EVENTS.values(), C.EVT_HI_GT_LIM))
#: A field whose escapes are all ones our beds write (messages.escape). python-hl7's unescape also maps
#: \H\, \.br\, \Xhh\... and silently drops a sequence it does not know or one left open ("4\0.5" reads "4"),
#: so a corrupted value would be read as another value: we refuse those instead.
_OUR_ESCAPES = re.compile(r"(?:[^\\]|\\[FSTRE]\\)*")
#: What python-hl7 may raise on text it cannot split or unescape (hl7.parse on a segment named MSH without
#: its separator raises IndexError; unescape calls int() on a repeat count such as \.spx\).
_LIBRARY_ERRORS = (hl7.HL7Exception, ValueError, IndexError, KeyError, TypeError)


class _Segment:
    """One python-hl7 segment with its name, fields by HL7 number and the message's unescape."""

    __slots__ = ("msg", "name", "seg")

    def __init__(self, msg: hl7.Message, seg: hl7.Segment):
        self.msg, self.seg = msg, seg
        # python-hl7 keeps MSH-1 (the field separator) as element 1, so MSH-n is element n as in any segment
        self.name = str(seg[0]) if len(seg) else ""

    def raw(self, n: int) -> str:
        """Field ``n`` as sent (escapes kept), "" when absent."""
        return str(self.seg[n]) if 0 < n < len(self.seg) else ""

    def repeats(self, n: int) -> int:
        """How many repetitions field ``n`` holds (0 when absent)."""
        return len(self.seg[n]) if 0 < n < len(self.seg) and self.raw(n) else 0

    def text(self, n: int) -> str:
        """Field ``n``, unescaped (python-hl7's ``Message.unescape``)."""
        return self._unescape(self.raw(n), f"{self.name}-{n}")

    def component(self, n: int, c: int) -> str:
        """Component ``c`` (1-based) of the first repetition of field ``n``, unescaped; "" when absent."""
        if not 0 < n < len(self.seg):
            return ""
        first = self.seg[n][0]
        if isinstance(first, hl7.Repetition):
            value = str(first[c - 1]) if c <= len(first) else ""
        else:  # a field without component separators is a plain string in python-hl7
            value = str(first) if c == 1 else ""
        return self._unescape(value, f"{self.name}-{n}.{c}")

    def _unescape(self, value: str, where: str) -> str:
        if "\\" in value and not _OUR_ESCAPES.fullmatch(value):
            raise Hl7Error(f"{where} {value[:40]!r}: an escape sequence other than \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ "
                           "(a bed sends no others; python-hl7 would map or drop it)")
        try:
            return self.msg.unescape(value)
        except _LIBRARY_ERRORS as exc:
            raise Hl7Error(f"{where} {value[:40]!r}: python-hl7 cannot unescape it ({type(exc).__name__}: {exc})") \
                from exc


def _number(text: str, what: str) -> float | None:
    if text == "":
        return None
    if not _NM.fullmatch(text):
        raise Hl7Error(f"{what}: {text!r} is not an HL7 NM number")
    return float(text)


class _Obx:
    """One OBX: code (OBX-3.1), its segment; checked on construction."""

    __slots__ = ("code", "seg", "value")

    def __init__(self, seg: _Segment, set_id: int):
        self.seg = seg
        if seg.raw(1) != str(set_id):
            raise Hl7Error(f"OBX set id (OBX-1) {seg.raw(1)!r} where {set_id} was expected")
        self.code = seg.component(3, 1)
        if not self.code:
            raise Hl7Error(f"OBX {set_id}: no observation code (OBX-3)")
        vtype, raw = seg.raw(2), seg.raw(5)
        if vtype not in ("", "NM", "ST"):
            raise Hl7Error(f"OBX {set_id} ({self.code}): value type (OBX-2) {vtype!r}, expected NM or ST")
        if raw and not vtype:
            raise Hl7Error(f"OBX {set_id} ({self.code}): a value (OBX-5) without a value type (OBX-2)")
        if vtype == "NM" and raw and not _NM.fullmatch(raw):
            raise Hl7Error(f"OBX {set_id} ({self.code}): NM value {raw!r} is not a number")
        if seg.repeats(5) > 1:
            raise Hl7Error(f"OBX {set_id} ({self.code}): repeated value (OBX-5); expected one")
        status = seg.raw(11)
        if status not in _STATUSES:
            raise Hl7Error(f"OBX {set_id} ({self.code}): result status (OBX-11) {status!r} is not an HL7 0085 code")
        self.value = seg.text(5)


def _segments(text: str) -> list[_Segment]:
    """The segments of ``text`` as python-hl7 splits them (after our check of MSH-1/MSH-2)."""
    if not text.startswith("MSH|"):
        raise Hl7Error(f"not an HL7 v2 message (starts {text[:8]!r}, not 'MSH|')")
    if not text.startswith(_HEADER):
        raise Hl7Error(f"MSH-2 encoding characters {text[4:9]!r}: expected ^~\\&")
    # python-hl7 separates segments by CR only (the standard); a LF or CR LF from a sloppy sender counts as one.
    try:
        msg = hl7.parse(text.replace("\r\n", "\r").replace("\n", "\r"))
    except _LIBRARY_ERRORS as exc:
        raise Hl7Error(f"python-hl7 cannot split the message ({type(exc).__name__}: {exc})") from exc
    return [_Segment(msg, seg) for seg in msg]


def parse_report(text: str) -> Envelope:
    """The report an ORU^R01 / ORU^R40 from a bed carries; :class:`Hl7Error` for anything else."""
    segments = _segments(text.rstrip("\r\n"))
    names = [s.name for s in segments]
    listing = f"segments {' '.join(names[:12])}{' ...' if len(names) > 12 else ''}; expected MSH PID PV1 OBR OBX..."
    pos = 0
    for name in names:  # MSH PID PV1 OBR OBX+, nothing else
        if name == "OBX" and pos == len(_ORDER):
            continue
        if pos < len(_ORDER) and name != _ORDER[pos]:
            if name in _ORDER[pos + 1:]:
                raise Hl7Error(f"no {_ORDER[pos]} segment ({listing})")
            raise Hl7Error(f"{name or 'an empty line'!r} where {_ORDER[pos]} belongs ({listing})")
        if pos == len(_ORDER):
            raise Hl7Error(f"{name or 'an empty line'!r} after the OBX segments ({listing})")
        pos += 1
    if pos < len(_ORDER):
        raise Hl7Error(f"no {_ORDER[pos]} segment ({listing})")
    msh, pv1, obr = segments[0], segments[2], segments[3]
    mtype = msh.raw(9)
    if mtype not in _TYPES:
        raise Hl7Error(f"MSH-9 {mtype!r}: expected ORU^R01^ORU_R01 or ORU^R40^ORU_R01")
    if msh.raw(12) != VERSION:
        raise Hl7Error(f"MSH-12 version {msh.raw(12)!r}, expected {VERSION}")
    control_id = msh.text(10)
    if not control_id or len(control_id) > 199:
        raise Hl7Error(f"MSH-10 control id {control_id[:40]!r}: must be 1-199 characters")
    seq_text = msh.raw(13)
    if not seq_text.isdigit() or not seq_text.isascii():
        raise Hl7Error(f"MSH-13 sequence number {seq_text!r} is not an integer")
    bed_seq = int(seq_text)
    parse_dtm(msh.raw(7))
    bed_id = pv1.component(3, 3)
    if not bed_id:
        raise Hl7Error("PV1-3.3 (bed) is empty: not a report from a bed")
    filler = obr.component(3, 1)
    m = _OBR3.fullmatch(filler)
    if not m or m.group(1) != bed_id:
        raise Hl7Error(f"OBR-3 {filler!r}: expected <bed>.<session>.A<seq> or .W<window> for bed {bed_id!r}")
    is_alarm = _TYPES[mtype] == "R40"
    if (m.group(3) == "A") != is_alarm:
        raise Hl7Error(f"OBR-3 {filler!r} does not match MSH-9 {mtype!r}")
    session_id, index = int(m.group(2)), int(m.group(4))
    wall_time = parse_dtm(obr.raw(7))
    obx = [_Obx(seg, i) for i, seg in enumerate(segments[4:], start=1)]
    report = (_alarm if is_alarm else _observation)(obx, bed_id, session_id, index, wall_time)
    return Envelope(control_id=control_id, bed_seq=bed_seq, report=report)


def _by_code(obx: list[_Obx], known: frozenset[str], prefixes: tuple[str, ...]) -> dict[str, _Obx]:
    out: dict[str, _Obx] = {}
    for o in obx:
        if o.code not in known and not o.code.startswith(prefixes):
            raise Hl7Error(f"OBX-3 code {o.code!r} is not one this central knows (docs/hl7.md lists them); "
                           "a newer bed? update the central")
        if o.code in out:
            raise Hl7Error(f"OBX-3 code {o.code!r} appears twice")
        out[o.code] = o
    return out


def _need(obs: dict[str, _Obx], code: tuple[str, ...]) -> str:
    if code[0] not in obs:
        raise Hl7Error(f"no OBX {code[0]}^{code[1]}")
    return obs[code[0]].value


def _alarm(obx: list[_Obx], bed_id: str, session_id: int, seq: int, wall_time: float) -> AlarmReport:
    if len(obx) < 2:
        raise Hl7Error(f"{len(obx)} OBX segments: an alarm report needs its identification and source first")
    first, source = obx[0], obx[1]
    event = first.code
    alarm_code = first.seg.component(3, 4) or event
    if not alarm_code.startswith(C.ALARM_PREFIX) or not (event in _ALARM_EVENTS or event == alarm_code):
        raise Hl7Error(f"OBX-3 of the alarm {first.seg.raw(3)[:80]!r}: expected an MDC alarm event with "
                       f"{C.ALARM_PREFIX}<name> as alternate code, or {C.ALARM_PREFIX}<name>")
    obs = _by_code(obx[1:], _ALARM_CODES, (C.RISK_PREFIX,))
    priorities = {v: k for k, v in C.PRIORITY.items()}
    kinds = {v: k for k, v in C.ALERT_TYPE.items()}
    priority, atype = _need(obs, C.ATTR_ALARM_PRIORITY), _need(obs, C.ATTR_ALERT_TYPE)
    if priority not in priorities or atype not in kinds:
        raise Hl7Error(f"alarm priority {priority!r} / type {atype!r}: expected PH/PM/PL and SP/ST")
    state = _need(obs, C.BED_STATE)
    if state not in STATES:
        raise Hl7Error(f"bed alarm state {state!r}: expected one of {list(STATES)}")
    return AlarmReport(
        bed_id=bed_id, session_id=session_id, seq=seq, alarm=alarm_code[len(C.ALARM_PREFIX):], kind=kinds[atype],
        priority=priorities[priority], state=state, previous=_need(obs, C.PREVIOUS_STATE) or None,
        cause=_need(obs, C.CAUSE), text=first.value,
        t_s=_number(_need(obs, C.SIGNAL_TIME), "signal time") or 0.0, wall_time=wall_time,
        score=_number(source.value, "alarm source value"),
        threshold=_number(source.seg.text(7).lstrip("<>"), "alarm limit (OBX-7)"))


def _observation(obx: list[_Obx], bed_id: str, session_id: int, index: int, wall_time: float) -> ObservationReport:
    obs = _by_code(obx, _OBSERVATION_CODES, (C.RISK_PREFIX, C.THRESHOLD_PREFIX))
    analysis = _need(obs, C.ANALYSIS)
    risks: dict[str, float | None] = {}
    thresholds: dict[str, float] = {}
    validated: dict[str, bool] = {}
    for code, o in obs.items():
        if code.startswith(C.RISK_PREFIX):
            label = code[len(C.RISK_PREFIX):]
            risks[label] = _number(o.value, code)
            validated[label] = o.seg.component(17, 1) == C.VALIDATED[0]
        elif code.startswith(C.THRESHOLD_PREFIX):
            value = _number(o.value, code)
            if value is not None:
                thresholds[code[len(C.THRESHOLD_PREFIX):]] = value
    return ObservationReport(
        bed_id=bed_id, session_id=session_id, window_index=index,
        t_s=_number(_need(obs, C.SIGNAL_TIME), "signal time") or 0.0, wall_time=wall_time,
        scored=analysis == "scored", reason="" if analysis == "scored" else analysis,
        hr_bpm=_number(_need(obs, C.HEART_RATE), "heart rate"),
        sqi_min=_number(_need(obs, C.SQI_MIN), "signal quality"),
        risks=risks, thresholds=thresholds, validated=validated)
