"""The real server with real Go agencies as processes on 127.0.0.1: the whole system without Docker."""

from __future__ import annotations

import csv
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import DATA, DEFAULT_WINNERS, Peer, bet, stored_documents, wait_until
from lottery import protocol
from wire import bet_lines


def data_rows(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def test_the_default_data_set_end_to_end(start_server, launch) -> None:
    server = start_server(agencies=5)
    clients = [launch(a, server.port, DATA / f"agency-{a}.csv") for a in range(1, 6)]
    for client in clients:
        assert client.wait() == 0, client.log()[-2000:]
        assert client.winners() == DEFAULT_WINNERS[client.agency]
        log = client.log()
        assert f"action: config | result: success | client_id: {client.agency} | server_address: 127.0.0.1:" in log
        for line in ("action: close_connection | result: success", "action: close_file | result: success",
                     "action: fin | result: success"):
            assert line in log
        assert log.rstrip().endswith("action: exit | result: success")
        assert len(log.splitlines()) < 30, "INFO must not print a line per bet"
        assert "apuesta_enviada" not in log
    documents = stored_documents(server.storage)
    assert len(documents) == 80_000 and len(set(documents)) == 80_000
    server.wait_log(r"action: sorteo \| result: success")
    assert server.log().count("action: sorteo | result: success") == 1
    assert server.stop() == 0


def test_invalid_rows_are_reported_by_line_and_skipped(start_server, launch, tmp_path) -> None:
    data = tmp_path / "mixed.csv"
    data.write_bytes(
        "Ana,López,1001,1990-01-01,7574\r\n"
        "Bea,Díaz,1002,1990-02-30,5\r\n"  # line 2: no such date
        "Cid,Paz,1003,1990-01-01\r\n"  # line 3: a field missing
        "Dora,\"Quo\"ted,1004,1990-01-01,5\r\n"  # line 4: a quote inside a quoted field, not doubled
        "Eva,Ruiz,10a5,1990-01-01,5\n"  # line 5: document not numeric
        "Fede,Sosa,1006,1990-01-01,7574\n".encode()
    )
    server = start_server()
    client = launch(1, server.port, data)
    assert client.wait() == 0, client.log()
    assert client.winners() == 2
    for line in (2, 3, 4, 5):
        assert re.search(rf"action: leer_apuesta \| result: fail \| line: {line} \|", client.log()), client.log()
    assert stored_documents(server.storage) == ["1001", "1006"]


def test_batches_are_cut_at_8_kb(start_server, launch, tmp_path) -> None:
    long_name = "Ñ" * 50  # 100 bytes of UTF-8
    rows = [f"{long_name},{long_name},{20000000 + i},1980-05-17,{7574 if i == 3 else i}" for i in range(400)]
    data = tmp_path / "long.csv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    server = start_server()
    client = launch(1, server.port, data, CLI_BATCH_MAXAMOUNT=1000)
    assert client.wait() == 0, client.log()
    assert client.winners() == 1
    counts = [int(n) for n in re.findall(r"apuesta_recibida \| result: success \| cantidad: (\d+)", server.log())]
    line_size = len(rows[0].encode()) + 1
    assert sum(counts) == 400
    assert max(counts) == (protocol.MAX_BETS_BYTES) // line_size  # as many as fit, not maxAmount
    assert len(counts) > 1


def test_an_agency_stopped_by_sigterm_exits_0_and_logs_its_shutdown(start_server, launch) -> None:
    server = start_server(agencies=2)
    client = launch(1, server.port, DATA / "agency-1.csv", CLI_BATCH_MAXAMOUNT=1, CLI_BATCH_WINDOW=1)
    server.wait_log(r"apuesta_recibida \| result: success", count=3)
    client.proc.send_signal(signal.SIGTERM)
    assert client.wait(timeout=5) == 0
    log = client.log()
    assert "action: shutdown | result: in_progress | signal: SIGTERM" in log
    assert "action: close_connection | result: success" in log
    assert "action: close_file | result: success" in log
    assert log.rstrip().endswith("action: exit | result: success")


def test_an_agency_waiting_for_the_draw_stops_at_once_on_sigterm(start_server, launch) -> None:
    server = start_server(agencies=2)
    client = launch(1, server.port, DATA / "agency-2.csv")
    server.wait_log(r"consulta_ganadores \| result: in_progress \| agency: 1")
    started = time.monotonic()
    client.proc.send_signal(signal.SIGTERM)
    assert client.wait(timeout=5) == 0
    assert time.monotonic() - started < 2
    assert client.log().rstrip().endswith("action: exit | result: success")


def test_a_server_crash_mid_run_loses_and_duplicates_nothing(start_server, launch, tmp_path) -> None:
    storage = tmp_path / "crash"
    server = start_server(agencies=3, storage=storage)
    port = server.port
    clients = [
        launch(a, port, DATA / f"agency-{a}.csv", CLI_BATCH_MAXAMOUNT=20, CLI_BATCH_WINDOW=2,
               CLI_RETRY_INITIALBACKOFF="50ms", CLI_RETRY_MAXBACKOFF="500ms", CLI_RETRY_ATTEMPTS=40)
        for a in range(1, 4)
    ]
    server.wait_log(r"apuesta_recibida \| result: success", count=60)
    server.kill()  # SIGKILL, supervisor and workers: acknowledged batches must survive
    time.sleep(0.3)
    server = start_server(agencies=3, storage=storage, port=port)
    for client in clients:
        assert client.wait() == 0, client.log()[-2000:]
        assert client.winners() == DEFAULT_WINNERS[client.agency]
        assert "action: connect | result: fail" in client.log()
    documents = stored_documents(storage)
    expected = sum(data_rows(DATA / f"agency-{a}.csv") for a in range(1, 4))
    assert len(documents) == expected and len(set(documents)) == expected
    assert server.stop() == 0


def test_a_server_stopped_mid_run_exits_0_and_the_agencies_resume_after_restart(start_server, launch, tmp_path) -> None:
    storage = tmp_path / "stopped"
    server = start_server(agencies=2, storage=storage)
    port = server.port
    clients = [launch(a, port, DATA / f"agency-{a}.csv", CLI_BATCH_MAXAMOUNT=10, CLI_BATCH_WINDOW=1,
                      CLI_RETRY_INITIALBACKOFF="50ms", CLI_RETRY_MAXBACKOFF="300ms", CLI_RETRY_ATTEMPTS=60)
               for a in (1, 2)]
    server.wait_log(r"apuesta_recibida \| result: success", count=40)
    assert server.stop(signal.SIGTERM) == 0
    assert "action: exit | result: success" in server.log()
    server = start_server(agencies=2, storage=storage, port=port)
    for client in clients:
        assert client.wait() == 0, client.log()[-2000:]
        assert client.winners() == DEFAULT_WINNERS[client.agency]
    documents = stored_documents(storage)
    assert len(documents) == len(set(documents)) == 32_000


def test_an_agency_gives_up_after_its_retry_limit(launch, tmp_path) -> None:
    from conftest import free_port

    client = launch(1, free_port(), DATA / "agency-1.csv", CLI_RETRY_ATTEMPTS=3, CLI_RETRY_INITIALBACKOFF="10ms",
                    CLI_RETRY_MAXBACKOFF="20ms")
    assert client.wait(timeout=30) == 1
    log = client.log()
    assert len(re.findall(r"action: connect \| result: fail", log)) == 3
    assert re.search(r"action: exit \| result: fail \| error: .+", log)


@pytest.mark.parametrize("key, value", [("CLI_ID", "0"), ("CLI_ID", "x"), ("CLI_BATCH_MAXAMOUNT", "0"),
                                        ("CLI_SERVER_ADDRESS", "no-port"), ("CLI_LOG_LEVEL", "LOUD"),
                                        ("CLI_RETRY_INITIALBACKOFF", "soon")])
def test_a_bad_agency_setting_stops_it_with_one_clear_line(launch, key, value) -> None:
    client = launch(1, 1, DATA / "agency-1.csv", **{key: value})
    assert client.wait(timeout=10) == 1
    lines = client.log().strip().splitlines()
    assert len(lines) == 1 and "action: config | result: fail" in lines[0], lines


def test_a_missing_data_file_fails_clearly(start_server, launch, tmp_path) -> None:
    server = start_server()
    client = launch(1, server.port, tmp_path / "absent.csv")
    assert client.wait(timeout=10) == 1
    assert re.search(r"result: fail .*absent\.csv", client.log()), client.log()


def test_bad_input_from_a_raw_socket_does_not_harm_running_agencies(start_server, launch) -> None:
    """Every attack is sent twice while three real agencies run: in plaintext (its handshake
    fails), and inside the TLS session of agency 4, a real agency of the round whose program
    misbehaves (messages naming agencies 1..3 are refused as AGENCY_MISMATCH)."""
    server = start_server(agencies=4)
    clients = [launch(a, server.port, DATA / f"agency-{a}.csv", CLI_BATCH_MAXAMOUNT=50) for a in range(1, 4)]
    attacks = [
        bytes.fromhex("0101ffffffff"),
        bytes.fromhex("02ff00000000"),
        bytes.fromhex("01ee0000000a") + b"0123456789",
        protocol.encode(protocol.Bet(1, 1, 1, 0, b"Mal,Formed,x,1990-01-01,1\n")),
        protocol.encode(protocol.Bet(1, 999_999, 1, 0, bet_lines([bet("1")]))),
        protocol.encode(protocol.Fin(2, 1, 0)),
        protocol.encode(protocol.Fin(77, 0, 0)),
        protocol.encode(protocol.Bet(3, 1, 1, 0, bet_lines([bet("1")])))[:20],  # then hang up mid-frame
    ]
    for raw in attacks:
        for agency in (None, 4):
            peer = Peer(server.port, agency=agency)
            try:  # send, hang up, and read whatever comes until the central closes
                peer.send_raw(raw)
                peer.shutdown_write()
                while peer.sock.recv(4096):
                    pass
            except OSError:
                pass  # a plaintext attacker's connection is reset
            peer.close()
    server.wait_log(r"action: handshake \| result: fail \| peer: \S+ \| reason: not a TLS ClientHello",
                    count=len(attacks))
    server.wait_log(r"result: fail \| .*code: AGENCY_MISMATCH \| reason: the certificate is agency-4's")
    finisher = Peer(server.port, agency=4)  # agency 4 has no bets: its FIN lets the round be drawn
    finisher.send(protocol.Fin(4, 0, 0))
    assert finisher.recv() == protocol.FinAck(4)
    for client in clients:
        assert client.wait() == 0, client.log()[-2000:]
        assert client.winners() == DEFAULT_WINNERS[client.agency]
    expected = sum(data_rows(DATA / f"agency-{a}.csv") for a in range(1, 4))
    wait_until(lambda: len(stored_documents(server.storage)) == expected, 5, "every bet stored")
    assert len(set(stored_documents(server.storage))) == expected
    finisher.send(protocol.WinnersQuery(4))
    assert finisher.recv() == protocol.Winners(4, True, ())
    finisher.close()


def test_per_bet_lines_appear_only_at_debug(start_server, launch, tmp_path) -> None:
    data = tmp_path / "three.csv"
    data.write_text("Ana,Paz,501,1990-01-01,7574\nBea,Ruiz,502,1991-02-02,12\nCid,Sosa,503,1992-03-03,99\n",
                    encoding="utf-8")
    server = start_server(LOGGING_LEVEL="DEBUG")
    client = launch(1, server.port, data, CLI_LOG_LEVEL="DEBUG")
    assert client.wait() == 0, client.log()
    sent = re.findall(r"DEBUG action: apuesta_enviada \| result: success \| dni: (\d+) \| numero: (\d+)", client.log())
    assert sent == [("501", "7574"), ("502", "12"), ("503", "99")]
    server.wait_log(r"apuesta_almacenada", count=3)
    stored = re.findall(r"DEBUG action: apuesta_almacenada \| result: success \| dni: (\d+) \| numero: (\d+)",
                        server.log())
    assert stored == sent


def stored_rows(storage: Path) -> list[list[str]]:
    with open(storage / "bets.csv", encoding="utf-8", newline="") as bets:
        return list(csv.reader(bets))


def test_names_with_commas_and_quotes_travel_field_for_field(start_server, launch, tmp_path) -> None:
    rows = [
        ["Pérez, Juan", "Gómez", "3001", "1985-06-01", "7574"],
        ['Ana "la Tana"', "O'Neill", "3002", "1990-01-01", "12"],
        ["José; María", "D'Alessandro", "3003", "1970-12-31", "99"],
        ["Ñ" * 49 + ",", '"' + "x" * 99, "3004", "2000-02-29", "7574"],  # 100 bytes each, quoted
        ["Plain", "Name", "3005", "1999-03-17", "1"],
    ]
    data = tmp_path / "names.csv"
    with open(data, "w", encoding="utf-8", newline="") as out:
        csv.writer(out, lineterminator="\r\n").writerows(rows)
    server = start_server()
    client = launch(1, server.port, data, CLI_BATCH_MAXAMOUNT=2)
    assert client.wait() == 0, client.log()
    assert client.winners() == 2
    assert "leer_apuesta" not in client.log()
    assert stored_rows(server.storage) == [["1", *row] for row in rows]  # read back with csv.reader
    winners = (server.storage / "winners.csv").read_text().splitlines()
    assert winners == ["1,3001", "1,3004"]


@pytest.mark.parametrize("restart_batch", [7, 50], ids=["same_batch_size", "another_batch_size"])
def test_an_agency_killed_mid_run_and_restarted_stores_every_bet_once(start_server, launch, restart_batch) -> None:
    server = start_server(agencies=2)
    first = launch(1, server.port, DATA / "agency-1.csv", CLI_BATCH_MAXAMOUNT=7, CLI_BATCH_WINDOW=2)
    other = launch(2, server.port, DATA / "agency-2.csv", CLI_BATCH_MAXAMOUNT=30)
    server.wait_log(r"apuesta_recibida \| result: success \| cantidad: \d+ \| agency: 1 ", count=100)
    first.proc.kill()  # SIGKILL: batches in flight, perhaps stored, never acknowledged to it
    first.proc.wait(timeout=10)
    again = launch(1, server.port, DATA / "agency-1.csv", CLI_BATCH_MAXAMOUNT=restart_batch)
    for client in (again, other):
        assert client.wait() == 0, client.log()[-2000:]
        assert client.winners() == DEFAULT_WINNERS[client.agency]
    assert re.search(r"action: verificar_apuestas \| result: success \| stored: \d+", again.log())
    expected = {agency: data_rows(DATA / f"agency-{agency}.csv") for agency in (1, 2)}
    rows = stored_rows(server.storage)
    for agency in (1, 2):
        documents = [row[3] for row in rows if row[0] == str(agency)]
        assert len(documents) == len(set(documents)) == expected[agency]


def test_an_agency_whose_file_changed_is_stopped_before_sending(start_server, launch, tmp_path) -> None:
    data = tmp_path / "changing.csv"
    data.write_text("".join(f"Ana,Paz,{4000 + i},1990-01-01,{i}\n" for i in range(50)), encoding="utf-8")
    server = start_server(agencies=2)
    client = launch(1, server.port, data, CLI_BATCH_MAXAMOUNT=10)
    server.wait_log(r"consulta_ganadores \| result: in_progress \| agency: 1")
    client.proc.send_signal(signal.SIGTERM)
    assert client.wait(timeout=10) == 0
    data.write_text("".join(f"Ana,Paz,{4000 + i},1990-01-01,{i + 1}\n" for i in range(50)), encoding="utf-8")
    again = launch(1, server.port, data)
    assert again.wait(timeout=30) == 1
    assert re.search(r"action: verificar_apuestas \| result: fail \| stored: 50 \| chain: [0-9a-f]{8} \| file_chain: "
                     r"[0-9a-f]{8}", again.log()), again.log()
    assert len(stored_rows(server.storage)) == 50
