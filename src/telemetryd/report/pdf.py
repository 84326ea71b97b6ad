"""The SLA report as an A4 PDF: WeasyPrint lays out the parts, worker processes share the school pages.

WeasyPrint takes about 0.4 s of one core per school page, so a 300-school month laid out as one
document takes two minutes. The report is cut into parts instead: the front (title, summary,
table), runs of school pages, and the chain page at the end of the last run. Each part is laid
out in a worker process (one per CPU this process may use); pypdf joins them in order and then
does what no single part could:

* numbers every page "N / total" in the footer (a part cannot know where it starts before the
  parts before it are laid out, so no part prints numbers of its own);
* links each school's row in the table to its page (WeasyPrint drops links to pages it did
  not lay out);
* keeps every part's bookmarks, and the front's metadata: the same report, the same bytes.

A report of few schools, and school pages sent alone (`--school`), are one WeasyPrint document,
numbered the same way.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from pypdf import PdfReader, PdfWriter
from pypdf.annotations import Link
from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject

from telemetryd.report.figures import Report, SchoolReport
from telemetryd.report.render import document_html, school_pages
from telemetryd.templating import Language

SCHOOLS_PER_PART = 20
"""School pages per part: few enough that two processes share the work evenly, many enough
that a part's fixed cost (stylesheet, fonts) stays small."""
ONE_DOCUMENT_BELOW = 24
"""Fewer school pages than this are laid out as one document, without workers."""

PX = 0.75
"""PDF points per CSS px."""
# The footer as style.css would set it: 8 pt, #666, right-aligned at the 12 mm right margin,
# its baseline in the 16 mm bottom margin. Helvetica is one of the 14 fonts every PDF reader
# has, and its digits, space and slash have fixed widths, so no font is embedded or measured.
FOOTER_SIZE = 8.0
FOOTER_RIGHT = 12 / 25.4 * 72
FOOTER_BASELINE = 7 / 25.4 * 72
_HELVETICA_WIDTHS = {**dict.fromkeys("0123456789", 556), " ": 278, "/": 278}
_FOOTER_FONT = "/TelemetrydPageNumber"


@dataclass(frozen=True)
class Part:
    """One part laid out: its PDF, page count, and the table's links to school pages as
    (page in the part, x1, y1, x2, y2 in PDF points, school id)."""

    pdf: bytes
    pages: int
    links: tuple[tuple[int, float, float, float, float, str], ...]


def _lay_out(html: str) -> Part:
    """One part through WeasyPrint; internal links to pages of other parts are taken out and returned."""
    # 1 s of imports only PDFs pay; WeasyPrint ships no type information.
    from weasyprint import HTML  # type: ignore[import-untyped]  # noqa: PLC0415

    document = HTML(string=html).render()
    anchors = {name for page in document.pages for name in page.anchors}
    links = []
    for number, page in enumerate(document.pages):
        height = page.height * PX
        kept = []
        for link in page.links:
            kind, target, (x1, y1, x2, y2), *_ = link
            if kind == "internal" and target not in anchors:
                school = str(target).removeprefix("school-")
                links.append((number, x1 * PX, height - y2 * PX, x2 * PX, height - y1 * PX, school))
            else:
                kept.append(link)
        page.links[:] = kept
    pdf = document.write_pdf()
    if not isinstance(pdf, bytes):  # no target given: WeasyPrint returns the bytes
        raise TypeError(f"WeasyPrint returned {type(pdf).__name__}, not the PDF bytes")
    return Part(pdf, len(document.pages), tuple(links))


@dataclass(frozen=True)
class Job:
    """What one part holds (see document_html); pickled to the worker that lays it out."""

    report: Report
    lang: Language
    summary: object | None
    front: bool
    heading: bool
    pages: Sequence[SchoolReport]
    chain: bool
    links: bool


def _part(job: Job) -> Part:
    html = document_html(
        job.report,
        lang=job.lang,
        summary=job.summary,
        front=job.front,
        heading=job.heading,
        pages=job.pages,
        chain=job.chain,
        links=job.links,
        page_numbers=False,
    )
    return _lay_out(html)


def workers() -> int:
    """Processes to lay out parts in: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def render_pdf(
    report: Report,
    *,
    lang: Language = "en",
    summary: object | None = None,
    summary_only: bool = False,
    schools_only: bool = False,
    processes: int | None = None,
) -> bytes:
    """The HTML report (same options as render_html) as an A4 PDF; byte-identical for the same report.

    The document's dates are the period's end (``dcterms.created``/``modified`` in the HTML
    head), so nothing varies from run to run but what the report says (its "generated" time
    among them). `processes` defaults to workers().
    """
    pages = [] if summary_only else school_pages(report)
    front, heading = not schools_only, schools_only
    chain = not (summary_only or schools_only)
    links = not summary_only
    whole = Job(report, lang, summary, front, heading, pages, chain, links)
    count = processes or workers()
    # School pages sent alone (--school) keep their heading on the first school's page: one document.
    if front and len(pages) >= ONE_DOCUMENT_BELOW and count > 1:
        runs = [pages[i : i + SCHOOLS_PER_PART] for i in range(0, len(pages), SCHOOLS_PER_PART)]
        # The front's links point to pages of other parts; _join adds them.
        jobs = [replace(whole, pages=(), chain=False)]
        # The pickled report a part's worker gets holds only the part's schools.
        jobs += [
            Job(replace(report, schools=tuple(run)), lang, None, False, False, run, chain and i == len(runs) - 1, False)
            for i, run in enumerate(runs)
        ]
        # fork: the workers start at once, with WeasyPrint already imported if it was.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(count, len(jobs)), mp_context=context) as pool:
            # Joined in order as they arrive: the join overlaps the last parts' layout.
            return _join(pool.map(_part, jobs), [s.school.id for s in pages], parted=True)
    return _join([_part(whole)], [s.school.id for s in pages], parted=False)


def _join(parts: Iterable[Part], order: Sequence[str], *, parted: bool) -> bytes:
    """The parts (the front first) as one PDF: pages numbered, table rows linked to the school
    pages (`order`, when `parted`: in one document WeasyPrint links them itself), bookmarks kept."""
    writer = PdfWriter()
    front: Part | None = None
    for part in parts:
        reader = PdfReader(io.BytesIO(part.pdf))
        if front is None:
            front = part
            if reader.metadata is not None:
                writer.add_metadata({k: v for k, v in reader.metadata.items() if isinstance(v, str)})
        writer.append(reader, import_outline=True)
    if front is None:
        raise ValueError("no parts to join")
    starts = {school: front.pages + i for i, school in enumerate(order)} if parted else {}
    for page, x1, y1, x2, y2, school in front.links:
        if school in starts:
            writer.add_annotation(page, Link(rect=(x1, y1, x2, y2), target_page_index=starts[school]))
    _number(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def footer_width(text: str) -> float:
    """Width in points of a page-number footer ("12 / 310") in Helvetica at FOOTER_SIZE."""
    return sum(_HELVETICA_WIDTHS[c] for c in text) * FOOTER_SIZE / 1000


def _number(writer: PdfWriter) -> None:
    """Append "N / total" to every page's content, as the CSS footer would have drawn it."""
    total = len(writer.pages)
    font = writer._add_object(  # pypdf has no public way to add a shared object
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for number, page in enumerate(writer.pages, 1):
        text = f"{number} / {total}"
        x = float(page.mediabox.right) - FOOTER_RIGHT - footer_width(text)
        stream = _stream(
            f"q 0.4 g BT {_FOOTER_FONT} {FOOTER_SIZE:g} Tf {x:.2f} {FOOTER_BASELINE:.2f} Td ({text}) Tj ET Q".encode()
        )
        contents = page[NameObject("/Contents")]
        resolved = contents.get_object()
        streams: list[Any] = list(resolved) if isinstance(resolved, ArrayObject) else [contents]
        # The page's own drawing between q and Q, so its transformation does not move the footer.
        wrapped = [writer._add_object(_stream(b"q")), *streams, writer._add_object(_stream(b"Q"))]
        page[NameObject("/Contents")] = ArrayObject([*wrapped, writer._add_object(stream)])
        resources = page[NameObject("/Resources")].get_object()
        if not isinstance(resources, DictionaryObject):
            raise TypeError("a page without a resource dictionary")
        fonts = resources.get(NameObject("/Font"))
        if fonts is None:
            resources[NameObject("/Font")] = DictionaryObject({NameObject(_FOOTER_FONT): font})
        else:
            fonts.get_object()[NameObject(_FOOTER_FONT)] = font


def _stream(data: bytes) -> DecodedStreamObject:
    stream = DecodedStreamObject()
    stream.set_data(data)
    return stream
