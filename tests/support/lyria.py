"""A local Lyria RealTime for the tests: a WebSocket server over TLS speaking the live
music protocol as google-genai's client speaks it (``live_music.py``: the setup message,
then ``clientContent.weightedPrompts``, ``musicGenerationConfig``, ``playbackControl``;
back ``setupComplete``, then ``serverContent.audioChunks`` of base64 16-bit PCM, 48 kHz
stereo, while playing). Every message received is kept with its time; it can go away and
come back on the same port."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

RATE = 48000
CHUNK = 0.25  # seconds of sound per audio chunk
TONE = 440.0


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (the client trusts it through SSL_CERT_FILE)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def tone(seconds: float, start: int) -> bytes:
    t = (np.arange(int(seconds * RATE)) + start) / RATE
    mono = (0.3 * np.sin(2 * np.pi * TONE * t) * 32767).astype("<i2")
    return np.repeat(mono[:, None], 2, axis=1).tobytes()


class LyriaServer:
    def __init__(self, folder: Path, port: int):
        self.cert, self.key = self_signed(folder)
        self.port = port
        self.received: list[tuple[float, dict]] = []  # (time.monotonic(), message)
        self.headers: list[dict] = []
        self.paths: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = None
        self.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        """Go away: the listening socket and every session closed."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def messages(self, kind: str) -> list[tuple[float, object]]:
        return [(t, m[kind]) for t, m in self.received if kind in m]

    async def _start(self) -> None:
        from websockets.asyncio.server import serve

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self._server = await serve(self._session, "127.0.0.1", self.port, ssl=context)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _session(self, ws) -> None:
        self.paths.append(ws.request.path)
        self.headers.append(dict(ws.request.headers))
        setup = json.loads(await ws.recv())
        self.received.append((time.monotonic(), setup))
        await ws.send(json.dumps({"setupComplete": {}}))
        playing = asyncio.Event()

        async def stream() -> None:
            await playing.wait()
            made = 0
            while True:
                data = base64.b64encode(tone(CHUNK, made)).decode()
                made += int(CHUNK * RATE)
                await ws.send(json.dumps({"serverContent": {"audioChunks": [
                    {"data": data, "mimeType": f"audio/l16;rate={RATE};channels=2"}]}}))
                await asyncio.sleep(CHUNK)

        sending = asyncio.ensure_future(stream())
        try:
            async for raw in ws:
                message = json.loads(raw)
                self.received.append((time.monotonic(), message))
                if message.get("playbackControl") == "PLAY":
                    playing.set()
        except Exception:
            pass
        finally:
            sending.cancel()
