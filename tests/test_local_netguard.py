"""Local mode fails closed: nothing reaches beyond loopback, not even a DNS query."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

# Run in a child interpreter: the guard patches the socket module process-wide.
SCRIPT = textwrap.dedent(
    """
    import socket, os, sys
    sys.path[:0] = [{local!r}]
    from sluice_local import netguard
    netguard.install()

    def refused(call):
        try:
            call()
        except netguard.NonLoopbackRefused:
            return True
        except Exception as exc:  # anything else means the guard did not speak first
            print("other", type(exc).__name__, exc)
            return False
        return False

    assert refused(lambda: socket.getaddrinfo("aws.amazon.com", 443)), "DNS lookup of a public name"
    # A documentation-range address: refused before connect(), so no packet is ever sent.
    assert refused(lambda: socket.create_connection(("192.0.2.1", 443), timeout=1)), "public address"
    assert refused(lambda: socket.socket().connect_ex(("10.0.0.1", 80))), "private address"

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(("localhost", server.getsockname()[1]), timeout=1)
    client.close()

    import boto3
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    from botocore.config import Config
    sts = boto3.client("sts", config=Config(retries={{"total_max_attempts": 1}}))
    try:
        sts.get_caller_identity()
        print("REACHED AWS")
    except Exception as exc:
        chain = []
        while exc is not None:
            chain.append(exc)
            exc = exc.__cause__ or exc.__context__
        assert any(isinstance(e, netguard.NonLoopbackRefused) for e in chain), chain
    print("guarded")
    """
)


def test_local_mode_refuses_every_non_loopback_destination():
    script = SCRIPT.format(local=str(ROOT / "local"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.strip().endswith("guarded")
    assert "REACHED AWS" not in result.stdout
