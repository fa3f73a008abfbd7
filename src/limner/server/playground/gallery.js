// The gallery: every finished picture, kept in this browser's IndexedDB so it survives a
// reload, shown newest first, with a lightbox and each picture's own actions.

const DB_NAME = "limner-playground";
const STORE = "pictures";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function openDatabase() {
  const opening = indexedDB.open(DB_NAME, 1);
  opening.onupgradeneeded = () => {
    opening.result.createObjectStore(STORE, { keyPath: "id", autoIncrement: true });
  };
  return request(opening);
}

export function describe(record) {
  const model = record.endpoint === "responses"
    ? `${record.fields.tools[0].model || "image tool"} (conversation)` : record.fields.model;
  const parts = [model, `${record.width}x${record.height}`, record.ext];
  if (record.fields.seed !== undefined) parts.push(`seed ${record.fields.seed}`);
  if (record.elapsedMs) parts.push(`${(record.elapsedMs / 1000).toFixed(1)} s`);
  return parts.join(" · ");
}

function altText(record) {
  return record.prompt || `Variation of ${record.sourceName || "the picture"}`;
}

export class Gallery {
  constructor({ onReuse, onShowCall }) {
    this.onReuse = onReuse;
    this.onShowCall = onShowCall;
    this.list = document.getElementById("gallery");
    this.empty = document.getElementById("empty");
    this.lightbox = document.getElementById("lightbox");
    this.urls = new Map();
    this.db = null;
  }

  async init() {
    try {
      this.db = await openDatabase();
    } catch {
      // Private windows may refuse storage: the gallery then lasts until the page closes.
      this.db = null;
    }
    const records = this.db ? await request(this.store("readonly").getAll()) : [];
    for (const record of records) this.render(record);
    this.updateEmpty();
  }

  store(mode) {
    return this.db.transaction(STORE, mode).objectStore(STORE);
  }

  async add(record) {
    if (this.db) record.id = await request(this.store("readwrite").add(record));
    else record.id = `${Date.now()}-${Math.random()}`;
    this.render(record);
    this.updateEmpty();
    return record;
  }

  async remove(record, card) {
    if (this.db) await request(this.store("readwrite").delete(record.id));
    URL.revokeObjectURL(this.urls.get(record.id));
    this.urls.delete(record.id);
    card.remove();
    this.updateEmpty();
  }

  updateEmpty() {
    this.empty.hidden = this.list.children.length > 0;
  }

  url(record) {
    if (!this.urls.has(record.id)) this.urls.set(record.id, URL.createObjectURL(record.blob));
    return this.urls.get(record.id);
  }

  render(record) {
    const card = document.createElement("li");
    card.className = "card";
    card.dataset.id = String(record.id);

    const thumb = document.createElement("button");
    thumb.type = "button";
    thumb.className = "thumb";
    thumb.title = "Open larger";
    const image = document.createElement("img");
    image.src = this.url(record);
    image.alt = altText(record);
    image.width = record.width;
    image.height = record.height;
    image.loading = "lazy";
    thumb.append(image);
    thumb.addEventListener("click", () => this.open(record));

    const prompt = document.createElement("p");
    prompt.className = "prompt";
    prompt.textContent = altText(record);
    const meta = document.createElement("p");
    meta.className = "meta";
    meta.textContent = describe(record);

    const buttons = document.createElement("div");
    buttons.className = "buttons";
    const button = (label, action) => {
      const element = document.createElement("button");
      element.type = "button";
      element.textContent = label;
      element.addEventListener("click", action);
      buttons.append(element);
    };
    button("Download", () => this.download(record));
    button("Use these settings again", () => this.onReuse(record));
    button("Show the API call", () => this.onShowCall(record));
    button("Delete", () => this.remove(record, card));

    card.append(thumb, prompt, meta, buttons);
    this.list.prepend(card);
  }

  download(record) {
    const link = document.createElement("a");
    link.href = this.url(record);
    link.download = `limner-${record.created}-${record.index + 1}.${record.ext}`;
    document.body.append(link);
    link.click();
    link.remove();
  }

  open(record) {
    const image = document.getElementById("lightbox-image");
    image.src = this.url(record);
    image.alt = altText(record);
    document.getElementById("lightbox-caption").textContent = `${altText(record)} (${describe(record)})`;
    this.lightbox.showModal();
  }
}
