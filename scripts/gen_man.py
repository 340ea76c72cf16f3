#!/usr/bin/python3
"""Generates the man pages tetherd(8), tether(1) and tether.ini(5) from docs/*.md, so the pages
are the documentation itself and can never drift from it (the build runs this whenever a doc
changes).

    gen_man.py PAGE DOCS_DIR OUT VERSION      PAGE: tetherd.8, tether.1 or tether.ini.5

Only the Markdown that the docs use is understood: headings, paragraphs, fenced code, tables,
bullet and numbered lists, `code`, **bold**, *emphasis* and [links](...).
"""

import re
import sys
from pathlib import Path

# page -> (title line, summary, [(doc, first heading, stop before heading or None)])
PAGES = {
    "tetherd.8": ("tetherd", "the tether connection-pooling HTTP/1.1 sidecar", [
        ("configuration.md", "## Command line", "## File syntax"),
        ("operations.md", "## Reload, upgrade and restart", "## Running as a Kubernetes sidecar"),
        ("operations.md", "## Error responses", "## Limits"),
        ("operations.md", "## Limits", None),
    ], "tether(1), tether.ini(5)"),
    "tether.1": ("tether", "command-line companion of tetherd: live view of its pools", [
        ("metrics.md", "## `tether top`", "## Overhead"),
    ], "tetherd(8), tether.ini(5)"),
    "tether.ini.5": ("tether.ini", "tetherd configuration file", [
        ("configuration.md", "## File syntax", None),
    ], "tetherd(8), tether(1)"),
}


def escape(text):
    return text.replace("\\", "\\e").replace("-", "\\-")


def inline(text):
    """Markdown inline markup to roff font escapes."""
    out, pos = [], 0
    pattern = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|\[([^\]]+)\]\([^)]*\)")
    for m in pattern.finditer(text):
        out.append(escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append("\\fB" + escape(m.group(1)) + "\\fR")
        elif m.group(2) is not None:
            out.append("\\fB" + inline(m.group(2)) + "\\fR")
        elif m.group(3) is not None:
            out.append("\\fI" + inline(m.group(3)) + "\\fR")
        else:
            out.append(inline(m.group(4)))
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def line_safe(text):
    """A roff text line must not start with '.' or "'"."""
    return "\\&" + text if text[:1] in (".", "'") else text


def cells(row):
    row = row.strip().strip("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def convert(markdown):
    lines = markdown.splitlines()
    out, i, para = [], 0, []

    def flush():
        if para:
            out.append(".PP")
            out.append(line_safe(inline(" ".join(para))))
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            i += 1
            out += [".PP", ".RS 4", ".nf", ".ft CR"]
            while i < len(lines) and not lines[i].strip().startswith("```"):
                out.append(line_safe(escape(lines[i])))
                i += 1
            out += [".ft R", ".fi", ".RE"]
        elif stripped.startswith("#"):
            flush()
            level = len(stripped) - len(stripped.lstrip("#"))
            title = stripped.lstrip("#").strip()
            out.append((".SH " if level <= 2 else ".SS ") + inline(title.upper() if level <= 2
                                                                    else title))
        elif stripped.startswith("|"):
            flush()
            header = cells(stripped)
            i += 2  # the header row and the |---| row
            while i < len(lines) and lines[i].strip().startswith("|"):
                row = cells(lines[i])
                out.append(".TP")
                out.append(line_safe(inline(row[0])))
                rest = [f"{header[k]}: {row[k]}" if k < len(header) and header[k] and k > 1
                        else row[k] for k in range(1, len(row)) if row[k]]
                out.append(line_safe(inline("; ".join(rest))))
                i += 1
            continue
        elif re.match(r"^(\s*)([-*]|\d+\.)\s+", line):
            flush()
            m = re.match(r"^(\s*)([-*]|\d+\.)\s+(.*)", line)
            item = [m.group(3)]
            i += 1
            while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith(
                    ("```", "|")) and not re.match(r"^\s*([-*]|\d+\.)\s+", lines[i]) \
                    and lines[i].startswith(" "):
                item.append(lines[i].strip())
                i += 1
            mark = "\\(bu" if m.group(2) in "-*" else m.group(2)
            out.append(f'.IP "{mark}" 4')
            out.append(line_safe(inline(" ".join(item))))
            continue
        elif not stripped:
            flush()
        else:
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out)


def section(text, start, stop):
    begin = text.index("\n" + start + "\n") + 1
    end = text.index("\n" + stop + "\n", begin) + 1 if stop else len(text)
    return text[begin:end]


def main():
    page, docs, out, version = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    name, summary, parts, see_also = PAGES[page]
    number = page.rsplit(".", 1)[1]
    body = [f'.TH "{name.upper()}" "{number}" "" "tether {version}" "tether"',
            ".SH NAME", f"{escape(name)} \\- {escape(summary)}"]
    for doc, start, stop in parts:
        body.append(convert(section((docs / doc).read_text(), start, stop)))
    body += [".SH SEE ALSO", escape(see_also),
             ".PP", "The full documentation: README.md and docs/ of the tether sources."]
    out.write_text("\n".join(body) + "\n")


if __name__ == "__main__":
    main()
