"""A loopback stand-in for the SageMaker and Bedrock runtime HTTP APIs, answering instantly.

Both the direct boto3 call and the call through Sluice hit it, so their difference is Sluice's cost.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREDICTION = json.dumps({"predictions": [[0.97, 0.02, 0.01]]}).encode()
CONVERSE = json.dumps(
    {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hello from the loopback."}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 12, "outputTokens": 6, "totalTokens": 18},
        "metrics": {"latencyMs": 1},
    }
).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/converse"):
            body, headers = CONVERSE, {}
        else:
            body, headers = PREDICTION, {"x-Amzn-Invoked-Production-Variant": "blue"}
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def start() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
