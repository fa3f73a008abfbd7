"""The playground page: its route over plain HTTP, then the page itself in a real Chromium
(Debian's `chromium` package, driven by Playwright) against a real server with the fake
engine. Every browser test fails on a console error it did not provoke on purpose."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer
from PIL import Image
from test_security import TRAVERSALS, raw_get

from limner.engines.fake import FakeEngine
from limner.rules import OPENAI_MODELS

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
    MISSING_PLAYWRIGHT = ""
except ImportError:  # pragma: no cover - the dev extra installs it
    MISSING_PLAYWRIGHT = "playwright is not installed (pip install -e '.[dev]')"

Serve = Callable[..., RunningServer]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'")


# The route, over plain HTTP ------------------------------------------------------------------

def test_page_and_files_need_no_key_and_carry_a_strict_policy(serve: Serve) -> None:
    server = serve(api_keys=("sk-right",))
    with server.http() as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"].startswith(CSP)
        assert "<script" in page.text and "<style" not in page.text
        assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None, "no inline script"
        assert " style=" not in page.text, "no inline style"
        for name in ("app.js", "api.js", "style.css", "favicon.svg"):
            asset = http.get(f"/playground/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-security-policy"].startswith(CSP)
            assert asset.headers["cache-control"] == "no-cache"
        # A module script runs only with a JavaScript type (Python 3.11's own table says
        # application/javascript, later ones and /etc/mime.types text/javascript).
        assert http.get("/playground/app.js").headers["content-type"].startswith(
            ("text/javascript", "application/javascript"))
        # What stays closed: the API, and any path that only begins like an open one.
        for path in ("/v1/models", "/metrics", "/nope", "/playgroundx", "/index.html"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "invalid_api_key"


def test_the_open_prefix_opens_nothing_else(serve: Serve) -> None:
    """`/playground/` needs no key, so a path that climbs out of it must reach nothing: the
    files are served from their own folder only, and the API is never routed to from it."""
    server = serve(api_keys=("sk-right",))
    secret = (server.settings.data_dir / "signing.key").read_bytes()
    climbs = [*TRAVERSALS, "../v1/models", "..%2Fv1%2Fmodels", "%2e%2e/v1/models",
              "../metrics", "./../v1/models", "../../../../../../etc/passwd"]
    for attempt in climbs:
        target = f"/playground/{attempt}"
        status, headers, body = raw_get(server, target)
        assert status in (400, 401, 403, 404), (target, status, body[:200])
        assert secret not in body and b"root:" not in body, target
        assert b'"object":"list"' not in body and b"limner_" not in body, target
        assert headers.get("x-request-id"), target


def test_the_page_and_its_files_answer_304_to_their_validators(serve: Serve) -> None:
    server = serve()
    with server.http() as http:
        for path in ("/", "/playground/app.js", "/playground/style.css"):
            first = http.get(path)
            etag, modified = first.headers["etag"], first.headers["last-modified"]
            again = http.get(path, headers={"if-none-match": etag})
            assert again.status_code == 304, path
            assert again.content == b""
            assert again.headers["content-security-policy"].startswith(CSP)
            assert http.get(path, headers={"if-modified-since": modified}).status_code == 304
            assert http.get(path, headers={"if-none-match": '"other"'}).status_code == 200


def test_the_api_answers_as_before_around_the_page(serve: Serve) -> None:
    server = serve()
    with server.http() as http:
        missing = http.get("/playground/missing.js")
        assert missing.status_code == 404
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
        assert http.post("/").status_code == 405
        assert http.get("/nope").status_code == 404
        assert http.get("/v1/models").status_code == 200
        rules = http.get("/playground/rules.json").json()
        for name, model_rules in OPENAI_MODELS.items():
            family = rules["families"][rules["models"][name]]
            assert family["sizes"] == list(model_rules.sizes), name
            assert family["free_size"] == model_rules.free_size, name
        assert rules["families"][rules["local"]]["free_size"] is True


# The page, in Chromium ------------------------------------------------------------------------

@dataclass
class Tab:
    """A page and what its console said. `provoked`: the HTTP statuses a test asks for on
    purpose, whose 'Failed to load resource' lines Chromium prints for every fetch."""

    page: Page
    errors: list[str] = field(default_factory=list)
    provoked: tuple[int, ...] = ()

    def unexpected(self) -> list[str]:
        allowed = {f"Failed to load resource: the server responded with a status of {s}"
                   for s in self.provoked}
        return [e for e in self.errors if not any(e.startswith(a) for a in allowed)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if MISSING_PLAYWRIGHT:
        pytest.skip(MISSING_PLAYWRIGHT)
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: apt-get install chromium "
                    "(scripts/setup.sh dev does it as root or with sudo)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """Opens the playground of a server in a fresh browser context (empty storage)."""
    tabs: list[Tab] = []

    def open_(server: RunningServer, *, provoked: tuple[int, ...] = (),
              **context: Any) -> Tab:
        page = browser.new_context(**context).new_page()
        page.set_default_timeout(8000)
        tab = Tab(page, provoked=provoked)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                tab.errors.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))
        page.goto(server.base_url + "/")
        page.wait_for_selector("body[data-ready]", state="attached")
        tabs.append(tab)
        return tab

    yield open_
    for tab in tabs:
        tab.page.context.close()
    assert [t.unexpected() for t in tabs] == [[] for _ in tabs], "console errors"


def prompt_box(page: Page) -> Any:
    return page.get_by_label("Prompt", exact=True)


def generate(page: Page, prompt: str, count: int = 1) -> None:
    """Types the prompt, presses Enter and waits until `count` more pictures are kept."""
    before = page.locator("#gallery img").count()
    prompt_box(page).fill(prompt)
    prompt_box(page).press("Enter")
    expect(page.locator("#gallery img")).to_have_count(before + count)


def natural_size(img: Any) -> list[int]:
    """The picture's decoded size: a visible <img> may not have decoded yet, so wait for it."""
    size: list[int] = img.evaluate(
        "i => i.decode().then(() => [i.naturalWidth, i.naturalHeight])")
    return size


def picture_file(path: Path, size: tuple[int, int], color: tuple[int, ...]) -> Path:
    Image.new("RGBA", size, color).save(path)
    return path


def test_generate_shows_previews_before_the_picture(serve: Serve,
                                                   open_tab: Callable[..., Tab]) -> None:
    server = serve(engines={"fake": FakeEngine(step_s=0.2)})
    page = open_tab(server).page
    expect(page.get_by_label("Model")).to_have_value("fake")
    page.get_by_label("Size", exact=True).select_option("256x256")
    page.get_by_label("Quality").select_option("high")  # 8 steps of 0.2 s: previews at 3, 6
    prompt_box(page).fill("a red fox\non a hill")  # Shift+Enter's newline, typed
    prompt_box(page).press("Shift+Enter")
    assert prompt_box(page).input_value().count("\n") == 2, "Shift+Enter is a new line"
    prompt_box(page).fill("a red fox")
    with page.expect_request("**/v1/images/generations") as sent:
        prompt_box(page).press("Enter")
    body = json.loads(sent.value.post_data or "")
    assert body["stream"] is True and body["partial_images"] >= 1
    assert body["size"] == "256x256" and body["model"] == "fake"
    expect(page.locator(".pending img.preview").first).to_be_visible()
    assert page.locator("#gallery img").count() == 0, "a preview came before the picture"
    expect(page.locator(".pending .elapsed")).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    final = page.get_by_role("img", name="a red fox", exact=True)
    expect(final).to_be_visible()
    assert natural_size(final) == [256, 256]
    expect(page.locator(".pending")).to_have_count(0)
    expect(page.locator("#notice")).to_contain_text("1 picture in")


def test_download_reload_lightbox_reuse_and_the_api_call(
        serve: Serve, open_tab: Callable[..., Tab], tmp_path: Path) -> None:
    server = serve()
    page = open_tab(server).page
    page.get_by_label("Size", exact=True).select_option("512x512")
    page.get_by_label("Output format").select_option("webp")
    page.get_by_label("Compression (0-100)").fill("80")
    page.get_by_text("Advanced").click()
    page.get_by_label("Seed").fill("7")
    generate(page, "an otter")
    card = page.locator("#gallery li").first
    with page.expect_download() as info:
        card.get_by_role("button", name="Download").click()
    assert info.value.suggested_filename.endswith(".webp")
    saved = Path(info.value.path()).read_bytes()
    assert Image.open(io.BytesIO(saved)).size == (512, 512)
    assert saved[:4] == b"RIFF" and saved[8:12] == b"WEBP"

    page.reload()
    page.wait_for_selector("body[data-ready]", state="attached")
    kept = page.get_by_role("img", name="an otter", exact=True)
    expect(kept).to_be_visible()
    assert natural_size(kept)[0] == 512, "the gallery survived the reload"

    kept.click()
    lightbox = page.locator("#lightbox")
    expect(lightbox).to_be_visible()
    expect(lightbox.get_by_role("img", name="an otter")).to_be_visible()
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()

    page.reload()  # a fresh form, then every setting back from the picture
    page.wait_for_selector("body[data-ready]", state="attached")
    page.get_by_role("button", name="Use these settings again").click()
    expect(prompt_box(page)).to_have_value("an otter")
    expect(page.get_by_label("Size", exact=True)).to_have_value("512x512")
    expect(page.get_by_label("Output format")).to_have_value("webp")
    expect(page.get_by_label("Compression (0-100)")).to_have_value("80")
    expect(page.get_by_label("Seed")).to_have_value("7")

    page.get_by_role("button", name="Show the API call").click()
    assert 'extra_body={"seed": 7}' in page.locator("#api-call-python").inner_text()
    page.keyboard.press("Escape")
    run_snippets(page, tmp_path, "image_generation.completed", "image-1.webp", (512, 512))


def run_snippets(page: Page, where: Path, completed: str, written: str,
                 size: tuple[int, int]) -> None:
    """The first picture's "Show the API call", run as a user would paste it in `where`:
    curl streams to the completed event, Python with the openai SDK writes the picture."""
    page.get_by_role("button", name="Show the API call").first.click()
    curl = page.locator("#api-call-curl").inner_text()
    python = page.locator("#api-call-python").inner_text()
    page.keyboard.press("Escape")
    assert "$OPENAI_API_KEY" in curl and 'os.environ["OPENAI_API_KEY"]' in python
    env = {**os.environ, "OPENAI_API_KEY": "sk-anything"}
    if shutil.which("curl") and shutil.which("bash"):
        out = subprocess.run(["bash", "-c", curl], cwd=where, env=env, capture_output=True,
                             timeout=30, check=True).stdout.decode()
        assert f'"type":"{completed}"' in out.replace(" ", "")
    # Run in this process, where the SDK is imported already: a new interpreter would
    # spend seconds importing it.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(where)
        patch.setenv("OPENAI_API_KEY", "sk-anything")
        exec(compile(python, "snippet.py", "exec"), {"__name__": "snippet"})
    assert Image.open(where / written).size == size


RECORD_FORMS = """() => {
    // Chromium hands Playwright no body for a multipart request with files, so the test
    // keeps each FormData the page gives to fetch, exactly as it is sent.
    window.sentForms = [];
    const send = window.fetch;
    window.fetch = (url, init) => {
        if (init && init.body instanceof FormData) window.sentForms.push(init.body);
        return send(url, init);
    };
}"""
LAST_FORM = """async () => {
    const fields = {};
    for (const [name, value] of window.sentForms.at(-1).entries()) {
        fields[name] = typeof value === "string" ? value
            : [value.name, Array.from(new Uint8Array(await value.arrayBuffer()))];
    }
    return fields;
}"""


def sent_form(page: Page) -> dict[str, Any]:
    """The last multipart body the page sent: strings, and files as (name, bytes)."""
    fields: dict[str, Any] = page.evaluate(LAST_FORM)
    return {name: value if isinstance(value, str) else (value[0], bytes(value[1]))
            for name, value in fields.items()}


def test_an_edit_with_a_painted_mask_streams_from_images_edits(
        serve: Serve, open_tab: Callable[..., Tab], tmp_path: Path) -> None:
    engine = FakeEngine(step_s=0.1)
    server = serve(engines={"fake": engine})
    page = open_tab(server).page
    page.evaluate(RECORD_FORMS)
    source = picture_file(tmp_path / "room.png", (192, 128), (20, 120, 200, 255))
    page.get_by_label("Images", exact=True).set_input_files(source)
    mask = page.locator("#mask")
    expect(mask).to_be_visible()
    assert mask.evaluate("c => [c.width, c.height]") == [192, 128]
    box = mask.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + box["width"] * 0.1, y, steps=4)
    page.mouse.up()
    prompt_box(page).fill("a cat on the sofa")
    with page.expect_request("**/v1/images/edits"):
        page.get_by_role("button", name="Generate").click()
    form = sent_form(page)
    assert form["image"] == ("room.png", source.read_bytes())
    assert form["stream"] == "true" and int(form["partial_images"]) >= 1
    assert form["mask"][0] == "mask.png"
    painted = Image.open(io.BytesIO(form["mask"][1]))
    assert painted.size == (192, 128) and painted.mode == "RGBA"
    alpha = painted.getchannel("A")
    assert alpha.getpixel((58, 64)) == 0, "painted: alpha 0, to be redrawn"
    assert alpha.getpixel((150, 10)) == 255, "unpainted: opaque, kept"
    expect(page.locator(".pending img.preview").first).to_be_visible()
    expect(page.get_by_role("img", name="a cat on the sofa")).to_be_visible()
    # The server's answer (1536x1024, the input scaled 8x): the fake engine's disc covers
    # the middle, but only the painted stroke was redrawn; the rest is the input's own blue.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").click()
    answer = Image.open(download.value.path()).convert("RGB")
    assert answer.size == (1536, 1024)
    assert answer.getpixel((460, 512)) != (20, 120, 200), "the painted part was redrawn"
    assert answer.getpixel((1000, 512)) == (20, 120, 200), "the rest was kept"
    # The same edit from the dialog's code, with the picture and the mask the page sent.
    (tmp_path / "mask.png").write_bytes(form["mask"][1])
    run_snippets(page, tmp_path, "image_edit.completed", "image-1.png", (1536, 1024))


def test_drop_and_paste_load_the_picture_and_dall_e_2_draws_variations(
        serve: Serve, open_tab: Callable[..., Tab], tmp_path: Path) -> None:
    server = serve()
    page = open_tab(server).page
    page.evaluate(RECORD_FORMS)
    square = picture_file(tmp_path / "otter.png", (64, 64), (200, 80, 20, 255))
    wide = picture_file(tmp_path / "wide.png", (96, 48), (20, 80, 200, 255))
    bytes_of = {p.name: list(p.read_bytes()) for p in (wide, square)}
    # A drop on the form, then a paste anywhere: each carries a file, as the OS hands it over.
    page.evaluate("""([name, bytes]) => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
        const form = document.getElementById("request");
        form.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true,
                                                       cancelable: true}));
        form.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true,
                                                   cancelable: true}));
    }""", ["wide.png", bytes_of["wide.png"]])
    expect(page.locator("#picture")).to_have_js_property("width", 96)
    page.evaluate("""([name, bytes]) => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
        document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data,
                                                            bubbles: true}));
    }""", ["otter.png", bytes_of["otter.png"]])
    # A GPT model edits both, in order; the first keeps the canvas until it is removed.
    expect(page.get_by_role("list", name="Pictures to edit, in order")
           .get_by_role("listitem")).to_have_count(2)
    expect(page.locator("#picture")).to_have_js_property("width", 96)
    page.get_by_role("button", name="Remove wide.png").click()
    expect(page.locator("#picture")).to_have_js_property("width", 64)
    page.get_by_label("Variations (dall-e-2)").check()
    expect(page.get_by_label("Model")).to_have_value("dall-e-2")
    page.get_by_label("Size", exact=True).select_option("256x256")
    with page.expect_request("**/v1/images/variations"):
        page.get_by_role("button", name="Generate").click()
    form = sent_form(page)
    assert form["image"] == ("otter.png", square.read_bytes())
    assert form["model"] == "dall-e-2" and form["response_format"] == "b64_json"
    variation = page.get_by_role("img", name="Variation of otter.png")
    expect(variation).to_be_visible()
    assert natural_size(variation)[0] == 256


def test_api_key_prompt_wrong_key_then_right_key(serve: Serve,
                                                 open_tab: Callable[..., Tab]) -> None:
    server = serve(api_keys=("sk-right",))
    page = open_tab(server, provoked=(401,)).page
    key = page.get_by_label("API key")
    expect(key).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("You didn't provide an API key")
    key.fill("sk-wrong")
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_role("alert")).to_contain_text("Incorrect API key provided")
    expect(key).to_have_attribute("aria-invalid", "true")
    key.fill("sk-right")
    key.press("Enter")
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(page.get_by_label("Model")).to_have_value("fake")
    generate(page, "a key that works")
    assert page.evaluate("Object.values(localStorage)") == ["sk-right"]
    page.get_by_role("button", name="Show the API call").click()
    snippets = page.locator("#api-call").inner_text()
    assert "sk-right" not in snippets and "$OPENAI_API_KEY" in snippets


def test_a_person_types_the_key_and_presses_generate(serve: Serve,
                                                    open_tab: Callable[..., Tab]) -> None:
    """The issue's new user: the page opens on a server with keys, asks for one at once
    with the server's message, and Generate itself uses what was typed."""
    server = serve(api_keys=("sk-right",))
    page = open_tab(server, provoked=(401,)).page
    key = page.get_by_label("API key")
    expect(key).to_be_visible()
    expect(key).to_be_focused()
    expect(page.locator("#key-error")).to_have_text(
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
    assert page.locator("#model option").count() == 0  # nothing to list without a key
    key.fill("sk-wrong")
    prompt_box(page).fill("an otter")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#key-error")).to_contain_text("Incorrect API key provided")
    expect(key).to_have_attribute("aria-invalid", "true")
    assert page.locator("#gallery img").count() == 0
    key.fill("sk-right")
    with page.expect_request("**/v1/images/generations") as sent:
        page.get_by_role("button", name="Generate").click()
    assert sent.value.headers["authorization"] == "Bearer sk-right"
    expect(page.locator("#gallery img")).to_have_count(1)
    expect(page.get_by_label("Model")).to_have_value("fake")
    expect(page.locator("#key-error")).to_be_hidden()
    expect(key).not_to_have_attribute("aria-invalid", "true")
    assert page.evaluate("Object.values(localStorage)") == ["sk-right"]


def test_a_400_highlights_its_control_a_block_and_a_429_say_why(
        serve: Serve, open_tab: Callable[..., Tab]) -> None:
    engine = FakeEngine(gated=True)
    server = serve(engines={"fake": engine}, max_queue=1)
    page = open_tab(server, provoked=(400, 429)).page
    page.get_by_label("Size", exact=True).select_option("custom")
    custom = page.get_by_label("Custom size (WxH)")
    custom.fill("100x100")
    prompt_box(page).fill("too small")
    prompt_box(page).press("Enter")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Invalid size '100x100'. Width and height must both be "
                                  "divisible by 16.")
    expect(custom).to_have_attribute("aria-invalid", "true")
    expect(custom).to_be_focused()

    custom.fill("512x512")
    expect(custom).not_to_have_attribute("aria-invalid", "true")
    page.get_by_text("Advanced").click()
    page.get_by_label("Seed").fill("1.5")
    prompt_box(page).press("Enter")
    expect(alert).to_contain_text("seed")
    expect(page.get_by_label("Seed")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Seed").fill("")
    prompt_box(page).fill("a gory dismembered body")
    prompt_box(page).press("Enter")
    expect(alert).to_contain_text("safety_violations=[violence/graphic]")
    expect(alert).to_contain_text("moderation_blocked")

    # One request drawing (held at the gate), one queued: the page's is the one too many.
    url = server.v1 + "/images/generations"
    body = {"prompt": "x", "model": "fake", "size": "256x256"}
    held = [threading.Thread(target=httpx.post, args=(url,), kwargs={"json": body,
                                                                     "timeout": 30})
            for _ in range(2)]
    for thread in held:
        thread.start()
        time.sleep(0.3)
    try:
        prompt_box(page).fill("one too many")
        prompt_box(page).press("Enter")
        expect(alert).to_contain_text(re.compile(r"Retry in \d+ s\."))
        expect(alert).to_contain_text("429")
    finally:
        engine.release(100)
        for thread in held:
            thread.join(timeout=10)


def test_cancel_aborts_the_request_and_the_server_stops(serve: Serve,
                                                       open_tab: Callable[..., Tab]) -> None:
    engine = FakeEngine(step_s=0.2)
    server = serve(engines={"fake": engine})
    page = open_tab(server).page
    page.get_by_label("Quality").select_option("max")  # 16 steps, 3.2 s
    prompt_box(page).fill("never finished")
    prompt_box(page).press("Enter")
    expect(page.locator(".pending img.preview").first).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#notice")).to_contain_text("Cancelled")
    expect(page.locator(".pending")).to_have_count(0)
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    time.sleep(0.5)  # the step under way when the connection closed may still end
    stopped_at = engine.steps_run
    time.sleep(0.6)  # three more steps, had it gone on
    assert engine.steps_run == stopped_at < 16, "the server stopped when the page hung up"
    assert page.locator("#gallery img").count() == 0


ALL_PARTS = """async () => {
    const parts = [];
    for (const [name, value] of window.sentForms.at(-1).entries()) {
        parts.push([name, typeof value === "string" ? value
            : [value.name, Array.from(new Uint8Array(await value.arrayBuffer()))]]);
    }
    return parts;
}"""


def body_of(request: Any) -> dict[str, Any]:
    """A JSON request's body as the page sent it."""
    body = request.post_data_json
    assert isinstance(body, dict), body
    return body


def paint(page: Page, canvas: str, at: float = 0.25) -> None:
    """A short horizontal stroke across the canvas's middle, a quarter of the way in."""
    box = page.locator(canvas).bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] * at, box["y"] + box["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + box["width"] * 0.1, y, steps=4)
    page.mouse.up()


def test_an_edit_of_several_pictures_in_order_with_markup_and_fidelity(
        serve: Serve, open_tab: Callable[..., Tab], tmp_path: Path) -> None:
    server = serve(engines={"fake": FakeEngine()})
    page = open_tab(server).page
    page.evaluate(RECORD_FORMS)
    files = [picture_file(tmp_path / f"{name}.png", (128, 64), color) for name, color in
             (("first", (200, 0, 0, 255)), ("second", (0, 200, 0, 255)),
              ("third", (0, 0, 200, 255)))]
    page.get_by_label("Model").select_option("gpt-image-2.5-sunburst")
    page.get_by_label("Images", exact=True).set_input_files(files)
    listed = page.get_by_role("list", name="Pictures to edit, in order").get_by_role("listitem")
    expect(listed).to_have_count(3)
    page.get_by_role("button", name="Move third.png earlier").click()
    expect(listed.nth(1)).to_contain_text("third.png")
    page.get_by_label("Input fidelity").select_option("high")
    page.get_by_label("markup, drawn over the picture as a guide").check()
    paint(page, "#mask")
    prompt_box(page).fill("the three as one poster")
    with page.expect_request("**/v1/images/edits"):
        page.get_by_role("button", name="Generate").click()
    parts: list[list[Any]] = page.evaluate(ALL_PARTS)
    pictures = [value[0] for name, value in parts if name == "image[]"]
    assert pictures == ["first.png", "third.png", "second.png"]
    fields = {name: value for name, value in parts if isinstance(value, str)}
    assert (fields["model"], fields["input_fidelity"]) == ("gpt-image-2.5-sunburst", "high")
    assert "mask" not in dict(parts)  # the brush drew markup, not a mask
    markup = Image.open(io.BytesIO(bytes(dict(parts)["markup"][1])))
    assert markup.size == (128, 64) and markup.mode == "RGBA"
    assert markup.getchannel("A").getpixel((38, 32)) == 255
    assert markup.getchannel("A").getpixel((120, 5)) == 0
    expect(page.locator("#gallery img")).to_have_count(1)
    # gpt-image-2 takes neither input_fidelity nor markup: both go from the page.
    page.get_by_label("Model").select_option("gpt-image-2")
    expect(page.get_by_label("Input fidelity")).to_be_hidden()
    expect(page.get_by_label("markup, drawn over the picture as a guide")).to_be_hidden()


def test_frames_complexity_svg_and_safety_identifier_where_they_apply(
        serve: Serve, open_tab: Callable[..., Tab]) -> None:
    server = serve(engines={"fake": FakeEngine()})
    page = open_tab(server, provoked=(400,)).page
    page.get_by_label("Model").select_option("gpt-image-1")
    expect(page.get_by_label("Frames")).to_be_hidden()
    page.get_by_label("Output format").select_option("gif")
    page.get_by_label("Frames").fill("4")
    page.get_by_label("Frame duration (ms)").fill("100")
    page.get_by_label("Complexity").select_option("high")
    page.locator("#advanced summary").click()
    page.get_by_label("Safety identifier").fill("user-42")
    prompt_box(page).fill("a spinning top")
    with page.expect_request("**/v1/images/generations") as sent:
        page.get_by_role("button", name="Generate").click()
    body = body_of(sent.value)
    assert {k: body[k] for k in ("output_format", "frame_count", "frame_duration_ms",
                                 "complexity", "safety_identifier")} == {
        "output_format": "gif", "frame_count": 4, "frame_duration_ms": 100,
        "complexity": "high", "safety_identifier": "user-42"}
    assert "stream" not in body  # a gif does not stream
    expect(page.locator("#gallery img")).to_have_count(1)
    # The server's 400 lands on its own control.
    page.get_by_label("Frames").fill("99")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("alert")).to_contain_text("Invalid 'frame_count'")
    expect(page.get_by_label("Frames")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Output format").select_option("svg")
    expect(page.get_by_label("Frames")).to_be_hidden()
    expect(page.get_by_label("SVG author")).to_be_visible()
    page.get_by_label("Model").select_option("dall-e-3")
    for label in ("Complexity", "SVG author", "Input fidelity"):
        expect(page.get_by_label(label)).to_be_hidden()


def test_adapters_and_each_models_state_come_from_the_models_list(
        serve: Serve, open_tab: Callable[..., Tab], tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "loras").mkdir(parents=True)
    (data / "loras" / "ink.safetensors").write_bytes(b"{}")
    engine = FakeEngine(adapters=True)
    server = serve(engines={"fake": engine, "late": FakeEngine(name="late")}, data_dir=data)
    page = open_tab(server).page
    page.get_by_label("Model").select_option("fake")
    expect(page.get_by_label("Model")).to_have_value("fake")
    expect(page.locator("#model-state")).to_have_text("")
    page.get_by_label("ink", exact=True).check()
    page.get_by_label("Scale of ink").fill("0.5")
    prompt_box(page).fill("an inked otter")
    with page.expect_request("**/v1/images/generations") as sent:
        page.get_by_role("button", name="Generate").click()
    assert body_of(sent.value)["lora"] == [{"name": "ink", "scale": 0.5}]
    expect(page.locator("#gallery img")).to_have_count(1)
    page.get_by_label("Model").select_option("late")
    expect(page.locator("#model-state")).to_have_text(
        "Not in memory: the first request loads it, which takes a while.")
    expect(page.get_by_role("group", name="LoRA adapters")).to_be_hidden()


def test_a_conversation_edits_the_last_picture(serve: Serve,
                                               open_tab: Callable[..., Tab]) -> None:
    server = serve(engines={"fake": FakeEngine()})
    page = open_tab(server).page
    page.get_by_label("Model").select_option("gpt-image-1")
    page.get_by_label("Conversation: each prompt edits the last picture (Responses API)").check()
    prompt_box(page).fill("a lighthouse")
    with page.expect_response("**/v1/responses") as first:
        page.get_by_role("button", name="Generate").click()
    assert "previous_response_id" not in body_of(first.value.request)
    assert body_of(first.value.request)["tools"][0]["model"] == "gpt-image-1"
    expect(page.locator("#gallery img")).to_have_count(1)
    prompt_box(page).fill("now at night")
    with page.expect_request("**/v1/responses") as second:
        page.get_by_role("button", name="Generate").click()
    assert body_of(second.value)["previous_response_id"] == first.value.json()["id"]
    expect(page.locator("#gallery img")).to_have_count(2)
    page.get_by_role("button", name="New conversation").click()
    prompt_box(page).fill("a harbour")
    with page.expect_request("**/v1/responses") as third:
        page.get_by_role("button", name="Generate").click()
    assert "previous_response_id" not in body_of(third.value)
    expect(page.locator("#gallery img")).to_have_count(3)


def test_phone_width_dark_theme_labels_and_focus(serve: Serve, open_tab: Callable[..., Tab],
                                                 tmp_path: Path) -> None:
    server = serve()
    page = open_tab(server, viewport={"width": 390, "height": 844},
                    color_scheme="dark").page
    page.get_by_label("Images", exact=True).set_input_files(
        picture_file(tmp_path / "big.png", (1600, 900), (10, 10, 10, 255)))
    page.get_by_text("Advanced").click()
    page.get_by_label("Pictures (n)").fill("2")
    generate(page, "a lighthouse on a long, long rocky coast at night " * 3, count=2)
    page.get_by_role("button", name="Show the API call").first.click()
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1] == 390, "no horizontal scrolling at 390 px"
    page.keyboard.press("Escape")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == \
        "rgb(17, 20, 24)", "the dark theme follows the system"
    unlabelled = page.evaluate("""() => [...document.querySelectorAll(
        'input, select, textarea, button, canvas[data-param]')].filter(e =>
        !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
        && !e.textContent.trim() && !e.querySelector('img[alt]:not([alt=""])'))
        .map(e => e.outerHTML)""")
    assert unlabelled == []
    page.get_by_label("Prompt", exact=True).focus()
    for _ in range(40):  # Tab on until the Generate button has the keyboard's focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "generate":
            break
    generate_button = page.get_by_role("button", name="Generate")
    expect(generate_button).to_be_focused()
    assert generate_button.evaluate("b => getComputedStyle(b).outlineStyle") == "solid"
