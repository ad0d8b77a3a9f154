"""An OpenAI-compatible chat server on 127.0.0.1 that does no work: for fault tests, and as
the stand-in for an endpoint on another machine in `evals.bench scale`.

    with FakeOpenAI("error") as server:      # every request: HTTP 500
        make_chat_model(LLMConfig(provider="openai-compatible", base_url=server.url, ...))
    with FakeOpenAI("ok", reply=[a, b, c], latency=2.0):   # a, b, c, a, ... each after 2 s

Modes: "ok" (a chat completion whose content is `reply`, or the next of a list of
replies in turn, after `latency` seconds spent waiting, not computing), "garbage" (HTTP 200 whose body is
not JSON), "error" (HTTP 500), "hang" (no answer until the server stops) and "drop" (the
connection closes without an answer); "done" (an event stream that holds only `data: [DONE]`,
to any request) and "parts" ("ok" with the content as a list of text parts). `requests` counts the requests that reached it, `headers` keeps their headers (names in lower case).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("ok", "garbage", "error", "hang", "drop", "done", "parts")


class FakeOpenAI:
    def __init__(self, mode: str, reply: str | list[str] = "{}", latency: float = 0.0):
        assert mode in MODES, mode
        self.mode, self.latency, self.requests = mode, latency, 0
        self.replies = [reply] if isinstance(reply, str) else list(reply)
        self.headers: list[dict[str, str]] = []
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()  # lets hanging requests go
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._lock:
                    server.requests += 1
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    reply = server.replies[(server.requests - 1) % len(server.replies)]
                server._released.wait(server.latency)
                if server.mode == "hang":
                    server._released.wait(60)
                    self.close_connection = True
                    return
                if server.mode == "drop":
                    self.close_connection = True  # nothing written: the client sees the connection close
                    return
                if server.mode == "error":
                    self._send(500, json.dumps({"error": {"message": "internal error", "type": "server_error"}}).encode())
                elif server.mode == "garbage":
                    self._send(200, b"<html>\x00\xff not json at all")
                elif server.mode == "done":
                    self._send(200, b"data: [DONE]\n\n", "text/event-stream")
                elif server.mode == "parts":
                    self._send(200, json.dumps(completion([{"type": "text", "text": reply}])).encode())
                else:
                    self._send(200, json.dumps(completion(reply)).encode())

            def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def completion(content: str | list) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
