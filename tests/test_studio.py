"""The studio's HTTP interface, through urllib against a server started here on 127.0.0.1 with
tiny checkpoints: generate, the stream, edits, every bad input, the line, cancellation, a load
test; and the page in a real browser when headless Chromium and selenium are installed."""

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import train_ddpm
from minigen.studio import Studio, StudioServer
from minigen.studio.server import STATIC
from minigen.tokenizer import words


@pytest.fixture(scope="module")
def served(tmp_path_factory, text_model):
    """A server with two tiny models: class-conditional glyphs (28x28 gray) and a latent text
    model on captioned-shapes (32x32 RGB)."""
    out = tmp_path_factory.mktemp("studio")
    common = ["--preset", "tiny", "--steps", "1", "--batch-size", "4", "--sample-every", "0", "--sample-steps", "1"]
    assert train_ddpm.run(train_ddpm.main, common + ["--max-images", "16", "--out", str(out / "glyphs")]) == 0
    (out / "text").mkdir()
    shutil.copy(text_model, out / "text" / "last.pt")                  # served as text/last.pt
    studio = Studio([out / "glyphs" / "last.pt", out / "text" / "last.pt"], queue=2, max_upload=200_000)
    server, url = start(studio)
    yield url, studio, out
    server.shutdown()
    server.server_close()


def start(studio: Studio) -> tuple[StudioServer, str]:
    """The studio served on 127.0.0.1 at a free port, from a background thread."""
    server = StudioServer(studio, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


def get(url: str):
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.status, answer.headers.get("Content-Type"), answer.read()


def post(url: str, body, raw: bytes | None = None) -> tuple[int, list[dict] | dict]:
    """(status, the stream's events) for a 200; (status, {"error": ...}) otherwise."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url + "/api/run", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, [json.loads(line) for line in answer.read().decode().splitlines() if line.strip()]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def decode(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_the_page_and_its_files_come_from_here_only(served):
    url, _, _ = served
    status, kind, page = get(url + "/")
    assert status == 200 and kind.startswith("text/html") and b'id="generate"' in page
    for name in ("studio.js", "studio.css"):
        status, _, text = get(f"{url}/static/{name}")
        assert status == 200 and text == (STATIC / name).read_bytes()
    for path in STATIC.iterdir():                     # no CDN, no font service: nothing fetched from outside
        assert b"http://" not in path.read_bytes() and b"https://" not in path.read_bytes(), path
    with pytest.raises(urllib.error.HTTPError) as e:
        get(url + "/static/../server.py")
    assert e.value.code == 404


def test_models_are_listed_with_what_they_take(served):
    url, _, _ = served
    glyphs, text = json.loads(get(url + "/api/models")[2])
    assert glyphs["condition"] == "class" and len(glyphs["classes"]) == 10 and glyphs["image_shape"] == [1, 28, 28]
    assert text["condition"] == "text" and text["image_shape"] == [3, 32, 32]


def test_generate_streams_frames_then_the_grid(served):
    url, _, _ = served
    status, events = post(url, {"model": 0, "label": 3, "steps": 4, "n": 2, "seed": 1})
    assert status == 200
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done" and "frame" in kinds, kinds
    frames = [e for e in events if e["event"] == "frame"]
    assert frames[-1]["t"] == -1                      # the last frame is the clean result
    assert decode(frames[0]["x_t"]).size == decode(frames[0]["x0"]).size == (1 + 2 * (28 + 1), 1 + 28 + 1)   # 2 images
    assert decode(events[-1]["grid"]).size[0] > 2 * 28
    again = post(url, {"model": 0, "label": 3, "steps": 4, "n": 2, "seed": 1})[1]
    assert again[-1]["grid"] == events[-1]["grid"]    # same seed, same images

    status, events = post(url, {"model": 1, "prompt": "a large blue circle in the centre on black", "steps": 2, "n": 1,
                                "negative": "a small red square at the top left on white"})
    assert status == 200 and events[-1]["event"] == "done"


def test_image_i_is_seed_plus_i_alone_and_every_result_carries_the_command_that_makes_it_again(served, tmp_path):
    """As AUTOMATIC1111 numbers seeds: image i of a batch comes from seed + i alone, so a job of
    one image at that seed makes it again. The command shown with a result (and written into
    each PNG) makes the same pixels through sample.py."""
    import shlex
    import sample
    url, _, _ = served
    job = {"model": 0, "label": 3, "seed": 123, "n": 3, "steps": 6, "sampler": "ddpm"}    # noise at every step
    done = post(url, job)[1][-1]
    assert [p["seed"] for p in done["panels"]] == [123, 124, 125]
    assert [p["caption"] for p in done["panels"]] == ["seed 123", "seed 124", "seed 125"]
    assert done["settings"] == {"mode": "generate", "class": "3", "sampler": "ddpm", "steps": 6, "guidance": 3.0,
                                "seed": 123, "n": 3}
    alone = post(url, {**job, "seed": 124, "n": 1})[1][-1]
    pixels = lambda u: np.asarray(decode(u), dtype=int)                      # noqa: E731
    assert (pixels(alone["panels"][0]["image"]) == pixels(done["panels"][1]["image"])).all()

    second = done["panels"][1]
    assert second["name"] == "minigen-generate-123-2.png"
    assert decode(second["image"]).text["minigen"] == second["command"]        # inside the PNG, as sample.py writes it
    assert decode(done["grid"]).text["minigen"] == done["command"]
    assert "--guidance 3.0 --seed 124 -n 1" in second["command"] and "--seed 123 -n 3 --image-seeds" in done["command"]
    for command, seeds in ((done["command"], [0, 1, 2]), (second["command"], [1])):
        argv = shlex.split(command)
        assert argv[:2] == ["python", "sample.py"]
        argv[argv.index("--out") + 1] = str(tmp_path / "grid.png")
        folder = tmp_path / f"pngs{len(seeds)}"
        assert sample.run(sample.main, argv[2:] + ["--save-dir", str(folder), "--no-progress"]) == 0
        made = [np.asarray(Image.open(p), dtype=int) for p in sorted(folder.iterdir())]
        assert all((m == pixels(done["panels"][i]["image"])).all() for m, i in zip(made, seeds))

    status, events = post(url, {"model": 0, "mode": "inpaint", "label": 1, "steps": 20, "n": 1, "test_index": 0,
                                "mask": data_url(Image.new("L", (28, 28), 255))})
    plan = next(e for e in events if e["event"] == "plan")                  # RePaint's jumps, said before they run
    # 20 steps in blocks of 10: the first block's 10 steps 5 times, then the last 10: 60 steps down
    assert plan["note"].startswith("inpainting: 20 steps become 60 with RePaint's jumps") and plan["of"] == 60
    assert events[-1]["command"].startswith("python edit.py --ckpt ") and "--inpaint minigen-inpaint-0-original.png" \
        in events[-1]["command"] and "--mask minigen-inpaint-0-mask.png" in events[-1]["command"]
    assert [p["name"] for p in events[-1]["panels"]][:2] == ["minigen-inpaint-0-original.png", "minigen-inpaint-0-mask.png"]
    import edit                                                         # the edit's command, on the files offered
    for p in events[-1]["panels"][:2]:
        decode(p["image"]).save(tmp_path / p["name"])
    argv = [str(tmp_path / a) if a.startswith("minigen-inpaint-0") else a for a in shlex.split(events[-1]["command"])]
    assert edit.run(edit.main, argv[2:] + ["--no-progress"]) == 0
    grid = np.asarray(Image.open(tmp_path / "minigen-inpaint-0.png").convert("L"), dtype=int)
    scale, pad = 3, 2                                                  # edit.py's grid: 4 tiles of 28 px at 3x
    x0 = pad + 3 * (28 * scale + pad)                                  # the last tile: the result
    made = grid[pad:pad + 28 * scale:scale, x0:x0 + 28 * scale:scale]
    assert (made == np.asarray(decode(events[-1]["panels"][-1]["image"]), dtype=int)).all()


def test_the_page_gets_short_names_words_examples_and_no_404_for_its_icon(served):
    url, _, _ = served
    glyphs, text = json.loads(get(url + "/api/models")[2])
    assert glyphs["short"] == "glyphs/last.pt" and glyphs["vocabulary"] == []
    assert "circle" in text["vocabulary"] and text["max_words"] == 23
    assert json.loads(get(url + "/api/examples?model=0")[2]) == []
    examples = json.loads(get(url + "/api/examples?model=1")[2])
    assert len(examples) == 4 and all(set(words(e)) <= set(text["vocabulary"]) for e in examples)     # no unknown word
    assert get(url + "/favicon.ico")[0] == 204
    page = get(url + "/")[2].decode()
    assert "<noscript>" in page and "allow JavaScript" in page


def test_inpainting_keeps_the_unmasked_pixels(served):
    url, _, _ = served
    image = Image.fromarray(np.tile(np.linspace(0, 255, 28, dtype=np.uint8), (28, 1)), mode="L")
    mask = np.zeros((28, 28, 4), dtype=np.uint8)
    mask[..., 3] = 255                                # a browser canvas: RGBA, gray content
    mask[8:20, 8:20, :3] = 255
    status, events = post(url, {"model": 0, "mode": "inpaint", "label": 1, "steps": 3, "n": 1,
                                "image": data_url(image), "mask": data_url(Image.fromarray(mask, mode="RGBA"))})
    assert status == 200 and events[-1]["event"] == "done", events[-1]
    panels = events[-1]["panels"]
    assert [p["caption"] for p in panels] == ["original", "mask", "result 1"]
    original, shown_mask, result = (np.asarray(decode(p["image"]).convert("L"), dtype=int) for p in panels)
    keep = mask[..., 0] < 128
    assert np.abs(result[keep] - np.asarray(image, dtype=int)[keep]).max() <= 1     # pasted back, as given
    assert (shown_mask[8:20, 8:20] == 255).all() and (shown_mask[keep] == 0).all()

    rgb = {"mode": "inpaint", "steps": 2, "n": 1, "prompt": "a small red cross at the top left on white",
           "image": data_url(Image.new("RGB", (32, 32), (128, 128, 128))), "mask": data_url(Image.new("L", (32, 32), 255))}
    status, events = post(url, {"model": 1, **rgb})                          # an RGB model, prompted
    assert status == 200 and [p["caption"] for p in events[-1]["panels"]] == ["original", "mask", "result 1"]

    status, events = post(url, {"model": 0, "mode": "sdedit", "label": 1, "steps": 4, "strength": 0.5, "test_index": 3})
    assert status == 200 and events[-1]["event"] == "done" and len(events[-1]["panels"]) == 1 + 4
    status, events = post(url, {"model": 0, "mode": "invert", "label": 2, "steps": 3, "test_index": 0})
    assert [p["caption"] for p in events[-1]["panels"]][:2] == ["original", "reconstructed"]


BAD = [
    ({"model": 7}, 400, "serves models 0..1"),
    ({"model": 0, "label": 3, "steps": 0}, 400, "steps 0: must be in [1, 1000]"),
    ({"model": 0, "label": 3, "sampler": "euler"}, 400, "sampler 'euler': choose one of"),
    ({"model": 0, "label": 12}, 400, "label 12: this model has classes 0..9"),
    ({"model": 0}, 400, "class-conditional: choose a class"),
    ({"model": 0, "label": 1, "eta": 0.5, "sampler": "ddpm"}, 400, "η is DDIM's noise"),
    ({"model": 1, "prompt": "a crimson circle"}, 400, "unknown word in the prompt: 'crimson'"),
    ({"model": 1, "prompt": "a red circle", "negative": "a círcle 🔵"}, 400,
     "unknown words in the negative prompt: 'círcle', '🔵'"),                # the field named, the words whole
    ({"model": 0, "label": 1, "seed": 2**32 - 2, "n": 3}, 400, "the seeds run to 4294967296, past 4294967295"),
    ({"model": 1, "prompt": "red " * 24 + "blue"}, 400, "the prompt has 25 words; this model reads at most 23, so 2 "
                                                      "would be dropped (red blue)"),     # never cut silently
    ({"model": 0, "label": 1, "mode": "sdedit", "image": "data:image/png;base64,!!!"}, 400, "base64 does not decode"),
    ({"model": 0, "label": 1, "mode": "sdedit", "image": "data:image/png;base64," + base64.b64encode(b"GIF89a no").decode()},
     400, "the uploaded image: not a readable image"),
    ({"model": 0, "label": 1, "mode": "sdedit", "image": data_url(Image.new("RGB", (28, 28), (200, 0, 0)))},
     400, "an RGB image, but the model makes grayscale images"),
    ({"model": 0, "label": 1, "mode": "inpaint", "image": data_url(Image.new("L", (28, 28))),
      "mask": data_url(Image.new("L", (14, 14), 255))}, 400, "must have the image's size"),
    ({"model": 0, "label": 1, "mode": "inpaint", "image": data_url(Image.new("L", (28, 28))),
      "mask": data_url(Image.new("RGB", (28, 28), (255, 0, 0)))}, 400, "the mask must be grayscale"),
    ({"model": 0, "label": 1, "mode": "inpaint", "test_index": 0, "mask": data_url(Image.new("L", (28, 28)))},
     400, "the mask is empty"),
    ({"model": 0, "label": 1, "mode": "sdedit", "test_index": 10**6}, 400, "test_index 1000000: the test split has"),
    ({"model": 0, "label": 1, "mode": "sdedit", "test_index": 0, "strength": 0}, 400, "strength 0.0: must be in (0, 1]"),
    ({"model": 0, "label": 1, "image": "x" * 300_000}, 413, "the studio takes at most 200,000"),
]


@pytest.mark.parametrize("body,status,message", BAD, ids=[m[:24] for _, _, m in BAD])
def test_a_bad_request_is_answered_in_one_line_and_the_server_lives_on(served, body, status, message):
    url, _, _ = served
    got, answer = post(url, body)
    assert got == status and message in answer["error"] and "\n" not in answer["error"], answer
    assert get(url + "/api/models")[0] == 200


def test_not_json_and_unknown_pages(served):
    url, _, _ = served
    assert post(url, None, raw=b"{not json") == (400, {"error": "the request is not JSON"})
    assert post(url, None, raw=b"[1, 2]")[0] == 400
    with pytest.raises(urllib.error.HTTPError) as e:
        get(url + "/api/nothing")
    assert e.value.code == 404


def test_a_job_waits_in_line_and_hears_its_position(served):
    url, studio, _ = served
    line = studio.models[0].line
    holder = line.join()                                # a job "running" on model 0
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(post(url, {"model": 0, "label": 0, "steps": 2, "n": 1})))
    waiting.start()
    for _ in range(200):
        if len(line) == 2:
            break
        time.sleep(0.02)
    second = line.join()                                # a third: the line is full now (limit 2 waiting)
    status, answer = post(url, {"model": 0, "label": 0, "steps": 2})
    assert status == 503 and answer["error"].startswith("busy")
    assert get(url + "/api/models")[0] == 200           # the other routes still answer
    time.sleep(1.2)                                     # long enough for one "queued" event
    line.leave(holder)
    line.leave(second)
    waiting.join(60)
    status, events = answers[0]
    assert status == 200 and events[0] == {"event": "queued", "position": 1}
    assert events[-1]["event"] == "done" and len(line) == 0


@contextlib.contextmanager
def job_until(url: str, job: dict, marker: bytes):
    """A job posted on a raw connection, read until `marker` appears in the stream; the
    connection closes (the page goes away) when the block ends."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(job).encode()
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(f"POST /api/run HTTP/1.0\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        received = b""
        while marker not in received:
            chunk = s.recv(65536)
            assert chunk, f"the stream ended before {marker!r}: {received[-300:]!r}"
            received += chunk
        yield s


def line_empties(model, seconds: float = 10.0) -> bool:
    """Whether the model's line is empty within `seconds` (a cancelled job leaves it at its next frame)."""
    for _ in range(int(seconds / 0.02)):
        if len(model.line) == 0:
            return True
        time.sleep(0.02)
    return len(model.line) == 0


def test_a_client_that_goes_away_cancels_its_job(served):
    """1,000 DDIM steps, then the client reads one frame and hangs up: the job stops early (it
    calls the network far fewer than 1,000 times) and the model's line is free again."""
    url, studio, _ = served
    pipe = studio.models[0].pipe
    calls = []
    pipe.network.register_forward_hook(lambda *_: calls.append(1))
    with job_until(url, {"model": 0, "label": 0, "steps": 1000, "n": 1}, b'"frame"'):
        pass
    assert line_empties(studio.models[0])
    assert 0 < len(calls) < 1000
    pipe.network._forward_hooks.clear()


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads memory from /proc (Linux)")
def test_many_clients_at_once_all_answered_and_memory_comes_back(served):
    """Rounds of 12 concurrent local clients, generations and bad uploads on both models: every
    one gets an answer (done, busy or a 400), none is lost, and the server's memory after the
    rounds is where it was after two rounds of warming up (within 40 MB)."""
    url, studio, _ = served
    bodies = ([{"model": k % 2, "label": 1, "prompt": "a small red cross at the top left on white", "steps": 2, "n": 2}
               for k in range(8)]
              + [{"model": 0, "label": 1, "mode": "sdedit", "image": "data:image/png;base64,AAAA"}] * 4)
    bodies = [{k: v for k, v in b.items() if not (b["model"] == 0 and k == "prompt")
               and not (b["model"] == 1 and k == "label")} for b in bodies]

    def one_round() -> list:
        answers = [None] * len(bodies)
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, post(url, bodies[i])))
                   for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return answers

    one_round()
    one_round()                                       # the pool's threads warm up
    before = rss_mb()
    for _ in range(3):
        answers = one_round()
        assert all(a is not None for a in answers)
        for (status, events), body in zip(answers, bodies):
            if body.get("mode") == "sdedit":
                assert status == 400
            else:
                assert status == 503 or (status == 200 and events[-1]["event"] == "done"), (status, events)
        assert sum(status == 200 for status, _ in answers) >= 2
    assert all(len(m.line) == 0 for m in studio.models)
    assert rss_mb() - before < 40


def _browser():
    """A headless Chromium driven by selenium, or the reason there is none."""
    try:
        from selenium import webdriver
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[test]')"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        return None, "headless Chromium is not installed (apt-get install chromium chromium-driver)"
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1060"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options), None


@pytest.fixture(scope="module")
def browser():
    driver, why = _browser()
    if driver is None:
        pytest.skip(why)
    yield driver
    driver.quit()


def wait(browser, condition, seconds: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, seconds).until(condition)


def text_of(browser, id_: str) -> str:
    return browser.execute_script(f"return document.getElementById('{id_}').textContent")


def test_the_page_in_a_real_browser_generates_reproducibly_with_a_history(served, browser):
    """A new seed each click, each image's seed under it, the command, a history whose entry
    brings its settings back (same seed, same pixels), the controls that follow the sampler and
    the model; the time to the first frame and to the result, printed. MINIGEN_STUDIO_SCREENSHOT=
    docs/studio.png saves the page (and MINIGEN_STUDIO_CKPT= serves a real checkpoint instead)."""
    url, _, _ = served
    own = None
    if os.environ.get("MINIGEN_STUDIO_CKPT"):
        own, url = start(Studio([os.environ["MINIGEN_STUDIO_CKPT"]]))
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    try:
        browser.set_window_size(1400, 1060)
        browser.get(url + "/")
        wait(browser, lambda b: b.find_element(By.ID, "model").get_attribute("value") == "0")
        if own is None:
            assert browser.find_element(By.ID, "model").text.splitlines()[0] == "glyphs/last.pt"    # not the full path
        assert browser.execute_script("return document.getElementById('cm-option').disabled")   # no student: no cm
        sampler = Select(browser.find_element(By.ID, "sampler"))
        sampler.select_by_value("ddpm")
        assert browser.find_element(By.ID, "eta").get_attribute("disabled") == "true"   # η is DDIM's alone
        assert browser.find_element(By.ID, "steps").get_attribute("value") == "100"
        sampler.select_by_value("ddim")
        browser.find_element(By.ID, "label").send_keys("7")
        steps = browser.find_element(By.ID, "steps")
        steps.clear()
        steps.send_keys("25" if own else "4")

        seeds, grids = [], []
        for click in range(2):                                          # a new seed each click
            if click:
                steps.send_keys(Keys.CONTROL, Keys.ENTER)                # Ctrl+Enter generates
            else:
                browser.find_element(By.ID, "generate").click()
            wait(browser, lambda b: text_of(b, "status").startswith("done"))
            seeds.append(int(browser.find_element(By.ID, "seed").get_attribute("value")))
            grids.append(browser.find_element(By.ID, "result").get_attribute("src"))
            captions = [e.text.splitlines()[0] for e in browser.find_elements(By.CSS_SELECTOR, "#images figcaption")]
            assert captions == [f"seed {seeds[-1] + i}" for i in range(4)]
            names = [a.get_attribute("download") for a in browser.find_elements(By.CSS_SELECTOR, "#images a")]
            assert names == [f"minigen-generate-{seeds[-1]}-{i}.png" for i in range(1, 5)]
            assert f"--seed {seeds[-1]} -n 4 --image-seeds" in text_of(browser, "command")
            assert f"seeds {seeds[-1]}..{seeds[-1] + 3}" in text_of(browser, "settings")
        assert seeds[0] != seeds[1] and grids[0] != grids[1]
        timings = browser.execute_script("return results.map((r) => r.timings)")
        assert all(t["first_frame_s"] is not None and t["first_frame_s"] <= t["result_s"] for t in timings)
        print(f"\nstudio, {'25' if own else '4'} DDIM steps, 4 images: first frame after "
              f"{timings[0]['first_frame_s']:.2f} s, result after {timings[0]['result_s']:.2f} s")

        history = browser.find_elements(By.CSS_SELECTOR, "#history-list button")
        assert len(history) == 2 and f"seeds {seeds[0]}.." in history[1].text           # newest first
        history[1].click()                                                               # the first result's settings
        assert int(browser.find_element(By.ID, "seed").get_attribute("value")) == seeds[0]
        assert browser.find_element(By.ID, "keep-seed").is_selected()
        browser.find_element(By.ID, "generate").click()
        wait(browser, lambda b: text_of(b, "status").startswith("done"))
        assert browser.find_element(By.ID, "result").get_attribute("src") == grids[0]    # same seed, same images

        if own is None:                                                  # a text model: its words and examples
            browser.find_element(By.ID, "model").send_keys("text/last.pt")
            wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#examples button"))
            example = browser.find_elements(By.CSS_SELECTOR, "#examples button")[0]
            example.click()
            assert browser.find_element(By.ID, "prompt").get_attribute("value") == example.text
            assert "circle" in text_of(browser, "words")

        browser.set_window_size(1024, 768)                               # nothing cut off on a small screen
        assert browser.execute_script("return document.documentElement.scrollWidth <= "
                                      "document.documentElement.clientWidth")
        edit = browser.execute_script("return document.getElementById('edit').getBoundingClientRect().right")
        assert edit <= browser.execute_script("return document.documentElement.clientWidth")
        shot = os.environ.get("MINIGEN_STUDIO_SCREENSHOT")
        if shot:                                                         # the whole page, its test image drawn
            browser.set_window_size(1400, 1060)
            wait(browser, lambda b: b.execute_script("return source !== null"))
            height = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(1400, min(height + 140, 2400))
            browser.execute_script("window.scrollTo(0, 0)")
            browser.save_screenshot(shot)
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        if own is not None:
            own.shutdown()
            own.server_close()


def mask_pixels(browser) -> list[int]:
    return browser.execute_script("const d = mask.getContext('2d').getImageData(0, 0, mask.width, mask.height).data;"
                                  "const v = []; for (let i = 0; i < d.length; i += 4) v.push(d[i]); return v;")


def test_the_page_in_a_real_browser_paints_the_mask_it_sends_and_fits_uploads(served, browser, tmp_path):
    """The mask shown is the mask used (only 0 or 255), with undo and an eraser; an upload of the
    wrong colour or shape is fitted in the page, said so, and is what the model gets; an edit's
    error shows beside the edit."""
    url, _, _ = served
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    browser.set_window_size(1400, 1060)
    browser.get(url + "/")
    wait(browser, lambda b: b.execute_script("return source !== null"))
    browser.find_element(By.ID, "label").send_keys("1")
    canvas = browser.find_element(By.ID, "mask-view")
    stroke = lambda: ActionChains(browser).move_to_element_with_offset(canvas, -60, -20).click_and_hold() \
        .move_by_offset(60, 10).move_by_offset(60, 10).release().perform()           # noqa: E731 - across the middle
    stroke()
    painted = mask_pixels(browser)
    assert set(painted) == {0, 255} and painted.count(255) > 10         # binary: what is red is regenerated
    browser.find_element(By.ID, "undo").click()
    assert set(mask_pixels(browser)) == {0}
    stroke()
    browser.find_element(By.ID, "erase").click()
    assert browser.find_element(By.ID, "erase").is_selected()
    ActionChains(browser).move_to_element_with_offset(canvas, 0, -10).click_and_hold().release().perform()
    erased = mask_pixels(browser)
    assert 0 < erased.count(255) < painted.count(255)
    browser.find_element(By.CSS_SELECTOR, "input[value=paint]").click()

    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("3")
    browser.find_element(By.ID, "run-edit").click()                     # inpaint
    wait(browser, lambda b: text_of(b, "edit-status").startswith("done"), 120)
    captions = [e.text.splitlines()[0] for e in browser.find_elements(By.CSS_SELECTOR, "#images figcaption")]
    assert captions[:3] == ["original", "mask", "result 1"] and len(captions) == 2 + 4
    assert "python edit.py" in text_of(browser, "command") and text_of(browser, "status") == ""

    strength = browser.find_element(By.ID, "strength")                  # an edit's error, beside the edit
    strength.clear()
    strength.send_keys("0")
    browser.find_element(By.ID, "mode").send_keys("SDEdit")
    browser.find_element(By.ID, "run-edit").click()
    wait(browser, lambda b: "strength" in text_of(b, "edit-status"))
    assert browser.find_element(By.ID, "edit-status").get_attribute("class") == "error"
    assert text_of(browser, "settings") == "" and not browser.find_element(By.ID, "result").get_attribute("src")

    wide = tmp_path / "wide.png"                                        # colour, 2:1, for a grayscale model
    colours = np.zeros((40, 80, 3), dtype=np.uint8)
    colours[:, :40] = (255, 0, 0)
    colours[:, 40:] = (0, 0, 255)
    Image.fromarray(colours).save(wide)
    browser.find_element(By.ID, "upload").send_keys(str(wide))
    wait(browser, lambda b: "made grayscale" in text_of(b, "upload-note"))
    assert "80x40, centre-cropped and scaled to 28x28" in text_of(browser, "upload-note")
    browser.find_element(By.ID, "fit").send_keys("padded")
    wait(browser, lambda b: "padded" in text_of(b, "upload-note"))
    sent = browser.execute_script("return source.image")
    sent = decode(sent)
    assert sent.size == (28, 28)
    gray = np.asarray(sent.convert("RGB"), dtype=int)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert (gray[:5] == 0).all() and (gray[-5:] == 0).all() and gray[14, 3, 0] > 50   # black bands, red made gray
    browser.find_element(By.ID, "mode").send_keys("SDEdit")
    strength.clear()
    strength.send_keys("0.5")
    browser.find_element(By.ID, "run-edit").click()                     # the server takes what the page shows
    wait(browser, lambda b: text_of(b, "edit-status").startswith("done"), 120)


def test_the_page_says_at_once_when_the_studio_dies_mid_job(browser):
    studio = Studio([Path(__file__).resolve().parent / "data" / "before_refactor" / "ddpm.pt"], queue=2)
    server, url = start(studio)
    from selenium.webdriver.common.by import By
    try:
        browser.get(url + "/")
        wait(browser, lambda b: b.find_element(By.ID, "model").get_attribute("value") == "0")
        steps = browser.find_element(By.ID, "steps")
        steps.clear()
        steps.send_keys("1000")
        browser.find_element(By.ID, "generate").click()
        wait(browser, lambda b: "about" in text_of(b, "status"))           # frames, with the time left
        assert server.stop() is True                                    # as Ctrl-C does
        wait(browser, lambda b: "stopped answering" in text_of(b, "status"), 10)
        assert browser.find_element(By.ID, "status").get_attribute("class") == "error"
    finally:
        server.shutdown()
        server.server_close()


def test_a_turbo_student_redraws_live_as_the_prompt_and_w_change(served, browser, tmp_path):
    """A guidance-distilled student (distill.py --guidance-range): the page offers live mode and
    no negative prompt; each word typed, and w moved, redraws (the seed kept), a burst of words
    gives one picture of the whole prompt (the stale requests cancelled); the keystroke-to-picture
    latency, median and 95th percentile, is printed (MINIGEN_STUDIO_TURBO=CKPT measures a real
    student instead of the tiny one)."""
    import distill
    from selenium.webdriver.common.by import By
    ckpt = os.environ.get("MINIGEN_STUDIO_TURBO")
    rounds = 2 if ckpt else 1                                           # a real student: 20 pictures to time
    if not ckpt:
        _, _, out = served
        assert distill.run(distill.main, ["--teacher", str(out / "text" / "last.pt"), "--guidance-range", "1,6",
                                          "--start-steps", "2", "--steps-per-round", "1", "--batch-size", "4",
                                          "--max-images", "8", "--out", str(tmp_path / "turbo")]) == 0
        ckpt = tmp_path / "turbo" / "steps_1.pt"
    server, url = start(Studio([ckpt]))
    browser.get_log("browser")                                           # earlier tests' entries
    try:
        browser.set_window_size(1400, 1060)
        browser.get(url + "/")
        wait(browser, lambda b: b.find_element(By.ID, "model").get_attribute("value") == "0")
        assert browser.find_element(By.ID, "live-row").is_displayed()
        assert not browser.find_element(By.ID, "negative-row").is_displayed()   # one pass: no negative prompt
        assert browser.find_element(By.ID, "steps").get_attribute("value") == "1"
        seed = browser.find_element(By.ID, "seed").get_attribute("value")
        prompt = browser.find_element(By.ID, "prompt")
        pictures = lambda: browser.execute_script("return window.liveLatencies.length")
        words_ = "a large red circle in the centre on black".split()
        for i, word in enumerate(words_ * rounds):                       # a word at a time, each drawn
            if i == len(words_):
                prompt.clear()
            before = pictures()
            prompt.send_keys(("" if i % len(words_) == 0 else " ") + word)
            wait(browser, lambda b: pictures() > before, 30)
            assert text_of(browser, "settings").count('"') == 2          # the prompt drawn is the one typed
            assert f'"{" ".join(words_[:i % len(words_) + 1])}"' in text_of(browser, "settings")
        for w in ("5", "1.5"):                                           # moving w redraws too
            before = pictures()
            browser.execute_script(f"const g = document.getElementById('guidance'); g.value = '{w}';"
                                   "g.dispatchEvent(new Event('input'));")
            wait(browser, lambda b: pictures() > before, 30)
            assert f"w {w}" in text_of(browser, "settings")
        assert browser.find_element(By.ID, "seed").get_attribute("value") == seed   # live keeps the seed
        assert not browser.find_elements(By.CSS_SELECTOR, "#history-list li")       # and stays out of the history
        latencies = sorted(browser.execute_script("return window.liveLatencies"))
        burst_before = pictures()
        prompt.clear()
        prompt.send_keys("a small blue square at the top left on white")   # typed at once: one picture
        wait(browser, lambda b: '"a small blue square at the top left on white"' in text_of(b, "settings"), 30)
        time.sleep(0.5)
        assert pictures() - burst_before <= 2
        prompt.send_keys(" in gre")                                       # a word half typed: not sent
        wait(browser, lambda b: "not: gre" in text_of(b, "status"), 10)
        median, p95 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        print(f"\nlive studio ({Path(ckpt).parent.name}/{Path(ckpt).name}, 4 images, 1 step): keystroke to picture "
              f"median {median:.0f} ms, 95th percentile {p95:.0f} ms over {len(latencies)} pictures")
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        server.shutdown()
        server.server_close()


def test_the_emoji_model_in_a_real_browser_names_unknown_words_and_draws_an_unseen_composition(
        browser, tmp_path, text_autoencoder):
    """A text model of emoji (here a tiny one of test_emoji.py's fake packages) in the page: its
    example prompts are emoji names, a word it never learnt is named in one line, and a held-out
    name (a picture never trained on, every word of it trained on) is drawn."""
    import train_ldm
    from selenium.webdriver.common.by import By
    from minigen.data import emoji
    from .test_emoji import write_fake_packages
    root = write_fake_packages(tmp_path / "data")
    out = tmp_path / "emoji-model"
    assert train_ldm.run(train_ldm.main, ["--dataset", "emoji", "--data-root", str(root), "--condition", "text",
                                          "--autoencoder", text_autoencoder, "--preset", "tiny", "--steps", "1",
                                          "--batch-size", "4", "--sample-every", "0", "--sample-steps", "1",
                                          "--out", str(out)]) == 0
    catalogue = emoji.catalogue(root / "emoji")
    unseen = next(e.name for e, held in zip(catalogue.emoji, catalogue.held_out) if held)
    server, url = start(Studio([out / "last.pt"]))
    try:
        browser.get(url + "/")
        wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#examples button"))
        examples = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#examples button")]
        # four emoji spread over the list (the test split is the list, in order), each in the next phrasing
        spread = [catalogue.emoji[i * len(catalogue.emoji) // 4] for i in range(4)]
        assert examples[0] == "grinning face" and examples == [emoji.phrase(e, i) for i, e in enumerate(spread)]
        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("a crimson apple")
        browser.find_element(By.ID, "generate").click()
        wait(browser, lambda b: "crimson" in text_of(b, "status"), 30)
        assert browser.find_element(By.ID, "status").get_attribute("class") == "error"
        assert "unknown word in the prompt: 'crimson'" in text_of(browser, "status")
        prompt.clear()
        prompt.send_keys(unseen)
        browser.find_element(By.ID, "generate").click()
        wait(browser, lambda b: text_of(b, "status").startswith("done"), 60)
        assert unseen in text_of(browser, "settings")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#images figcaption")) == 4
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not [e for e in severe if "400" not in e["message"]], severe     # the refused prompt's 400 only
    finally:
        server.shutdown()
        server.server_close()


def test_the_command_line_refuses_what_it_cannot_serve(tmp_path, capsys):
    from minigen.cli import run
    from minigen.studio.__main__ import main
    assert run(main, ["--ckpt", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert run(main, ["--ckpt", "x.pt", "--port", "70000"]) == 2
    assert "--port: 70000: must be in [0, 65535]" in capsys.readouterr().err
    assert run(main, ["--ckpt", "x.pt", "--queue", "-1"]) == 2                  # a line no job could ever join
    assert "--queue: -1: must be in [0, 1000]" in capsys.readouterr().err


def raw_request(url: str, head: str, body: bytes = b"", timeout: float = 30) -> tuple[int, str]:
    """Send exactly these request lines (and body) on a socket: (status, the answer's body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


def test_only_the_studios_own_page_is_answered(served):
    """A page on another site can POST text/plain without asking (no CORS preflight), and a
    DNS-rebinding page reaches 127.0.0.1 under its own host name: both are refused (403), as is a
    POST that does not say it is JSON; the studio's own requests pass."""
    url, _, _ = served
    own = url.removeprefix("http://")
    body = json.dumps({"model": 0, "label": 1, "steps": 1, "n": 1}).encode()
    length = f"Content-Length: {len(body)}\n"
    status, text = raw_request(url, "GET /api/models HTTP/1.0\nHost: evil.example\n")
    assert status == 403 and "Host evil.example" in text
    status, text = raw_request(url, f"POST /api/run HTTP/1.0\nHost: {own}\nOrigin: http://evil.example\n"
                                    f"Content-Type: application/json\n{length}", body)
    assert status == 403 and "Origin http://evil.example" in text
    status, text = raw_request(url, f"POST /api/run HTTP/1.0\nHost: {own}\nContent-Type: text/plain\n{length}", body)
    assert status == 403 and "Content-Type: application/json" in text
    status, text = raw_request(url, f"POST /api/run HTTP/1.0\nHost: {own}\nOrigin: http://{own}\n"
                                    f"Content-Type: application/json\n{length}", body)
    assert status == 200 and '"event": "done"' in text
    status, _ = raw_request(url, f"GET /api/models HTTP/1.0\nHost: localhost:{own.split(':')[1]}\n")
    assert status == 200


@pytest.mark.parametrize("raw,message", [
    (b'{"model": 0, "guidance": 1e400}', "too large"),
    (b'{"model": 0, "guidance": Infinity}', "Infinity is not a number"),
    (b'{"model": 0, "seed": 1e30}', "seed"),
    (b'{"model": 0, "label": 1, "steps": "1e400"}', "steps '1e400': must be an integer"),     # as text: no overflow
    (b'{"model": 0, "label": 1, "guidance": "inf"}', "guidance inf: must be a finite number"),
    (b'{"model": 0, "label": 1, "test_index": 9007199254740993, "mode": "sdedit"}', "test_index 9007199254740993:"),
    (b'[' * 100_000 + b']' * 100_000, "nested too deeply"),
])
def test_numbers_past_any_range_and_deep_json_are_one_line_400s(served, raw, message):
    status, answer = post(served[0], None, raw=raw)
    assert status == 400 and message in answer["error"] and "\n" not in answer["error"], answer


def test_a_negative_length_and_silent_connections_do_not_stop_the_studio(served):
    """Content-Length: -1 is refused, not read to the end of the stream; twenty connections that
    never send a byte, and a request that promises a body and sends one byte, do not keep the
    others from being answered (each idle socket times out, and the pool has threads to spare)."""
    url, _, _ = served
    host, port = url.removeprefix("http://").split(":")
    status, text = raw_request(url, f"POST /api/run HTTP/1.0\nHost: {host}:{port}\nContent-Type: application/json\n"
                                    "Content-Length: -1\n", b"{}")
    assert status == 400 and "not a length" in text
    silent = [socket.create_connection((host, int(port)), timeout=30) for _ in range(20)]
    slow = socket.create_connection((host, int(port)), timeout=30)
    slow.sendall(f"POST /api/run HTTP/1.0\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                 "Content-Length: 100\r\n\r\n{".encode())
    try:
        status, _, models = get(url + "/api/models")
        assert status == 200 and len(json.loads(models)) == 2
    finally:
        for s in silent + [slow]:
            s.close()


def test_leaving_during_an_inversion_stops_it(served):
    """Inversion reports its climb as frames, so a page that closes its connection stops it at
    the next one: far fewer network calls than the 3 x 4 x 200 a finished inversion makes."""
    url, studio, _ = served
    pipe = studio.models[0].pipe
    calls = []
    pipe.network.register_forward_hook(lambda *_: calls.append(1))
    try:
        with job_until(url, {"model": 0, "label": 2, "mode": "invert", "steps": 200, "n": 1, "test_index": 0},
                       b'"inverting"'):
            pass
        assert line_empties(studio.models[0])
        assert 0 < len(calls) < 3 * 4 * 200
    finally:
        pipe.network._forward_hooks.clear()


def test_a_second_studio_on_a_port_in_use_says_so_in_one_line(served, capsys):
    from minigen.cli import run
    from minigen.studio.__main__ import main
    url, _, out = served
    port = url.rsplit(":", 1)[1]
    assert run(main, ["--ckpt", str(out / "glyphs" / "last.pt"), "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err


def test_a_blank_prompt_is_no_prompt_and_an_unnamed_inversion_is_not_captioned_none(served, tmp_path):
    """...and the inversion's command (no --prompt) runs in edit.py, giving back the same reconstruction."""
    import shlex
    import edit
    url, _, _ = served
    status, answer = post(url, {"model": 1, "prompt": "   ", "steps": 1, "n": 1})
    assert status == 400 and "write a prompt" in answer["error"]
    status, events = post(url, {"model": 1, "mode": "invert", "prompt": "  ", "steps": 2, "n": 1, "test_index": 0})
    assert status == 200 and events[-1]["event"] == "done", events[-1]
    panels = events[-1]["panels"]
    assert [p["caption"] for p in panels] == ["original", "reconstructed"]
    assert "--prompt" not in events[-1]["command"]
    decode(panels[0]["image"]).save(tmp_path / panels[0]["name"])
    argv = [str(tmp_path / a) if a == panels[0]["name"] else a for a in shlex.split(events[-1]["command"])]
    argv[argv.index("--out") + 1] = str(tmp_path / "inverted.png")
    assert edit.run(edit.main, argv[2:] + ["--no-progress"]) == 0
    grid = np.asarray(Image.open(tmp_path / "inverted.png").convert("RGB"), dtype=int)
    scale, pad = 3, 2                                                  # edit.py's grid: input, reconstructed; 32 px at 3x
    x0 = pad + 32 * scale + pad
    made = grid[pad:pad + 32 * scale:scale, x0:x0 + 32 * scale:scale]
    assert np.abs(made - np.asarray(decode(panels[1]["image"]).convert("RGB"), dtype=int)).max() <= 1


def test_stopping_the_studio_stops_its_running_job():
    """Ctrl-C calls StudioServer.stop: a job in the middle of 1,000 steps ends at its next frame,
    so the line is empty again long before the job would have finished."""
    studio = Studio([Path(__file__).resolve().parent / "data" / "before_refactor" / "ddpm.pt"], queue=2)
    server, url = start(studio)
    try:
        with job_until(url, {"model": 0, "label": 0, "steps": 1000, "n": 1}, b'"frame"'):
            assert server.stop() is True
            assert len(studio.models[0].line) == 0
    finally:
        server.shutdown()
        server.server_close()
