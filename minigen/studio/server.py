"""The studio's HTTP server: Python's standard library only (http.server, a pool of threads).

    GET  /                         the page (static/studio.html)
    GET  /static/NAME              studio.js, studio.css: a fixed list, no client path reaches the disk
    GET  /api/models               the served checkpoints: name, classes or text, image shape, T
    GET  /api/test-image?model=I&index=K    image K of checkpoint I's test split, as PNG
    GET  /api/examples?model=I     a text model's example prompts: captions from its test split
    GET  /favicon.ico              an empty answer (204): no 404 on every load
    POST /api/run                  a job (jobs.py): answered with a stream of JSON lines

The stream (application/x-ndjson, one event a line, flushed as it happens):

    {"event": "queued", "position": 2}      two jobs are ahead on this model
    {"event": "started"}
    {"event": "plan", "of": 225, "note": "inpainting: 50 steps become 225 with RePaint's jumps ..."}
    {"event": "frame", "i": 5, "of": 50, "t": 899, "x_t": "data:image/png;base64,...", "x0": "..."}
    {"event": "done", "grid": "data:...", "panels": [{"caption", "seed", "name", "command", "image"}, ...],
     "settings": {...}, "command": "python sample.py ...", "seconds": 1.9, "images_per_s": 2.1}
    {"event": "error", "message": "one line"}

Each model runs one job at a time; the others wait in line (first come, first served) and hear
their position; a full line is refused at once (HTTP 503, "busy"). A client that closes its
connection leaves the line, or stops its job at the next frame. A bad request is an HTTP 400
with {"error": "one line"}, before any streaming; nothing a client sends can stop the server.
"""

import io
import json
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import torch

from .. import pipelines
from ..data import train_and_test
from ..errors import MinigenError
from ..images import to_pil
from ..tokenizer import SPECIALS
from .jobs import BadRequest, Cancelled, read_job, run_job

STATIC = Path(__file__).parent / "static"
FILES = {"/": ("studio.html", "text/html; charset=utf-8"),
         "/static/studio.js": ("studio.js", "text/javascript; charset=utf-8"),
         "/static/studio.css": ("studio.css", "text/css; charset=utf-8")}


class Busy(Exception):
    """The model's line is full."""


class Line:
    """First come, first served turns at one model: join, wait until first, leave."""

    def __init__(self, limit: int):
        self.limit = limit                     # jobs allowed to wait behind the running one
        self.tickets: list[object] = []
        self.changed = threading.Condition()

    def join(self) -> object:
        with self.changed:
            if len(self.tickets) > self.limit:
                raise Busy(f"busy: {len(self.tickets)} jobs are running or waiting on this model; try again soon")
            ticket = object()
            self.tickets.append(ticket)
            return ticket

    def wait(self, ticket: object, timeout: float) -> int:
        """Wait up to `timeout` s for the turn; returns how many jobs are still ahead (0: go)."""
        with self.changed:
            self.changed.wait_for(lambda: self.tickets[0] is ticket, timeout)
            return self.tickets.index(ticket)

    def leave(self, ticket: object) -> None:
        with self.changed:
            self.tickets.remove(ticket)
            self.changed.notify_all()

    def __len__(self) -> int:
        with self.changed:
            return len(self.tickets)


@dataclass
class Served:
    """One checkpoint the studio serves: its pipeline, its line, its test images (loaded once)."""
    name: str
    pipe: object
    line: Line
    _test: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self, index: int) -> dict:
        p = self.pipe
        C, H, W = p.image_shape
        text = p.tokenizer is not None
        path = Path(self.name)
        return {"id": index, "name": self.name, "short": f"{path.parent.name}/{path.name}" if path.parent.name else path.name,
                "step": p.step, "image_shape": [C, H, W], "T": p.diffusion.T,
                "condition": "text" if text else "class" if p.num_classes else "none",
                "classes": list(p.classes) if p.num_classes else [], "latent": p.latent is not None,
                "distilled_steps": p.distilled_steps, "guidance_distilled": p.guidance_distilled,
                "dataset": p.data.get("dataset"),
                "vocabulary": p.tokenizer.vocab[len(SPECIALS):] if text else [],
                "max_words": p.tokenizer.max_len - 1 if text else None}

    def examples(self, k: int = 4) -> list[str]:
        """Captions of k test images spread over the split (emoji: a face, a person, a thing, a
        flag), each in another phrasing: prompts the model knows."""
        test = self.test_set()
        if self.pipe.tokenizer is None or not hasattr(test, "captions"):
            return []
        k = min(k, len(test))
        return [test.captions(torch.tensor([i * len(test) // k]), phrasing=i)[0] for i in range(k)]

    def test_set(self):
        with self._lock:
            if self._test is None:
                d = self.pipe.data
                if not d.get("dataset"):
                    raise BadRequest(f"{self.name}: the checkpoint does not say which data set it was trained on")
                try:
                    self._test = train_and_test(d["dataset"], root=d.get("data_root"), size=d.get("image_size"),
                                                channels=d.get("channels"))[1]
                except MinigenError as e:
                    raise BadRequest(f"{self.name}: no test images ({e})") from None
            return self._test

    def test_png(self, index: int) -> bytes:
        test = self.test_set()
        if not 0 <= index < len(test):
            raise BadRequest(f"test_index {index}: the test split has images 0..{len(test) - 1}")
        buffer = io.BytesIO()
        to_pil(test.batch(torch.tensor([index]))[0][0]).save(buffer, format="PNG")
        return buffer.getvalue()


class Studio:
    """The served checkpoints and the server's limits."""

    def __init__(self, checkpoints: list[str], device="cpu", queue: int = 4, max_upload: int = 4 << 20):
        self.models = []
        for path in checkpoints:
            pipe = pipelines.load(path, device, kind="ddpm")
            self.models.append(Served(str(path), pipe, Line(queue)))
        self.max_upload = max_upload
        self.stopping = threading.Event()      # set on Ctrl-C: every running job stops at its next frame

    def model(self, value) -> Served:
        try:
            index = int(value)
        except (TypeError, ValueError):
            raise BadRequest(f"model {value!r}: give the index of a served checkpoint (GET /api/models)") from None
        if not 0 <= index < len(self.models):
            raise BadRequest(f"model {index}: the studio serves models 0..{len(self.models) - 1}")
        return self.models[index]


class Handler(BaseHTTPRequestHandler):
    """One connection's requests. The studio is the server's (`server.studio`)."""

    server_version = "minigen-studio"
    protocol_version = "HTTP/1.0"              # the connection closes after each answer: streams end with it
    timeout = 10                               # seconds a socket may stay silent: an idle client lets go of its thread

    # ---- answers ----
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def log_message(self, format, *args) -> None:     # quiet: the studio prints only what matters
        if self.server.verbose:
            super().log_message(format, *args)

    # ---- GET ----
    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _guard(self, handle) -> None:
        """Whatever happens in a request stays in it: a one-line 400 for a bad request, a 500 (and
        the traceback on the server's terminal) for a bug; a vanished client is let go, even one
        that leaves before its answer."""
        try:
            refused = self._foreign()
            if refused:
                self.close_connection = True
                return self._error(HTTPStatus.FORBIDDEN, refused)
            handle()
        except (BadRequest, MinigenError) as e:
            self._answer_error(HTTPStatus.BAD_REQUEST, str(e).splitlines()[0])
        except Busy as e:
            self._answer_error(HTTPStatus.SERVICE_UNAVAILABLE, str(e))
        except (OSError, Cancelled):                          # the client went away (or fell silent)
            pass
        except Exception as e:                               # noqa: BLE001 - the server must outlive any bug
            traceback.print_exc(file=sys.stderr)
            self._answer_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the studio failed: {type(e).__name__}: {e}"[:300])

    def _answer_error(self, status: int, message: str) -> None:
        try:
            self._error(status, message)
        except OSError:                                      # gone before its answer: nothing to tell
            pass

    def _foreign(self) -> str | None:
        """Why a request is not from this studio's own page, or None. The Host header must name
        this machine (or --host), which a DNS-rebinding page cannot fake; an Origin header, which
        browsers send with every cross-site POST, must be the studio's own; a POST must say it is
        JSON, which no page on another site can send without asking first (CORS preflight)."""
        host = (self.headers.get("Host") or "").lower()
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        allowed = self.server.host_names
        if allowed is not None and host and name not in allowed:    # no Host at all: no browser sent it
            return f"Host {host or '(none)'}: the studio answers only to {', '.join(sorted(allowed))}"
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{host}":
            return f"Origin {origin}: the studio answers only to its own page"
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.command == "POST" and kind != "application/json":
            return "a request to the studio is JSON: send it with Content-Type: application/json"
        return None

    def _get(self) -> None:
        url = urlparse(self.path)
        if url.path in FILES:
            name, content_type = FILES[url.path]
            return self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), content_type)
        studio = self.server.studio
        if url.path == "/api/models":
            return self._json(HTTPStatus.OK, [m.describe(i) for i, m in enumerate(studio.models)])
        if url.path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if url.path == "/api/examples":
            served = studio.model(parse_qs(url.query).get("model", [None])[0])
            return self._json(HTTPStatus.OK, served.examples())
        if url.path == "/api/test-image":
            query = parse_qs(url.query)
            served = studio.model(query.get("model", [None])[0])
            try:
                index = int(query.get("index", ["0"])[0])
            except ValueError:
                raise BadRequest("index: must be an integer") from None
            return self._send(HTTPStatus.OK, served.test_png(index), "image/png")
        self._error(HTTPStatus.NOT_FOUND, f"{url.path}: no such page")

    # ---- POST /api/run ----
    def _post(self) -> None:
        if urlparse(self.path).path != "/api/run":
            return self._error(HTTPStatus.NOT_FOUND, f"{self.path}: no such action")
        studio = self.server.studio
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._error(HTTPStatus.LENGTH_REQUIRED, "send the request with a Content-Length")
        if length < 0:
            self.close_connection = True
            return self._error(HTTPStatus.BAD_REQUEST, f"Content-Length {length}: not a length")
        if length > studio.max_upload:
            self.close_connection = True
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the request is {length:,} bytes; the studio takes at most {studio.max_upload:,}")
        body = read_json(self.rfile.read(length) or b"{}")
        if not isinstance(body, dict):
            raise BadRequest("the request must be a JSON object")
        served = studio.model(body.get("model"))
        job = read_job(body, served.pipe, served.test_png)            # every check before the stream starts
        ticket = served.line.join()
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            ahead = None
            while True:
                now = served.line.wait(ticket, timeout=1.0)
                if now == 0:
                    break
                self._event({"event": "queued", "position": now})    # also finds a client that left
                ahead = now
            self._event({"event": "started", "waited_behind": ahead or 0})
            try:
                result = run_job(job, served.pipe, self._event, served.name)
            except (BadRequest, MinigenError) as e:
                result = {"event": "error", "message": str(e).splitlines()[0]}
            except Cancelled:
                raise
            except Exception as e:                           # noqa: BLE001 - a bug ends this job, not the server
                traceback.print_exc(file=sys.stderr)
                result = {"event": "error", "message": f"the studio failed: {type(e).__name__}: {e}"[:300]}
            self._event(result)
        except (BrokenPipeError, ConnectionResetError):
            raise Cancelled from None
        finally:
            served.line.leave(ticket)

    def _event(self, event: dict) -> None:
        """One line of the stream, flushed; a closed connection, or a studio that is stopping,
        becomes Cancelled, which stops the sampling loop from inside its callback."""
        if self.server.studio.stopping.is_set():
            raise Cancelled
        try:
            self.wfile.write(json.dumps(event).encode() + b"\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ValueError):
            raise Cancelled from None


class StudioServer(HTTPServer):
    """An HTTP server whose connections are handled by a fixed pool of threads (not a new thread
    each: the threads, and the memory each one's allocations keep, are reused, so a long
    session's memory stays flat). Connections beyond the pool wait for a free thread."""

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int = 8765, verbose: bool = False,
                 threads: int = 64):
        self.pool = None                                      # set below; server_close needs it even when bind fails
        super().__init__((host, port), Handler)
        self.studio, self.verbose = studio, verbose
        # the names a request's Host may give: this machine's loopback ones, and --host (any, for 0.0.0.0 or ::)
        self.host_names = None if host in ("0.0.0.0", "::", "") else (
            {"localhost", "127.0.0.1", "[::1]", host.lower() if ":" not in host else f"[{host.lower()}]"})
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="studio")

    def process_request(self, request, client_address) -> None:
        self.pool.submit(self._handle, request, client_address)

    def _handle(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:                                     # noqa: BLE001 - as socketserver does
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def stop(self, seconds: float = 5.0) -> bool:
        """Stop every running job (at its next frame) and wait up to `seconds` for them to end;
        True when they have."""
        self.studio.stopping.set()
        if self.pool is None:
            return True
        self.pool.shutdown(wait=False, cancel_futures=True)
        for _ in range(int(seconds / 0.05)):
            if not any(len(m.line) for m in self.studio.models):
                return True
            time.sleep(0.05)
        return False


def read_json(data: bytes):
    """A request body as JSON, refusing (BadRequest) what would only fail later: not JSON, NaN,
    Infinity or a number too large for a float (1e400), nesting too deep for the parser."""
    def finite(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise BadRequest(f"the number {text[:20]} is too large")
        return value

    def constant(name: str):
        raise BadRequest(f"{name} is not a number the studio takes")
    try:
        return json.loads(data, parse_float=finite, parse_constant=constant)
    except RecursionError:
        raise BadRequest("the request is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):                 # JSONDecodeError, or an integer of thousands of digits
        raise BadRequest("the request is not JSON") from None
