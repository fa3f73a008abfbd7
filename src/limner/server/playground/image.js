// The "Image" control: pictures from the file picker, drops or pastes (up to 16, in order;
// the first shown on a canvas with a mask, or markup, painted over it). The mask is exported
// as OpenAI's: a PNG of the first picture's size, alpha 0 where painted (to be redrawn),
// opaque everywhere else; markup as a transparent PNG of the strokes themselves.

const STROKE = "rgb(230 40 90)";
export const MAX_PICTURES = 16;

function toBlob(canvas, type = "image/png") {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("The canvas could not be encoded."))), type);
  });
}

function safeName(name, type) {
  const fallback = `image.${(type || "image/png").split("/")[1] || "png"}`;
  return /^[\w .-]{1,80}$/.test(name || "") ? name : fallback;
}

export class ImageInput {
  /** `capacity()`: how many pictures the chosen model edits (16, or 1 where a new picture
   * replaces the one there). */
  constructor(onChange, onError, capacity = () => MAX_PICTURES) {
    this.onChange = onChange;
    this.capacity = capacity;
    this.onError = onError;
    this.input = document.getElementById("image");
    this.zone = document.getElementById("request");
    this.editor = document.getElementById("editor");
    this.list = document.getElementById("image-list");
    this.picture = document.getElementById("picture");
    this.mask = document.getElementById("mask");
    this.markup = document.getElementById("markup");
    this.brush = document.getElementById("brush");
    this.files = [];
    this.painted = false;
    this.marked = false;
    this.input.addEventListener("change", () => {
      const chosen = [...(this.input.files || [])].filter((file) => !this.files.includes(file));
      if (chosen.length) this.add(chosen);
      else if (!this.input.files.length) this.clear();
    });
    document.getElementById("remove-image").addEventListener("click", () => this.clear());
    document.getElementById("clear-mask").addEventListener("click", () => this.clearMask());
    this.listenForDrops();
    this.listenForPaste();
    this.listenForPainting();
  }

  /** The first picture: the one the mask and markup belong to. */
  get file() { return this.files[0] || null; }
  get width() { return this.picture.width; }
  get height() { return this.picture.height; }

  /** Where the brush paints now: "mask", or "markup" for the models that take it. */
  get target() {
    const chosen = document.querySelector('input[name="brush-target"]:checked');
    return chosen && !chosen.closest("[hidden]") ? chosen.value : "mask";
  }

  /** One picture in place of all (a restored request's first picture). */
  async load(blob, name, maskBlob = null) {
    this.files = [];
    await this.add([blob], [name]);
    if (maskBlob && this.file) await this.restoreMask(maskBlob);
  }

  /** Pictures after those already there, up to 16; the first one drawn on the canvas. */
  async add(blobs, names = []) {
    if (this.capacity() < 2) this.files = [];  // one picture: the new one takes its place
    const room = MAX_PICTURES - this.files.length;
    if (blobs.length > room) {
      this.onError(`An edit takes at most ${MAX_PICTURES} pictures; ${blobs.length - Math.max(room, 0)} were left out.`);
    }
    const wasFirst = this.file;
    for (const [index, blob] of blobs.slice(0, Math.max(room, 0)).entries()) {
      const name = names[index] || blob.name || "pasted.png";
      try {
        const bitmap = await createImageBitmap(blob);
        bitmap.close();
      } catch {
        this.onError(`The browser could not read "${name}" as a picture.`);
        continue;
      }
      this.files.push(blob instanceof File ? blob : new File([blob], safeName(name, blob.type), { type: blob.type }));
    }
    if (this.file !== wasFirst) await this.drawFirst();
    this.changed();
  }

  remove(index) {
    this.files.splice(index, 1);
    if (index === 0) this.drawFirst();
    this.changed();
  }

  /** Moves a picture one place earlier; moved to the front, it takes the canvas (and the
   * mask, which belonged to the other, is cleared). */
  async moveEarlier(index) {
    if (index <= 0) return;
    [this.files[index - 1], this.files[index]] = [this.files[index], this.files[index - 1]];
    if (index === 1) await this.drawFirst();
    this.changed();
  }

  async drawFirst() {
    this.clearMask();
    if (!this.file) return;
    const bitmap = await createImageBitmap(this.file);
    for (const canvas of [this.picture, this.mask, this.markup]) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
    }
    this.picture.getContext("2d").drawImage(bitmap, 0, 0);
    bitmap.close();
  }

  /** The file control, the list and the editor say what is chosen now. */
  changed() {
    const transfer = new DataTransfer();
    for (const file of this.files) transfer.items.add(file);
    this.input.files = transfer.files;
    this.editor.hidden = !this.file;
    this.renderList();
    this.onChange();
  }

  renderList() {
    for (const img of this.list.querySelectorAll("img")) URL.revokeObjectURL(img.src);
    this.list.replaceChildren();
    this.list.hidden = this.files.length < 2;
    this.files.forEach((file, index) => {
      const item = document.createElement("li");
      const thumb = document.createElement("img");
      thumb.src = URL.createObjectURL(file);
      thumb.alt = "";
      const label = document.createElement("span");
      label.textContent = `${index + 1}. ${file.name}${index === 0 ? " (mask and markup)" : ""}`;
      item.append(thumb, label);
      if (index > 0) item.append(this.button(`Move ${file.name} earlier`, "↑", () => this.moveEarlier(index)));
      item.append(this.button(`Remove ${file.name}`, "✕", () => this.remove(index)));
      this.list.append(item);
    });
  }

  button(label, text, action) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "quiet";
    button.textContent = text;
    button.setAttribute("aria-label", label);
    button.addEventListener("click", action);
    return button;
  }

  clear() {
    this.files = [];
    this.input.value = "";
    this.clearMask();
    this.changed();
  }

  clearMask() {
    for (const canvas of [this.mask, this.markup]) {
      canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    }
    this.painted = false;
    this.marked = false;
  }

  /** The picture as a PNG, for dall-e-2, which takes nothing else. */
  async png() {
    if (this.file.type === "image/png") return this.file;
    const blob = await toBlob(this.picture);
    return new File([blob], this.file.name.replace(/\.[^.]*$/, "") + ".png", { type: "image/png" });
  }

  /** The strokes drawn as markup, a transparent PNG of the first picture's size; null when
   * none are drawn. */
  async markupFile() {
    if (!this.marked) return null;
    return new File([await toBlob(this.markup)], "markup.png", { type: "image/png" });
  }

  /** OpenAI's mask, or null when nothing is painted. */
  async maskFile() {
    if (!this.painted) return null;
    const out = document.createElement("canvas");
    out.width = this.width;
    out.height = this.height;
    const context = out.getContext("2d");
    context.fillStyle = "#000";
    context.fillRect(0, 0, out.width, out.height);
    context.globalCompositeOperation = "destination-out";
    context.drawImage(this.mask, 0, 0);
    return new File([await toBlob(out)], "mask.png", { type: "image/png" });
  }

  /** Paints back a mask saved with a picture, for "Use these settings again". */
  async restoreMask(maskBlob) {
    const bitmap = await createImageBitmap(maskBlob);
    if (bitmap.width !== this.width || bitmap.height !== this.height) return;
    const scratch = document.createElement("canvas");
    scratch.width = this.width;
    scratch.height = this.height;
    const read = scratch.getContext("2d");
    read.drawImage(bitmap, 0, 0);
    bitmap.close();
    const source = read.getImageData(0, 0, this.width, this.height).data;
    const context = this.mask.getContext("2d");
    const painted = context.createImageData(this.width, this.height);
    for (let i = 0; i < source.length; i += 4) {
      if (source[i + 3] < 128) {
        painted.data.set([230, 40, 90, 255], i);
        this.painted = true;
      }
    }
    context.putImageData(painted, 0, 0);
  }

  listenForDrops() {
    const hasFiles = (event) => [...event.dataTransfer.types].includes("Files");
    this.zone.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      this.zone.classList.add("dragging");
    });
    this.zone.addEventListener("dragleave", () => this.zone.classList.remove("dragging"));
    this.zone.addEventListener("drop", (event) => {
      this.zone.classList.remove("dragging");
      const files = [...event.dataTransfer.files].filter((f) => f.type.startsWith("image/"));
      if (!files.length) return;
      event.preventDefault();
      this.add(files);
    });
  }

  listenForPaste() {
    document.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
      if (!files.length) return;  // text pastes into the prompt as usual
      event.preventDefault();
      this.add(files, files.map((f) => f.name || "pasted.png"));
    });
  }

  listenForPainting() {
    let last = null;
    const point = (event) => {
      const box = this.mask.getBoundingClientRect();
      return {
        x: ((event.clientX - box.left) * this.mask.width) / box.width,
        y: ((event.clientY - box.top) * this.mask.height) / box.height,
      };
    };
    const stroke = (from, to) => {
      const markup = this.target === "markup";
      const context = (markup ? this.markup : this.mask).getContext("2d");
      context.strokeStyle = markup ? document.getElementById("markup-color").value : STROKE;
      context.lineCap = "round";
      context.lineJoin = "round";
      context.lineWidth = (Number(this.brush.value) / 100) * Math.min(this.width, this.height);
      context.beginPath();
      context.moveTo(from.x, from.y);
      context.lineTo(to.x + 0.01, to.y);
      context.stroke();
      if (markup) this.marked = true;
      else this.painted = true;
    };
    this.mask.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      this.mask.setPointerCapture(event.pointerId);
      last = point(event);
      stroke(last, last);
    });
    this.mask.addEventListener("pointermove", (event) => {
      if (!last) return;
      const next = point(event);
      stroke(last, next);
      last = next;
    });
    const end = () => { last = null; };
    this.mask.addEventListener("pointerup", end);
    this.mask.addEventListener("pointercancel", end);
  }
}
