"""Per-run TLS: the CA file is trusted by a verifying client; wrong-host and unknown-CA certificates
(from the config or switched at run time) are refused by it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect

from k2_ops.simulator import BackgroundSimulator, client_ssl_context
from k2_ops.simulator.testing import recv_json

SimFactory = Callable[..., BackgroundSimulator]
HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
UNKNOWN_ISSUER = 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY


async def first_trade(url: str, context: ssl.SSLContext) -> int:
    async with connect(f"{url}/ws/btcusdt@trade", ssl=context) as ws:
        return int((await recv_json(ws))["t"])


def refusal(url: str, ca_file: object) -> ssl.SSLCertVerificationError:
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        asyncio.run(first_trade(url, client_ssl_context(str(ca_file))))
    return caught.value


def test_valid_certificate_for_localhost_and_loopback_ip(make_sim: SimFactory) -> None:
    sim = make_sim()
    assert sim.ws_base_url.startswith("wss://localhost:") and sim.ca_file.is_file()
    context = client_ssl_context(sim.ca_file)
    assert asyncio.run(first_trade(sim.ws_base_url, context)) > 0
    assert asyncio.run(first_trade(f"wss://127.0.0.1:{sim.port}", context)) > 0


@pytest.mark.parametrize(("mode", "verify_code"), [("wrong_host", HOSTNAME_MISMATCH), ("unknown_ca", UNKNOWN_ISSUER)])
def test_bad_certificates_from_config_are_refused(make_sim: SimFactory, mode: str, verify_code: int) -> None:
    sim = make_sim(cert_mode=mode)
    assert refusal(sim.ws_base_url, sim.ca_file).verify_code == verify_code
    # The server itself works: a client that does not verify gets data (what verification protects).
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    assert asyncio.run(first_trade(sim.ws_base_url, insecure)) > 0


def test_cert_mode_switch_affects_new_connections_only(make_sim: SimFactory) -> None:
    sim = make_sim()
    context = client_ssl_context(sim.ca_file)

    async def scenario() -> None:
        async with connect(f"{sim.ws_base_url}/ws/btcusdt@trade", ssl=context) as ws:
            await recv_json(ws)
            sim.set_cert_mode("wrong_host")
            with pytest.raises(ssl.SSLCertVerificationError):
                await first_trade(sim.ws_base_url, context)
            sim.set_cert_mode("unknown_ca")
            with pytest.raises(ssl.SSLCertVerificationError):
                await first_trade(sim.ws_base_url, context)
            await recv_json(ws)  # the connection opened before the switch carries on
            sim.set_cert_mode("valid")
            assert await first_trade(sim.ws_base_url, context) > 0

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="cert mode"):
        sim.set_cert_mode("expired")
