"""The remote engine: any OpenAI-compatible chat-completions server, streamed.

vLLM, SGLang, llama.cpp's server and ``mlx_vlm.server`` all take the same request: the
frame as a base64 JPEG in an ``image_url`` part, DIRECTOR.md as the system message, and
``stream: true`` for server-sent events. A timeout, a dropped connection or a server
error fails that frame only (the live loop logs it and goes on to the next frame).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
from typing import Iterator

import cv2
import numpy as np

from ..errors import PeteError
from ..records import Prefill, Token
from .base import BaseEngine, GenerationSettings, Prompt, require
from .requests import Request

log = logging.getLogger(__name__)

# Seconds to wait for a connection, and for each next piece of the answer.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0
JPEG_QUALITY = 85


# The ways a server may take DIRECTOR.md's language, tried in this order at start:
# vLLM since 0.12 (structured_outputs: a Lark grammar, or the regex), vLLM before it
# (guided_regex), SGLang (regex). Each makes the request's extra fields from (the Lark
# grammar, the regex).
DIALECTS = (
    ("structured_outputs grammar", lambda lark, regex: {"structured_outputs": {"grammar": lark}}),
    ("structured_outputs regex", lambda lark, regex: {"structured_outputs": {"regex": regex}}),
    ("guided_regex", lambda lark, regex: {"guided_regex": regex}),
    ("regex", lambda lark, regex: {"regex": regex}),
)
PROBE = "pete"  # the one answer the probe language allows
PROBE_LARK = 'start: "pete"\n'
PROBE_TEXT = "pete-osc probe: say a word."
PROBE_TIMEOUT = 5.0  # seconds for a probe's answer (a stalled server: plain decoding)


class RemoteError(PeteError):
    """One frame's request failed (the server is slow, gone or answered an error)."""


class RemoteEngine(BaseEngine):
    """Streams each frame's answer from a server; see the module docstring."""

    name = "remote"

    def __init__(self, server: str, model: str | None, system_prompt: str, instruction: str,
                 settings: GenerationSettings, read_timeout: float = READ_TIMEOUT,
                 api_key: str | None = None, concurrency: int = 0):
        (openai,) = require("remote", "the openai package", "pip install 'pete-osc[remote]'",
                            "openai")
        super().__init__()
        self._openai = openai
        self._request = Request(self.aborted)  # the answer streamed alone (abort() cuts it)
        self.server = server.rstrip("/")
        base_url = self.server if self.server.endswith("/v1") else self.server + "/v1"
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
            timeout=openai.Timeout(read_timeout, connect=CONNECT_TIMEOUT), max_retries=0)
        self.read_timeout = read_timeout
        self.settings = settings
        self.current = Prompt(system_prompt, instruction)
        self.model_id = model or self._served_model()
        self.extra_body: dict | None = None  # DIRECTOR.md's language, see constrain()
        self.dialect = ""  # the field the server takes it in (DIALECTS)
        self.longest_answer = 0  # the grammar's longest answer, in bytes (see constrain)
        # Requests in flight at once with several sources (0: one per source).
        self.concurrency = concurrency

    def _served_model(self) -> str:
        """The server's first model, for servers that serve one (vLLM, mlx_vlm.server)."""
        try:
            models = self.client.models.list().data
        except Exception as exc:
            raise PeteError(f"--server {self.server}: {_reason(exc)}; is the server running? "
                            "(or name the model with --model)") from None
        if not models:
            raise PeteError(f"--server {self.server}: it serves no model; name one with --model")
        return models[0].id

    supports_constraint = True

    def constrain(self, director) -> None:
        """Ask the server to decode only DIRECTOR.md's language, in the first way it takes
        (DIALECTS, found once here): a small probe language in each field must come back
        as its one answer (a server that ignores the field answers anything), and the
        real language must be accepted (no HTTP 400/422). None taken: PeteError (plain
        decoding, the parser still checks every line)."""
        from ..director.grammar import answer_regex, lark_grammar, longest_bytes

        lark, regex = lark_grammar(director), answer_regex(director)
        tried = []
        for name, field in DIALECTS:
            tried.append(name)
            if self._honours(field(PROBE_LARK, PROBE)) and self._accepts(field(lark, regex)):
                self.extra_body, self.dialect = field(lark, regex), name
                self.longest_answer = longest_bytes(director)
                return
        raise PeteError(f"--server {self.server} takes no grammar or regex (tried "
                        f"{', '.join(tried)})")

    def _probe(self, field: dict, max_tokens: int, timeout: float) -> str:
        """One short request carrying ``field``: its answer's text ("" where refused); a
        server that does not answer within ``timeout`` s: PeteError."""
        messages = [{"role": "user", "content": [{"type": "text", "text": PROBE_TEXT}]}]
        client = self.client.with_options(
            timeout=self._openai.Timeout(timeout, connect=CONNECT_TIMEOUT))
        try:
            response = client.chat.completions.create(
                model=self.model_id, messages=messages, stream=True, max_tokens=max_tokens,
                temperature=0, extra_body=field)
            with response:
                return "".join(getattr(c.choices[0].delta, "content", None) or ""
                               for c in response if c.choices)
        except self._openai.APIStatusError:  # (refused: 400, 422; or it failed on it)
            return ""
        except self._openai.APIError as exc:
            raise PeteError(f"--server {self.server}: {_reason(exc, self.read_timeout)}") from None

    def _honours(self, field: dict) -> bool:
        return self._probe(field, 8, min(self.read_timeout, PROBE_TIMEOUT)).strip() == PROBE

    def _accepts(self, field: dict) -> bool:
        """The real language compiles there (the first request compiles it: the read
        timeout, not the probe's)."""
        try:
            self._probe(field, 1, self.read_timeout)
        except PeteError:
            return False
        return True

    warms_up = True

    def warm_up(self) -> float:
        """One short request: checks the server at start and warms its caches."""
        t0 = time.perf_counter()
        blank = np.zeros((self.settings.size, self.settings.size, 3), np.uint8)
        try:
            for _ in self._stream(blank, max_tokens=1):
                pass
        except RemoteError as exc:
            said = str(exc)
            if re.search(r"server error 4(00|22)\b", said):  # (vLLM: "not a multimodal model")
                lacks = f"it must serve FastVLM, a model that takes images; it serves {self.model_id}"
            elif "after 0 tokens" in said:  # (a web server, not an OpenAI-compatible one)
                lacks = ("no chat-completion stream came back: it must speak OpenAI's "
                         "streaming chat API (/v1/chat/completions)")
            else:
                lacks = "a frame cannot be answered there"
            raise PeteError(f"--server {said} (a {self.settings.size} px frame at start): "
                            f"{lacks}") from None
        self._check_sizes()
        return time.perf_counter() - t0

    def _check_sizes(self) -> None:
        """A frame's size must reach the model: FastVLM makes one image token per 64x64
        pixels, so a frame of another size is another prompt length. A server that scales
        every frame to one size (vLLM with the checkpoint's processor: 1024 px, 256 image
        tokens; mlx_vlm.server likewise) is said in one line: --size has no effect there,
        and the frame costs what that size costs. (A warning, not a stop: mlx_vlm.server
        always scales, and answers all the same.) Where the server does not count its
        prompt tokens, nothing is said."""
        size = self.settings.size
        other = size * 2 if size <= 64 else size // 2
        counts = [self._prompt_tokens(s) for s in (size, other)]
        if None not in counts and counts[0] == counts[1]:
            log.warning("%s scales every frame to one size: a %d px and a %d px frame are "
                        "both %d prompt tokens, so --size %d does not reach the model and "
                        "each frame costs the server's size (vLLM: --mm-processor-kwargs "
                        "'{\"do_resize\": false, \"do_center_crop\": false}', see the "
                        "README)", self.server, size, other, counts[0], size)

    def _prompt_tokens(self, size: int) -> int | None:
        """The prompt tokens the server counts for a blank frame of ``size`` px (one
        token asked for); None where it does not say."""
        blank = np.zeros((size, size, 3), np.uint8)
        try:
            response = self.client.chat.completions.create(
                model=self.model_id, messages=_messages(blank, self.current), stream=True,
                max_tokens=1, temperature=0, stream_options={"include_usage": True})
            usage = None
            with response:
                for chunk in response:
                    usage = getattr(chunk, "usage", None) or usage
        except Exception:  # (a server that takes no stream_options: it does not say)
            return None
        return getattr(usage, "prompt_tokens", None)

    def use_prompt(self, prompt: Prompt) -> float:
        """The server caches prefixes itself (vLLM's and SGLang's prefix caching): the
        prompt is simply sent with each request."""
        self.current = prompt
        return 0.0

    def stream(self, image_rgb: np.ndarray, prompt: Prompt | None = None) -> Iterator[Token]:
        return self._stream(image_rgb, self.settings.max_tokens, prompt or self.current)

    def abort(self) -> None:
        """Cut the answer being streamed (see :meth:`Request.cut`)."""
        super().abort()
        self._request.cut()

    def batch(self, slots: int):
        """Several sources: one request in flight per source (up to ``concurrency``), so
        a server that batches (vLLM, SGLang, mlx_vlm.server) answers them together; see
        pete_osc.engines.requests."""
        from .requests import Requests

        slots = min(slots, self.concurrency) if self.concurrency else slots
        return Requests(self, slots) if slots > 1 else None

    def _stream(self, image_rgb: np.ndarray, max_tokens: int, prompt: Prompt | None = None,
                request: Request | None = None) -> Iterator[Token]:
        """One request's tokens; ``request`` (default: the engine's own, which ``abort``
        cuts) holds its connection and whether it was cut."""
        prompt = prompt or self.current
        if request is None:
            request = self._request
            self.aborted.clear()
        aborted = request.aborted
        messages = _messages(image_rgb, prompt)
        prefill = Prefill(time.perf_counter())
        index = 0
        try:
            request.response = response = self._create(messages, max_tokens)
            with response:
                for chunk in response:
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    text = getattr(choice.delta, "content", None) or ""
                    now = time.perf_counter()
                    if text:
                        yield Token(text, index, now, None, prefill)
                        index += 1
                    if choice.finish_reason:
                        yield Token("", index, now, choice.finish_reason, prefill)
                        return
        except self._openai.APIError as exc:
            if aborted.is_set():
                raise RemoteError(f"{self.server}: the answer was cut after {index} tokens") from None
            raise RemoteError(f"{self.server}: {_reason(exc, self.read_timeout)}") from None
        except Exception as exc:  # httpx errors that escape the client's own wrapping
            if aborted.is_set():
                raise RemoteError(f"{self.server}: the answer was cut after {index} tokens") from None
            raise RemoteError(f"{self.server}: {_reason(exc, self.read_timeout)}") from None
        finally:
            request.response = None
        # The stream ended without a finish reason: the server closed it early (or the
        # watchdog's abort cut it).
        if aborted.is_set():
            raise RemoteError(f"{self.server}: the answer was cut after {index} tokens")
        raise RemoteError(f"{self.server}: the answer stopped after {index} tokens "
                          "(connection closed without a finish reason)")

    def _create(self, messages: list, max_tokens: int):
        request = dict(model=self.model_id, messages=messages, stream=True,
                       max_tokens=max_tokens, temperature=self.settings.temperature)
        if self.extra_body is None:
            return self.client.chat.completions.create(**request)
        try:
            return self.client.chat.completions.create(**request, extra_body=self.extra_body)
        except self._openai.APIStatusError as exc:
            if exc.status_code not in (400, 422):
                raise
            # Refused: the grammar, if the same request without it is taken (else the
            # request itself, the frame say: that error stands, the grammar stays).
            response = self.client.chat.completions.create(**request)
            log.warning("%s refused DIRECTOR.md's language in %s (%s); sending plain "
                        "requests, the parser still checks every line", self.server,
                        self.dialect, exc.status_code)
            self.extra_body = None
            return response

    def close(self) -> None:
        self.client.close()


def _messages(image_rgb: np.ndarray, prompt: Prompt) -> list[dict]:
    """A frame's chat messages. The context goes before the image, as the local engines
    place it: a server's prefix cache then keeps the system prompt (and the context, while
    it stays the same)."""
    lead = [{"type": "text", "text": prompt.context}] if prompt.context else []
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": lead + [
            {"type": "image_url", "image_url": {"url": jpeg_data_url(image_rgb)}},
            {"type": "text", "text": prompt.instruction},
        ]},
    ]


def jpeg_data_url(image_rgb: np.ndarray) -> str:
    """The frame as a data URL of a JPEG (what the image_url part of a message takes)."""
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RemoteError("could not encode the frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


def _reason(exc: BaseException, timeout: float | None = None) -> str:
    name = type(exc).__name__
    if "Timeout" in name:
        return f"no answer within {timeout or READ_TIMEOUT:g} s (timed out)"
    status = getattr(exc, "status_code", None)
    message = str(exc).splitlines()[0] if str(exc) else name
    if status is not None:
        message = re.sub(r"^Error code: \d+ - ", "", message)  # (openai's, the status again)
        return f"server error {status}: {message[:200]}"
    if "Connection" in name or "RemoteProtocol" in name:
        return f"connection failed ({message[:160]})"
    return f"{name}: {message[:200]}"
