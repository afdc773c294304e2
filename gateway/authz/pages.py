"""The pages a citizen sees at the gateway: consent and errors. Dutch first, English available.

Plain HTML with one stylesheet file (`/static/gateway.css`): no inline script or style, so the
pages run under a strict Content-Security-Policy. Built for WCAG 2.1 AA: one h1, landmarks,
fieldsets with legends, every control labelled, visible focus, a language switch that says
which language it leads to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Literal

from gateway.authz.registry import Category, Portal, Purpose

Lang = Literal["nl", "en"]


def pick_lang(value: str | None) -> Lang:
    return "en" if value == "en" else "nl"


@dataclass(frozen=True, slots=True)
class OrganisationChoice:
    code: str
    name: str


_TEXT: dict[str, dict[Lang, str]] = {
    "title": {"nl": "Toestemming geven", "en": "Give consent"},
    "intro": {
        "nl": "{portal} vraagt om uw gegevens. U bepaalt zelf of u die deelt.",
        "en": "{portal} asks for your data. You decide whether to share it.",
    },
    "purpose": {"nl": "Waarvoor", "en": "What for"},
    "basis": {"nl": "Wettelijke grondslag", "en": "Legal basis"},
    "categories": {"nl": "Welke gegevens", "en": "Which data"},
    "orgs": {"nl": "Van welke organisaties", "en": "From which organisations"},
    "orgs_hint": {
        "nl": "Haal het vinkje weg bij een organisatie die u niet wilt delen.",
        "en": "Untick an organisation you do not want to share.",
    },
    "give": {"nl": "Toestemming geven en gegevens delen", "en": "Consent and share data"},
    "refuse": {"nl": "Geen toestemming geven", "en": "Do not consent"},
    "after": {
        "nl": "Na uw keuze gaat u terug naar {portal}. Uw keuze wordt vastgelegd.",
        "en": "After your choice you return to {portal}. Your choice is recorded.",
    },
    "once": {
        "nl": "Uw toestemming geldt alleen nu: {portal} kan uw gegevens de komende {minutes} "
        "minuten ophalen, daarna niet meer.",
        "en": "Your consent is for now only: {portal} can collect your data in the next "
        "{minutes} minutes, not after that.",
    },
    "switch": {"nl": "English", "en": "Nederlands"},
    "switch_label": {"nl": "Read this page in English", "en": "Lees deze pagina in het Nederlands"},
    "error_title": {"nl": "Er ging iets mis", "en": "Something went wrong"},
    "error_code": {"nl": "Foutcode", "en": "Error code"},
    "error_back": {
        "nl": "Ga terug naar de website waar u begon en probeer het opnieuw.",
        "en": "Go back to the website where you started and try again.",
    },
    "gateway": {"nl": "Blauwe Knop", "en": "Blue Button"},
    "none": {
        "nl": "Kies minstens één organisatie, of geef geen toestemming.",
        "en": "Choose at least one organisation, or do not consent.",
    },
}


def t(key: str, lang: Lang, **values: str) -> str:
    return _TEXT[key][lang].format(**{k: escape(v) for k, v in values.items()})


def _page(lang: Lang, title: str, body: str, switch_href: str | None) -> str:
    other: Lang = "en" if lang == "nl" else "nl"
    switch = (
        f'<a class="taal" href="{escape(switch_href)}" hreflang="{other}" lang="{other}">'
        f'<span class="visually-hidden">{t("switch_label", lang)}: </span>'
        f"{t('switch', lang)}</a>"
        if switch_href
        else ""
    )
    return f"""<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} — {t("gateway", lang)}</title>
<link rel="stylesheet" href="/static/gateway.css">
</head>
<body>
<header class="kop"><p class="merk">{t("gateway", lang)}</p>{switch}</header>
<main id="inhoud">
{body}
</main>
</body>
</html>"""


def consent_page(
    *,
    lang: Lang,
    action: str,
    csrf: str,
    portal: Portal,
    purpose: Purpose,
    categories: Sequence[Category],
    organisations: Sequence[OrganisationChoice],
    switch_href: str,
    token_seconds: int,
    message: str | None = None,
) -> str:
    nl = lang == "nl"
    purpose_name = purpose.name_nl if nl else purpose.name_en
    description = purpose.description_nl if nl else purpose.description_en
    basis = purpose.legal_basis_nl if nl else purpose.legal_basis_en
    category_items = "\n".join(
        f"<li>{escape(c.label_nl if nl else c.label_en)}</li>" for c in categories
    )
    org_items = "\n".join(
        f'<div class="keuze"><input type="checkbox" id="org-{escape(o.code)}" '
        f'name="organisatie" value="{escape(o.code)}" checked>'
        f'<label for="org-{escape(o.code)}">{escape(o.name)}</label></div>'
        for o in organisations
    )
    alert = f'<p class="melding" role="alert">{escape(message)}</p>' if message is not None else ""
    body = f"""<h1>{t("title", lang)}</h1>
<p>{t("intro", lang, portal=portal.name)}</p>
{alert}
<section aria-labelledby="doel">
<h2 id="doel">{t("purpose", lang)}</h2>
<p><strong>{escape(purpose_name)}</strong></p>
<p>{escape(description)}</p>
<h3>{t("basis", lang)}</h3>
<p>{escape(basis)}</p>
</section>
<section aria-labelledby="gegevens">
<h2 id="gegevens">{t("categories", lang)}</h2>
<ul>
{category_items}
</ul>
</section>
<form method="post" action="{escape(action)}">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<input type="hidden" name="lang" value="{lang}">
<fieldset>
<legend>{t("orgs", lang)}</legend>
<p class="hint">{t("orgs_hint", lang)}</p>
{org_items}
</fieldset>
<p>{t("once", lang, portal=portal.name, minutes=str(max(1, token_seconds // 60)))}</p>
<p>{t("after", lang, portal=portal.name)}</p>
<div class="knoppen">
<button type="submit" name="besluit" value="geven" class="primair">{t("give", lang)}</button>
<button type="submit" name="besluit" value="weigeren" class="secundair">{t("refuse", lang)}</button>
</div>
</form>"""
    return _page(lang, t("title", lang), body, switch_href)


def error_page(*, lang: Lang, error: str, description: str, switch_href: str | None) -> str:
    """Dutch first, then English, on one page: the address that failed cannot be asked again."""
    other: Lang = "en" if lang == "nl" else "nl"
    body = f"""<h1>{t("error_title", lang)}</h1>
<p role="alert">{t("error_back", lang)}</p>
<p>{t("error_code", lang)}: <code>{escape(error)}</code></p>
<p lang="en">{escape(description)}</p>
<section lang="{other}" aria-labelledby="anders">
<h2 id="anders">{t("error_title", other)}</h2>
<p>{t("error_back", other)}</p>
</section>"""
    return _page(lang, t("error_title", lang), body, switch_href)
