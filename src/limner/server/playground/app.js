// The playground page: settings, the request with its live previews, the gallery, keys and
// errors. Each part lives in its own module; this one wires them together.

import { ApiError, apiUrl, call, events, storedKey, storeKey } from "./api.js";
import { Gallery } from "./gallery.js";
import { ImageInput, MAX_PICTURES } from "./image.js";
import { Settings } from "./settings.js";
import { curl, pythonSdk } from "./snippets.js";

const $ = (id) => document.getElementById(id);
const MIME = { png: "image/png", jpeg: "image/jpeg", webp: "image/webp", gif: "image/gif", svg: "image/svg+xml" };
const EXT = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif", "image/svg+xml": "svg" };

let settings;
let gallery;
let picture;
let running = null;

function endpoint() {
  if (!picture || !picture.file) return "generations";
  return document.querySelector('input[name="mode"]:checked').value === "variation" ? "variations" : "edits";
}

// Errors -------------------------------------------------------------------------------------

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
  $("key-error").hidden = true;
  $("key-error").textContent = "";
  for (const element of document.querySelectorAll("[aria-invalid]")) {
    element.removeAttribute("aria-invalid");
    element.removeAttribute("aria-describedby");
  }
}

function controlFor(param) {
  if (!param) return null;
  const name = param.replace(/\[\d*\]$/, "");
  if (["image", "images"].includes(name)) return $("image");
  if (name === "size") return $("size").value === "custom" ? $("custom-size") : $("size");
  const element = document.querySelector(`[data-param="${CSS.escape(name)}"]`);
  return element && !element.closest("[hidden]") ? element : null;
}

function showError(error) {
  clearError();
  if (error instanceof ApiError && error.status === 401) {
    askForKey(error.message);
    return;
  }
  const box = $("error");
  const message = document.createElement("p");
  const detail = document.createElement("p");
  detail.className = "hint";
  if (error instanceof ApiError) {
    message.textContent = error.message;
    const parts = [error.status === 200 ? "stream error" : `HTTP ${error.status}`];
    if (error.code) parts.push(error.code);
    if (error.param) parts.push(`param: ${error.param}`);
    detail.textContent = parts.join(" · ");
    if (error.status === 429) {
      message.textContent += error.retryAfterS
        ? ` Retry in ${error.retryAfterS} s.` : " Retry in a moment.";
    }
  } else {
    message.textContent = `The server could not be reached: ${error.message}`;
  }
  box.append(message, detail);
  box.hidden = false;
  const control = error instanceof ApiError ? controlFor(error.param) : null;
  if (control) {
    const details = control.closest("details");
    if (details) details.open = true;
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-describedby", "error");
    control.focus();
  }
}

/** A 401: the key field, shown with the server's own message beside it. */
function askForKey(message) {
  $("key-section").hidden = false;
  $("key-error").textContent = message;
  $("key-error").hidden = false;
  $("api-key").setAttribute("aria-invalid", "true");
  $("api-key").setAttribute("aria-describedby", "key-error");
  $("api-key").focus();
}

function notice(text) {
  $("notice").textContent = text;
}

// Models and the key -------------------------------------------------------------------------

async function loadModels() {
  let preferred = "";
  try {
    const health = await (await fetch(apiUrl("healthz"))).json();
    preferred = health.default_model || "";
  } catch {
    // Only the preselected model depends on it.
  }
  try {
    const body = await (await call("v1/models")).json();
    settings.setModels(body.data, preferred);
    $("variation-choice").hidden = !settings.models.includes("dall-e-2");
    clearError();
    return true;
  } catch (error) {
    showError(error);
    return false;
  }
}

/**
 * The key as typed now: a person types it and presses Generate (or Enter), so whatever is
 * in the field is the key, kept as if "Use key" had been pressed. Resolves to whether the
 * server takes it (the model lists fill then); false leaves the 401 at the field.
 */
async function adoptTypedKey() {
  const typed = $("api-key").value.trim();
  const changed = !$("key-section").hidden && typed !== storedKey();
  if (changed) storeKey(typed);
  if (!changed && settings.models.length) return true;
  const ok = await loadModels();
  if (ok && changed) notice("Key saved in this browser.");
  return ok;
}

function setUpKey() {
  $("api-key").value = storedKey();
  $("key-section").hidden = !storedKey();
  const use = async () => {
    storeKey($("api-key").value.trim());
    if (await loadModels()) notice("Key saved in this browser.");
  };
  $("save-key").addEventListener("click", use);
  $("api-key").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      use();
    }
  });
  $("forget-key").addEventListener("click", () => {
    storeKey("");
    $("api-key").value = "";
    notice("Key removed from this browser.");
  });
}

// A request and its pending card ---------------------------------------------------------------

function decode(b64) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function sniff(bytes, format) {
  const head = String.fromCharCode(...bytes.slice(0, 12));
  if (head.startsWith("\x89PNG")) return "image/png";
  if (head.startsWith("\xff\xd8\xff")) return "image/jpeg";
  if (head.startsWith("GIF8")) return "image/gif";
  if (head.startsWith("RIFF") && head.slice(8) === "WEBP") return "image/webp";
  return MIME[format] || "image/svg+xml";
}

async function measure(blob) {
  const image = new Image();
  const url = URL.createObjectURL(blob);
  try {
    image.src = url;
    await image.decode();
    return [image.naturalWidth, image.naturalHeight];
  } catch {
    return [0, 0];
  } finally {
    URL.revokeObjectURL(url);
  }
}

class Pending {
  constructor(request, prompt, onCancel) {
    this.started = performance.now();
    this.prompt = prompt;
    this.count = request.fields.n || 1;
    this.card = document.createElement("div");
    this.card.className = "pending";
    const status = document.createElement("div");
    status.className = "status";
    this.text = document.createElement("p");
    this.text.setAttribute("role", "status");
    this.text.textContent = `Sending to /v1/${request.endpoint === "responses" ? "" : "images/"}${request.endpoint}…`;
    this.elapsed = document.createElement("span");
    this.elapsed.className = "elapsed";
    this.elapsed.textContent = "0.0 s";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", onCancel);
    status.append(this.text, this.elapsed, cancel);
    this.previews = document.createElement("div");
    this.previews.className = "previews";
    this.slots = [];
    for (let i = 0; i < this.count; i += 1) {
      const slot = document.createElement("div");
      slot.className = "slot";
      slot.textContent = request.fields.stream ? "waiting for a preview" : "drawing";
      this.previews.append(slot);
      this.slots.push(slot);
    }
    this.card.append(status, this.previews);
    $("pending").append(this.card);
    this.timer = setInterval(() => { this.elapsed.textContent = `${this.seconds().toFixed(1)} s`; }, 100);
  }

  seconds() {
    return (performance.now() - this.started) / 1000;
  }

  status(text) {
    this.text.textContent = text;
  }

  partial(index, event) {
    const slot = this.slots[index % this.count];
    const image = document.createElement("img");
    image.className = "preview";
    image.alt = `Preview ${event.partial_image_index + 1} of “${this.prompt}”`;
    image.src = `data:${MIME[event.output_format] || "image/png"};base64,${event.b64_json}`;
    slot.replaceChildren(image);
    this.status(`Preview ${event.partial_image_index + 1} of picture ${(index % this.count) + 1}`);
  }

  end() {
    clearInterval(this.timer);
    this.card.remove();
  }
}

async function build(prompt) {
  const kind = endpoint();
  const fields = settings.collect(prompt);
  const request = { endpoint: kind, fields, files: {}, blobs: {} };
  if (kind !== "generations") {
    const image = settings.family().gpt ? picture.file : await picture.png();
    request.blobs.image = image;
    request.files.image = image.name;
    // GPT models edit up to 16 pictures; the others take the first alone.
    request.blobs.more = kind === "edits" && settings.family().gpt ? picture.files.slice(1) : [];
    const mask = kind === "edits" ? await picture.maskFile() : null;
    if (mask) {
      request.blobs.mask = mask;
      request.files.mask = mask.name;
    }
    const markup = kind === "edits" && settings.applicable().markup ? await picture.markupFile() : null;
    if (markup) {
      request.blobs.markup = markup;
      request.files.markup = markup.name;
    }
  }
  return request;
}

function send(request, signal) {
  const path = `v1/images/${request.endpoint}`;
  if (request.endpoint === "generations") return call(path, { method: "POST", json: request.fields, signal });
  const form = new FormData();
  for (const [name, value] of Object.entries(request.fields)) {
    form.append(name, typeof value === "object" ? JSON.stringify(value) : String(value));
  }
  const images = [[request.blobs.image, request.files.image],
    ...(request.blobs.more || []).map((file) => [file, file.name])];
  const part = images.length > 1 ? "image[]" : "image";
  for (const [blob, name] of images) form.append(part, blob, name);
  if (request.blobs.mask) form.append("mask", request.blobs.mask, request.files.mask);
  if (request.blobs.markup) form.append("markup", request.blobs.markup, request.files.markup);
  return call(path, { method: "POST", form, signal });
}

async function keep(request, prompt, b64, format, index, pending) {
  const bytes = decode(b64);
  const mime = sniff(bytes, format);
  const blob = new Blob([bytes], { type: mime });
  const [width, height] = await measure(blob);
  await gallery.add({
    created: Date.now(), prompt, endpoint: request.endpoint, fields: request.fields, index,
    blob, mime, ext: EXT[mime], width, height, elapsedMs: Math.round(pending.seconds() * 1000),
    source: request.blobs.image || null, sourceName: request.files.image || null,
    mask: request.blobs.mask || null, more: request.blobs.more || [],
    markup: request.blobs.markup || null,
  });
}

// A conversation: each prompt a turn of the Responses API whose image tool edits the last
// turn's picture (`previous_response_id`), with this form's settings as the tool's options.
const TOOL_OPTIONS = ["model", "size", "quality", "background", "output_format", "output_compression",
  "moderation", "input_fidelity", "complexity", "frame_count", "frame_duration_ms", "svg"];
let lastResponse = null;

function inConversation() {
  return $("conversation").checked && !$("conversation").closest("[hidden]");
}

function conversationTurn(prompt) {
  const fields = settings.collect(prompt);
  const tool = { type: "image_generation" };
  for (const name of TOOL_OPTIONS) if (fields[name] !== undefined) tool[name] = fields[name];
  // The top-level `model` names the text model, which limner's own image-only answers
  // merely echo (a configured upstream uses its own): the picture's model says what drew.
  const body = { model: fields.model, input: prompt, tools: [tool] };
  if (lastResponse) body.previous_response_id = lastResponse;
  return { endpoint: "responses", fields: body, files: {}, blobs: {} };
}

function endConversation() {
  lastResponse = null;
  $("new-conversation").hidden = true;
}

async function generate() {
  if (running) return;
  clearError();
  notice("");
  if (!(await adoptTypedKey())) return;
  const prompt = $("prompt").value;
  const controller = new AbortController();
  let request;
  try {
    request = inConversation() ? conversationTurn(prompt) : await build(prompt);
  } catch (error) {
    showError(error);
    return;
  }
  const pending = new Pending(request, prompt, () => controller.abort());
  running = controller;
  $("generate").disabled = true;
  let kept = 0;
  try {
    const response = request.endpoint === "responses"
      ? await call("v1/responses", { method: "POST", json: request.fields, signal: controller.signal })
      : await send(request, controller.signal);
    if (request.endpoint === "responses") {
      pending.status("Drawing…");
      const body = await response.json();
      for (const item of body.output.filter((entry) => entry.type === "image_generation_call")) {
        await keep(request, prompt, item.result, item.output_format, kept, pending);
        kept += 1;
      }
      lastResponse = body.id;
      $("new-conversation").hidden = false;
    } else if (request.fields.stream) {
      pending.status("Drawing…");
      let partials = 0;
      for await (const event of events(response)) {
        if (event.type.endsWith(".partial_image")) {
          pending.partial(partials, event.data);
          partials += 1;
        } else if (event.type.endsWith(".completed")) {
          await keep(request, prompt, event.data.b64_json, event.data.output_format, kept, pending);
          kept += 1;
        }
      }
    } else {
      pending.status("Drawing…");
      const body = await response.json();
      for (const item of body.data) {
        await keep(request, prompt, item.b64_json, body.output_format, kept, pending);
        kept += 1;
      }
    }
    notice(`${kept} picture${kept === 1 ? "" : "s"} in ${pending.seconds().toFixed(1)} s.`);
  } catch (error) {
    if (error.name === "AbortError") notice(`Cancelled after ${pending.seconds().toFixed(1)} s; the server stopped drawing.`);
    else showError(error);
  } finally {
    pending.end();
    running = null;
    $("generate").disabled = false;
  }
}

// Reuse and the API call -----------------------------------------------------------------------

async function reuse(record) {
  $("prompt").value = record.prompt;
  if (record.source) {
    await picture.load(record.source, record.sourceName, record.mask);
    if ((record.more || []).length) await picture.add(record.more);
    document.querySelector(`input[name="mode"][value="${record.endpoint === "variations" ? "variation" : "edit"}"]`).checked = true;
  } else {
    picture.clear();
  }
  const conversation = record.endpoint === "responses";
  settings.apply(conversation ? { ...record.fields.tools[0], type: undefined } : record.fields);
  $("conversation").checked = conversation;
  endConversation();
  $("prompt").focus();
  notice("Settings restored from the picture.");
}

function showCall(record) {
  const base = apiUrl("v1").replace(/\/$/, "");
  const request = { endpoint: record.endpoint, fields: record.fields, files: {} };
  const files = $("api-call-files");
  files.replaceChildren();
  if (record.source) {
    const more = record.more || [];
    request.files.image = record.sourceName;
    request.files.more = more.map((file) => file.name);
    if (record.mask) request.files.mask = "mask.png";
    if (record.markup) request.files.markup = "markup.png";
    files.append("Files it sends:");
    const parts = [["image", record.source, record.sourceName],
      ...more.map((file, i) => [`picture ${i + 2}`, file, file.name]),
      ["mask", record.mask, "mask.png"], ["markup", record.markup, "markup.png"]];
    for (const [label, blob, name] of parts) {
      if (!blob) continue;
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = name;
      link.textContent = `${name} (the ${label})`;
      files.append(link);
    }
  }
  files.hidden = !record.source;
  $("api-call-curl").textContent = curl(request, base);
  $("api-call-python").textContent = pythonSdk(request, base);
  $("api-call").showModal();
}

function setUpDialogs() {
  for (const button of document.querySelectorAll("[data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  for (const dialog of document.querySelectorAll("dialog")) {
    // A click on the backdrop lands on the dialog itself.
    dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); });
  }
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const code = $(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(code.textContent);
        button.textContent = "Copied";
      } catch {
        // No clipboard outside secure contexts: select it for Ctrl+C instead.
        getSelection().selectAllChildren(code);
      }
    });
  }
}

// Start --------------------------------------------------------------------------------------

async function start() {
  const rules = await (await fetch(apiUrl("playground/rules.json"))).json();
  settings = new Settings(rules, endpoint);
  picture = new ImageInput(() => settings.update(), (message) => showError(new Error(message)),
    () => (settings.family().gpt ? MAX_PICTURES : 1));
  gallery = new Gallery({ onReuse: reuse, onShowCall: showCall });
  setUpDialogs();
  setUpKey();
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      if (endpoint() === "variations" && settings.models.includes("dall-e-2")) $("model").value = "dall-e-2";
      settings.update();
    });
  }
  $("conversation").addEventListener("change", endConversation);
  $("new-conversation").addEventListener("click", () => {
    endConversation();
    notice("A new conversation: the next prompt draws a new picture.");
  });
  $("model").addEventListener("change", () => {
    if (endpoint() === "variations" && settings.model !== "dall-e-2") {
      document.querySelector('input[name="mode"][value="edit"]').checked = true;
      settings.update();
    }
  });
  $("request").addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("request").requestSubmit();
    }
  });
  document.addEventListener("input", (event) => {
    if (event.target.getAttribute("aria-invalid")) event.target.removeAttribute("aria-invalid");
  });
  await Promise.all([gallery.init(), loadModels()]);
  document.body.dataset.ready = "true";
}

start();
