"""A local OpenAI-compatible chat API with a rate limit, for DSPy/LiteLLM end to end.

``FakeHTTPProvider(limit=R, window=W)`` serves ``POST /v1/chat/completions`` on
``127.0.0.1`` (a free port) from a thread, and accepts at most ``R`` requests in any
sliding window of ``W`` real seconds. Over that it answers HTTP 429 the way OpenAI
does: an ``error`` body, ``Retry-After`` (whole seconds, rounded up) and
``retry-after-ms`` when ``retry_after`` is on, and ``x-ratelimit-limit-requests`` /
``x-ratelimit-remaining-requests`` / ``x-ratelimit-reset-requests`` when
``remaining`` is on (on accepted answers too).

An accepted request is answered after ``latency`` seconds with a chat completion
whose content DSPy's ``ChatAdapter`` parses for any signature with one output
field ``answer``::

    [[ ## answer ## ]]
    fake answer 7

    [[ ## completed ## ]]

and with ``usage`` token counts. Every request is logged (``log``), so tests read
what the provider saw: refusals, the most accepted in any window, starts inside an
announced wait::

    with FakeHTTPProvider(limit=10, window=1.0) as api:
        lm = dspy.LM("openai/fake-model", api_base=api.base_url, api_key="fake",
                     num_retries=0, cache=False)

Only the loopback interface is used: no network.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .fake_provider import max_in_window

__all__ = ["FakeHTTPProvider", "Request", "chat_completion"]

PATH = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the provider saw it (times from ``time.monotonic``)."""

    time: float
    accepted: bool
    #: For a refusal: seconds until the window had room again (what it announced).
    retry_after: float | None = None


def chat_completion(model: str, content: str, prompt_tokens: int, seq: int) -> dict[str, Any]:
    """An OpenAI chat completion answering ``content``."""
    completion_tokens = max(1, len(content.split()))
    return {
        "id": f"chatcmpl-fake-{seq}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@dataclass
class FakeHTTPProvider:
    limit: int = 10
    window: float = 1.0
    latency: float = 0.0
    retry_after: bool = True
    remaining: bool = False
    answer: str = "fake answer"
    log: list[Request] = field(default_factory=list)
    _accepted: deque[float] = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _seq: itertools.count[int] = field(default_factory=itertools.count, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> FakeHTTPProvider:
        if self._server is not None:
            raise RuntimeError("FakeHTTPProvider is already running")
        server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> FakeHTTPProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeHTTPProvider is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The ``api_base`` for LiteLLM / DSPy (``openai/<model>``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- the provider's window -----------------------------------------------------
    def admit(self) -> tuple[bool, dict[str, str], int]:
        """Decide one request now: (accepted, rate headers, sequence number)."""
        now = time.monotonic()
        with self._lock:
            horizon = now - self.window
            while self._accepted and self._accepted[0] <= horizon:
                self._accepted.popleft()
            used = len(self._accepted)
            seq = next(self._seq)
            if used < self.limit:
                self._accepted.append(now)
                self.log.append(Request(now, True))
                return True, self._headers(now, used + 1), seq
            wait = max(0.0, self._accepted[0] + self.window - now)
            self.log.append(Request(now, False, wait))
            headers = self._headers(now, used)
        if self.retry_after:
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000.0)))
        return False, headers, seq

    def _headers(self, now: float, used: int) -> dict[str, str]:
        if not self.remaining:
            return {}
        reset = self._accepted[0] + self.window - now if self._accepted else 0.0
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(max(0, self.limit - used)),
            "x-ratelimit-reset-requests": f"{max(0.0, reset):.3f}s",
        }

    # -- what the log shows --------------------------------------------------------
    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.log)

    @property
    def refusals(self) -> int:
        return sum(1 for r in self.snapshot() if not r.accepted)

    @property
    def accepted(self) -> list[float]:
        return sorted(r.time for r in self.snapshot() if r.accepted)

    def throughput(self) -> float:
        """Accepted requests per window, counting the last one's window in full."""
        times = self.accepted
        if not times:
            return 0.0
        return len(times) * self.window / (times[-1] - times[0] + self.window)

    def max_in_window(self) -> int:
        """Most accepted requests in any sliding window (never above ``limit``)."""
        return max_in_window(self.accepted, self.window)

    def starts_inside(self, slack: float = 0.0) -> list[float]:
        """Request starts strictly inside a wait a refusal announced (shortened by
        ``slack`` seconds at its end, for the client's clock and the response's trip)."""
        log = self.snapshot()
        starts = sorted(r.time for r in log)
        inside = []
        for r in log:
            if r.accepted or r.retry_after is None:
                continue
            end = r.time + r.retry_after - slack
            i = bisect.bisect_right(starts, r.time)
            while i < len(starts) and starts[i] < end:
                inside.append(starts[i])
                i += 1
        return inside


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: The listen backlog: the default (5) resets connections of a burst of clients.
    request_queue_size = 256


def _handler_for(provider: FakeHTTPProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the provider keeps its own log

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path.rstrip("/") != PATH:
                self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send(400, {"error": {"message": "request body is not JSON"}}, {})
                return
            accepted, headers, seq = provider.admit()
            if not accepted:
                error = {
                    "message": "Rate limit reached for requests (fake provider)",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
                self._send(429, {"error": error}, headers)
                return
            if provider.latency > 0:
                time.sleep(provider.latency)
            prompt = json.dumps(body.get("messages", []))
            content = f"[[ ## answer ## ]]\n{provider.answer} {seq}\n\n[[ ## completed ## ]]"
            completion = chat_completion(
                str(body.get("model", "fake-model")), content, max(1, len(prompt) // 4), seq
            )
            self._send(200, completion, headers)

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
