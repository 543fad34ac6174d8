"""HL7 messages: every kind the engine writes, from a real replay, passes hl7apy's strict v2.6 validation
and parses back to what the bed logged; round trips; refusals; MLLP framing."""

from __future__ import annotations

import dataclasses
import re
import socket
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bedside.events import AlarmState
from bedside.hl7 import codes
from bedside.hl7.messages import Hl7Error, ack, build, parse, read_ack, validate
from bedside.hl7.mllp import MllpDecoder, MllpError, frame
from bedside.hl7.model import AlarmReport, Envelope, ObservationReport
from bedside.hl7.settings import Hl7Settings
from bedside.leads import LEAD_INDEX
from bedside.replay import ReplayOptions, build_replay_engine
from bedside.store import Store
from tests.engine_helpers import flip_lead_i, polarity_bundle, synthetic_ecg, write_record


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """A real replay with --hl7 to a central that is down: two edema episodes (the first audio-paused and
    acknowledged at the bed, the second left to latch), a lead off; cardiomegaly not validated."""
    folder = tmp_path_factory.mktemp("hl7")
    bundle = polarity_bundle(folder / "p.onnx", not_validated=("cardiomegaly",))
    x = flip_lead_i(synthetic_ecg(240, 500.0, seed=3), 500.0, [(40, 100), (150, 190)])
    x[LEAD_INDEX["V2"], int(205 * 500):int(220 * 500)] = np.nan  # electrode V2 off for 15 s
    record = write_record(folder, "episodes", x, 500.0)
    db = folder / "bed.db"
    engine = build_replay_engine(ReplayOptions(record=str(record), model=str(bundle), db=str(db), bed_id="bed-4",
                                               speed=40.0,  # paced: the nurse's commands land within a window
                                               hl7=Hl7Settings("127.0.0.1", closed_port(), max_backoff_s=1.0)))

    done: set[str] = set()

    def nurse(event):  # at the bed, during the first episode only: pause the audio, then acknowledge
        if getattr(event, "alarm", None) == "edema":
            if event.state == AlarmState.ACTIVE and "pause" not in done:
                done.add("pause")
                engine.pause_audio("rn.test")
            elif event.state == AlarmState.AUDIO_PAUSED and "ack" not in done:
                done.add("ack")
                engine.acknowledge("edema", "rn.test")

    engine.subscribe(nurse)
    summary = engine.run()
    engine.close()
    conn = sqlite3.connect(db)
    rows = conn.execute("select id, kind, ref, control_id, message from hl7_outbox order by id").fetchall()
    conn.close()
    store = Store(db)
    sid = summary.session_id
    logged = {"transitions": dict((c.seq, c) for _, c in store.transitions(sid)), "windows": store.windows(sid)}
    store.close()
    return rows, logged, summary


def test_every_message_the_engine_wrote_passes_strict_validation(replayed):
    rows, logged, summary = replayed
    assert len(rows) == summary.windows + len(summary.transitions)
    for row_id, kind, ref, control_id, text in rows:
        msg = validate(text)  # hl7apy, HL7 v2.6 structures, strict
        assert msg.msh.msh_13.to_er7() == str(row_id) and msg.msh.msh_10.to_er7() == control_id
        assert msg.msh.msh_9.to_er7() == ("ORU^R40^ORU_R01" if kind == "alarm" else "ORU^R01^ORU_R01")
        assert msg.msh.msh_3.to_er7() == "CROMOTEX^bed-4"


def test_alarm_messages_carry_what_the_bed_logged(replayed):
    rows, logged, _ = replayed
    alarms = [parse(text) for _, kind, _, _, text in rows if kind == "alarm"]
    assert [e.report.seq for e in alarms] == sorted(logged["transitions"])
    for env in alarms:
        r, c = env.report, logged["transitions"][env.report.seq]
        assert (r.bed_id, r.alarm, r.kind, r.priority, r.state, r.previous, r.cause, r.text) == (
            "bed-4", c.alarm, c.kind.value, c.priority.value, c.state.value, c.previous.value if c.previous else None,
            c.cause, c.message)
        assert r.t_s == pytest.approx(c.t_s, abs=1e-3) and r.wall_time == pytest.approx(c.wall_time, abs=1e-3)
        assert r.score == (None if c.score is None else pytest.approx(c.score, abs=1e-4))
        assert r.threshold == (None if c.threshold is None else pytest.approx(c.threshold, abs=1e-4))
    states = {(e.report.alarm, e.report.state) for e in alarms}
    # raise, audio pause, acknowledge, latch and clear of a physiological alarm; a technical one
    assert {("edema", s) for s in ("active", "AUDIO PAUSED", "ACKNOWLEDGED", "latched", "cleared")} <= states
    assert {e.report.kind for e in alarms} == {"physiological", "technical"}
    assert {e.report.cause for e in alarms} >= {"condition", "acknowledge", "pause_audio"}


def test_alarm_messages_follow_ihe_pcd_acm(replayed):
    rows, _, _ = replayed
    phases, inactivation = set(), set()
    for _, kind, _, _, text in rows:
        if kind != "alarm":
            continue
        msg = validate(text)
        group = msg.oru_r01_patient_result.oru_r01_order_observation
        assert group.obr.obr_4.to_er7() == "196616^MDC_EVT_ALARM^MDC"
        obx = [o.obx for o in group.oru_r01_observation]
        by_code = {o.obx_3.cwe_1.to_er7(): o for o in obx}
        report = parse(text).report
        flags = [f.to_er7() for f in obx[0].obx_8]
        assert flags == [codes.PRIORITY[report.priority], codes.ALERT_TYPE[report.kind]]
        if report.alarm == "lead_off":
            assert obx[0].obx_3.to_er7().startswith("196876^MDC_EVT_LEAD_DISCONN^MDC^alarm.lead_off^")
        if report.alarm == "edema":
            assert obx[0].obx_3.cwe_1.to_er7() == "196650" and obx[1].obx_3.cwe_1.to_er7() == "risk.edema"
        phases.add(by_code["68481"].obx_5.to_er7())
        inactivation.add(by_code["68483"].obx_5.to_er7())
        assert by_code["68484"].obx_5.to_er7() in ("PH", "PM", "PL")
    assert phases == {"start", "update", "end"}
    assert {"enabled", "audio-paused", "alert-acknowledged"} <= inactivation


def test_observation_messages_carry_every_window(replayed):
    rows, logged, _ = replayed
    obs = [parse(text).report for _, kind, _, _, text in rows if kind == "observation"]
    windows = logged["windows"]
    assert [o.window_index for o in obs] == [w.index for w in windows]
    for o, w in zip(obs, windows):
        assert (o.scored, o.reason) == (w.scored, w.reason)
        assert o.hr_bpm == (None if w.hr_bpm is None else pytest.approx(w.hr_bpm, abs=0.01))
        if w.quality:
            assert o.sqi_min == pytest.approx(min(w.quality.values()), abs=1e-3)
        for label, risk in w.smoothed.items():
            assert o.risks[label] == pytest.approx(risk, abs=1e-4)
        assert o.thresholds == {"edema": 0.5, "pleural_effusion": 0.5, "cardiomegaly": 0.5}
        assert o.validated == {"edema": True, "pleural_effusion": True, "cardiomegaly": False}
    assert any(not o.scored and o.reason == "lead off" for o in obs)
    assert any(o.scored and o.hr_bpm is not None for o in obs)


def test_a_label_not_validated_is_marked_in_every_observation(replayed):
    rows, _, _ = replayed
    text = next(t for _, kind, _, _, t in rows if kind == "observation" and "|scored|" in t)
    obx = {g.obx.obx_3.cwe_1.to_er7(): g.obx for g in
           validate(text).oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation}
    assert obx["risk.cardiomegaly"].obx_17.cwe_1.to_er7() == "not_validated"
    assert obx["risk.cardiomegaly"].obx_11.to_er7() == "R"
    assert obx["risk.edema"].obx_17.cwe_1.to_er7() == "validated" and obx["risk.edema"].obx_11.to_er7() == "F"
    assert obx["147842"].obx_6.to_er7() == "264864^MDC_DIM_BEAT_PER_MIN^MDC"


# -- round trips -------------------------------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=120)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", fullmatch=True)
prob = st.none() | st.floats(0, 1).map(lambda x: round(x, 4))
wall = st.floats(1.5e9, 2.5e9).map(lambda x: round(x, 3))
labels = st.from_regex(r"[a-z][a-z_]{0,20}", fullmatch=True)


@st.composite
def alarm_reports(draw) -> AlarmReport:
    kind = draw(st.sampled_from(["physiological", "technical"]))
    return AlarmReport(
        bed_id=draw(ids), session_id=draw(st.integers(1, 10**6)), seq=draw(st.integers(1, 10**6)),
        alarm=draw(st.sampled_from(["hr_high", "hr_low", "lead_off", "poor_signal", "central_unreachable"]) | labels),
        kind=kind, priority=draw(st.sampled_from(["high", "medium", "low"])),
        state=draw(st.sampled_from([s.value for s in AlarmState])),
        previous=draw(st.none() | st.sampled_from([s.value for s in AlarmState])),
        cause=draw(st.sampled_from(["condition", "acknowledge", "pause_audio", "timer"])),
        text=draw(texts).strip(), t_s=round(draw(st.floats(0, 1e6)), 3), wall_time=draw(wall),
        score=draw(prob), threshold=draw(st.none() | st.floats(0.01, 0.99).map(lambda x: round(x, 4))))


@st.composite
def observation_reports(draw) -> ObservationReport:
    names = draw(st.lists(labels, max_size=4, unique=True))
    scored = draw(st.booleans())
    return ObservationReport(
        bed_id=draw(ids), session_id=draw(st.integers(1, 10**6)), window_index=draw(st.integers(0, 10**6)),
        t_s=round(draw(st.floats(0, 1e6)), 3), wall_time=draw(wall), scored=scored,
        reason="" if scored else draw(st.sampled_from(["gap", "lead off", "poor signal", "no model"])),
        hr_bpm=draw(st.none() | st.floats(20, 300).map(lambda x: round(x, 2))),
        sqi_min=draw(st.none() | st.floats(0, 1).map(lambda x: round(x, 3))),
        risks={k: draw(prob) for k in names}, thresholds={k: draw(st.floats(0.01, 0.99).map(lambda x: round(x, 4)))
                                                          for k in names},
        validated={k: draw(st.booleans()) for k in names})


@settings(max_examples=60, deadline=None)
@given(report=alarm_reports() | observation_reports(), seq=st.integers(1, 2**40))
def test_build_then_parse_gives_the_report_back(report, seq):
    env = Envelope(control_id=f"c{seq}", bed_seq=seq, report=report)
    text = build(env)
    assert all(re.fullmatch(r"(MSH|PID|PV1|OBR|OBX)\|.*", seg) for seg in text.split("\r"))
    assert parse(text) == env


# -- refusals ----------------------------------------------------------------------------------------

def sample_alarm() -> Envelope:
    return Envelope("abc", 7, AlarmReport("bed-1", 1, 1, "edema", "physiological", "medium", "active", None,
                                          "condition", "Edema risk 0.71 > 0.50", 60.0, 1.8e9, 0.71, 0.5))


@pytest.mark.parametrize("mutate, expect", [
    (lambda t: "garbage", "not an HL7 v2 message"),
    (lambda t: t.replace("|2.6|", "|2.5|", 1), "version"),
    (lambda t: t.replace("PV1||I|^^bed-1", "PV1||I"), "bed"),
    (lambda t: t.replace("ORU^R40^ORU_R01", "ADT^A01^ADT_A01", 1), "ADT"),
    (lambda t: t.replace("|PM|", "|PX|"), "priority"),
    (lambda t: t.replace("|7||AL|", "|seven||AL|", 1), "MSH-13 sequence number 'seven' is not an integer"),
    (lambda t: t.replace("|7||AL|", "|-7||AL|", 1), "MSH-13"),
    (lambda t: t.replace("bed-1.1.A1^", "other.1.A1^"), "OBR-3"),
    # what the light reader (bedside.hl7.parsing) must refuse on its own
    (lambda t: "\r".join(s for s in t.split("\r") if not s.startswith("PV1")), "no PV1 segment"),
    (lambda t: "\r".join(s for s in t.split("\r") if not s.startswith("OBX")), "no OBX segment"),
    (lambda t: t.replace("\rOBR|", "\rNTE|1\rOBR|", 1), "'NTE' where OBR belongs"),
    (lambda t: t.replace("|2.6|", "|2.6.1|", 1), "MSH-12 version '2.6.1'"),
    (lambda t: t.replace("ORU^R40^ORU_R01", "ORU^R99^ORU_R01", 1), "MSH-9 'ORU\\^R99"),
    (lambda t: t.replace("ORU^R40^ORU_R01", "ORU^R01^ORU_R01", 1), "does not match MSH-9"),
    (lambda t: t.replace("|abc|P|", "||P|", 1), "MSH-10"),
    (lambda t: t.replace("MSH|^~\\&|", "MSH|^~\\#|", 1), "MSH-2 encoding characters"),
    (lambda t: t.replace("|0.71|", "|0.7l|", 1), "NM value '0.7l' is not a number"),
    (lambda t: t.replace("|0.71|", "|1e3|", 1), "NM value '1e3' is not a number"),
    (lambda t: t.replace("|NM|", "|XX|", 1), "value type \\(OBX-2\\) 'XX'"),
    (lambda t: t.replace("OBX|3|", "OBX|4|", 1), "OBX set id"),
    (lambda t: t.replace("68484^MDC_ATTR_ALARM_PRIORITY", "99999^SOMETHING_NEW", 1), "'99999' is not one this central"),
    (lambda t: re.sub(r"(\rOBX\|3\|[^\r]*?)\|F\|", r"\1|Q|", t, count=1), "result status \\(OBX-11\\) 'Q'"),
    (lambda t: t.replace(".000+0000", ".000+00:00", 1), "not an HL7 DTM"),
    (lambda t: t.replace("|20270115080000.000", "|20271315080000.000", 1), "MSH-7|not a date and time"),
    # python-hl7 would map these (\H\ -> "_") or drop them (an open "\0.5" -> ""): refused, never misread
    (lambda t: t.replace("Edema risk", "Edema \\H\\risk", 1), "OBX-5 .*escape sequence other than"),
    (lambda t: t.replace("|<0.5|", "|<0\\.5|", 1), "OBX-7 .*escape sequence other than"),
    (lambda t: t.replace("|^^bed-1", "|^^bed-1\\X41\\", 1), "PV1-3.3 .*escape sequence other than"),
])
def test_parse_refuses_what_is_not_a_bed_report(mutate, expect):
    text = build(sample_alarm())
    bad = mutate(text)
    assert bad != text, "the mutation did not apply"
    with pytest.raises(Hl7Error, match=expect):
        parse(bad)


@pytest.mark.parametrize("text", ["a | b ^ c ~ d & e \\ f", "\\F\\ \\H\\ \\X41\\ \\.br\\ \\", "ends in \\"])
def test_every_delimiter_and_backslash_in_a_text_comes_back_as_written(text):
    """Our escaping (messages.escape) read back through python-hl7's unescape: escape-like text is kept."""
    env = sample_alarm()
    env = dataclasses.replace(env, report=dataclasses.replace(env.report, text=text, cause=text))
    assert parse(build(env)).report.text == text and parse(build(env)).report.cause == text


def test_segments_split_on_lf_or_crlf_as_on_cr():
    text = build(sample_alarm())
    assert parse(text.replace("\r", "\n")) == parse(text.replace("\r", "\r\n")) == parse(text)


@pytest.mark.parametrize("mutate", [
    lambda t: "\r".join(s for s in t.split("\r") if not s.startswith("PV1")),
    lambda t: t.replace("|2.6|", "|2.5|", 1),
    lambda t: t.replace("|7||AL|", "|seven||AL|", 1),
    lambda t: t.replace("ORU^R40^ORU_R01", "ADT^A01^ADT_A01", 1),
    lambda t: t.replace("|0.71|", "|0.7l|", 1),
])
def test_strict_parse_refuses_the_same(mutate):
    """``parse(strict=True)`` (hl7apy first) refuses what the light reader refuses, and reads the same."""
    text = build(sample_alarm())
    assert parse(text, strict=True) == parse(text)
    with pytest.raises(Hl7Error):
        parse(mutate(text), strict=True)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_mutated_message_is_read_or_refused_never_crashes(data):
    """Any edit of a valid message: the reader returns a report or raises Hl7Error (the central answers AR),
    never another exception."""
    text = build(sample_alarm() if data.draw(st.booleans()) else Envelope("o", 3, ObservationReport(
        "bed-1", 1, 4, 20.0, 1.8e9, True, "", 71.0, 0.9, {"edema": 0.4}, {"edema": 0.5}, {"edema": True})))
    at = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 5))
    insert = data.draw(st.text(st.sampled_from("|^~\\&\r\n0123456789.-+ ARWMSHOBXPV1"), max_size=4))
    try:
        env = parse(text[:at] + insert + text[at + cut:])
    except Hl7Error:
        return
    assert isinstance(env, Envelope) and env.report.bed_id


def test_acks_validate_and_read_back():
    text = build(sample_alarm())
    for code in ("AA", "AE", "AR"):
        a = ack(text, code, "" if code == "AA" else "store | full")
        msg = validate(a)
        assert msg.msh.msh_9.to_er7() == "ACK^R40^ACK"
        assert read_ack(a) == ("abc", code, "" if code == "AA" else "store | full")
    assert read_ack(ack("xyz", "AE", "why")) == ("xyz", "AE", "why")
    with pytest.raises(ValueError):
        ack(text, "OK")
    with pytest.raises(Hl7Error):
        read_ack(text)


# -- MLLP ----------------------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(msgs=st.lists(texts.filter(lambda s: "\x0b" not in s and "\x1c" not in s).map(lambda s: "MSH|" + s),
                     min_size=1, max_size=5),
       cuts=st.lists(st.integers(0, 2000), max_size=10))
def test_mllp_decoder_reassembles_messages_cut_anywhere(msgs, cuts):
    data = b"".join(frame(m) for m in msgs)
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    decoder, out = MllpDecoder(), []
    for a, b in zip(bounds, bounds[1:]):
        out += decoder.feed(data[a:b])
    assert out == msgs and decoder.pending == 0


def test_mllp_decoder_refuses_garbage_and_oversized_frames():
    with pytest.raises(MllpError, match="outside an MLLP frame"):
        MllpDecoder().feed(frame("MSH|a") + b"GET / HTTP/1.1")
    with pytest.raises(MllpError, match="longer than 100"):
        MllpDecoder(max_bytes=100).feed(b"\x0b" + b"x" * 200)
    with pytest.raises(MllpError, match="second start"):
        MllpDecoder().feed(b"\x0bMSH|cut\x0bMSH|b\x1c\x0d")
    assert MllpDecoder().feed(frame("MSH|a") + b"\r\n" + frame("MSH|b")) == ["MSH|a", "MSH|b"]
