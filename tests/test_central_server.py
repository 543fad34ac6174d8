"""The central's MLLP server: ACK after commit, de-duplication, rejects, bed binding, silence, TLS."""

from __future__ import annotations

import re
import ssl
import sqlite3

import pytest

from bedside.central.overview_data import read_history, read_overview
from bedside.central.server import CentralSettings, load_bed_list
from bedside.central.store import BED_SILENT, MESSAGES_MISSING, MESSAGES_MISSING_PRIORITY
from bedside.hl7 import messages
from bedside.hl7.model import Envelope
from central_helpers import ServerThread, alarm, envelope, make_pki, observation, rows, send


@pytest.mark.parametrize("strict", [False, True])
def test_accepts_stores_once_and_acks_a_duplicate_again(tmp_path, strict) -> None:
    db = tmp_path / "central.db"
    settings = CentralSettings(db=str(db), port=0, beds=frozenset({"bed-1"}), strict=strict)
    with ServerThread(settings) as st:
        first = envelope(alarm("bed-1", 1))
        acks = send(*st.address, [first, envelope(observation("bed-1", 1, hr=88.0)), first])
        assert [a[1] for a in acks] == ["AA", "AA", "AA"]
        assert acks[0][0] == acks[2][0] == first.control_id
        assert st.server.counters.stored == 2 and st.server.counters.duplicates == 1
    assert rows(db, "select control_id, alarm, state from alarm_transitions") == [(first.control_id, "edema", "active")]
    assert rows(db, "select hr_bpm, link from beds where bed_id = 'bed-1'") == [(88.0, "disconnected")]
    assert rows(db, "select alarm, state, priority from active_alarms") == [("edema", "active", "high")]


def test_active_alarms_follow_the_transitions(tmp_path) -> None:
    db = tmp_path / "central.db"
    with ServerThread(CentralSettings(db=str(db), port=0, beds=frozenset({"bed-1"}))) as st:
        send(*st.address, [envelope(alarm("bed-1", 1)),
                           envelope(alarm("bed-1", 2, state="ACKNOWLEDGED", previous="active")),
                           envelope(alarm("bed-1", 3, alarm_name="lead_off", kind="technical", priority="medium")),
                           envelope(alarm("bed-1", 4, alarm_name="lead_off", kind="technical", priority="medium",
                                          state="cleared", previous="active"))])
        assert rows(db, "select alarm, state, raised_wall from active_alarms") == [("edema", "ACKNOWLEDGED", 1_760_000_001.0)]
        send(*st.address, [envelope(alarm("bed-1", 1, alarm_name="hr_high", session=2))])  # a new session
    assert rows(db, "select alarm, session_id from active_alarms") == [("hr_high", 2)]
    assert len(rows(db, "select * from alarm_transitions")) == 5


def test_unknown_bed_and_malformed_messages_are_refused_with_a_reason(tmp_path) -> None:
    db = tmp_path / "central.db"
    with ServerThread(CentralSettings(db=str(db), port=0, beds=frozenset({"bed-1"}))) as st:
        acks = send(*st.address, [envelope(alarm("bed-9", 1))])
        assert acks[0][1] == "AR" and "unknown bed 'bed-9'" in acks[0][2]
        acks = send(*st.address, ["MSH|^~\\&|X|Y|||20250101||ORU^R01^ORU_R01|abc|P|2.6\rPID|1"])
        assert acks[0][1] == "AR" and acks[0][0] == "abc" and "malformed" in acks[0][2]
        acks = send(*st.address, [envelope(alarm("bed-1", 1)), envelope(alarm("bed-2", 1))])
        assert [a[1] for a in acks] == ["AA", "AR"]
        assert "this connection carries bed 'bed-1'" in acks[1][2]
        assert send(*st.address, [], raw=b"GET / HTTP/1.0\r\n\r\n") == []  # garbage: logged, connection closed
        assert st.wait_for(lambda: st.server.counters.rejected == 4)
    reasons = [r[0] for r in rows(db, "select reason from rejects order by id")]
    assert len(reasons) == 4 and "MLLP framing" in reasons[3]
    assert rows(db, "select count(*) from alarm_transitions") == [(1,)]


def test_first_contact_registration_when_enabled(tmp_path) -> None:
    db = tmp_path / "central.db"
    with ServerThread(CentralSettings(db=str(db), port=0, register_on_contact=True)) as st:
        assert send(*st.address, [envelope(alarm("bed-7", 1))])[0][1] == "AA"
    assert rows(db, "select registered from beds where bed_id = 'bed-7'") == [("first-contact",)]
    with ServerThread(CentralSettings(db=str(db), port=0)) as st:  # remembered after a restart
        assert send(*st.address, [envelope(alarm("bed-7", 2))])[0][1] == "AA"


def test_a_silent_bed_raises_a_technical_alarm_that_its_next_message_clears(tmp_path) -> None:
    db = tmp_path / "central.db"
    with ServerThread(CentralSettings(db=str(db), port=0, beds=frozenset({"bed-1", "bed-2"}), silent_s=0.4)) as st:
        assert st.wait_for(lambda: len(rows(db, "select * from active_alarms where alarm = ?", BED_SILENT)) == 2)
        send(*st.address, [envelope(observation("bed-1", 1))])
        assert rows(db, "select bed_id from active_alarms") == [("bed-2",)]
    log = rows(db, "select bed_id, state from central_alarms order by id")
    assert ("bed-1", "active") in log and ("bed-1", "cleared") in log and ("bed-2", "cleared") not in log


def test_bed_list_file(tmp_path) -> None:
    f = tmp_path / "beds.txt"
    f.write_text("# ward 3\nbed-1\n\nbed-2  # window\n")
    assert load_bed_list(f) == ["bed-1", "bed-2"]
    f.write_text("bed 1\n")
    with pytest.raises(ValueError, match="spaces or HL7 delimiters"):
        load_bed_list(f)


# -- TLS with client certificates ---------------------------------------------------------------------

@pytest.fixture
def pki(tmp_path):
    """A CA, the central's certificate (localhost) and client certificates for bed-1 and bed-2, as PEM files."""
    return make_pki(tmp_path)


def _client_ctx(pki, bed: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if bed is not None:
        ctx.load_cert_chain(str(pki / f"{bed}.pem"), str(pki / f"{bed}.key"))
    return ctx


def _no_ack(st, env, **kw) -> bool:
    """True when the connection failed or closed without an ACK (TLS 1.3 refuses a client after its handshake)."""
    try:
        return send(*st.address, [env], **kw) == []
    except (ssl.SSLError, ConnectionError, OSError):
        return True


def test_tls_binds_the_bed_to_its_certificate(tmp_path, pki) -> None:
    from bedside.central.server import TlsSettings

    tls = TlsSettings(cert=pki / "localhost.pem", key=pki / "localhost.key", client_ca=pki / "ca.pem")
    db = tmp_path / "central.db"
    with ServerThread(CentralSettings(db=str(db), port=0, beds=frozenset({"bed-1", "bed-2"}), tls=tls)) as st:
        ok = send(*st.address, [envelope(alarm("bed-1", 1))], ssl_ctx=_client_ctx(pki, "bed-1"))
        assert [a[1] for a in ok] == ["AA"]
        spoof = send(*st.address, [envelope(alarm("bed-1", 2))], ssl_ctx=_client_ctx(pki, "bed-2"))
        assert spoof[0][1] == "AR" and "certificate is for bed 'bed-2'" in spoof[0][2]
        assert _no_ack(st, envelope(alarm("bed-1", 3)), ssl_ctx=_client_ctx(pki, None))  # no client certificate
        assert _no_ack(st, envelope(alarm("bed-1", 4)))  # plain TCP to a TLS port
    assert rows(db, "select seq from alarm_transitions") == [(1,)]


def test_malformed_messages_are_refused_by_the_light_reader(tmp_path) -> None:
    """What the fast reader (not hl7apy) must refuse, each answered AR with its reason and logged."""
    db = tmp_path / "central.db"
    good = messages.build(envelope(alarm("bed-1", 1)))
    bad = {
        "no PV1 segment": "\r".join(seg for seg in good.split("\r") if not seg.startswith("PV1")),
        "MSH-12 version '2.5'": good.replace("|2.6|", "|2.5|", 1),
        "MSH-13 sequence number 'x7' is not an integer": re.sub(r"\|P\|2\.6\|\d+\|", "|P|2.6|x7|", good, count=1),
        "MSH-9 'ORU^R99^ORU_R01'": good.replace("ORU^R40^ORU_R01", "ORU^R99^ORU_R01", 1),
        "NM value '0.7x' is not a number": good.replace("|0.7|", "|0.7x|", 1),
    }
    with ServerThread(CentralSettings(db=str(db), port=0, beds=frozenset({"bed-1"}))) as st:
        for reason, text in bad.items():
            assert text != good
            (ack,) = send(*st.address, [text])
            assert ack[1] == "AR" and reason in ack[2], (reason, ack)
        assert send(*st.address, [good])[0][1] == "AA"
    assert len(rows(db, "select reason from rejects")) == len(bad)
    assert rows(db, "select count(*) from alarm_transitions") == [(1,)]


def _seq(report, seq: int):
    return Envelope(control_id=f"g{seq}-{report.session_id}", bed_seq=seq, report=report)


def test_a_gap_in_a_beds_sequence_raises_messages_missing(tmp_path) -> None:
    db = tmp_path / "central.db"
    with ServerThread(CentralSettings(db=str(db), port=0, beds=frozenset({"bed-1", "bed-2"}))) as st:
        first = _seq(observation("bed-1", 1), 10)
        acks = send(*st.address, [first, _seq(observation("bed-1", 2), 11), first,  # a resend: no gap
                                  _seq(observation("bed-1", 5), 14)])  # 12 and 13 never arrived
        assert [a[1] for a in acks] == ["AA"] * 4
        assert send(*st.address, [_seq(observation("bed-2", 1), 1), _seq(observation("bed-2", 2), 2)])[1][1] == "AA"
        assert rows(db, "select bed_id, priority, source, message from active_alarms") == [
            ("bed-1", MESSAGES_MISSING_PRIORITY, "central",
             "2 messages of this session missing from bed bed-1 (last gap: MSH-13 12-13)")]
        send(*st.address, [_seq(observation("bed-1", 9), 18)])  # three more
        assert rows(db, "select message from active_alarms") == [
            ("5 messages of this session missing from bed bed-1 (last gap: MSH-13 15-17)",)]
        assert st.server.counters.missing == 5
        conn = sqlite3.connect(db)
        try:  # what the overview's tile and bed screen show
            view = next(v for v in read_overview(conn) if v.bed_id == "bed-1")
            history = read_history(conn, "bed-1")
        finally:
            conn.close()
        assert (view.top.alarm, view.top.priority, view.top.marker) == (MESSAGES_MISSING, "low", "*")
        assert [h.source for h in history if h.alarm == MESSAGES_MISSING] == ["central", "central"]
        send(*st.address, [_seq(observation("bed-1", 1, session=2), 19)])  # a new session starts complete
        assert rows(db, "select * from active_alarms") == []
        send(*st.address, [_seq(observation("bed-1", 1, session=3), 1)])  # a new bed log: sequence restarts
        assert rows(db, "select * from active_alarms") == []
    assert rows(db, "select bed_id, missing_messages, seq_restarts from beds order by bed_id") == [
        ("bed-1", 5, 1), ("bed-2", 0, 0)]
    assert rows(db, "select alarm, state, previous from central_alarms where bed_id = 'bed-1' order by id") == [
        (MESSAGES_MISSING, "active", None), (MESSAGES_MISSING, "active", "active"),
        (MESSAGES_MISSING, "cleared", "active")]


def test_a_file_that_is_not_a_central_db_is_refused_unchanged(tmp_path) -> None:
    import os

    from bedside.central.store import CentralStore, CentralStoreError
    from bedside.store import Store

    text = tmp_path / "notes.db"
    text.write_text("not a database")
    text.chmod(0o644)
    bed_log = tmp_path / "bedside.db"
    Store(bed_log).close()
    for path, what in ((text, "not an SQLite database"), (bed_log, "a bed's alarm log")):
        before = (path.read_bytes(), os.stat(path).st_mode)
        with pytest.raises(CentralStoreError, match=what):
            CentralStore(path)
        assert (path.read_bytes(), os.stat(path).st_mode) == before


def test_a_bug_in_reading_answers_ae_and_keeps_serving(tmp_path, monkeypatch) -> None:
    """An unexpected exception while reading (the central's fault, not the bed's) is answered AE, so the bed
    keeps the message and sends it again; the connection and the server carry on."""
    db = tmp_path / "central.db"
    real_parse = messages.parse
    calls = {"n": 0}

    def flaky(text, strict=False):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated reader bug")
        return real_parse(text, strict=strict)

    monkeypatch.setattr(messages, "parse", flaky)
    with ServerThread(CentralSettings(db=str(db), port=0, beds=frozenset({"bed-1"}))) as st:
        first = envelope(alarm("bed-1", 1))
        acks = send(*st.address, [first, first])
        assert [a[1] for a in acks] == ["AE", "AA"] and "internal error" in acks[0][2]
        assert st.server.counters.errors == 1
    assert rows(db, "select count(*) from alarm_transitions") == [(1,)]
