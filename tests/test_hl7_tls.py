"""The bed's sender over TLS to the real central server (certificates made here with cryptography): the right
bed certificate delivers; a certificate for another bed is refused (AR) and the outbox is kept; a central
whose certificate the bed's CA did not sign is never sent to."""

from __future__ import annotations

import click
import pytest

from bedside.central.server import CentralSettings, TlsSettings
from bedside.hl7.sender import Sender, SenderSettings, client_ssl_context
from bedside.hl7.settings import Hl7Settings, Hl7TlsSettings, with_tls
from central_helpers import ServerThread, make_pki, rows
from tests.engine_helpers import wait_until
from tests.test_hl7_sender import fill_outbox, outbox_rows


@pytest.fixture
def pki(tmp_path):
    """The ward CA with the central (localhost), bed-1 and bed-2; and a rogue CA with its own 'localhost'."""
    make_pki(tmp_path)
    make_pki(tmp_path, names=("localhost",), ca_name="rogue CA", prefix="rogue-")
    return tmp_path


def _central(pki, db, cert: str = "localhost") -> ServerThread:
    tls = TlsSettings(cert=pki / f"{cert}.pem", key=pki / f"{cert}.key", client_ca=pki / "ca.pem")
    return ServerThread(CentralSettings(db=str(db), port=0, beds=frozenset({"bed-1", "bed-2"}), tls=tls))


def _sender(pki, bed_db, port: int, cert: str) -> Sender:
    tls = Hl7TlsSettings(cert=pki / f"{cert}.pem", key=pki / f"{cert}.key", ca=pki / "ca.pem")
    return Sender(bed_db, "bed-1", SenderSettings(host="localhost", port=port, backoff_s=0.02, max_backoff_s=0.1,
                                                  timeout_s=5.0, tls=tls))


def test_a_bed_with_its_certificate_delivers_over_tls(tmp_path, pki) -> None:
    bed_db, central_db = tmp_path / "bed.db", tmp_path / "central.db"
    ids = fill_outbox(bed_db, "bed-1", windows=9)
    with _central(pki, central_db) as st:
        sender = _sender(pki, bed_db, st.address[1], "bed-1").start()
        try:
            assert wait_until(lambda: outbox_rows(bed_db) == [])
        finally:
            sender.stop()
        assert st.server.counters.rejected == 0
    assert [r[0] for r in rows(central_db, "select control_id from messages order by rowid")] == ids
    assert rows(central_db, "select count(*) from rejects") == [(0,)]


def test_a_certificate_for_another_bed_is_refused_and_the_outbox_kept(tmp_path, pki) -> None:
    bed_db, central_db = tmp_path / "bed.db", tmp_path / "central.db"
    ids = fill_outbox(bed_db, "bed-1", windows=3)
    with _central(pki, central_db) as st:
        sender = _sender(pki, bed_db, st.address[1], "bed-2").start()  # bed-1's log, bed-2's certificate
        try:  # the error of a refused attempt (stop() can cut the next attempt short: another error)
            assert wait_until(lambda: st.server.counters.rejected >= 2 and "ACK AR" in (sender.last_error or ""))
            error = sender.last_error
        finally:
            sender.stop()
        assert "certificate is for bed 'bed-2'" in error
    assert [r[1] for r in outbox_rows(bed_db)] == ids  # nothing lost, nothing accepted
    assert rows(central_db, "select count(*) from messages") == [(0,)]
    reasons = {r[0] for r in rows(central_db, "select reason from rejects")}
    assert reasons == {"certificate is for bed 'bed-2' but the message is from bed 'bed-1'"}


def test_a_central_the_beds_ca_did_not_sign_is_not_sent_to(tmp_path, pki) -> None:
    bed_db, central_db = tmp_path / "bed.db", tmp_path / "central.db"
    ids = fill_outbox(bed_db, "bed-1", windows=3)
    with _central(pki, central_db, cert="rogue-localhost") as st:  # a central with someone else's certificate
        sender = _sender(pki, bed_db, st.address[1], "bed-1").start()
        try:
            assert wait_until(lambda: sender.failures >= 3)
        finally:
            sender.stop()
        assert "certificate verify failed" in sender.last_error
        assert st.server.counters.connections == 0  # no handshake completed: no message could be read
    assert [r[1] for r in outbox_rows(bed_db)] == ids
    assert rows(central_db, "select count(*) from messages") == [(0,)]


def test_tls_options_need_all_three_files_and_an_address(pki) -> None:
    hl7 = Hl7Settings("localhost", 2575)
    cert, key, ca = (str(pki / n) for n in ("bed-1.pem", "bed-1.key", "ca.pem"))
    assert with_tls(hl7, None, None, None) is hl7
    assert with_tls(hl7, cert, key, ca).tls == Hl7TlsSettings(pki / "bed-1.pem", pki / "bed-1.key", pki / "ca.pem")
    with pytest.raises(click.UsageError, match="missing --hl7-tls-ca"):
        with_tls(hl7, cert, key, None)
    with pytest.raises(click.UsageError, match="without --hl7 HOST:PORT"):
        with_tls(None, cert, key, ca)
    with pytest.raises(click.BadParameter, match="TLS files refused"):
        with_tls(hl7, cert, str(pki / "bed-2.key"), ca)  # a key that is not the certificate's
    with pytest.raises(ValueError, match="TLS files refused"):
        client_ssl_context(Hl7TlsSettings(pki / "ca.pem", pki / "bed-1.key", pki / "ca.pem"))
