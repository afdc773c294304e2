"""The human-readable verdict of `blauweknop verify`, Dutch first, English on request."""

from __future__ import annotations

from typing import Literal

from gateway.documents.verify import Verdict

Lang = Literal["nl", "en"]

_T: dict[str, tuple[str, str]] = {
    "file": ("Bestand", "File"),
    "format": ("Formaat", "Format"),
    "signer": ("Verzegeld door", "Sealed by"),
    "kid": ("Sleutel", "Key id"),
    "signed": ("Verzegeld op", "Sealed at"),
    "stamp": ("Tijdstempel", "Time-stamp"),
    "tsa": ("Tijdstempelautoriteit", "Time-stamping authority"),
    "bundle": ("Kenmerk overzicht", "Bundle id"),
    "issued": ("Uitgegeven op", "Issued at"),
    "sources": ("Organisaties (eigen handtekening)", "Organisations (own signature)"),
    "attachment": ("Bijlage", "Attachment"),
    "ok": (
        "OORDEEL: GELDIG — het document is echt en ongewijzigd.",
        "VERDICT: VALID — the document is genuine and unchanged.",
    ),
    "bad": (
        "OORDEEL: NIET GELDIG — vertrouw dit document niet.",
        "VERDICT: NOT VALID — do not trust this document.",
    ),
    "verified": ("handtekening klopt", "signature valid"),
    "absent": ("geen gegevens opgehaald", "no data fetched"),
    "not checked": ("NIET gecontroleerd", "NOT checked"),
    "valid": ("geldig", "valid"),
    "invalid": ("ONGELDIG", "INVALID"),
}


def _t(key: str, lang: Lang) -> str:
    nl, en = _T[key]
    return nl if lang == "nl" else en


def report(verdict: Verdict, lang: Lang, name: str) -> str:
    lines = [f"{_t('file', lang)}: {name}", f"{_t('format', lang)}: {verdict.format}"]

    def add(key: str, value: object) -> None:
        if value:
            lines.append(f"{_t(key, lang)}: {value}")

    add("signer", verdict.signer)
    add("kid", verdict.signer_kid)
    add("signed", verdict.signing_time.isoformat() if verdict.signing_time else None)
    add("stamp", verdict.timestamp_time.isoformat() if verdict.timestamp_time else None)
    add("tsa", verdict.timestamp_authority)
    add("bundle", verdict.bundel_id)
    add("issued", verdict.uitgegeven_op)
    if verdict.sources:
        lines.append(f"{_t('sources', lang)}:")
        for source in verdict.sources:
            state = _T.get(source.provenance, (source.provenance, source.provenance))
            lines.append(
                f"  - {source.code}: {source.status}; {state[0] if lang == 'nl' else state[1]}"
            )
    for attachment in verdict.attachments:
        verdict_text = _t("valid" if attachment.ok else "invalid", lang)
        lines.append(f"{_t('attachment', lang)} ({attachment.format}): {verdict_text}")
    for problem in verdict.problems:
        lines.append(f"  ! {problem}")
    lines.append(_t("ok" if verdict.ok else "bad", lang))
    return "\n".join(lines)
