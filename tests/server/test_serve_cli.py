"""`pylog serve` as a command: start, ready line, settings, shutdown, exclusive data dir."""
from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys

import pytest

from pylog.protocol import ApiKey, build_request, decode_response, encode_request
from tests.server.serverproc import server_env


def _api_versions(bootstrap: str, version: int = 3) -> object:
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        req = build_request(ApiKey.API_VERSIONS, version,
                            {"client_software_name": "pytest", "client_software_version": "1"})
        s.sendall(encode_request(ApiKey.API_VERSIONS, version, 7, "pytest", req))
        size = struct.unpack(">i", _read(s, 4))[0]
        cid, resp = decode_response(ApiKey.API_VERSIONS, version, _read(s, size))
        assert cid == 7
        return resp


def _read(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("server closed the connection")
        out += chunk
    return out


def test_ready_line_and_api_versions(server):
    assert any("listening on PLAINTEXT://127.0.0.1:" in line for line in server.stdout_lines)
    resp = _api_versions(server.bootstrap)
    assert resp.error_code == 0
    keys = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert keys[ApiKey.PRODUCE][1] >= 9 and keys[ApiKey.FETCH][1] >= 13
    # transactions are not offered: none of their APIs is advertised
    for txn_api in (24, 25, 26, 28):  # AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit
        assert txn_api not in keys


def test_sigterm_exits_zero_and_closes_logs_cleanly(start_server, tmp_path):
    srv = start_server(data_dir=tmp_path / "d")
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": srv.bootstrap})
    for i in range(10):
        p.produce("orders", value=b"v%d" % i)
    assert p.flush(15) == 0
    assert srv.stop() == 0
    log = srv.log_text()
    assert "stopped cleanly" in log
    # every partition log was closed cleanly: the data directory's clean-shutdown marker
    # (one per log directory, as Kafka's) is there, and none per partition
    assert (tmp_path / "d" / ".pylog_cleanshutdown").exists()
    assert not (tmp_path / "d" / "orders-0" / ".pylog_cleanshutdown").exists()
    # and the next start recovers nothing
    srv.restart()
    srv.stop()
    assert "recover" not in srv.log_text().split("stopped cleanly")[-1].lower()


def test_sigint_also_shuts_down_cleanly(server):
    server.proc.send_signal(signal.SIGINT)
    try:
        code = server.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pylog serve did not exit within 60 s of SIGINT; its log, ending with its threads' "
                    f"stacks:\n{server.abort_with_stacks()}")
    assert code == 0, server.log_tail()
    assert "stopped cleanly" in server.log_text()


def test_second_server_on_the_same_data_dir_is_refused(start_server, tmp_path):
    start_server(data_dir=tmp_path / "shared")
    second = subprocess.run([sys.executable, "-m", "pylog", "serve", "--data-dir", str(tmp_path / "shared"),
                             "--listeners", "PLAINTEXT://127.0.0.1:0"], capture_output=True, text=True, timeout=60, env=server_env())
    assert second.returncode != 0
    assert "in use by another broker" in second.stderr


def test_config_file_and_overrides(start_server, tmp_path):
    props = tmp_path / "server.properties"
    props.write_text("# Kafka style\nnum.partitions = 3\nlog.retention.ms: 3600000\n"
                     "num.network.threads=3\nauto.create.topics.enable=true\n")
    srv = start_server("--config", str(props), "--override", "num.partitions=4")
    from confluent_kafka.admin import AdminClient, ConfigResource

    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": srv.bootstrap})
    p.produce("auto", value=b"x")
    assert p.flush(15) == 0
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    md = admin.list_topics(timeout=10)
    assert len(md.topics["auto"].partitions) == 4  # the override wins over the file
    cfg = admin.describe_configs([ConfigResource("topic", "auto")])
    (fut,) = cfg.values()
    assert fut.result()["retention.ms"].value == "3600000"
    assert "num.network.threads has no effect" in srv.log_text()


def test_bad_settings_are_refused_with_their_name(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pylog", "serve", "--data-dir", str(tmp_path / "d"),
                        "--override", "num.partitionz=3"], capture_output=True, text=True, timeout=60, env=server_env())
    assert r.returncode == 2 and "num.partitionz" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pylog", "serve", "--data-dir", str(tmp_path / "d"),
                        "--listeners", "SSL://127.0.0.1:0"], capture_output=True, text=True, timeout=60, env=server_env())
    assert r.returncode == 2 and "ssl.keystore.location is not set" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pylog", "serve", "--data-dir", str(tmp_path / "d"),
                        "--listeners", "SASL_SSL://127.0.0.1:0", "--override", "sasl.enabled.mechanisms=GSSAPI"],
                       capture_output=True, text=True, timeout=60, env=server_env())
    assert r.returncode == 2 and "GSSAPI is not supported" in r.stderr


def test_no_arguments_serves_pylog_data_on_9092(tmp_path):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 9092))
        except OSError:
            pytest.fail("port 9092 on 127.0.0.1 is in use; this test checks `pylog serve`'s default address "
                        "and needs it free")
    proc = subprocess.Popen([sys.executable, "-m", "pylog", "serve"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=server_env())
    try:
        line = proc.stdout.readline()
        assert "listening on PLAINTEXT://127.0.0.1:9092" in line
        resp = _api_versions("127.0.0.1:9092")
        assert resp.error_code == 0
        assert (tmp_path / "pylog-data" / "meta.properties").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
            assert code == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.stderr.close()
