"""The broker is the boundary (docs/fleet.md): passwords, per-device ACLs and TLS with a CA the
test makes, on a real Mosquitto. A device publishes only under its own ``edgescope/v1/<device>/``
and reads nothing; the ``fleet`` account reads everything; a wrong password or an unknown CA is
one line and exit 1, never a traceback."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker import Broker, available, free_port

pytestmark = [
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.slow,
]
aiomqtt = pytest.importorskip("aiomqtt", reason="aiomqtt is not installed (pip install '.[mqtt]')")
x509 = pytest.importorskip("cryptography.x509", reason="cryptography makes the test CA")

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from edgescope_tracing.fleet import Birth, client_options, encode_birth, parse_broker_url  # noqa: E402
from edgescope_tui.sources.mqtt import MqttSettings, snapshot  # noqa: E402

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
PASSWORDS = {"dev1": "dev1-secret-0123456789", "dev2": "dev2-secret-0123456789",
             "fleet": "fleet-secret-0123456789"}  # fmt: skip


def make_ca(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 that it signed: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgescope test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = (d / "ca.pem", d / "server.pem", d / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def password_file(d: Path, user: str, password: str | None = None) -> Path:
    p = d / f"{user}.password"
    p.write_text((password or PASSWORDS[user]) + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[tuple[Broker, Path]]:
    ca, cert, key = make_ca(tmp_path)
    b = Broker(tmp_path, users=PASSWORDS, tls=(cert, key)).start()
    yield b, ca
    b.stop()


def url(b: Broker, user: str) -> str:
    return f"mqtts://{user}@127.0.0.1:{b.port}"


def ls(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgescope", "ls", *args], capture_output=True,
                          text=True, timeout=30, env=ENV)  # fmt: skip


def test_tls_passwords_and_per_device_acls(tmp_path: Path, secure: tuple[Broker, Path]) -> None:
    b, ca = secure
    log = tmp_path / "collector.log"
    with open(log, "wb") as err:
        dev = subprocess.Popen(
            [sys.executable, "-m", "edgescope", "collector", "--listen",
             f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"), "--ingest",
             str(tmp_path / "i.sock"), "--no-mdns", "--interval", "0.5", "--mqtt", url(b, "dev1"),
             "--mqtt-ca", str(ca), "--mqtt-password-file", str(password_file(tmp_path, "dev1")),
             "--device", "dev1"],
            stderr=err, env=ENV,
        )  # fmt: skip
    try:
        fleet_pw = str(password_file(tmp_path, "fleet"))
        fleet = MqttSettings(url(b, "fleet"), password_file=fleet_pw, ca_file=str(ca))
        deadline = time.monotonic() + 20
        while "dev1" not in (model := asyncio.run(snapshot(fleet, settle=0.2))).devices:
            assert time.monotonic() < deadline, log.read_text()
        assert model.devices["dev1"].online and model.devices["dev1"].summary

        async def as_device(user: str) -> list[str]:
            """A device account that tries to speak for another and to read the fleet."""
            pw = password_file(tmp_path, user)
            opts = client_options(parse_broker_url(url(b, user)), password_file=pw, ca_file=ca)
            seen: list[str] = []
            async with aiomqtt.Client(**opts, identifier=f"rogue-{user}") as c:
                await c.subscribe("edgescope/v1/#", qos=1)
                await c.subscribe("#", qos=1)
                for victim in ("dev1", "evil"):  # well-formed: only the ACL stops them
                    forged = encode_birth(Birth(victim, 999, 0, {"host": "forged"}))
                    await c.publish(f"edgescope/v1/{victim}/birth", forged, qos=1, retain=True)
                try:
                    async with asyncio.timeout(1.5):
                        async for m in c.messages:
                            seen.append(str(m.topic))
                except TimeoutError:
                    pass
            return seen

        assert asyncio.run(as_device("dev2")) == []  # it read nothing, not even dev1's birth
        model = asyncio.run(snapshot(fleet, settle=0.3))
        assert set(model.devices) == {"dev1"}, "dev2 published outside its own topics"
        birth = model.devices["dev1"].birth
        assert birth is not None and birth.bd_seq != 999, "dev2 replaced dev1's birth"

        # A wrong password and an unknown CA: one line each, exit 1.
        wrong = password_file(tmp_path / "..", "fleet", "not-the-password-0123")
        r = ls("--mqtt", url(b, "fleet"), "--mqtt-ca", str(ca), "--mqtt-password-file", str(wrong))
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "cannot read the fleet" in r.stderr
        r = ls("--mqtt", url(b, "fleet"), "--mqtt-password-file", fleet_pw)  # system CAs only
        assert r.returncode == 1 and "certificate" in r.stderr.lower(), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        r = ls("--mqtt", url(b, "fleet"), "--mqtt-ca", str(ca), "--mqtt-password-file", fleet_pw)
        assert r.returncode == 0 and "dev1" in r.stdout and "online" in r.stdout, r.stderr
        # Plain MQTT to a TLS port does not get through either.
        r = ls("--mqtt", f"mqtt://fleet@127.0.0.1:{b.port}", "--mqtt-password-file", fleet_pw,
               "--timeout", "2")  # fmt: skip
        assert r.returncode == 1, r.stdout
    finally:
        dev.terminate()
        dev.wait(20)
    assert "Traceback" not in log.read_text()
