"""Just enough HTML form handling for the headless journey: read forms, fill them, submit them.

The journey is a browser without a browser: it reads the pages a citizen would see (the demo
portal, the stand-in DigiD, the consent page) and submits their forms as a browser would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Field:
    name: str
    kind: str  # input type, "select" or "button"
    value: str = ""
    checked: bool = False
    options: list[tuple[str, str, bool]] = field(default_factory=list)  # value, label, selected
    label: str = ""


@dataclass
class Form:
    action: str
    method: str
    fields: list[Field] = field(default_factory=list)

    def field_with_option(self, value: str) -> Field | None:
        for f in self.fields:
            if f.kind == "select" and any(v == value for v, _, _ in f.options):
                return f
        return None

    def radio_values(self, name: str) -> list[str]:
        return [f.value for f in self.fields if f.kind == "radio" and f.name == name]

    def submits(self) -> list[Field]:
        return [f for f in self.fields if f.kind in ("submit", "button") and f.name]

    def values(
        self, choices: dict[str, str | list[str]], submit: Field | None
    ) -> list[tuple[str, str]]:
        """The pairs a browser sends: defaults, overridden by `choices`, plus the submitter."""
        pairs: list[tuple[str, str]] = []
        done: set[str] = set()
        for f in self.fields:
            if not f.name or f.kind in ("submit", "button", "image", "reset", "file"):
                continue
            if f.name in choices:
                if f.name in done:
                    continue
                done.add(f.name)
                chosen = choices[f.name]
                for value in [chosen] if isinstance(chosen, str) else chosen:
                    pairs.append((f.name, value))
                continue
            if f.kind in ("checkbox", "radio"):
                if f.checked:
                    pairs.append((f.name, f.value or "on"))
            elif f.kind == "select":
                selected = [v for v, _, s in f.options if s] or [v for v, _, _ in f.options[:1]]
                pairs.extend((f.name, v) for v in selected[:1])
            else:
                pairs.append((f.name, f.value))
        if submit is not None:
            pairs.append((submit.name, submit.value))
        return pairs


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.elements: list[tuple[str, dict[str, str]]] = []
        self._select: Field | None = None
        self._option: tuple[str, bool] | None = None
        self._button: Field | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        form = self.forms[-1] if self.forms else None
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif form is None:
            return
        elif tag == "input":
            form.fields.append(
                Field(
                    a.get("name", ""),
                    a.get("type", "text").lower(),
                    a.get("value", ""),
                    "checked" in a,
                )
            )
        elif tag == "select":
            self._select = Field(a.get("name", ""), "select")
            form.fields.append(self._select)
        elif tag == "option" and self._select is not None:
            self._option = (a.get("value", ""), "selected" in a)
            self._text = []
        elif tag == "button":
            self._button = Field(
                a.get("name", ""), a.get("type", "submit").lower(), a.get("value", "")
            )
            self._text = []
            form.fields.append(self._button)

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "option" and self._select is not None and self._option is not None:
            value, selected = self._option
            label = "".join(self._text).strip()
            self._select.options.append((value or label, label, selected))
            self._option = None
        elif tag == "select":
            self._select = None
        elif tag == "button" and self._button is not None:
            self._button.label = "".join(self._text).strip()
            self._button = None


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def find_elements(html: str, tag: str) -> list[dict[str, str]]:
    parser = _FormParser()
    parser.feed(html)
    return [attrs for name, attrs in parser.elements if name == tag]
