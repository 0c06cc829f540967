"""Spam and virus scanners over their real protocols: spamd itself, clamd and rspamd peers."""

from __future__ import annotations

import time

import pytest

from postald import inspection
from postald.config import load
from postald.inspection import ClamAV, InspectionResult, Rspamd, SpamAssassin
from postald.inspection.spamd import parse_report
from schema.message_db import spam_checks
from tests.factories import make_server
from tests.incoming.scanners import SilentPeer, Spamd
from tests.support.peers import EICAR, GTUBE, ClamdPeer, RspamdPeer, free_port

pytestmark = pytest.mark.timeout(120)

PLAIN = (b"From: Alice <alice@example.net>\r\nTo: bob@example.com\r\nSubject: Lunch tomorrow\r\n"
         b"Date: Mon, 04 Mar 2024 10:00:00 +0000\r\nMessage-ID: <lunch-1234@example.net>\r\n\r\n"
         b"Shall we meet at the usual place at noon?\r\n")
SPAM = (b"From: Alice <alice@example.net>\r\nTo: bob@example.com\r\nSubject: Offer\r\n"
        b"Date: Mon, 04 Mar 2024 10:00:00 +0000\r\nMessage-ID: <offer-1234@example.net>\r\n\r\n" + GTUBE + b"\r\n")
VIRUS = PLAIN + EICAR + b"\r\n"


@pytest.fixture(scope="module")
def spamd(tmp_path_factory):
    with Spamd(tmp_path_factory.mktemp("spamd")) as server:
        yield server


def test_spamd_scores_gtube_as_spam_and_a_plain_message_as_ham(spamd):
    scanner = SpamAssassin("127.0.0.1", spamd.port)
    spam = InspectionResult()
    scanner.inspect(SPAM, spam)
    assert spam.spam_score >= 1000
    assert any(c.code == "GTUBE" and c.score == 1000 and "Unsolicited Bulk Email" in c.description
               for c in spam.spam_checks)
    ham = InspectionResult()
    scanner.inspect(PLAIN, ham)
    assert ham.spam_score < 5 and "GTUBE" not in [c.code for c in ham.spam_checks]


def test_spamd_leaves_out_relay_rules_for_outgoing_mail(spamd):
    scanner = SpamAssassin("127.0.0.1", spamd.port)
    incoming, outgoing = InspectionResult(), InspectionResult()
    scanner.inspect(PLAIN, incoming, scope="incoming")
    scanner.inspect(PLAIN, outgoing, scope="outgoing")
    assert "NO_RELAYS" in [c.code for c in incoming.spam_checks]
    assert not {"NO_RELAYS", "NO_RECEIVED"} & {c.code for c in outgoing.spam_checks}


def test_spamd_down_or_silent_gives_a_zero_check_instead_of_failing():
    down = InspectionResult()
    SpamAssassin("127.0.0.1", free_port()).inspect(PLAIN, down)
    assert [(c.code, c.score) for c in down.spam_checks] == [("ERROR", 0)]
    with SilentPeer() as silent:
        slow = InspectionResult()
        started = time.monotonic()
        SpamAssassin("127.0.0.1", silent.port, timeout=0.5).inspect(PLAIN, slow)
        assert time.monotonic() - started < 3
    assert [(c.code, c.score) for c in slow.spam_checks] == [("TIMEOUT", 0)]
    with SilentPeer(answer=b"SPAMD/1.0 76 Bad header line\r\n") as broken:
        bad = InspectionResult()
        SpamAssassin("127.0.0.1", broken.port).inspect(PLAIN, bad)
    assert [c.code for c in bad.spam_checks] == ["ERROR"]


def test_spamd_report_parsing_joins_continuation_lines():
    report = ("Content analysis details:   (7.1 points, 5.0 required)\n\n"
              " pts rule name              description\n"
              "---- ---------------------- --------------------------------------------------\n"
              " 3.5 BAYES_99               BODY: Bayes spam probability is 99 to 100%\n"
              "                            [score: 1.0000]\n"
              "-0.1 DKIM_VALID             Message has at least one valid DKIM or DK signature\n"
              "1000 GTUBE                  BODY: Generic Test\n")
    assert parse_report(report) == [
        ("BAYES_99", 3.5, "BODY: Bayes spam probability is 99 to 100% [score: 1.0000]"),
        ("DKIM_VALID", -0.1, "Message has at least one valid DKIM or DK signature"),
        ("GTUBE", 1000.0, "BODY: Generic Test"),
    ]
    assert parse_report("no separator at all") == []


def test_clamd_finds_the_eicar_test_virus_and_passes_clean_mail():
    with ClamdPeer() as clamd:
        scanner = ClamAV("127.0.0.1", clamd.port)
        infected, clean = InspectionResult(), InspectionResult()
        scanner.inspect(VIRUS, infected)
        scanner.inspect(PLAIN * 3000, clean)  # several INSTREAM chunks
        assert clamd.scanned == [VIRUS, PLAIN * 3000]
    assert (infected.threat, infected.threat_message) == (True, "Eicar-Test-Signature FOUND")
    assert (clean.threat, clean.threat_message) == (False, "No threats found")


def test_clamd_down_slow_or_confused_never_marks_a_threat():
    down = InspectionResult()
    ClamAV("127.0.0.1", free_port()).inspect(VIRUS, down)
    assert (down.threat, down.threat_message) == (False, "Error when scanning for threats")
    with ClamdPeer(delay=2) as clamd:
        slow = InspectionResult()
        started = time.monotonic()
        ClamAV("127.0.0.1", clamd.port, timeout=0.5).inspect(VIRUS, slow)
        assert time.monotonic() - started < 2
    assert (slow.threat, slow.threat_message) == (False, "Timed out scanning for threats")
    with SilentPeer(answer=b"UNKNOWN COMMAND\x00") as confused:
        odd = InspectionResult()
        ClamAV("127.0.0.1", confused.port).inspect(VIRUS, odd)
    assert (odd.threat, odd.threat_message) == (False, "Could not scan message")


def test_rspamd_symbols_with_descriptions_become_checks_and_envelope_is_sent():
    with RspamdPeer(password="secret") as rspamd:
        scanner = Rspamd("127.0.0.1", rspamd.port, password="secret", flags="pass_all")
        result = InspectionResult()
        scanner.inspect(SPAM, result, scope="incoming", rcpt_to="bob@example.com", mail_from="alice@example.net",
                        token="tok123")
        outgoing = InspectionResult()
        scanner.inspect(PLAIN, outgoing, scope="outgoing", rcpt_to="x@example.org", mail_from="me@example.com")
        first, second = rspamd.requests
    assert {c.code: c.score for c in result.spam_checks} == {"MIME_GOOD": -0.1, "ARC_NA": 0.0, "GTUBE": 15.0}
    assert result.spam_score == 14.9
    assert first["path"] == "/checkv2" and first["body"] == SPAM
    headers = first["headers"]
    assert (headers["Password"], headers["Flags"], headers["User-Agent"]) == ("secret", "pass_all", "Postal")
    assert (headers["Rcpt"], headers["Deliver-To"], headers["From"], headers["Queue-Id"]) == (
        "bob@example.com", "bob@example.com", "alice@example.net", "tok123")
    assert "User" not in headers and "Ip" not in headers
    assert second["headers"]["User"] == "" and second["headers"]["Ip"] == ""
    assert outgoing.spam_score == -0.1


def test_rspamd_errors_refusals_and_timeouts_give_an_error_check():
    down = InspectionResult()
    Rspamd("127.0.0.1", free_port()).inspect(PLAIN, down)
    assert [(c.code, c.score) for c in down.spam_checks] == [("ERROR", 0)]
    with RspamdPeer(password="right") as rspamd:
        refused = InspectionResult()
        Rspamd("127.0.0.1", rspamd.port, password="wrong").inspect(PLAIN, refused)
    assert [c.code for c in refused.spam_checks] == ["ERROR"]
    with RspamdPeer(delay=2) as rspamd:
        slow = InspectionResult()
        started = time.monotonic()
        Rspamd("127.0.0.1", rspamd.port, timeout=0.5).inspect(PLAIN, slow)
        assert time.monotonic() - started < 2
    assert [c.code for c in slow.spam_checks] == ["ERROR"]


def test_configuration_chooses_scanners(config_environ):
    config = load(environ={**config_environ, "RSPAMD_ENABLED": "true", "SPAMD_ENABLED": "true",
                           "CLAMAV_ENABLED": "true", "CLAMAV_PORT": "3310"})
    kinds = [type(s).__name__ for s in inspection.inspectors(config)]
    assert kinds == ["Rspamd", "ClamAV"]
    config = load(environ={**config_environ, "SPAMD_ENABLED": "true", "SPAMD_PORT": "1783"})
    scanners = inspection.inspectors(config)
    assert [(type(s).__name__, s.port) for s in scanners] == [("SpamAssassin", 1783)]
    assert inspection.inspectors(load(environ=config_environ)) == []


def test_results_are_recorded_on_the_message(database):
    server_id = make_server(database)
    db = database.message_db(server_id)
    message = db.insert_message(scope="incoming", rcpt_to="bob@example.com", mail_from="a@example.net", raw=VIRUS,
                                queue=False)
    with RspamdPeer() as rspamd, ClamdPeer() as clamd:
        result = inspection.inspect(database.config, VIRUS, rcpt_to="bob@example.com", token=message.token,
                                    scanners=[Rspamd("127.0.0.1", rspamd.port), ClamAV("127.0.0.1", clamd.port)])
    inspection.record(db, message.id, result)
    stored = db.message(message.id)
    assert (stored.inspected, float(stored.spam_score), stored.threat, stored.threat_details) == (
        1, -0.1, 1, "Eicar-Test-Signature FOUND")
    rows = db.select_rows(spam_checks.select().where(spam_checks.c.message_id == message.id))
    assert sorted((r["code"], float(r["score"])) for r in rows) == [("ARC_NA", 0.0), ("MIME_GOOD", -0.1)]
