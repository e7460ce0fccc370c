// The studio page: plain JavaScript, no library. It asks the server (server.py) for the models,
// sends a job as JSON to /api/run and reads the answer as it streams, one JSON event a line:
// queued -> started -> plan -> frame, frame, ... -> done (or error). Cancelling closes the
// connection, which stops the job on the server at its next frame. Every result comes with its
// settings and the sample.py / edit.py command that makes it again; the session's results are
// kept in a history whose entries bring their settings back. A guidance-distilled student
// (distill.py --guidance-range) redraws live as the prompt or w changes.

const $ = (id) => document.getElementById(id);
const SEED_MAX = 4294967295;        // the largest seed sample.py takes (cli.SEED)
let models = [];
let running = null;                 // the AbortController of the job in flight
let target = "status";              // where the running job's messages go: status, or edit-status for an edit
let source = null;                  // the image to edit as sent: {test_index: k} or {image: dataURL}
let uploaded = null;                // an uploaded picture, decoded, kept to fit it again to another model
const prepared = document.createElement("canvas");  // the image to edit at the model's size: what the model sees
const mask = document.createElement("canvas");      // the mask at that size: white = regenerate, only 0 or 255
const undoStack = [];               // earlier masks, for undo
const results = [];                 // this session's results, newest last
const LIVE_WAIT_MS = 60;            // live mode: draw once the typing pauses this long (debounce)
let liveTimer = null;               // the pending live request
let liveChanged = 0;                // when the prompt or w last changed (performance.now())
window.liveLatencies = [];          // ms from the last change to its picture on the page, one per live result

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// ---- models ----------------------------------------------------------------------------------
async function loadModels() {
  models = await (await fetch("/api/models")).json();
  $("model").innerHTML = models.map((m) => `<option value="${m.id}" title="${escape(m.name)}">${escape(m.short)}</option>`).join("");
  chooseModel();
}

function model() { return models[Number($("model").value)]; }

function chooseModel() {
  const m = model();
  const [C, H, W] = m.image_shape;
  $("about").textContent = `${m.name}: ${C}x${H}x${W} images, step ${m.step}, T = ${m.T}` +
    (m.latent ? ", latent diffusion" : "") + (m.dataset ? `, trained on ${m.dataset}` : "") +
    (m.distilled_steps ? `, a student distilled to ${m.distilled_steps} steps` : "");
  $("class-row").hidden = m.condition !== "class";
  $("prompt-row").hidden = m.condition !== "text";
  $("negative-row").hidden = m.condition !== "text" || m.guidance_distilled;   // one pass: nothing to steer from
  $("live-row").hidden = !m.guidance_distilled;
  $("label").innerHTML = m.classes.map((c, i) => `<option value="${i}">${i}: ${escape(c)}</option>`).join("");
  $("words").textContent = `${m.vocabulary.length} words, at most ${m.max_words} in a prompt: ${m.vocabulary.join(" ")}`;
  $("examples").innerHTML = "";
  if (m.condition === "text") showExamples(m);
  $("cm-option").hidden = $("cm-option").disabled = !m.distilled_steps;   // a consistency sampler needs a student
  if (!m.distilled_steps && $("sampler").value === "cm") $("sampler").value = "ddim";
  $("steps").max = m.T;
  $("frame-xt").parentElement.hidden = m.latent;   // a noisy latent is no picture
  followSampler();                                  // this model's steps for the sampler (a student's own)
  if (uploaded) prepare(uploaded, {upload: true}); else useTestImage();
}

async function showExamples(m) {
  const answer = await fetch(`/api/examples?model=${m.id}`);
  if (!answer.ok || model() !== m) return;
  const examples = await answer.json();
  if (!examples.length) return;
  $("examples").innerHTML = "try: " + examples.map((e) => `<button class="example">${escape(e)}</button>`).join(" ");
  for (const button of $("examples").querySelectorAll("button"))
    button.addEventListener("click", () => { $("prompt").value = button.textContent; liveChange(); });
}

// The controls a sampler has: η is DDIM's only; each sampler's own number of steps.
function followSampler(keepSteps = false) {
  const m = model(), s = $("sampler").value;
  $("eta").disabled = s !== "ddim";
  if (s !== "ddim") $("eta").value = 0;
  if (!keepSteps || !$("steps").value)
    $("steps").value = {ddim: m.distilled_steps || 50, "dpm++": 20, ddpm: 100, cm: m.distilled_steps || 1}[s];
  if (Number($("steps").value) > m.T) $("steps").value = m.T;
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

function say(text, error = false, where = target) {
  $(where).textContent = text;
  $(where).className = error ? "error" : "";
}

function clearResult() {
  for (const id of ["status", "edit-status", "settings"]) say("", false, id);
  $("result").removeAttribute("src");
  $("images").innerHTML = "";
  $("download").hidden = $("command-box").hidden = true;
  $("progress").value = 0;
}

// A job: from a click (a new seed unless kept), or live (the seed kept, the last picture shown
// until the new one arrives, a stale live job cancelled by the next).
async function run(mode, live = false) {
  if (running && !live) return;
  if (running) running.abort();                        // live: the new request cancels the stale one
  if (!live && !$("keep-seed").checked)                // a new seed each click; image i gets seed + i
    $("seed").value = Math.floor(Math.random() * (SEED_MAX - Number($("n").value) + 2));
  if (!live) clearResult();
  target = mode === "generate" ? "status" : "edit-status";
  if (mode !== "generate" && !source) { say("choose an image to edit first", true); return; }
  const mine = new AbortController();
  running = mine;
  $("cancel").disabled = false;
  $("generate").disabled = $("run-edit").disabled = !live;
  const body = request(mode);
  const job = {body, model: model(), sent: live ? liveChanged : performance.now(), started: null, firstFrame: null,
               note: "", live};
  if (!live) say("sending...");
  try {
    const answer = await fetch("/api/run", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(body), signal: mine.signal});
    if (!answer.ok) {
      const text = await answer.text();
      let message = text;
      try { message = JSON.parse(text).error; } catch (e) { /* not JSON: show it as it is */ }
      say(message, true);
      return;
    }
    const ended = await readStream(answer.body.getReader(), (event) => show(event, job));
    if (!ended) say("the studio stopped answering before the result (the connection closed): is it still running?", true);
  } catch (e) {
    if (e.name === "AbortError") { if (!live) say("cancelled"); }
    else say(`lost the studio mid-job (${e.message}): is it still running?`, true);
  } finally {
    if (running === mine) {                            // not already replaced by a newer live job
      running = null;
      $("cancel").disabled = true;
      $("generate").disabled = $("run-edit").disabled = false;
    }
  }
}

// ---- live: a guidance-distilled student redraws as the prompt or w changes ---------------------
function liveChange() {
  const m = model();
  if (!m || !m.guidance_distilled || !$("live").checked || m.condition !== "text" || !$("prompt").value.trim()) return;
  liveChanged = performance.now();
  clearTimeout(liveTimer);
  // a word being typed is not yet one the model knows: wait for it rather than ask (the server
  // would refuse it); the same split as the tokenizer's, runs of letters and digits, lower-cased
  const typed = $("prompt").value.normalize("NFKC").toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
  const unknown = typed.filter((w) => !m.vocabulary.includes(w));
  if (unknown.length) { say(`live: waiting for words this model knows (not: ${unknown.join(", ")})`); return; }
  liveTimer = setTimeout(() => run("generate", true), LIVE_WAIT_MS);
}

// Reads the stream to its end; true when it ended with a last word (done or error), false when
// the connection closed without one (the server died or was stopped mid-job).
async function readStream(reader, onEvent) {
  const decoder = new TextDecoder();
  let buffered = "", last = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, {stream: true});
    const lines = buffered.split("\n");
    buffered = lines.pop();
    for (const line of lines) if (line.trim()) { last = JSON.parse(line); onEvent(last); }
  }
  return last !== null && (last.event === "done" || last.event === "error");
}

function show(event, job) {
  if (event.event === "queued") say(`waiting: ${event.position} job(s) ahead on this model`);
  else if (event.event === "started") { job.started = performance.now(); say("running..."); }
  else if (event.event === "plan") { job.note = event.note; say(event.note || "running..."); }
  else if (event.event === "frame") {
    if (job.live) return;                              // live: only the result is drawn
    if (job.firstFrame === null) job.firstFrame = (performance.now() - job.sent) / 1000;
    if (event.x_t) $("frame-xt").src = event.x_t;
    if (event.x0) $("frame-x0").src = event.x0;
    $("progress").max = event.of;
    $("progress").value = event.i;
    const elapsed = (performance.now() - job.started) / 1000;
    const left = elapsed / event.i * (event.of - event.i);
    say(`${event.stage === "inverting" ? "inverting: " : ""}step ${event.i} of ${event.of}, t = ${event.t}, ` +
        `about ${left < 10 ? left.toFixed(1) : Math.round(left)} s left` + (job.note ? ` (${job.note})` : ""));
  } else if (event.event === "error") say(event.message, true);
  else if (event.event === "done" && job.live) {       // shown at once, kept out of the history
    const entry = {body: job.body, model: job.model, result: event, timings: {}};
    showResult(entry);
    const ms = performance.now() - job.sent;
    window.liveLatencies.push(ms);
    say(`live: drawn ${Math.round(ms)} ms after the last change (the network: ${(event.seconds * 1000).toFixed(0)} ms; ` +
        "generate keeps a result in the history)");
  } else if (event.event === "done") {
    $("progress").value = $("progress").max;
    // seconds from the click: to the first picture of the reverse process, and to the result on the page
    const timings = {first_frame_s: job.firstFrame, result_s: (performance.now() - job.sent) / 1000};
    say(`done in ${event.seconds.toFixed(1)} s (${event.images_per_s} images/s; first frame ` +
        `${timings.first_frame_s === null ? "none" : `after ${timings.first_frame_s.toFixed(2)} s`})`);
    const entry = {body: job.body, model: job.model, result: event, timings};
    results.push(entry);
    showResult(entry);
    addToHistory(entry, results.length - 1);
  }
}

function describe(entry) {
  const s = entry.result.settings;
  const told = s.prompt !== undefined ? `"${s.prompt}"` : s.class !== undefined ? `class ${s.class}` : "";
  return [entry.model.short, s.mode, told, s.negative ? `not "${s.negative}"` : "", `${s.sampler} ${s.steps} steps`,
          s.eta ? `η ${s.eta}` : "", s.guidance !== undefined ? `w ${s.guidance}` : "",
          s.strength !== undefined ? `strength ${s.strength}` : "",
          s.n > 1 ? `seeds ${s.seed}..${s.seed + s.n - 1}` : `seed ${s.seed}`].filter(Boolean).join(" · ");
}

function showResult(entry) {
  const event = entry.result;
  $("settings").textContent = describe(entry);
  $("result").src = event.grid;
  $("download").href = event.grid;
  $("download").download = event.name;
  $("download").textContent = `download the grid (${event.name})`;
  $("download").hidden = false;
  $("images").innerHTML = event.panels.map((p) =>
    `<figure><img src="${p.image}" alt="${escape(p.caption)}"><figcaption>${escape(p.caption)}<br>` +
    `<a href="${p.image}" download="${escape(p.name)}">save</a></figcaption></figure>`).join("");
  $("command").textContent = event.command;
  $("command-box").hidden = false;
  $("copied").textContent = "";
}

function addToHistory(entry, index) {
  const item = document.createElement("li");
  item.innerHTML = `<button title="bring these settings back"><img src="${entry.result.grid}" alt=""><span>` +
    `${escape(describe(entry))}</span></button>`;
  item.querySelector("button").addEventListener("click", () => restore(results[index]));
  $("history-list").prepend(item);
}

// A history entry's settings back in the form (its seed kept), and its result shown again.
function restore(entry) {
  const b = entry.body;
  $("model").value = String(b.model);
  chooseModel();
  for (const id of ["sampler", "steps", "eta", "guidance", "seed", "n", "label", "prompt", "negative", "strength"])
    if (b[id] !== undefined) $(id).value = b[id];
  if (b.mode !== "generate") $("mode").value = b.mode;
  $("guidance-value").textContent = $("guidance").value;
  $("keep-seed").checked = true;
  followSampler(true);
  clearResult();
  showResult(entry);
}

// ---- the image to edit, as the model will see it, and its mask ---------------------------------------
// An upload is fitted to the model's H x W here (centre-cropped as the server would, or padded),
// and made gray for a grayscale model (by Pillow's own weights, ITU-R 601), so the picture shown
// and painted on is exactly the one sent.
function prepare(img, how) {
  const [C, H, W] = model().image_shape;
  prepared.width = mask.width = W;
  prepared.height = mask.height = H;
  const c = prepared.getContext("2d");
  c.fillStyle = "#000";
  c.fillRect(0, 0, W, H);
  const w = img.naturalWidth, h = img.naturalHeight;
  const scale = $("fit").value === "pad" && how.upload ? Math.min(W / w, H / h) : Math.max(W / w, H / h);
  c.imageSmoothingQuality = "high";
  c.drawImage(img, (W - w * scale) / 2, (H - h * scale) / 2, w * scale, h * scale);
  const pixels = c.getImageData(0, 0, W, H);
  const d = pixels.data;
  let colour = false;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2]) colour = true;
    if (C === 1) d[i] = d[i + 1] = d[i + 2] = (d[i] * 19595 + d[i + 1] * 38470 + d[i + 2] * 7471 + 0x8000) >> 16;
    d[i + 3] = 255;
  }
  c.putImageData(pixels, 0, 0);
  const notes = [];
  if (w !== W || h !== H) notes.push(`${w}x${h}, ${$("fit").value === "pad" && how.upload ? "padded" : "centre-cropped"} and scaled to ${W}x${H}`);
  if (colour && C === 1) notes.push("a colour image: made grayscale for this model");
  if (!colour && C === 3 && how.upload) notes.push("a grayscale image: used as RGB with three equal channels");
  $("upload-note").textContent = how.upload ? `${notes.join("; ") || `${W}x${H}, used as it is`}. This is exactly what the model gets.` : "";
  source = how.upload ? {image: prepared.toDataURL("image/png")} : {test_index: how.test_index};
  undoStack.length = 0;
  $("undo").disabled = true;
  clearMask(false);
}

function useTestImage() {
  const k = Number($("test-index").value);
  fetch(`/api/test-image?model=${model().id}&index=${k}`).then(async (answer) => {
    if (!answer.ok) { say((await answer.json()).error, true, "edit-status"); return; }
    const img = new Image();
    img.onload = () => { uploaded = null; prepare(img, {test_index: k}); };
    img.src = URL.createObjectURL(await answer.blob());
  });
}

function upload(file) {
  const img = new Image();
  img.onload = () => { uploaded = img; say("", false, "edit-status"); prepare(img, {upload: true}); };
  img.onerror = () => say(`${file.name}: not an image the browser can read`, true, "edit-status");
  img.src = URL.createObjectURL(file);
}

function draw() {
  const view = $("picture").getContext("2d");
  view.imageSmoothingEnabled = false;
  view.clearRect(0, 0, 256, 256);
  view.drawImage(prepared, 0, 0, 256, 256);
  // The mask in red over the picture, where it is white.
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

// The mask made binary at the server's threshold (white from 128): what is shown is what is used.
function binarise() {
  const m = mask.getContext("2d");
  const pixels = m.getImageData(0, 0, mask.width, mask.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const v = pixels.data[i] >= 128 ? 255 : 0;
    pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = v;
    pixels.data[i + 3] = 255;
  }
  m.putImageData(pixels, 0, 0);
}

function remember() {
  undoStack.push(mask.getContext("2d").getImageData(0, 0, mask.width, mask.height));
  if (undoStack.length > 50) undoStack.shift();
  $("undo").disabled = false;
}

function undo() {
  if (!undoStack.length) return;
  mask.getContext("2d").putImageData(undoStack.pop(), 0, 0);
  $("undo").disabled = !undoStack.length;
  draw();
}

function clearMask(undoable = true) {
  if (undoable) remember();
  const m = mask.getContext("2d");
  m.fillStyle = "#000";
  m.fillRect(0, 0, mask.width, mask.height);
  draw();
}

function invertMask() {
  remember();
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
  m.strokeStyle = m.fillStyle = $("erase").checked ? "#000" : "#fff";
  m.lineWidth = 2 * Number($("brush").value) * mask.width / 64;     // brush radius in 1/64ths of the image
  m.lineCap = "round";
  m.beginPath();
  if (last) {                                         // a segment from the last point: no gaps in a fast stroke
    m.moveTo(...last);
    m.lineTo(...point);
    m.stroke();
  } else {                                            // a click: one dot of the brush
    m.arc(...point, m.lineWidth / 2, 0, 2 * Math.PI);
    m.fill();
  }
  last = point;
  binarise();
  draw();
}

$("mask-view").addEventListener("mousedown", (e) => { remember(); last = null; paint(e); });
$("mask-view").addEventListener("mousemove", (e) => { if (last) paint(e); });
window.addEventListener("mouseup", () => { last = null; });

// ---- wiring -----------------------------------------------------------------------------------
$("model").addEventListener("change", chooseModel);
$("sampler").addEventListener("change", () => followSampler());
$("guidance").addEventListener("input", () => { $("guidance-value").textContent = $("guidance").value; liveChange(); });
$("prompt").addEventListener("input", liveChange);
$("generate").addEventListener("click", () => run("generate"));
$("run-edit").addEventListener("click", () => run($("mode").value));
$("cancel").addEventListener("click", () => { if (running) running.abort(); });
$("use-test").addEventListener("click", useTestImage);
$("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
$("fit").addEventListener("change", () => { if (uploaded) prepare(uploaded, {upload: true}); });
$("clear").addEventListener("click", () => clearMask());
$("undo").addEventListener("click", undo);
$("invert-mask").addEventListener("click", invertMask);
$("copy").addEventListener("click", async () => {
  try { await navigator.clipboard.writeText($("command").textContent); $("copied").textContent = "copied"; }
  catch (e) { getSelection().selectAllChildren($("command")); $("copied").textContent = "selected: press Ctrl+C"; }
});
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); run("generate"); }
});
loadModels().catch((e) => say(`cannot reach the studio: ${e.message}`, true));
