"""The alarm log as a FHIR R4 Bundle (``bedside alerts --format fhir``), validated by fhir.resources on write.

What goes in (a ``collection`` Bundle; see docs/central.md, "FHIR export"):

- one ``Device`` per bed (identifier: the bed id; no patient identifiers are ever in the log);
- per analysed window, an ``Observation`` of the heart rate (MDC 147842 MDC_ECG_HEART_RATE and LOINC
  8867-4, UCUM ``/min``) when the window had one, and an ``Observation`` "ECG risk panel" with one
  component per model label: the smoothed risk (UCUM ``1``), or a ``dataAbsentReason`` with the reason the
  window was not scored;
- per alarm transition, a ``Communication`` (category ``alert``): the bed (sender, a Device) told the
  staff that an alarm changed state. Communication is the R4 resource for "information conveyed from a
  sender to recipients", it needs no Patient (the log has none), has a ``priority`` (high -> stat,
  medium -> asap, low -> routine), a send time, and a text payload (the banner message). ``Flag``
  needs a Patient subject and has no priority or state history; ``DetectedIssue`` is for problems with a
  proposed clinical action (drug interactions) and fits no technical alarm. The alarm's identity is in
  ``topic`` (the bed's alarm name), its IEC 60601-1-8 state, previous state, cause, kind, who,
  signal time, score and threshold in extensions under :data:`EXT`.

The models are fhir.resources' R4B package (FHIR 4.3, the R4 line; the resources used here are the
same in 4.0.1, Observation and Bundle are normative). Full URLs are ``urn:uuid`` derived from the bed,
session and sequence (the same log gives the same Bundle).
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from bedside.hl7 import codes
from bedside.store import StoreError, query_transitions, readonly_uri, utc

#: FHIR system URIs.
MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
LOCAL_SYSTEM = "urn:cromotex:bedside"  # the HL7 messages' local code system (bedside.hl7.codes.LOCAL)
BED_ID_SYSTEM = "urn:cromotex:bed-id"
TRANSITION_ID_SYSTEM = "urn:cromotex:alarm-transition"  # value: bed/session/seq
EXT = "urn:cromotex:fhir:extension:alarm-"  # + state, previous-state, cause, kind, who, signal-time, score, threshold
#: IEC 60601-1-8 priority -> Communication.priority (request-priority value set).
COMMUNICATION_PRIORITY = {"high": "stat", "medium": "asap", "low": "routine"}
_NS = uuid.UUID("5f0e2c55-8a8b-4f53-9a3e-2f1b1fd3f0a1")  # namespace of the Bundle's urn:uuid full URLs


def _urn(*parts: object) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '/'.join(map(str, parts)))}"


def _coding(code: tuple[str, str, str]) -> dict[str, str]:
    system = MDC_SYSTEM if code[2] == codes.MDC else LOCAL_SYSTEM
    return {"system": system, "code": code[0], "display": code[1]}


def _device(bed_id: str) -> dict[str, Any]:
    return {"resourceType": "Device", "identifier": [{"system": BED_ID_SYSTEM, "value": bed_id}],
            "deviceName": [{"name": f"CroMoTEX bedside monitor {bed_id}", "type": "user-friendly-name"}],
            "type": {"coding": [_coding(codes.MDS)]}, "status": "active"}


def heart_rate_observation(w: dict[str, Any], device: str) -> dict[str, Any]:
    """Observation of one window's heart rate (beats per minute)."""
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [_coding(codes.HEART_RATE),
                                {"system": LOINC_SYSTEM, "code": "8867-4", "display": "Heart rate"}]},
            "effectiveDateTime": utc(w["wall_time"]), "device": {"reference": device},
            "valueQuantity": {"value": round(w["hr_bpm"], 2), "unit": "/min", "system": UCUM_SYSTEM, "code": "/min"}}


def risk_observation(w: dict[str, Any], labels: list[str], device: str) -> dict[str, Any]:
    """Observation "ECG risk panel" of one window: a component per label (risk 0-1, or why it is absent)."""
    smoothed = json.loads(w["smoothed"] or "{}")
    components = []
    for label in labels:
        comp: dict[str, Any] = {"code": {"coding": [_coding(codes.risk_code(label))]}}
        value = smoothed.get(label)
        if w["scored"] and value is not None:
            comp["valueQuantity"] = {"value": round(float(value), 4), "unit": "1", "system": UCUM_SYSTEM, "code": "1"}
        else:
            comp["dataAbsentReason"] = {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}],
                "text": f"window not scored: {w['reason'] or 'no score'}" + (f" ({w['detail']})" if w["detail"] else "")}
        components.append(comp)
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [_coding(codes.ANALYSIS)], "text": "ECG risk panel (smoothed risks)"},
            "effectiveDateTime": utc(w["wall_time"]), "device": {"reference": device},
            "component": components}


def alarm_communication(t: dict[str, Any], device: str) -> dict[str, Any]:
    """Communication of one alarm transition (see the module docstring for why Communication)."""
    ext = [{"url": EXT + "state", "valueCode": t["state"]},
           {"url": EXT + "kind", "valueCode": t["kind"]},
           {"url": EXT + "cause", "valueCode": t["cause"] or "condition"},
           {"url": EXT + "signal-time", "valueDecimal": round(t["t_s"], 3)}]
    if t.get("previous"):
        ext.append({"url": EXT + "previous-state", "valueCode": t["previous"]})
    if t.get("who"):
        ext.append({"url": EXT + "who", "valueString": t["who"]})
    for key in ("score", "threshold"):
        if t.get(key) is not None:
            ext.append({"url": EXT + key, "valueDecimal": round(float(t[key]), 4)})
    name = t["alarm"]
    topic = [_coding(codes.alarm_code(name))]
    if name in codes.MDC_EVENTS:
        topic.insert(0, _coding(codes.MDC_EVENTS[name]))
    return {"resourceType": "Communication", "status": "completed",
            "identifier": [{"system": TRANSITION_ID_SYSTEM, "value": f"{t['bed_id']}/{t['session_id']}/{t['seq']}"}],
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category",
                                      "code": "alert"}]}],
            "priority": COMMUNICATION_PRIORITY[t["priority"]], "topic": {"coding": topic, "text": name},
            "sent": t["utc"], "sender": {"reference": device},
            "payload": [{"contentString": t["message"] or name}], "extension": ext}


def query_windows(db_path: str | os.PathLike[str], since_wall: float | None = None, session_id: int | None = None,
                  bed_id: str | None = None) -> list[dict[str, Any]]:
    """Analysed windows with their bed, oldest first (read-only), filtered like ``query_transitions``."""
    path = Path(db_path)
    conn = sqlite3.connect(readonly_uri(path), uri=True)
    conn.row_factory = sqlite3.Row
    where, args = ["1"], []
    for clause, value in (("w.wall_time >= ?", since_wall), ("w.session_id = ?", session_id), ("s.bed_id = ?", bed_id)):
        if value is not None:
            where.append(clause)
            args.append(value)
    try:
        rows = conn.execute("select s.bed_id, w.session_id, w.idx, w.t_s, w.wall_time, w.scored, w.reason, w.detail, "
                            "w.smoothed, w.hr_bpm from windows w join sessions s on s.id = w.session_id "
                            f"where {' and '.join(where)} order by w.wall_time, w.session_id, w.idx", args).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: not a bedside alarm log ({exc})") from exc
    finally:
        conn.close()
    return [dict(r) for r in rows]


def build_bundle(transitions: list[dict[str, Any]], windows: list[dict[str, Any]], *,
                 now: float | None = None) -> dict[str, Any]:
    """A collection Bundle (as a dict, not yet validated) of the devices, observations and alarms."""
    labels = sorted({k for w in windows for k in json.loads(w["smoothed"] or "{}")})
    beds = sorted({r["bed_id"] for r in (*transitions, *windows)})
    entries = [{"fullUrl": _urn("device", b), "resource": _device(b)} for b in beds]
    for w in windows:
        device = _urn("device", w["bed_id"])
        key = (w["bed_id"], w["session_id"], w["idx"])
        if w["hr_bpm"] is not None:
            entries.append({"fullUrl": _urn("hr", *key), "resource": heart_rate_observation(w, device)})
        if labels:
            entries.append({"fullUrl": _urn("risk", *key), "resource": risk_observation(w, labels, device)})
    for t in transitions:
        entries.append({"fullUrl": _urn("alarm", t["bed_id"], t["session_id"], t["seq"]),
                        "resource": alarm_communication(t, _urn("device", t["bed_id"]))})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    if now is not None:
        bundle["timestamp"] = utc(now)
    return bundle


def validate_bundle(bundle: dict[str, Any]) -> str:
    """Validate with fhir.resources (R4B models) and return the Bundle's JSON; ValueError names what is wrong."""
    try:
        from fhir.resources.R4B.bundle import Bundle
    except ImportError as exc:
        raise ImportError(f"FHIR export needs fhir.resources ({exc}): pip install 'cromotex-bedside[fhir]'") from exc
    from pydantic import ValidationError

    try:
        model = Bundle.model_validate(bundle)
    except ValidationError as exc:
        raise ValueError(f"FHIR Bundle failed validation: {exc}") from exc
    return model.model_dump_json(indent=1, exclude_none=True)


def log_to_fhir(db_path: str | os.PathLike[str], since_wall: float | None = None, session_id: int | None = None,
                bed_id: str | None = None, now: float | None = None) -> str:
    """The log's transitions and windows (filtered) as validated FHIR Bundle JSON."""
    transitions = query_transitions(db_path, since_wall, session_id, bed_id)
    windows = query_windows(db_path, since_wall, session_id, bed_id)
    return validate_bundle(build_bundle(transitions, windows, now=now))
