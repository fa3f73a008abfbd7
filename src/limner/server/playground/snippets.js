// "Show the API call": the same request as curl and as Python with the openai SDK. The key is
// always the OPENAI_API_KEY placeholder, never the one this browser keeps.

// What each method of the openai SDK takes as a keyword (openai 3.x); anything else, limner's
// extensions included, travels in `extra_body`, which the SDK merges into the body or form.
const SHARED = ["prompt", "background", "model", "n", "output_compression", "output_format",
  "partial_images", "quality", "response_format", "size", "stream", "user"];
const SDK_PARAMS = {
  generate: [...SHARED, "moderation", "style"],
  edit: [...SHARED, "input_fidelity"],
  create_variation: ["model", "n", "response_format", "size", "user"],
};

function shellQuote(text) {
  return `'${String(text).replace(/'/g, `'\\''`)}'`;
}

function python(value) {
  if (value === true) return "True";
  if (value === false) return "False";
  if (value === null) return "None";
  if (typeof value === "object") {
    const entries = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${python(v)}`);
    return `{${entries.join(", ")}}`;
  }
  return JSON.stringify(value);  // a JSON string or number is a Python literal as well
}

/** `call`: {endpoint, fields, files: {image, mask}}; `base`: the API's base URL. */
export function curl(call, base) {
  const lines = [`curl ${shellQuote(`${base}/images/${call.endpoint}`)}`];
  if (call.fields.stream) lines[0] += " -N";
  lines.push(`-H "Authorization: Bearer $OPENAI_API_KEY"`);
  if (call.endpoint === "generations") {
    lines.push(`-H "Content-Type: application/json"`);
    lines.push(`-d ${shellQuote(JSON.stringify(call.fields, null, 2))}`);
  } else {
    for (const [name, value] of Object.entries(call.fields)) {
      lines.push(`--form-string ${shellQuote(`${name}=${value}`)}`);
    }
    if (call.files.image) lines.push(`-F ${shellQuote(`image=@${call.files.image}`)}`);
    if (call.files.mask) lines.push(`-F ${shellQuote(`mask=@${call.files.mask}`)}`);
  }
  return lines.join(" \\\n  ");
}

export function pythonSdk(call, base) {
  const method = { generations: "generate", edits: "edit", variations: "create_variation" }[call.endpoint];
  const args = [];
  const extra = {};
  for (const [name, value] of Object.entries(call.fields)) {
    if (SDK_PARAMS[method].includes(name)) args.push(`${name}=${python(value)}`);
    else extra[name] = value;
  }
  if (call.files.image) args.push(`image=open(${python(call.files.image)}, "rb")`);
  if (call.files.mask) args.push(`mask=open(${python(call.files.mask)}, "rb")`);
  if (Object.keys(extra).length) args.push(`extra_body=${python(extra)}`);
  const head = [
    "import base64",
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${python(base)}, api_key=os.environ["OPENAI_API_KEY"])`,
  ];
  const invoke = `client.images.${method}(\n    ${args.join(",\n    ")},\n)`;
  const ext = call.fields.output_format === "jpeg" ? "jpg" : call.fields.output_format || "png";
  if (call.fields.stream) {
    const kind = call.endpoint === "edits" ? "image_edit" : "image_generation";
    return [
      ...head,
      `stream = ${invoke}`,
      "done = 0",
      "for event in stream:",
      `    if event.type == "${kind}.partial_image":`,
      `        print("preview", event.partial_image_index)`,
      `    elif event.type == "${kind}.completed":`,
      "        done += 1",
      `        with open(f"image-{done}.${ext}", "wb") as f:`,
      "            f.write(base64.b64decode(event.b64_json))",
    ].join("\n");
  }
  return [
    ...head,
    `result = ${invoke}`,
    "for i, image in enumerate(result.data, 1):",
    `    with open(f"image-{i}.${ext}", "wb") as f:`,
    "        f.write(base64.b64decode(image.b64_json))",
  ].join("\n");
}
