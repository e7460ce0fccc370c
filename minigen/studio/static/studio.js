// The studio page: plain JavaScript, no library. It asks the server (server.py) for the models,
// sends a job as JSON to /api/run and reads the answer as it streams, one JSON event a line:
// queued -> started -> frame, frame, ... -> done (or error). Cancelling closes the connection,
// which stops the job on the server at its next frame.

const $ = (id) => document.getElementById(id);
let models = [];
let running = null;                 // the AbortController of the job in flight
let source = null;                  // the image to edit: {test_index: k} or {image: dataURL}
let picture = null;                 // that image, decoded, for the canvas
const mask = document.createElement("canvas");   // the mask at the image's own size: white = regenerate

// ---- models ----------------------------------------------------------------------------------
async function loadModels() {
  models = await (await fetch("/api/models")).json();
  $("model").innerHTML = models.map((m) => `<option value="${m.id}">${m.name}</option>`).join("");
  chooseModel();
}

function model() { return models[Number($("model").value)]; }

function chooseModel() {
  const m = model();
  const [C, H, W] = m.image_shape;
  $("about").textContent = `${C}x${H}x${W} images, step ${m.step}, T = ${m.T}` +
    (m.latent ? ", latent diffusion" : "") + (m.dataset ? `, trained on ${m.dataset}` : "");
  $("class-row").hidden = m.condition !== "class";
  $("prompt-row").hidden = $("negative-row").hidden = m.condition !== "text";
  $("label").innerHTML = m.classes.map((c, i) => `<option value="${i}">${i}: ${c}</option>`).join("");
  if (m.distilled_steps) $("steps").value = m.distilled_steps;
  $("frame-xt").parentElement.hidden = m.latent;   // a noisy latent is no picture
  useTestImage();
}

// ---- a job and its stream ---------------------------------------------------------------------
function request(mode) {
  const m = model();
  const body = {model: m.id, mode, sampler: $("sampler").value, steps: $("steps").value, eta: $("eta").value,
                guidance: $("guidance").value, seed: $("seed").value, n: $("n").value};
  if (m.condition === "class") body.label = $("label").value;
  if (m.condition === "text") { body.prompt = $("prompt").value; body.negative = $("negative").value; }
  if (mode !== "generate") {
    Object.assign(body, source, {strength: $("strength").value});
    if (mode === "inpaint") body.mask = mask.toDataURL("image/png");
  }
  return body;
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function run(mode) {
  if (running) return;
  running = new AbortController();
  $("cancel").disabled = false;
  $("generate").disabled = $("run-edit").disabled = true;
  say("sending...");
  try {
    const answer = await fetch("/api/run", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(request(mode)), signal: running.signal});
    if (!answer.ok) {
      const text = await answer.text();
      let message = text;
      try { message = JSON.parse(text).error; } catch (e) { /* not JSON: show it as it is */ }
      say(message, true);
      return;
    }
    await readStream(answer.body.getReader(), (event) => show(event, mode));
  } catch (e) {
    say(e.name === "AbortError" ? "cancelled" : `failed: ${e.message}`, e.name !== "AbortError");
  } finally {
    running = null;
    $("cancel").disabled = true;
    $("generate").disabled = $("run-edit").disabled = false;
  }
}

async function readStream(reader, onEvent) {
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, {stream: true});
    const lines = buffered.split("\n");
    buffered = lines.pop();
    for (const line of lines) if (line.trim()) onEvent(JSON.parse(line));
  }
}

function show(event, mode) {
  if (event.event === "queued") say(`waiting: ${event.position} job(s) ahead on this model`);
  else if (event.event === "started") say("running...");
  else if (event.event === "frame") {
    if (event.x_t) $("frame-xt").src = event.x_t;
    if (event.x0) $("frame-x0").src = event.x0;
    $("progress").max = event.of;
    $("progress").value = event.i;
    say(`${event.stage === "inverting" ? "inverting: " : ""}step ${event.i} of ${event.of}, t = ${event.t}`);
  } else if (event.event === "error") say(event.message, true);
  else if (event.event === "done") {
    $("progress").value = $("progress").max;
    say(`done in ${event.seconds.toFixed(1)} s (${event.images_per_s} images/s)`);
    $("result").src = event.grid;
    $("download").href = event.grid;
    $("download").download = `minigen-${mode}.png`;
    $("download").hidden = false;
    if (mode !== "generate") {
      $("panels").innerHTML = event.panels.map((p) =>
        `<figure><img src="${p.image}" alt="${p.caption}"><figcaption>${p.caption}</figcaption></figure>`).join("");
    }
  }
}

// ---- the image to edit and its mask ----------------------------------------------------------------
function setPicture(url, newSource) {
  const img = new Image();
  img.onload = () => {
    picture = img;
    source = newSource;
    mask.width = img.naturalWidth;
    mask.height = img.naturalHeight;
    clearMask();
  };
  img.onerror = () => say("that file is not an image the browser can show", true);
  img.src = url;
}

function useTestImage() {
  const k = Number($("test-index").value);
  fetch(`/api/test-image?model=${model().id}&index=${k}`).then(async (answer) => {
    if (!answer.ok) { say((await answer.json()).error, true); return; }
    setPicture(URL.createObjectURL(await answer.blob()), {test_index: k});
  });
}

function upload(file) {
  const reader = new FileReader();
  reader.onload = () => setPicture(reader.result, {image: reader.result});
  reader.readAsDataURL(file);
}

function draw() {
  const view = $("picture").getContext("2d");
  view.imageSmoothingEnabled = false;
  view.clearRect(0, 0, 256, 256);
  if (picture) view.drawImage(picture, 0, 0, 256, 256);
  // The mask in red over the picture: red everywhere, as opaque as the mask is white.
  const m = mask.getContext("2d").getImageData(0, 0, mask.width, mask.height);
  for (let i = 0; i < m.data.length; i += 4) {
    m.data[i + 3] = m.data[i];
    m.data[i] = 255;
    m.data[i + 1] = m.data[i + 2] = 0;
  }
  const red = document.createElement("canvas");
  red.width = mask.width;
  red.height = mask.height;
  red.getContext("2d").putImageData(m, 0, 0);
  const overlay = $("mask-view").getContext("2d");
  overlay.imageSmoothingEnabled = false;
  overlay.clearRect(0, 0, 256, 256);
  overlay.drawImage(red, 0, 0, 256, 256);
}

function clearMask() {
  const m = mask.getContext("2d");
  m.fillStyle = "#000";
  m.fillRect(0, 0, mask.width, mask.height);
  draw();
}

function invertMask() {
  const m = mask.getContext("2d");
  const pixels = m.getImageData(0, 0, mask.width, mask.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const v = 255 - pixels.data[i];
    pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = v;
  }
  m.putImageData(pixels, 0, 0);
  draw();
}

let last = null;                    // the brush's previous point, in the mask's pixels (null: not painting)

function paint(e) {
  const box = $("mask-view").getBoundingClientRect();
  const point = [(e.clientX - box.left) * mask.width / box.width, (e.clientY - box.top) * mask.height / box.height];
  const m = mask.getContext("2d");
  m.strokeStyle = m.fillStyle = "#fff";
  m.lineWidth = 2 * Number($("brush").value) * mask.width / 64;     // brush radius in 1/64ths of the image
  m.lineCap = "round";
  m.beginPath();
  m.moveTo(...(last || point));                       // a segment from the last point: no gaps in a fast stroke
  m.lineTo(...point);
  m.stroke();
  last = point;
  draw();
}

$("mask-view").addEventListener("mousedown", (e) => { last = null; paint(e); });
$("mask-view").addEventListener("mousemove", (e) => { if (last) paint(e); });
window.addEventListener("mouseup", () => { last = null; });

// ---- wiring -----------------------------------------------------------------------------------
$("model").addEventListener("change", chooseModel);
$("guidance").addEventListener("input", () => { $("guidance-value").textContent = $("guidance").value; });
$("generate").addEventListener("click", () => run("generate"));
$("run-edit").addEventListener("click", () => run($("mode").value));
$("cancel").addEventListener("click", () => { if (running) running.abort(); });
$("use-test").addEventListener("click", useTestImage);
$("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
$("clear").addEventListener("click", clearMask);
$("invert-mask").addEventListener("click", invertMask);
loadModels().catch((e) => say(`cannot reach the studio: ${e.message}`, true));
