/*
 * <blauwe-knop> — the Blue Button a portal adds with one script tag, no build step:
 *
 *   <script type="module" src="https://GATEWAY/static/blauwe-knop.js"></script>
 *   <blauwe-knop client-id="mijngemeente" purpose="schuldhulp-intake"
 *                start-url="/blauwe-knop/start"></blauwe-knop>
 *
 * Pressing it sends the citizen to the portal's own back-end (`start-url`, with `purpose` and
 * `client_id` as query parameters); that back-end makes the pushed authorization request.
 * Works under a strict Content-Security-Policy: no inline script or style. The styles are a
 * constructable stylesheet adopted by the shadow root, which CSP does not restrict.
 * Attributes: client-id, purpose, start-url (required); lang ("nl" default, or "en");
 * label (overrides the button text).
 */
const LABELS = {
  nl: { button: "Download mijn gegevens", hint: "U logt in met DigiD en kiest zelf wat u deelt." },
  en: { button: "Download my data", hint: "You log in with DigiD and choose what you share." },
};

const CSS = `
:host { display: inline-block; font-family: "RijksoverheidSansWebText", Verdana, Arial, sans-serif; }
button {
  display: inline-flex; align-items: center; gap: 0.6em;
  font: inherit; font-size: 1.125rem; font-weight: bold; line-height: 1.3;
  color: #ffffff; background: #01689b; border: 2px solid #01689b; border-radius: 6px;
  padding: 0.75em 1.4em; cursor: pointer; min-height: 44px;
}
button:hover { background: #154273; border-color: #154273; }
button:focus-visible { outline: 3px solid #ffb612; outline-offset: 3px; }
button[disabled] { cursor: wait; opacity: 0.85; }
.icon { width: 1.2em; height: 1.2em; flex: none; }
.hint { display: block; margin-top: 0.4em; font-size: 0.95rem; color: #333333; }
`;

let sheet = null;
function styles() {
  if (sheet === null) {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
  }
  return sheet;
}

class BlauweKnop extends HTMLElement {
  static get observedAttributes() {
    return ["client-id", "purpose", "start-url", "lang", "label"];
  }

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.adoptedStyleSheets = [styles()];
    this._button = document.createElement("button");
    this._button.type = "button";
    this._button.setAttribute("part", "button");
    const svgNs = "http://www.w3.org/2000/svg";
    const icon = document.createElementNS(svgNs, "svg");
    icon.setAttribute("class", "icon");
    icon.setAttribute("viewBox", "0 0 24 24");
    icon.setAttribute("aria-hidden", "true");
    icon.setAttribute("focusable", "false");
    const path = document.createElementNS(svgNs, "path");
    path.setAttribute("fill", "currentColor");
    path.setAttribute("d", "M11 3h2v10.2l3.6-3.6 1.4 1.4-6 6-6-6 1.4-1.4 3.6 3.6V3zM4 19h16v2H4z");
    icon.append(path);
    this._text = document.createElement("span");
    this._button.append(icon, this._text);
    this._hint = document.createElement("span");
    this._hint.className = "hint";
    this._hint.id = "hint";
    this._button.setAttribute("aria-describedby", "hint");
    this._button.addEventListener("click", () => this._go());
    root.append(this._button, this._hint);
  }

  connectedCallback() {
    this._render();
    // Coming back with the browser's back button (page cache): make the button usable again.
    window.addEventListener("pageshow", () => {
      this._button.disabled = false;
    });
  }

  attributeChangedCallback() {
    this._render();
  }

  _lang() {
    const own = this.getAttribute("lang") || document.documentElement.lang || "nl";
    return own.toLowerCase().startsWith("en") ? "en" : "nl";
  }

  _render() {
    const labels = LABELS[this._lang()];
    this._text.textContent = this.getAttribute("label") || labels.button;
    this._hint.textContent = labels.hint;
  }

  _go() {
    const start = this.getAttribute("start-url");
    if (!start) {
      console.error("<blauwe-knop>: the start-url attribute is required");
      return;
    }
    const url = new URL(start, window.location.href);
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      console.error("<blauwe-knop>: start-url must be an http(s) URL");
      return;
    }
    const purpose = this.getAttribute("purpose");
    const clientId = this.getAttribute("client-id");
    if (purpose) url.searchParams.set("purpose", purpose);
    if (clientId) url.searchParams.set("client_id", clientId);
    url.searchParams.set("lang", this._lang());
    this._button.disabled = true;
    this.dispatchEvent(new CustomEvent("blauwe-knop-start", { bubbles: true, composed: true }));
    window.location.assign(url.href);
  }
}

if (!customElements.get("blauwe-knop")) {
  customElements.define("blauwe-knop", BlauweKnop);
}
