"""The readable Dutch PDF of a bundle, laid out with reportlab (unsigned, before PDF/A).

Every glyph comes from DejaVu Sans (Debian `fonts-dejavu-core`, a free licence that allows
embedding), embedded as a subset: PDF/A forbids relying on the reader's fonts, so no base-14
font (Helvetica) is used anywhere, not even as reportlab's initial font.
"""

from __future__ import annotations

import datetime as dt
import io
import zoneinfo
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from pyhanko.pdf_utils.metadata.model import VENDOR
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from gateway.errors import ConfigError

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
REGULAR = "DejaVuSans"
BOLD = "DejaVuSans-Bold"
TIMEZONE = "Europe/Amsterdam"
PRODUCER = VENDOR
BLUE = colors.HexColor("#154273")  # Rijkshuisstijl dark blue
LIGHT = colors.HexColor("#dce3ea")

STATUS_NL: Mapping[str, str] = {
    "ok": "gegevens ontvangen",
    "geen_gegevens": "geen gegevens over u",
    "niet_opgevraagd": "niet opgevraagd",
    "onbereikbaar": "NIET BEREIKT: de organisatie was niet bereikbaar",
    "time-out": "NIET BEREIKT: de organisatie antwoordde niet op tijd",
    "ongeldig": "NIET BEREIKT: het antwoord was ongeldig of niet goed ondertekend",
}
EVENT_NL: Mapping[str, str] = {
    "FinancieleVerplichtingOpgelegd": "Verplichting opgelegd",
    "FinancieleVerplichtingGecorrigeerd": "Verplichting gecorrigeerd",
    "FinancieleVerplichtingKwijtgescholden": "Kwijtgescholden",
    "BetalingsverplichtingOpgelegd": "Betaalverzoek",
    "BetalingsverplichtingIngetrokken": "Betaalverzoek ingetrokken",
    "BetalingVerwerkt": "Betaling verwerkt",
}
FREQUENTIE_NL: Mapping[str, str] = {
    "week": "per week",
    "vier_weken": "per vier weken",
    "maand": "per maand",
    "kwartaal": "per kwartaal",
    "jaar": "per jaar",
}
REGELING_NL: Mapping[str, str] = {
    "actief": "loopt",
    "beeindigd": "beëindigd",
    "afgebroken": "afgebroken",
}
CONTACT_NL: Mapping[str, str] = {
    "telefoon": "Telefoon",
    "email": "E-mail",
    "website": "Website",
    "post": "Post",
}
# The PDF is for reading: per case the latest events; the attachments hold all of them.
EVENTS_SHOWN = 12
MONTHS_NL = (
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
)


def euro(cents: int | None) -> str:
    """Dutch notation: `€ 1.234,56`, `€ -12,00`; an absent amount is a dash."""
    if cents is None:
        return "–"
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"€ {sign}{whole:,}".replace(",", ".") + f",{rest:02d}"


def kort(text: str | None) -> str:
    """`2024-03-01` -> `01-03-2024`, the Dutch numeric date for table columns."""
    if not text:
        return "–"
    day = dt.date.fromisoformat(text[:10])
    return f"{day.day:02d}-{day.month:02d}-{day.year}"


def datumtijd(text: str) -> str:
    """An RFC 3339 time in Dutch, on Dutch clock time."""
    when = dt.datetime.fromisoformat(text).astimezone(zoneinfo.ZoneInfo(TIMEZONE))
    return f"{when.day} {MONTHS_NL[when.month - 1]} {when.year} om {when:%H:%M} uur"


@cache
def register_fonts(font_dir: Path = FONT_DIR) -> None:
    for name, file in ((REGULAR, "DejaVuSans.ttf"), (BOLD, "DejaVuSans-Bold.ttf")):
        path = font_dir / file
        if not path.exists():
            raise ConfigError(
                f"font {path} is missing: install the Debian package fonts-dejavu-core "
                "(deploy/dev/system-packages.sh does)"
            )
        pdfmetrics.registerFont(TTFont(name, str(path)))
    pdfmetrics.registerFontFamily(
        REGULAR, normal=REGULAR, bold=BOLD, italic=REGULAR, boldItalic=BOLD
    )


@cache
def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("base", fontName=REGULAR, fontSize=9.5, leading=13, alignment=TA_LEFT)
    return {
        "body": base,
        "small": ParagraphStyle("small", parent=base, fontSize=8, leading=10),
        "cell": ParagraphStyle("cell", parent=base, fontSize=8, leading=10),
        "cellb": ParagraphStyle("cellb", parent=base, fontName=BOLD, fontSize=8, leading=10),
        "title": ParagraphStyle(
            "title", parent=base, fontName=BOLD, fontSize=17, leading=22, textColor=BLUE
        ),
        "h2": ParagraphStyle(
            "h2",
            parent=base,
            fontName=BOLD,
            fontSize=13,
            leading=17,
            spaceBefore=10,
            spaceAfter=4,
            textColor=BLUE,
        ),
        "h3": ParagraphStyle(
            "h3", parent=base, fontName=BOLD, fontSize=10.5, leading=14, spaceBefore=6, spaceAfter=2
        ),
        "alert": ParagraphStyle(
            "alert",
            parent=base,
            fontName=BOLD,
            textColor=colors.HexColor("#8b0000"),
            borderColor=colors.HexColor("#8b0000"),
            borderWidth=1,
            borderPadding=5,
            spaceBefore=4,
            spaceAfter=8,
        ),
    }


def _p(text: str, style: str = "body") -> Paragraph:
    return Paragraph(text, _styles()[style])


def _t(text: object) -> str:
    return escape(str(text))


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    widths: Sequence[float],
    numeric: Sequence[int] = (),
    wrap: Sequence[int] = (),
) -> Table:
    """A table; only the `wrap` columns get (slower) wrapping paragraphs, the rest plain text."""
    data: list[list[Any]] = [list(header)]
    data += [[_p(_t(c), "cell") if i in wrap else c for i, c in enumerate(row)] for row in rows]
    table = Table(data, colWidths=[w * mm for w in widths], repeatRows=1 if header[0] else 0)
    style: list[tuple[Any, ...]] = [
        ("FONTNAME", (0, 0), (-1, -1), REGULAR),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("LEADING", (0, 0), (-1, -1), 10),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]
    if header[0]:
        style += [("BACKGROUND", (0, 0), (-1, 0), LIGHT), ("FONTNAME", (0, 0), (-1, 0), BOLD)]
    for column in numeric:
        style.append(("ALIGN", (column, 0), (column, -1), "RIGHT"))
    table.setStyle(TableStyle(style))
    return table


def _bron(bron: Mapping[str, Any]) -> list[Flowable]:
    org = bron["organisatie"]
    out: list[Flowable] = [_p(_t(org["naam"]), "h2")]
    status = bron["status"]
    if status not in ("ok", "geen_gegevens"):
        out.append(
            _p(
                f"Deze organisatie is niet bereikt ({_t(STATUS_NL.get(status, status))}). "
                "Dit overzicht bevat daarom géén gegevens van deze organisatie; dat betekent "
                "niet dat u daar niets open heeft staan. "
                + (_t(bron["toelichting"]) if bron.get("toelichting") else ""),
                "alert",
            )
        )
    else:
        opgehaald = datumtijd(bron["opgehaald_op"]) if bron.get("opgehaald_op") else "–"
        out.append(_p(f"Status: {_t(STATUS_NL.get(status, status))}. Opgehaald op {opgehaald}."))
    gegevens = bron["gegevens"]
    zaken = gegevens["financiele_zaken"]
    if zaken:
        out.append(_p("Financiële zaken", "h3"))
        rows = [
            [
                z["zaakkenmerk"],
                z["omschrijving"],
                euro(z["totaal_financieel_verplicht"]),
                euro(z["totaal_financieel_vereffend"]),
                euro(z["totaal_financieel_kwijtgescholden"]),
                euro(z["saldo"]),
            ]
            for z in zaken
        ]
        rows.append(
            [
                "Totaal",
                "",
                euro(sum(z["totaal_financieel_verplicht"] for z in zaken)),
                euro(sum(z["totaal_financieel_vereffend"] for z in zaken)),
                euro(sum(z["totaal_financieel_kwijtgescholden"] for z in zaken)),
                euro(sum(z["saldo"] for z in zaken)),
            ]
        )
        out.append(
            _table(
                ["Kenmerk", "Omschrijving", "Opgelegd", "Betaald", "Kwijtgescholden", "Saldo"],
                rows,
                [30, 42, 25, 25, 30, 26],
                numeric=(2, 3, 4, 5),
                wrap=(0, 1),
            )
        )
        for z in zaken:
            out.append(
                _p(
                    f"{_t(z['zaakkenmerk'])}: {_t(z['omschrijving'])} "
                    f"({_t(z['verplichtingtype'])}; {_t(z['juridische_grondslag'])})",
                    "h3",
                )
            )
            shown = z["gebeurtenissen"][-EVENTS_SHOWN:]
            hidden = len(z["gebeurtenissen"]) - len(shown)
            if hidden:
                out.append(
                    _p(
                        f"De laatste {len(shown)} van {len(z['gebeurtenissen'])} gebeurtenissen; "
                        "alle gebeurtenissen staan in de bijlagen (JSON en XML).",
                        "small",
                    )
                )
            events = [
                [
                    kort(g["datumtijd"]),
                    EVENT_NL.get(g["gebeurtenis_type"], g["gebeurtenis_type"])
                    + (f" ({g['aanschrijvingstype']})" if g.get("aanschrijvingstype") else ""),
                    g["omschrijving"]
                    + (f" — vervalt {kort(g['vervaldatum'])}" if g.get("vervaldatum") else ""),
                    euro(g["bedrag"]),
                ]
                for g in shown
            ]
            if events:
                out.append(
                    _table(
                        ["Datum", "Gebeurtenis", "Omschrijving", "Bedrag"],
                        events,
                        [26, 42, 86, 24],
                        numeric=(3,),
                        wrap=(2,),
                    )
                )
    regelingen = gegevens["betalingsregelingen"]
    if regelingen:
        out.append(_p("Betalingsregelingen", "h3"))
        out.append(
            _table(
                ["Kenmerk", "Omschrijving", "Termijn", "Looptijd", "Status"],
                [
                    [
                        r["kenmerk"],
                        r["omschrijving"] + " (zaken: " + ", ".join(r["zaakkenmerken"]) + ")",
                        f"{euro(r['termijnbedrag'])} {FREQUENTIE_NL.get(r['frequentie'], '')}",
                        f"{kort(r['startdatum'])} – {kort(r['einddatum'])}",
                        REGELING_NL.get(r["status"], r["status"]),
                    ]
                    for r in regelingen
                ],
                [28, 62, 34, 36, 18],
                wrap=(0, 1, 2, 3),
            )
        )
    inkomsten = gegevens["inkomsten"]
    if inkomsten:
        out.append(_p("Inkomen en uitkeringen", "h3"))
        out.append(
            _table(
                ["Omschrijving", "Verstrekker", "Bruto", "Netto", "Periode"],
                [
                    [
                        i["omschrijving"],
                        i["verstrekker"],
                        f"{euro(i['bedrag_bruto'])} {FREQUENTIE_NL.get(i['frequentie'], '')}",
                        euro(i["bedrag_netto"]),
                        f"{kort(i['periode_start'])} – {kort(i['periode_eind'])}",
                    ]
                    for i in inkomsten
                ],
                [50, 40, 32, 22, 34],
                numeric=(2, 3),
                wrap=(0, 1, 2, 4),
            )
        )
    if status == "geen_gegevens" or (status == "ok" and not (zaken or regelingen or inkomsten)):
        out.append(_p("Deze organisatie heeft geen financiële gegevens over u."))
    if bron["contactopties"]:
        out.append(_p("Contact", "h3"))
        out.append(
            _table(
                ["Hoe", "Gegevens", "Waarvoor"],
                [
                    [
                        CONTACT_NL.get(c["contactvorm"], c["contactvorm"]),
                        c["waarde"],
                        c["omschrijving"],
                    ]
                    for c in bron["contactopties"]
                ],
                [20, 68, 90],
                wrap=(1, 2),
            )
        )
    return out


def layout_pdf(document: Mapping[str, Any], *, canonical_sha256: str, verify_url: str) -> bytes:
    """The unsigned PDF (reportlab); `gateway.documents.pdf` adds the PDF/A parts and seal."""
    register_fonts()
    buffer = io.BytesIO()
    title = "Overzicht van uw financiële gegevens"
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=16 * mm,
        rightMargin=16 * mm,
        topMargin=16 * mm,
        bottomMargin=18 * mm,
        title=title,
        author=document["uitgever"]["naam"],
        subject="Blauwe Knop: gewaarmerkt overzicht",
        creator="Blauwe Knop gateway",
        # PDF/A: the information dictionary must equal the XMP, which pyHanko writes with its
        # own name as producer; reportlab's would make the two differ.
        producer=PRODUCER,
        lang="nl-NL",
        initialFontName=REGULAR,
        invariant=True,
    )
    bronnen = document["bronnen"]
    story: list[Flowable] = [
        _p(title, "title"),
        Spacer(1, 3 * mm),
        _p(
            "Dit is een <b>gewaarmerkt</b> overzicht van de financiële gegevens die "
            "overheidsorganisaties over u hebben, zoals u het via de Blauwe Knop heeft "
            "opgevraagd. U kunt het bijvoorbeeld aan uw schuldhulpverlener geven. Het document "
            "is digitaal ondertekend (verzegeld): wie het controleert, ziet of het echt is en "
            "of er niets aan veranderd is."
        ),
        Spacer(1, 2 * mm),
        _table(
            ["", ""],
            [
                ["Gemaakt op", datumtijd(document["uitgegeven_op"])],
                ["Voor burgerservicenummer", document["bsn"]],
                [
                    "Uitgegeven door",
                    f"{document['uitgever']['naam']} (OIN {document['uitgever']['oin']})",
                ],
                ["Kenmerk van dit overzicht", document["bundel_id"]],
            ],
            [50, 128],
            wrap=(1,),
        ),
        _p("Samenvatting", "h2"),
        _table(
            ["Organisatie", "Resultaat", "Zaken", "Openstaand saldo"],
            [
                [
                    b["organisatie"]["naam"],
                    STATUS_NL.get(b["status"], b["status"]),
                    str(len(b["gegevens"]["financiele_zaken"])),
                    euro(sum(z["saldo"] for z in b["gegevens"]["financiele_zaken"]))
                    if b["status"] in ("ok", "geen_gegevens")
                    else "onbekend",
                ]
                for b in bronnen
            ],
            [62, 70, 14, 32],
            numeric=(2, 3),
            wrap=(0, 1),
        ),
    ]
    missing = [b for b in bronnen if b["status"] not in ("ok", "geen_gegevens", "niet_opgevraagd")]
    if missing:
        story.append(
            _p(
                "Let op: niet alle organisaties zijn bereikt: "
                + ", ".join(_t(b["organisatie"]["naam"]) for b in missing)
                + ". Van hen staat niets in dit overzicht. Vraag het overzicht later opnieuw "
                "op of neem contact op met die organisatie.",
                "alert",
            )
        )
    total = sum(z["saldo"] for b in bronnen for z in b["gegevens"]["financiele_zaken"])
    story.append(Spacer(1, 2 * mm))
    story.append(
        _p(f"<b>Totaal openstaand saldo bij de bereikte organisaties: {_t(euro(total))}</b>")
    )
    for bron in bronnen:
        story.extend(_bron(bron))
    story.append(
        KeepTogether(
            [
                _p("Hoe controleert u dit document?", "h2"),
                _p(
                    "Dit PDF-document is verzegeld met het certificaat van de uitgever en draagt "
                    "een tijdstempel (PAdES). Een PDF-lezer zoals Adobe Acrobat Reader toont de "
                    "handtekening; verandert er ook maar één teken, dan is de handtekening "
                    "ongeldig. In het document zitten als bijlage dezelfde gegevens als JSON "
                    "(met JWS-zegel) en als XML (met XAdES-zegel), en daarin van elke "
                    "organisatie haar eigen, door haarzelf ondertekende antwoord."
                ),
                _p(
                    f"Controleren kan op {_t(verify_url)} (sleep het bestand op de pagina) of met "
                    "het programma <b>blauweknop verify</b> op dit bestand. Controle laat zien "
                    "wie het document verzegelde, wanneer, en of elke organisatie haar eigen "
                    "gegevens ondertekende."
                ),
                _p(
                    f"Kenmerk {_t(document['bundel_id'])}; SHA-256 van de gegevens (RFC 8785): "
                    f"{_t(canonical_sha256)}.",
                    "small",
                ),
            ]
        )
    )

    def footer(canvas: Any, doc_: Any) -> None:
        canvas.saveState()
        canvas.setFont(REGULAR, 7.5)
        canvas.setFillColor(colors.grey)
        canvas.drawString(
            16 * mm, 10 * mm, f"Blauwe Knop — gewaarmerkt overzicht {document['bundel_id']}"
        )
        canvas.drawRightString(A4[0] - 16 * mm, 10 * mm, f"pagina {doc_.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
