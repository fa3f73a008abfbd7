// The request's settings: each model's own sizes, qualities and fields (from the server's
// rules), read into a request's fields and written back from a saved one.

const $ = (id) => document.getElementById(id);
const EXTENSIONS = [
  ["seed", "seed", Number],
  ["steps", "steps", Number],
  ["guidance-scale", "guidance_scale", Number],
  ["negative-prompt", "negative_prompt", String],
  ["scheduler", "scheduler", String],
  ["safety-identifier", "safety_identifier", String],
];
/** Fields each shown only where its rule holds: [element id, request field, type]. */
const GATED = [
  ["input-fidelity", "input_fidelity", String],
  ["complexity", "complexity", String],
  ["frame-count", "frame_count", Number],
  ["frame-duration", "frame_duration_ms", Number],
];
const STATES = {
  unloaded: "Not in memory: the first request loads it, which takes a while.",
  loading: "Loading into memory…",
  failed: "Failed to load",
};
const STREAMABLE_FORMATS = ["png", "jpeg", "webp"];

function setOptions(select, values, preferred, labels = {}) {
  const keep = select.value;
  select.replaceChildren(...values.map((value) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = labels[value] || value;
    return option;
  }));
  select.value = values.includes(keep) ? keep : preferred;
}

function show(name, visible) {
  document.querySelector(`[data-for="${name}"]`).hidden = !visible;
}

export class Settings {
  /** `endpoint()` says which endpoint the form now targets. */
  constructor(rules, endpoint) {
    this.rules = rules;
    this.endpoint = endpoint;
    this.models = [];
    this.entries = new Map();
    for (const id of ["model", "size", "output-format"]) $(id).addEventListener("change", () => this.update());
  }

  get model() { return $("model").value; }

  family(model = this.model) {
    return this.rules.families[this.rules.models[model] || this.rules.local];
  }

  /** `/v1/models`'s entries: their names, and each one's state and adapters. */
  setModels(entries, preferred) {
    const ids = entries.map((entry) => entry.id);
    this.models = ids;
    this.entries = new Map(entries.map((entry) => [entry.id, entry]));
    setOptions($("model"), ids, ids.includes(preferred) ? preferred : ids[0]);
    this.update();
  }

  entry(model = this.model) {
    return this.entries.get(model) || {};
  }

  /** Where each field is shown: [data-for name, whether it applies to this request]. */
  applicable() {
    const family = this.family();
    const endpoint = this.endpoint();
    const full = endpoint !== "variations";
    const gpt = family.gpt && full;
    const format = $("output-format").value;
    return {
      input_fidelity: endpoint === "edits" && gpt && family.family !== "gpt-image-2",
      markup: endpoint === "edits" && family.family === "gpt-image-2.5",
      complexity: gpt,
      frame_count: gpt && format === "gif",
      frame_duration_ms: gpt && format === "gif",
      svg: gpt && format === "svg" && endpoint === "generations",
      lora: full && (this.entry().adapters || []).length > 0,
      conversation: endpoint !== "variations" && !family.family.startsWith("dall-e"),
    };
  }

  /** The adapters' checkboxes and scales for this model, keeping what was ticked. */
  renderAdapters() {
    const list = $("adapter-list");
    const before = Object.fromEntries(this.adapters().map((a) => [a.name, a.scale]));
    list.replaceChildren();
    for (const name of this.entry().adapters || []) {
      const row = document.createElement("div");
      row.className = "row";
      const id = `adapter-${name.replace(/[^\w-]/g, "_")}`;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = id;
      box.dataset.adapter = name;
      box.checked = name in before;
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = name;
      const scale = document.createElement("input");
      scale.type = "number";
      scale.step = "0.1";
      scale.min = "-4";
      scale.max = "4";
      scale.value = String(before[name] ?? 1);
      scale.dataset.scaleFor = name;
      scale.setAttribute("aria-label", `Scale of ${name}`);
      row.append(box, label, scale);
      list.append(row);
    }
  }

  /** The ticked adapters, as the request's `lora`. */
  adapters() {
    return [...document.querySelectorAll("#adapter-list [data-adapter]")].filter((box) => box.checked)
      .map((box) => {
        const scale = document.querySelector(`[data-scale-for="${CSS.escape(box.dataset.adapter)}"]`).value;
        return { name: box.dataset.adapter, scale: scale === "" ? 1 : Number(scale) };
      });
  }

  showState() {
    const entry = this.entry();
    const text = STATES[entry.status] || "";
    $("model-state").textContent = entry.status === "failed" && entry.status_reason
      ? `${text}: ${entry.status_reason}` : text;
  }

  /** Whether this request can stream: GPT rules, a raster format, not a variation. */
  streams(endpoint = this.endpoint()) {
    return endpoint !== "variations" && this.family().gpt
      && STREAMABLE_FORMATS.includes($("output-format").value);
  }

  update() {
    const family = this.family();
    const endpoint = this.endpoint();
    const full = endpoint !== "variations";
    const sizes = [...family.sizes, ...(family.free_size ? ["custom"] : [])];
    setOptions($("size"), sizes, family.default_size, { auto: "auto", custom: "Custom…" });
    show("custom-size", $("size").value === "custom");
    setOptions($("quality"), family.qualities, "auto");
    show("quality", full);
    const n = $("n");
    n.max = String(family.n_max);
    if (Number(n.value) > family.n_max) n.value = String(family.n_max);
    const gpt = family.gpt && full;
    setOptions($("background"), family.transparent ? ["auto", "opaque", "transparent"] : ["auto", "opaque"], "auto");
    for (const name of ["background", "output_format", "moderation"]) show(name, gpt);
    show("output_compression", gpt && ["jpeg", "webp"].includes($("output-format").value));
    setOptions($("style"), family.styles, family.styles[0]);
    show("style", endpoint === "generations" && family.styles.length > 0);
    show("partial_images", this.streams(endpoint));
    $("advanced").hidden = !full;
    const applies = this.applicable();
    if (!applies.lora || $("adapter-list").dataset.model !== this.model) {
      this.renderAdapters();
      $("adapter-list").dataset.model = this.model;
    }
    for (const [name, visible] of Object.entries(applies)) show(name, visible);
    this.showState();
  }

  size() {
    return $("size").value === "custom" ? $("custom-size").value.trim() : $("size").value;
  }

  /** The request's fields, exactly as they will be sent. */
  collect(prompt) {
    const endpoint = this.endpoint();
    const family = this.family();
    const fields = { model: this.model };
    if (endpoint !== "variations") fields.prompt = prompt;
    if ($("n").value !== "") fields.n = Number($("n").value);
    fields.size = this.size();
    if (endpoint !== "variations") {
      fields.quality = $("quality").value;
      if (family.gpt) {
        fields.background = $("background").value;
        fields.output_format = $("output-format").value;
        if (["jpeg", "webp"].includes(fields.output_format) && $("output-compression").value !== "") {
          fields.output_compression = Number($("output-compression").value);
        }
        fields.moderation = $("moderation").value;
      }
      if (endpoint === "generations" && family.styles.length) fields.style = $("style").value;
      for (const [id, name, type] of EXTENSIONS) {
        const value = $(id).value.trim();
        if (value !== "") fields[name] = type(value);
      }
      const applies = this.applicable();
      for (const [id, name, type] of GATED) {
        const value = $(id).value.trim();
        if (applies[name] && value !== "") fields[name] = type(value);
      }
      if (applies.svg && $("svg-model").value.trim()) fields.svg = { model: $("svg-model").value.trim() };
      if (applies.lora && this.adapters().length) fields.lora = this.adapters();
      if (this.streams(endpoint)) {
        fields.stream = true;
        fields.partial_images = Number($("partial-images").value || 1);
      }
    }
    if (!family.gpt) fields.response_format = "b64_json";
    return fields;
  }

  /** A saved request's settings back in the form ("Use these settings again"). */
  apply(fields) {
    if (this.models.includes(fields.model)) $("model").value = fields.model;
    if (fields.output_format) $("output-format").value = fields.output_format;
    this.update();
    if (fields.size !== undefined) {
      const fixed = [...$("size").options].some((o) => o.value === fields.size && o.value !== "custom");
      $("size").value = fixed ? fields.size : "custom";
      if (!fixed) $("custom-size").value = fields.size;
      show("custom-size", !fixed);
    }
    const simple = { n: "n", quality: "quality", background: "background", style: "style",
      output_compression: "output-compression", moderation: "moderation", partial_images: "partial-images" };
    for (const [name, id] of Object.entries(simple)) {
      if (fields[name] !== undefined) $(id).value = String(fields[name]);
    }
    for (const [id, name] of [...EXTENSIONS, ...GATED]) $(id).value = fields[name] === undefined ? "" : String(fields[name]);
    $("svg-model").value = fields.svg ? fields.svg.model : "";
    const asked = Object.fromEntries((fields.lora || []).map((a) => [a.name, a.scale]));
    for (const box of document.querySelectorAll("#adapter-list [data-adapter]")) {
      box.checked = box.dataset.adapter in asked;
      if (box.checked) document.querySelector(`[data-scale-for="${CSS.escape(box.dataset.adapter)}"]`).value = String(asked[box.dataset.adapter]);
    }
    if (EXTENSIONS.some(([, name]) => fields[name] !== undefined)) $("advanced").open = true;
    this.update();
  }
}
