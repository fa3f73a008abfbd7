// The request's settings: each model's own sizes, qualities and fields (from the server's
// rules), read into a request's fields and written back from a saved one.

const $ = (id) => document.getElementById(id);
const EXTENSIONS = [
  ["seed", "seed", Number],
  ["steps", "steps", Number],
  ["guidance-scale", "guidance_scale", Number],
  ["negative-prompt", "negative_prompt", String],
  ["scheduler", "scheduler", String],
];
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
    for (const id of ["model", "size", "output-format"]) $(id).addEventListener("change", () => this.update());
  }

  get model() { return $("model").value; }

  family(model = this.model) {
    return this.rules.families[this.rules.models[model] || this.rules.local];
  }

  setModels(ids, preferred) {
    this.models = ids;
    setOptions($("model"), ids, ids.includes(preferred) ? preferred : ids[0]);
    this.update();
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
    for (const [id, name] of EXTENSIONS) $(id).value = fields[name] === undefined ? "" : String(fields[name]);
    if (EXTENSIONS.some(([, name]) => fields[name] !== undefined)) $("advanced").open = true;
    this.update();
  }
}
