"""Configuration that explains itself: every missing or wrong setting is refused at
start-up with the setting's name, the file, and what to do -- by `serve` and by `check`,
never as a bare traceback; and with the broker unreachable, the relay says why in its log
and keeps retrying until the broker is there."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_for

from cloud_relay import broker as brk
from cloud_relay import pki
from cloud_relay.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    p = pki.make_local_pki(d, [], hosts=["relay.test", "127.0.0.1"])
    ca = pki.CA.load(p["ca"], p["ca_key"])
    wrong = pki.write_identity(ca, d / "wrong-name", "broker", server_names=["elsewhere.test"],
                               client=False)
    other = pki.make_local_pki(d / "other", [])
    return {"ca": p["ca"], "cert": p["broker"].cert, "key": p["broker"].key,
            "wrong_cert": wrong.cert, "wrong_key": wrong.key,
            "relay_cert": p["relay"].cert, "relay_key": p["relay"].key,
            "other_key": other["broker"].key, "dir": d}


def base(tls, tmp_path) -> str:
    return (f'data_dir = "{tmp_path / "data"}"\nbroker_ca_file = "{tls["ca"]}"\n'
            f'broker_cert_file = "{tls["relay_cert"]}"\nbroker_key_file = "{tls["relay_key"]}"\n')


CASES = [
    # (extra settings, setting named, words of the fix)
    ('http_host = "0.0.0.0"\n', "tls_cert_file", "python -m cloud_relay init"),
    ('http_host = "0.0.0.0"\ntls_cert_file = "{cert}"\n', "tls_key_file", "set both"),
    ('tls_cert_file = "{cert}"\ntls_key_file = "{other_key}"\n', "tls_key_file",
     "the key the certificate was made for"),
    ('tls_cert_file = "/nonexistent/relay.pem"\ntls_key_file = "{key}"\n', "tls_cert_file",
     "check the path"),
    ('http_prot = 8443\n', "http_prot", "did you mean http_port"),
    ('http_port = "8443"\n', "http_port", "whole number"),
    ('http_port = 70000\n', "http_port", "1..65535"),
    ('retention_days = "a week"\n', "retention_days", "number"),
    ('broker_url = "tcp://127.0.0.1:1883"\n', "broker_url", "mqtts://HOST:8883"),
    ('store_url = "mysql://x"\n', "store_url", "postgresql://"),
    ('behind_proxy = true\n', "public_url", "https://relay.clinic.example"),
    ('public_url = "http://relay.clinic.example"\n', "public_url", "use https://"),
    (('http_host = "0.0.0.0"\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
      'test_only_weak_password_hash = true\n'), "test_only_weak_password_hash", "remove it"),
    ('token_idle_s = 90000.0\n', "token_idle_s", "shorter"),
]


@pytest.mark.parametrize("extra,setting,fix", CASES, ids=[c[1] + str(i)
                                                          for i, c in enumerate(CASES)])
def test_a_wrong_setting_is_named_with_its_file_and_what_to_do(tls, tmp_path, extra, setting,
                                                                fix):
    conf = tmp_path / "relay.toml"
    conf.write_text(base(tls, tmp_path) + extra.format(**{k: str(v) for k, v in tls.items()}))
    with pytest.raises(ConfigError) as e:
        load(conf)
    msg = str(e.value)
    assert e.value.setting == setting and msg.startswith(f"{conf}: {setting}: ")
    assert fix in msg, msg


def test_serve_refuses_a_bad_config_with_the_message_not_a_traceback(tls, tmp_path):
    conf = tmp_path / "relay.toml"
    conf.write_text(f'data_dir = "{tmp_path / "data"}"\n')  # no broker identity at all
    for cmd in ("serve", "check"):
        r = subprocess.run([PY, "-m", "cloud_relay", cmd, "--config", str(conf)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr
        assert "broker_ca_file, broker_cert_file, broker_key_file" in r.stderr
        assert str(conf) in r.stderr and "cloud_relay init" in r.stderr
    r = subprocess.run([PY, "-m", "cloud_relay", "serve", "--config",
                        str(tmp_path / "missing.toml")], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 2 and "missing.toml: config file not found" in r.stderr
    assert "Traceback" not in r.stderr
    conf.write_text('data_dir = "x"\nhttp_port = 80\nhttp_port = 81\n')
    r = subprocess.run([PY, "-m", "cloud_relay", "check", "--config", str(conf)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "not valid TOML" in r.stderr


def test_relative_paths_are_taken_from_the_config_files_directory(tls, tmp_path):
    conf = tls["dir"] / "relay.toml"
    conf.write_text('data_dir = "data"\nbroker_ca_file = "ca.pem"\n'
                    'broker_cert_file = "relay.pem"\nbroker_key_file = "relay.key"\n')
    cfg = load(conf)
    assert cfg.broker_cert_file == str(tls["dir"] / "relay.pem")
    assert cfg.data_dir == str(tls["dir"] / "data")


def test_an_unreachable_broker_is_logged_with_its_reason_and_retried(tls, tmp_path):
    port = brk.free_port()
    conf = tmp_path / "relay.toml"
    conf.write_text(base(tls, tmp_path) + f'http_port = {brk.free_port()}\n'
                    f'broker_url = "mqtts://127.0.0.1:{port}"\n'
                    'test_only_weak_password_hash = true\n')
    log = tmp_path / "relay.log"
    out = open(log, "wb")  # noqa: SIM115 (the relay process writes it)
    proc = subprocess.Popen([PY, "-m", "cloud_relay", "serve", "--config", str(conf)],
                            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    mosq = None
    try:
        # at once: the reason and what it means
        wait_for(lambda: "event=broker_connect_failed" in log.read_text(), 30,
                 "a logged connection failure")
        text = log.read_text()
        assert "ConnectionRefusedError" in text
        assert f"nothing listens at 127.0.0.1:{port}: is the broker running?" in text
        assert "retrying=true" in text
        # it retries (after 1 s, 2 s, ...): now a broker whose certificate names another
        # host, and the next failure says so
        conf_b = brk.write_config(tmp_path / "broker", port=port, ca=tls["ca"], crl=None,
                                  cert=tls["wrong_cert"], key=tls["wrong_key"])
        mosq = brk.start(conf_b, port, tmp_path / "mosquitto.log")
        wait_for(lambda: "does not name 127.0.0.1" in log.read_text(), 30, "the TLS reason")
        assert log.read_text().count("event=broker_connect_failed") >= 2
        mosq.terminate()
        mosq.wait(10)
        # the right broker comes up: the relay gets there by itself
        conf_b = brk.write_config(tmp_path / "broker", port=port, ca=tls["ca"], crl=None,
                                  cert=tls["cert"], key=tls["key"])
        mosq = brk.start(conf_b, port, tmp_path / "mosquitto.log")
        wait_for(lambda: "event=broker_connected" in log.read_text(), 30, "the relay connects")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        if mosq is not None:
            mosq.terminate()
            mosq.wait(10)
