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

function path(call) {
  return call.endpoint === "responses" ? "responses" : `images/${call.endpoint}`;
}

/** The picture parts a multipart call sends: [part name, file name]. */
function pictureParts(call) {
  const images = [call.files.image, ...(call.files.more || [])].filter(Boolean);
  const part = images.length > 1 ? "image[]" : "image";
  return [...images.map((name) => [part, name]),
    ...["mask", "markup"].filter((name) => call.files[name]).map((name) => [name, call.files[name]])];
}

/** `call`: {endpoint, fields, files: {image, more, mask, markup}}; `base`: the API's base. */
export function curl(call, base) {
  const lines = [`curl ${shellQuote(`${base}/${path(call)}`)}`];
  if (call.fields.stream) lines[0] += " -N";
  lines.push(`-H "Authorization: Bearer $OPENAI_API_KEY"`);
  if (call.endpoint === "generations" || call.endpoint === "responses") {
    lines.push(`-H "Content-Type: application/json"`);
    lines.push(`-d ${shellQuote(JSON.stringify(call.fields, null, 2))}`);
  } else {
    for (const [name, value] of Object.entries(call.fields)) {
      const text = typeof value === "object" ? JSON.stringify(value) : value;
      lines.push(`--form-string ${shellQuote(`${name}=${text}`)}`);
    }
    for (const [part, name] of pictureParts(call)) lines.push(`-F ${shellQuote(`${part}=@${name}`)}`);
  }
  return lines.join(" \\\n  ");
}

export function pythonSdk(call, base) {
  if (call.endpoint === "responses") return pythonResponses(call, base);
  const method = { generations: "generate", edits: "edit", variations: "create_variation" }[call.endpoint];
  const args = [];
  const extra = {};
  for (const [name, value] of Object.entries(call.fields)) {
    if (SDK_PARAMS[method].includes(name)) args.push(`${name}=${python(value)}`);
    else extra[name] = value;
  }
  const images = [call.files.image, ...(call.files.more || [])].filter(Boolean);
  if (images.length === 1) args.push(`image=open(${python(images[0])}, "rb")`);
  if (images.length > 1) args.push(`image=[${images.map((name) => `open(${python(name)}, "rb")`).join(", ")}]`);
  if (call.files.mask) args.push(`mask=open(${python(call.files.mask)}, "rb")`);
  if (Object.keys(extra).length) args.push(`extra_body=${python(extra)}`);
  const head = header(base);
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

function header(base) {
  return [
    "import base64",
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${python(base)}, api_key=os.environ["OPENAI_API_KEY"])`,
  ];
}

/** A conversation turn: `client.responses.create` with the image tool. */
function pythonResponses(call, base) {
  const args = Object.entries(call.fields).map(([name, value]) => `${name}=${python(value)}`);
  const tool = call.fields.tools[0] || {};
  const ext = tool.output_format === "jpeg" ? "jpg" : tool.output_format || "png";
  return [
    ...header(base),
    `response = client.responses.create(\n    ${args.join(",\n    ")},\n)`,
    "picture = next(item for item in response.output if item.type == \"image_generation_call\")",
    `with open("image.${ext}", "wb") as f:`,
    "    f.write(base64.b64decode(picture.result))",
    "print(response.id)  # the next turn's previous_response_id",
  ].join("\n");
}
