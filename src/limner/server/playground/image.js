// The "Image" control: a picture from the file picker, a drop or a paste, shown on a canvas
// with a mask painted over it. The mask is exported as OpenAI's: a PNG of the picture's own
// size, alpha 0 where painted (to be redrawn), opaque everywhere else.

const STROKE = "rgb(230 40 90)";

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
  constructor(onChange, onError) {
    this.onChange = onChange;
    this.onError = onError;
    this.input = document.getElementById("image");
    this.zone = document.getElementById("request");
    this.editor = document.getElementById("editor");
    this.picture = document.getElementById("picture");
    this.mask = document.getElementById("mask");
    this.brush = document.getElementById("brush");
    this.file = null;
    this.painted = false;
    this.input.addEventListener("change", () => {
      const file = this.input.files && this.input.files[0];
      if (file) this.load(file, file.name);
      else this.clear();
    });
    document.getElementById("remove-image").addEventListener("click", () => this.clear());
    document.getElementById("clear-mask").addEventListener("click", () => this.clearMask());
    this.listenForDrops();
    this.listenForPaste();
    this.listenForPainting();
  }

  get width() { return this.picture.width; }
  get height() { return this.picture.height; }

  async load(blob, name, maskBlob = null) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob);
    } catch {
      this.onError(`The browser could not read "${name}" as a picture.`);
      return;
    }
    const file = blob instanceof File ? blob : new File([blob], safeName(name, blob.type), { type: blob.type });
    if (this.input.files[0] !== file) {
      // Dropped, pasted or restored pictures show in the file control like chosen ones.
      const transfer = new DataTransfer();
      transfer.items.add(file);
      this.input.files = transfer.files;
    }
    this.file = file;
    for (const canvas of [this.picture, this.mask]) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
    }
    this.picture.getContext("2d").drawImage(bitmap, 0, 0);
    bitmap.close();
    this.clearMask();
    if (maskBlob) await this.restoreMask(maskBlob);
    this.editor.hidden = false;
    this.onChange();
  }

  clear() {
    this.file = null;
    this.input.value = "";
    this.painted = false;
    this.editor.hidden = true;
    this.onChange();
  }

  clearMask() {
    this.mask.getContext("2d").clearRect(0, 0, this.mask.width, this.mask.height);
    this.painted = false;
  }

  /** The picture as a PNG, for dall-e-2, which takes nothing else. */
  async png() {
    if (this.file.type === "image/png") return this.file;
    const blob = await toBlob(this.picture);
    return new File([blob], this.file.name.replace(/\.[^.]*$/, "") + ".png", { type: "image/png" });
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
      const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/"));
      if (!file) return;
      event.preventDefault();
      this.load(file, file.name);
    });
  }

  listenForPaste() {
    document.addEventListener("paste", (event) => {
      const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
      if (!file) return;  // text pastes into the prompt as usual
      event.preventDefault();
      this.load(file, file.name || "pasted.png");
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
      const context = this.mask.getContext("2d");
      context.strokeStyle = STROKE;
      context.lineCap = "round";
      context.lineJoin = "round";
      context.lineWidth = (Number(this.brush.value) / 100) * Math.min(this.width, this.height);
      context.beginPath();
      context.moveTo(from.x, from.y);
      context.lineTo(to.x + 0.01, to.y);
      context.stroke();
      this.painted = true;
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
