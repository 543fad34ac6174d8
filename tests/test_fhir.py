"""`bedside alerts --format fhir`: the log as a FHIR R4 Bundle, validated by fhir.resources, nothing lost."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bedside.cli import main
from bedside.events import AlarmChange, AlarmKind, AlarmState, Priority, WindowResult
from bedside.store import Store

pytest.importorskip("fhir.resources", reason="fhir.resources not installed (pip install 'cromotex-bedside[fhir]')")

T0 = 1_760_000_000.0
LABELS = ("edema", "pleural_effusion", "cardiomegaly")


def _window(i: int, scored: bool) -> WindowResult:
    risks = {k: 0.1 * (j + 1) + 0.01 * i for j, k in enumerate(LABELS)}
    return WindowResult(t_s=10.0 + 5 * i, index=i, scored=scored, reason="" if scored else "lead_off",
                        scores=risks if scored else {}, smoothed=risks if scored else {},
                        hr_bpm=70.0 + i if scored else None, quality={"II": 0.9}, lead_off={"RA": not scored},
                        detail="" if scored else "RA off")


def _change(seq: int, state: AlarmState, previous: AlarmState | None, alarm: str = "edema",
            who: str | None = None, cause: str = "condition") -> AlarmChange:
    kind = AlarmKind.TECHNICAL if alarm == "lead_off" else AlarmKind.PHYSIOLOGICAL
    return AlarmChange(t_s=10.0 + seq, wall_time=T0 + seq, alarm=alarm, kind=kind, priority=Priority.HIGH, state=state,
                       previous=previous, message=f"{alarm} {state.value}", score=0.71, threshold=0.55, who=who,
                       cause=cause, seq=seq)


@pytest.fixture
def log_db(tmp_path):
    """A bed log with two sessions: 4 windows (one not scored) and 4 transitions (one acknowledged)."""
    path = tmp_path / "bed.db"
    store = Store(path)
    for bed in ("bed-1", "bed-2"):
        sid = store.open_session(bed_id=bed, source_kind="replay", device="rec", fs_hz=500.0, bundle_sha256="x",
                                 bundle_version="1", provider="CPU", hop_s=5.0, config_sha256="c", resume_key=None,
                                 engine_version="0", wall_time=T0)
        windows = [_window(i, scored=i != 2) for i in range(4)]
        changes = [(0, _change(1, AlarmState.ACTIVE, None)),
                   (1, _change(2, AlarmState.ACKNOWLEDGED, AlarmState.ACTIVE, who="rn.lee", cause="acknowledge")),
                   (2, _change(3, AlarmState.ACTIVE, None, alarm="lead_off")),
                   (3, _change(4, AlarmState.CLEARED, AlarmState.ACTIVE, alarm="lead_off"))]
        store.commit(sid, windows, T0 + 1, changes, [])
    store.close()
    return path


def _export(path, *args: str) -> dict:
    r = CliRunner().invoke(main, ["alerts", "--db", str(path), "--format", "fhir", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_every_transition_and_window_is_in_the_bundle(log_db) -> None:
    from fhir.resources.R4B.bundle import Bundle

    data = _export(log_db)
    Bundle.model_validate(data)  # what was written validates when read back
    assert data["type"] == "collection"
    by_type: dict[str, list] = {}
    for e in data["entry"]:
        by_type.setdefault(e["resource"]["resourceType"], []).append(e)
    assert len(by_type["Device"]) == 2
    comms = [e["resource"] for e in by_type["Communication"]]
    assert sorted(c["identifier"][0]["value"] for c in comms) == sorted(
        f"{b}/{s}/{q}" for b, s in (("bed-1", 1), ("bed-2", 2)) for q in range(1, 5))
    ack = next(c for c in comms if {"url": "urn:cromotex:fhir:extension:alarm-who", "valueString": "rn.lee"}
               in c["extension"])
    states = {x["url"].removeprefix("urn:cromotex:fhir:extension:alarm-"): x.get("valueCode") for x in ack["extension"]}
    assert states["state"] == "ACKNOWLEDGED" and states["previous-state"] == "active" and ack["priority"] == "stat"
    obs = [e["resource"] for e in by_type["Observation"]]
    hr = [o for o in obs if any(c["code"] == "147842" for c in o["code"]["coding"])]
    assert sorted(o["valueQuantity"]["value"] for o in hr) == [70.0, 70.0, 71.0, 71.0, 73.0, 73.0]
    panels = [o for o in obs if o not in hr]
    assert len(panels) == 8  # one risk panel per window, scored or not
    absent = [c for p in panels for c in p["component"] if "dataAbsentReason" in c]
    assert len(absent) == 2 * len(LABELS) and all("lead_off" in c["dataAbsentReason"]["text"] for c in absent)
    # every reference points at an entry of the bundle
    urls = {e["fullUrl"] for e in data["entry"]}
    refs = [o["device"]["reference"] for o in obs] + [c["sender"]["reference"] for c in comms]
    assert set(refs) <= urls


def test_filters_apply_to_the_bundle(log_db) -> None:
    data = _export(log_db, "--bed", "bed-2")
    devices = [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Device"]
    assert [d["identifier"][0]["value"] for d in devices] == ["bed-2"]
    assert sum(e["resource"]["resourceType"] == "Communication" for e in data["entry"]) == 4


def test_same_log_same_full_urls(log_db) -> None:
    a, b = _export(log_db), _export(log_db)
    assert [e["fullUrl"] for e in a["entry"]] == [e["fullUrl"] for e in b["entry"]]


def test_invalid_bundle_is_refused_not_written() -> None:
    from bedside.fhir import validate_bundle

    for bad in ({"resourceType": "Communication"},  # status is required
                {"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
                 "valueQuantity": {"value": "fast"}}):
        with pytest.raises(ValueError, match="failed validation"):
            validate_bundle({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": bad}]})


def test_missing_log_is_a_clear_error(tmp_path) -> None:
    r = CliRunner().invoke(main, ["alerts", "--db", str(tmp_path / "none.db"), "--format", "fhir"])
    assert r.exit_code != 0 and "no such alarm log" in r.output
