"""Build the real-document fixtures under benchmarks/data/ (issue 22).

Two steps, so that anyone can see and redo the extraction, and see that no label comes from code:

    # 1. extract: raw texts only, no labels, into drafts (needs python3-doc, man-db, manpages,
    #    manpages-dev and the other Debian packages named in benchmarks/data/README.md, and
    #    trafilatura: `pip install -e '.[web]'`)
    python benchmarks/build_real_documents.py extract --out-dir runs/real_documents
    # 2. build: join the drafts with the labels written by a person after reading each text
    #    (benchmarks/data/real_documents_labels.jsonl), the web-style junk pages written for the
    #    project (benchmarks/data/web_junk.jsonl) and the injection wordings
    #    (benchmarks/data/injection_wordings.jsonl); writes real_documents.jsonl,
    #    real_corpus.jsonl and injection_pages.jsonl
    python benchmarks/build_real_documents.py build --drafts runs/real_documents

Sources and licences (each checked; see benchmarks/data/README.md):
- `pydoc_data.topics` of the running Python, and Debian's python3-doc HTML: PSF-2.0;
- installed distributions' long descriptions (`importlib.metadata`), licence from their metadata,
  permissive licences only;
- man pages rendered with `man`, only those whose licence (the SPDX line in the page source, the
  notice in the page, or the Debian copyright file) allows redistribution without the GPL's terms;
- licence texts and changelogs of permissively licensed packages.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html as html_lib
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
PYDOC_HTML = Path("/usr/share/doc/python3-doc/html")
MAX_CHARS = 6000
MIN_CHARS = 300

# ----------------------------------------------------------------------------- text extraction


def trafilatura_text(page_html: str) -> str:
    """Main text as datatrove's Trafilatura extractor gets it (its default settings)."""
    import trafilatura

    return trafilatura.extract(page_html, favor_precision=True, include_comments=False, deduplicate=True) or ""


_BLOCK = {"p", "div", "section", "li", "ul", "ol", "dl", "dt", "dd", "pre", "table", "tr", "h1", "h2",
          "h3", "h4", "h5", "h6", "br", "hr", "blockquote", "form", "nav", "header", "footer", "title"}


def crude_text(page_html: str) -> str:
    """A whole page as text, navigation and all, as a user without an extractor would make it:
    tags dropped, a line break at each block element, scripts and styles removed."""
    import lxml.html

    root = lxml.html.fromstring(page_html)
    for bad in root.xpath("//script|//style|//noscript"):
        bad.drop_tree()
    parts: list[str] = []

    def walk(el) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag == "pre":  # code keeps its indentation: a marker line per line, undone below
            parts.append("\n" + "\n".join("\x00" + ln for ln in el.text_content().splitlines()) + "\n")
            return
        if tag in _BLOCK:
            parts.append("\n")
        if el.text:
            parts.append(el.text)
        for child in el:
            walk(child)
            if child.tail:
                parts.append(child.tail)
        if tag in _BLOCK:
            parts.append("\n")

    walk(root)
    text = html_lib.unescape("".join(parts)).replace("\xa0", " ")
    lines = [ln[1:].rstrip() if ln.startswith("\x00") else re.sub(r"[ \t]+", " ", ln).strip()
             for ln in text.splitlines()]
    out: list[str] = []
    for ln in lines:
        if ln or (out and out[-1]):
            out.append(ln)
    return "\n".join(out).strip()


def only_section(page_html: str, section_id: str) -> str:
    """The page with its main body cut down to one section (its heading and everything under it);
    header, sidebar and footer stay as they are."""
    import lxml.html

    root = lxml.html.fromstring(page_html)
    target = root.xpath(f'//section[@id="{section_id}"] | //div[@id="{section_id}"]')
    if not target:
        raise SystemExit(f"section {section_id!r} not found")
    node = target[0]
    body = root.xpath('//div[@class="body"]')[0]
    while node is not body:
        parent = node.getparent()
        for sib in list(parent):
            if sib is not node:
                parent.remove(sib)
        parent.text = None
        node = parent
    return lxml.html.tostring(root, encoding="unicode")


def cap(text: str, limit: int = MAX_CHARS) -> tuple[str, bool]:
    """At most `limit` characters, cut at the last paragraph (else line) break before it."""
    if len(text) <= limit:
        return text, False
    cut = text.rfind("\n\n", 0, limit)
    if cut < limit // 2:
        cut = text.rfind("\n", 0, limit)
    return text[:cut].rstrip(), True


# ----------------------------------------------------------------------------- sources


def pydoc_topic(key: str) -> dict:
    from pydoc_data.topics import topics

    text, cut = cap(topics[key].strip())
    return {"id": f"pydoc-topic-{key}", "type": "pydoc-topic",
            "source": f"pydoc_data.topics[{key!r}] (Python {sys.version.split()[0]})"
                      + (", first part, cut at a paragraph break" if cut else ""),
            "licence": "PSF-2.0", "notice": PSF_NOTICE, "text": text}


def pydoc_html(path: str, kind: str, section: str | None = None, mode: str = "trafilatura") -> dict:
    """One page (or one section of it) of Debian's python3-doc, as trafilatura or crude text."""
    file = PYDOC_HTML / path
    raw = gzip.open(file, "rt", encoding="utf-8").read() if path.endswith(".gz") else file.read_text("utf-8")
    if section:
        raw = only_section(raw, section)
    text = trafilatura_text(raw) if mode == "trafilatura" else crude_text(raw)
    text, cut = cap(text.strip())
    stem = re.sub(r"\.html(\.gz)?$", "", path).replace("/", "-")
    ident = f"pyhtml-{stem}" + (f"--{section}" if section else "") + ("-crude" if mode == "crude" else "")
    src = f"python3-doc {PY_DOC_VERSION}: html/{path}"
    if section:
        src += f', section #{section}'
    src += ", trafilatura text" if mode == "trafilatura" else ", crude full-page text (navigation kept)"
    if cut:
        src += ", cut at a paragraph break"
    return {"id": ident, "type": kind, "source": src, "licence": "PSF-2.0", "notice": PSF_NOTICE, "text": text}


def _debian_version(pkg: str) -> str:
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


PY_DOC_VERSION = _debian_version("python3-doc")

PERMISSIVE = re.compile(r"\b(MIT|BSD|Apache|ISC|PSF|Python Software Foundation|MPL|0BSD|Unlicense|Zlib|HPND|"
                        r"MIT-CMU|Expat)\b", re.I)
COPYLEFT = re.compile(r"\bGPL|General Public\b", re.I)


def dist_licence(dist) -> str | None:
    """The distribution's licence from its metadata (License-Expression, License, classifiers);
    None unless it is permissive."""
    meta = dist.metadata
    expr = (meta.get("License-Expression") or "").strip()
    lic = (meta.get("License") or "").strip()
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License")]
    for cand in [expr, lic if len(lic) < 60 else "", *classifiers, lic[:200]]:
        if cand and PERMISSIVE.search(cand) and not (COPYLEFT.search(cand) and " OR " not in cand):
            short = cand if len(cand) < 60 else cand.splitlines()[0][:60]
            return short
    return None


def dist_notice(dist) -> str | None:
    """The copyright lines of a distribution's licence file (its holders, to credit with the text)."""
    for f in dist.files or []:
        if re.search(r"(LICEN[CS]E|COPYING)[^/]*$", str(f), re.I):
            try:
                lines = Path(f.locate()).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            found = [ln.strip() for ln in lines if re.match(r"\s*(copyright|\(c\)|©)", ln, re.I)]
            if found:
                return "; ".join(found[:4])[:600]
    return None


def distributions() -> dict[str, object]:
    out: dict[str, object] = {}
    for dist in md.distributions():
        name = (dist.metadata.get("Name") or "").strip()
        if name and name.lower() not in out and name.lower() != "backforth":
            out[name.lower()] = dist
    return out


def package_description(name: str, dists: dict, heading: str | None = None, kind: str = "package-description") -> dict | None:
    """A distribution's long description, or the part of it from one heading on (a README's
    changelog section, say)."""
    dist = dists.get(name.lower())
    lic = dist_licence(dist) if dist else None
    if lic is None:
        return None
    text = (dist.metadata.get_payload() or dist.metadata.get("Description") or "").strip()
    if heading:
        m = re.search(rf"(?m)^{re.escape(heading)}\n[=~-]+\s*$", text)
        if not m:
            raise SystemExit(f"{name}: heading {heading!r} not found")
        text = text[m.start():]
    text, cut = cap(text)
    real = dist.metadata["Name"]
    slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") if heading else ""
    prefix = "changelog" if kind == "changelog" else "pkg"
    return {"id": f"{prefix}-{real.lower()}" + (f"--{slug}" if slug else ""), "type": kind,
            "source": f"{real} {dist.version}: long description (importlib.metadata)"
                      + (f", from the heading {heading!r}" if heading else "")
                      + (", first part, cut at a paragraph break" if cut else ""),
            "licence": lic, "notice": dist_notice(dist), "text": text}


def licence_file(name: str, dists: dict) -> dict | None:
    dist = dists[name.lower()]
    lic = dist_licence(dist)
    files = [f for f in dist.files or [] if re.search(r"(LICEN[CS]E|COPYING)[^/]*$", str(f), re.I)]
    if lic is None or not files:
        return None
    text, cut = cap(Path(files[0].locate()).read_text(encoding="utf-8", errors="replace").strip())
    real = dist.metadata["Name"]
    return {"id": f"licence-{real.lower()}", "type": "licence-text",
            "source": f"{real} {dist.version}: {files[0]}" + (", first part" if cut else ""),
            "licence": lic, "text": text}


def common_licence(name: str, licence: str) -> dict:
    text, cut = cap(Path(f"/usr/share/common-licenses/{name}").read_text("utf-8").strip())
    return {"id": f"licence-common-{name.lower()}", "type": "licence-text",
            "source": f"/usr/share/common-licenses/{name} (Debian base-files)" + (", first part" if cut else ""),
            "licence": licence, "text": text}


# Man pages, with the licence each one carries and how that was checked. Pages of the Linux
# man-pages project carry an SPDX line in their source; the script checks it (`spdx`). Other
# packages' pages: the notice in the page source or the page's own COPYRIGHT section, else the
# package's Debian copyright file (`how`). GPL-licensed pages (most GNU tools, the man-pages files
# marked GPL) are left out.
MAN_LICENCES = {
    "ssh": ("BSD-2-Clause", "notice in the page source (OpenSSH)"),
    "ssh_config": ("BSD-2-Clause", "notice in the page source (OpenSSH)"),
    "ssh-keygen": ("BSD-2-Clause", "notice in the page source (OpenSSH)"),
    "scp": ("BSD-2-Clause", "notice in the page source (OpenSSH)"),
    "ssh-agent": ("BSD-2-Clause", "notice in the page source (OpenSSH)"),
    "sshd_config": ("BSD-2-Clause", "notice in the page source (OpenSSH)"),
    "tmux": ("ISC", "notice in the page source"),
    "curl": ("curl", "SPDX line in the page source"),
    "zstd": ("BSD-3-Clause", "zstd is BSD-3-Clause or GPL-2.0 (Debian copyright); BSD-3-Clause chosen"),
    "sqlite3": ("public-domain", "Debian copyright of sqlite3: public domain"),
    "cmake": ("BSD-3-Clause", "CMake's documentation licence (Debian copyright of cmake)"),
    "ctest": ("BSD-3-Clause", "CMake's documentation licence (Debian copyright of cmake)"),
    "file": ("BSD-2-Clause", "Debian copyright of file (BSD-2-Clause-alike)"),
    "openssl": ("Apache-2.0", "COPYRIGHT section of the page (OpenSSL 3, Apache-2.0)"),
    "python3.11": ("PSF-2.0", "Python's licence (Debian copyright of python3.11)"),
    "lz4": ("BSD-2-Clause", "lz4 programs GPL-2+ or BSD-2-Clause per Debian copyright; the manual page is from the BSD-2-Clause library tree"),
    "xz": ("public-domain", "notice in the page source: 'This file has been put into the public domain.'"),
}
MAN_SPDX_OK = {"Linux-man-pages-copyleft", "BSD-3-Clause", "BSD-2-Clause", "MIT", "0BSD", "curl"}
# The man-pages project's older licence markers. Only the public-domain one is taken: the others
# (VERBATIM_ONE_PARA, PERMISSIVE_MISC, ...) ask for the page's source header to travel with every copy,
# which a rendered page does not carry, and Debian's copyright file files those pages under GPL-2+.
MAN_MARKERS_OK = {"PUBLIC_DOMAIN": "public-domain"}
PSF_NOTICE = "Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved"


def debian_notice(path: str) -> str | None:
    """The first Copyright field of the Debian copyright file of the package that owns `path`."""
    try:
        pkg = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, check=True).stdout.split(":")[0]
        text = Path(f"/usr/share/doc/{pkg}/copyright").read_text(errors="replace")
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"^Copyright:\s*(.+(?:\n[ \t]+.+)*)", text, re.M)
    return re.sub(r"\s+", " ", m.group(1)).strip()[:600] if m else None


def man_source(name: str, section: str) -> Path:
    out = subprocess.run(["man", "-w", section, name], capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def man_page(name: str, section: str) -> dict:
    src = man_source(name, section)
    head = (gzip.open(src, "rt", errors="replace") if src.suffix == ".gz" else open(src, errors="replace")).read()
    spdx = re.search(r"SPDX-License-Identifier:\s*(\S+)", head[:6000])
    marker = re.search(r"%%%LICENSE_START\((\w+)\)", head[:6000])
    base = name.split("-")[0] if section == "1ssl" or name.startswith("openssl") else name
    if spdx:
        lic, how = spdx.group(1), "SPDX line in the page source"
        if lic not in MAN_SPDX_OK:
            raise SystemExit(f"man {section} {name}: licence {lic} is not one we ship")
    elif marker:
        if marker.group(1) not in MAN_MARKERS_OK:
            raise SystemExit(f"man {section} {name}: licence {marker.group(1)} is not one we ship")
        if re.search(r"copyright", head[:6000], re.I):
            raise SystemExit(f"man {section} {name}: public-domain marker but parts under copyright; left out")
        lic, how = MAN_MARKERS_OK[marker.group(1)], f"%%%LICENSE_START({marker.group(1)}) notice in the page source"
    elif base in MAN_LICENCES:
        lic, how = MAN_LICENCES[base]
    else:
        raise SystemExit(f"man {section} {name}: no licence known; add it to MAN_LICENCES after checking")
    env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0", LANG="C.UTF-8")
    text = subprocess.run(["man", "-P", "cat", section, name], capture_output=True, text=True, env=env,
                          check=True).stdout
    text = re.sub(r".\x08", "", text)  # overstrike bold/underline, should any remain
    text, cut = cap(text.strip())
    word = "public domain" if lic == "public-domain" else "copyright"
    notices = [ln.lstrip('.\\" *').strip() for ln in head[:6000].splitlines()
               if re.match(r'^\.\\"', ln) and re.search(word, ln, re.I)]
    return {"id": f"man-{name}.{section}", "type": "man-page",
            "source": f"man {section} {name} ({src.name}, MANWIDTH=80)" + (", first part" if cut else ""),
            "licence": lic, "licence_checked": how,
            "notice": "; ".join(notices)[:600] or debian_notice(str(src)), "text": text}


def changelog_file(path: str, ident: str, licence: str, start: int = 0) -> dict:
    raw = gzip.open(path, "rt", errors="replace").read() if path.endswith(".gz") else Path(path).read_text()
    text, cut = cap(raw[start:].strip())
    notice = debian_notice(path)
    return {"id": f"changelog-{ident}", "type": "changelog", "notice": notice,
            "source": f"{path}" + (f", from character {start}" if start else "") + (", first part" if cut else ""),
            "licence": licence, "text": text}


# ----------------------------------------------------------------------------- what the labelled set takes
# Picks are fixed lists, not samples: the same machine gives the same draft. A person read every
# extracted text and wrote its label; the script only extracts.

PYDOC_TOPICS = [
    "assert", "async", "atom-identifiers", "atom-literals", "augassign", "binary", "bitwise",
    "bltin-code-objects", "booleans", "break", "class", "context-managers", "conversions", "del", "dict",
    "dynamic-features", "exceptions", "floating", "for", "global", "id-classes", "identifiers", "if",
    "integers", "lambda", "nonlocal", "numeric-types", "objects", "power", "raise", "return",
    "sequence-types", "slicings", "specialattrs", "subscriptions", "truth", "typesmethods", "while", "with",
    "operator-summary",
]

T, C = "trafilatura", "crude"
# (path, type, section id or None, mode); about a third crude
PYDOC_PAGES: list[tuple[str, str, str | None, str]] = [
    ("howto/sorting.html", "python-howto", "key-functions", C),
    ("howto/logging.html", "python-howto", "logging-to-a-file", T),
    ("howto/regex.html", "python-howto", "grouping", T),
    ("howto/argparse.html", "python-howto", "introducing-optional-arguments", T),
    ("howto/descriptor.html", "python-howto", "properties", C),
    ("howto/enum.html", "python-howto", "functional-api", T),
    ("howto/functional.html", "python-howto", "generator-expressions-and-list-comprehensions", T),
    ("howto/functional.html", "python-howto", "references", T),
    ("howto/ipaddress.html", "python-howto", "defining-networks", C),
    ("howto/logging-cookbook.html", "python-howto", "using-file-rotation", T),
    ("howto/sockets.html", "python-howto", "creating-a-socket", T),
    ("howto/unicode.html", "python-howto", "converting-to-bytes", C),
    ("howto/urllib2.html", "python-howto", "headers", T),
    ("howto/annotations.html", "python-howto", "annotations-quirks", T),
    ("howto/pyporting.html", "python-howto", "check-which-dependencies-block-your-transition", C),
    ("tutorial/appetite.html", "python-tutorial", None, T),
    ("tutorial/classes.html", "python-tutorial", "inheritance", T),
    ("tutorial/controlflow.html", "python-tutorial", "default-argument-values", C),
    ("tutorial/datastructures.html", "python-tutorial", "list-comprehensions", T),
    ("tutorial/errors.html", "python-tutorial", "handling-exceptions", T),
    ("tutorial/floatingpoint.html", "python-tutorial", "representation-error", C),
    ("tutorial/inputoutput.html", "python-tutorial", "saving-structured-data-with-json", T),
    ("tutorial/modules.html", "python-tutorial", "the-module-search-path", C),
    ("tutorial/stdlib2.html", "python-tutorial", "templating", T),
    ("tutorial/venv.html", "python-tutorial", "creating-virtual-environments", T),
    ("tutorial/whatnow.html", "python-tutorial", None, T),
    ("tutorial/interactive.html", "python-tutorial", None, C),
    ("library/pathlib.html", "python-library", "basic-use", C),
    ("library/json.html", "python-library", "basic-usage", T),
    ("library/collections.html", "python-library", "defaultdict-examples", T),
    ("library/subprocess.html", "python-library", "frequently-used-arguments", T),
    ("library/datetime.html", "python-library", "strftime-and-strptime-format-codes", T),
    ("library/csv.html", "python-library", "examples", C),
    ("library/sqlite3.html", "python-library", "how-to-use-placeholders-to-bind-values-in-sql-queries", T),
    ("library/dataclasses.html", "python-library", "mutable-default-values", T),
    ("library/contextlib.html", "python-library", "replacing-any-use-of-try-finally-and-flag-variables", C),
    ("library/secrets.html", "python-library", "recipes-and-best-practices", T),
    ("library/heapq.html", "python-library", "priority-queue-implementation-notes", T),
    ("library/bisect.html", "python-library", "searching-sorted-lists", C),
    ("library/asyncio-task.html", "python-library", "timeouts", T),
    ("library/unittest.mock.html", "python-library", "where-to-patch", T),
    ("library/tkinter.html", "python-library", "a-hello-world-program", C),
    ("library/zipfile.html", "python-library", "command-line-interface", T),
    ("library/crypt.html", "python-library", None, T),
    ("genindex-A.html", "python-nav", None, C),
    ("genindex-S.html", "python-nav", None, T),
    ("py-modindex.html", "python-nav", None, C),
    ("search.html", "python-nav", None, C),
    ("copyright.html", "python-nav", None, T),
    ("about.html", "python-nav", None, C),
    ("bugs.html", "python-nav", None, T),
    ("glossary.html", "python-nav", None, T),
    ("contents.html", "python-nav", None, C),
    ("index.html", "python-nav", None, T),
    ("download.html", "python-nav", None, C),
    ("library/fileformats.html", "python-nav", None, C),
    ("howto/index.html", "python-nav", None, C),
    ("tutorial/index.html", "python-nav", None, T),
]

PACKAGES = [
    "attrs", "babel", "certifi", "click", "contourpy", "cycler", "dill", "filelock", "gguf", "greenlet",
    "h11", "iniconfig", "jinja2", "jsonschema-specifications", "kernels", "lxml", "markupsafe", "mdurl",
    "msgpack", "networkx", "numpy", "packaging", "pip", "playwright", "pluggy", "pyarrow", "pygments",
    "pytz", "pyyaml", "referencing", "requests", "rpds-py", "safetensors", "scipy", "setuptools",
    "shellingham", "six", "tomlkit", "truststore", "typing-inspection", "tzdata", "tzlocal", "urllib3",
]
LICENCE_FILES = ["click", "requests", "numpy", "attrs", "typing_extensions", "certifi"]
COMMON_LICENCES = [("BSD", "BSD-3-Clause"), ("MPL-2.0", "MPL-2.0")]
MAN_PAGES = [
    ("intro", "1"), ("pldd", "1"), ("intro", "2"), ("pipe", "7"), ("signal", "7"), ("namespaces", "7"),
    ("hier", "7"), ("credentials", "7"), ("symlink", "7"), ("uri", "7"), ("string_copying", "7"), ("qsort", "3"),
    ("fork", "2"), ("open", "2"), ("pipe", "2"), ("operator", "7"), ("path_resolution", "7"), ("execve", "2"),
    ("malloc", "3"), ("tzfile", "5"), ("strtok", "3"), ("suffixes", "7"), ("units", "7"), ("strcpy", "3"),
    ("getopt", "3"), ("kill", "2"), ("exit", "3"), ("inotify", "7"),
    ("tmux", "1"), ("ssh-keygen", "1"), ("sqlite3", "1"), ("zstd", "1"), ("openssl-rand", "1ssl"),
    ("curl", "1"), ("file", "1"), ("openssl-list", "1ssl"), ("openssl-version", "1ssl"), ("ctest", "1"),
    ("sln", "8"),
]
CHANGELOGS = [
    ("/usr/share/doc/tmux/changelog.gz", "tmux", "ISC", 0),
    ("/usr/share/doc/jq/changelog.gz", "jq", "MIT", 0),
    ("/usr/share/doc/zstd/changelog.gz", "zstd", "BSD-3-Clause", 0),
    ("/usr/share/doc/python3-pygments/changelog.gz", "pygments", "BSD-2-Clause", 0),
]
# sections of Python's own changelog (whatsnew/changelog.html), typed as changelogs
CHANGELOG_PAGES = [("whatsnew/changelog.html.gz", "library", T), ("whatsnew/changelog.html.gz", "security", T)]
# changelog sections at the end of package descriptions
PACKAGE_CHANGELOGS = [("xxhash", "CHANGELOG"), ("dateparser", "History"), ("fonttools", "Changelog")]


def labelled_candidates() -> list[dict]:
    dists = distributions()
    rows = [pydoc_topic(k) for k in PYDOC_TOPICS]
    rows += [pydoc_html(*p) for p in PYDOC_PAGES]
    rows += [r for r in (package_description(n, dists) for n in PACKAGES) if r]
    rows += [r for r in (licence_file(n, dists) for n in LICENCE_FILES) if r]
    rows += [common_licence(*c) for c in COMMON_LICENCES]
    rows += [man_page(*m) for m in MAN_PAGES]
    rows += [changelog_file(*c) for c in CHANGELOGS]
    rows += [pydoc_html(path, "changelog", sec, mode) for path, sec, mode in CHANGELOG_PAGES]
    rows += [r for r in (package_description(n, dists, h, "changelog") for n, h in PACKAGE_CHANGELOGS) if r]
    return rows


# ----------------------------------------------------------------------------- the unlabelled corpus
# A bigger, unlabelled corpus for a pre-filter benchmark: the same sources, more of them, sampled by a
# fixed hash order (not by content), so that good pages and junk come in the mix the sources give.


def _order(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


def _in_range(row: dict | None) -> bool:
    return bool(row) and MIN_CHARS <= len(row["text"]) <= MAX_CHARS


def corpus_pydoc_topics() -> list[dict]:
    from pydoc_data.topics import topics

    return [r for r in (pydoc_topic(k) for k in sorted(topics)) if _in_range(r)]


def _html_kind(path: str, raw: str) -> str:
    top = path.split("/")[0]
    if "/" not in path or path.endswith("index.html"):
        return "python-nav"
    if top == "library" and "toctree-wrapper" in raw and len(re.findall(r"<section id=", raw)) <= 1:
        return "python-nav"  # a chapter page: a heading, a sentence and the chapter's table of contents
    return {"howto": "python-howto", "faq": "python-howto", "tutorial": "python-tutorial"}.get(top, "python-library")


def corpus_pydoc_pages(n_pages: int) -> list[dict]:
    """n_pages pages of the HTML docs (howto, tutorial, library, faq), in hash order; for each, one
    section of 400-6,000 characters picked in hash order (or the whole page when it is short). About
    a third crude, the rest trafilatura."""
    pages = sorted(str(p.relative_to(PYDOC_HTML)) for d in ("howto", "tutorial", "library", "faq")
                   for p in (PYDOC_HTML / d).glob("*.html"))
    rows: list[dict] = []
    for path in sorted(pages, key=_order):
        if len(rows) >= n_pages:
            break
        raw = (PYDOC_HTML / path).read_text("utf-8")
        kind = _html_kind(path, raw)
        mode = C if int(_order("mode" + path)[0], 16) < 5 else T
        ids = re.findall(r'<section id="([^"]*)"', raw)
        picked = None
        whole = pydoc_html(path, kind, None, mode)
        if len(trafilatura_text(raw)) <= MAX_CHARS or kind == "python-nav":
            picked = whole
        else:
            for sid in sorted(ids[1:], key=lambda x: _order(path + x))[:12]:
                row = pydoc_html(path, kind, sid, mode)
                body = trafilatura_text(only_section(raw, sid))
                if 400 <= len(body) <= MAX_CHARS and _in_range(row):
                    picked = row
                    break
        if _in_range(picked):
            rows.append(picked)
    return rows


CORPUS_NAV_PAGES = [
    ("genindex-B.html", T), ("genindex-C.html", C), ("genindex-D.html", T), ("genindex-F.html", C),
    ("genindex-M.html", T), ("genindex-P.html", C), ("genindex-R.html", T), ("genindex-T.html", C),
    ("genindex-Symbols.html", T), ("library/index.html", C), ("faq/index.html", T), ("reference/index.html", C),
    ("using/index.html", T), ("extending/index.html", C), ("installing/index.html", T),
    ("library/superseded.html", C), ("library/windows.html", T), ("library/unix.html", C),
    ("copyright.html", C), ("index.html", C), ("search.html", T), ("py-modindex.html", T),
]


def corpus_nav_pages() -> list[dict]:
    rows = []
    for path, mode in CORPUS_NAV_PAGES:
        if (PYDOC_HTML / path).exists():
            row = pydoc_html(path, "python-nav", None, mode)
            if _in_range(row):
                rows.append(row)
    return rows


def corpus_packages(dists: dict) -> list[dict]:
    """Every installed distribution with a permissive licence and a description of 300+ characters:
    the shared venv's, and Debian's system ones (/usr/lib/python3/dist-packages)."""
    rows = []
    system = {}
    for dist in md.distributions(path=["/usr/lib/python3/dist-packages"]):
        name = (dist.metadata.get("Name") or "").strip().lower()
        if name and name not in dists and name not in system:
            system[name] = dist
    for name in sorted({**dists, **system}):
        row = package_description(name, {**system, **dists})
        if _in_range(row):
            rows.append(row)
    return rows


def _shippable_man_sources() -> list[tuple[str, str]]:
    out = subprocess.run(["dpkg", "-L", "manpages", "manpages-dev"], capture_output=True, text=True).stdout
    pages = []
    for line in out.splitlines():
        m = re.match(r"/usr/share/man/man\d/(.+)\.(\d\w*)\.gz$", line)
        if not m:
            continue
        head = gzip.open(line, "rt", errors="replace").read(6000)
        if head.startswith(".so "):
            continue
        pages.append((m.group(1), m.group(2)))
    return sorted(set(pages))


CORPUS_TOOL_MAN_PAGES = [
    ("ssh", "1"), ("scp", "1"), ("ssh_config", "5"), ("ssh-agent", "1"), ("tmux", "1"), ("sqlite3", "1"),
    ("zstd", "1"), ("curl", "1"), ("file", "1"), ("cmake", "1"), ("python3.11", "1"), ("xz", "1"),
    ("openssl-req", "1ssl"), ("openssl-x509", "1ssl"), ("openssl-enc", "1ssl"), ("openssl-dgst", "1ssl"),
    ("openssl-genpkey", "1ssl"), ("openssl-s_client", "1ssl"), ("openssl-passwd", "1ssl"),
    ("openssl-errstr", "1ssl"), ("openssl-speed", "1ssl"), ("openssl-ciphers", "1ssl"),
]


def corpus_man_pages(n_project: int) -> list[dict]:
    rows = []
    for name, sec in sorted(_shippable_man_sources(), key=lambda p: _order("man" + p[0] + p[1])):
        if len(rows) >= n_project:
            break
        try:
            row = man_page(name, sec)
        except (SystemExit, subprocess.CalledProcessError):
            continue  # a licence we do not ship (GPL) or a page man cannot render
        if _in_range(row):
            rows.append(row)
    for name, sec in CORPUS_TOOL_MAN_PAGES:
        try:
            row = man_page(name, sec)
        except (SystemExit, subprocess.CalledProcessError):
            continue
        if _in_range(row):
            rows.append(row)
    return rows


CORPUS_LICENCE_FILES = ["click", "requests", "numpy", "attrs", "typing_extensions", "certifi", "jinja2",
                        "pyyaml", "urllib3", "idna", "packaging", "tqdm", "pytz", "six", "filelock"]
CORPUS_CHANGELOG_SECTIONS = ["library", "security", "core-and-builtins", "documentation", "tests", "build",
                             "windows", "macos", "tools-demos", "c-api", "idle", "id2", "id3", "id12"]
CORPUS_CHANGELOG_FILES = CHANGELOGS + [("/usr/share/doc/curl/changelog.gz", "curl", "curl", 0),
                                       ("/usr/share/doc/xz-utils/NEWS.gz", "xz", "public-domain", 0)]


def corpus_licences_and_changelogs(dists: dict) -> list[dict]:
    rows = [r for r in (licence_file(n, dists) for n in CORPUS_LICENCE_FILES) if _in_range(r)]
    rows += [common_licence(*c) for c in COMMON_LICENCES]
    rows += [r for r in (pydoc_html("license.html", "licence-text", sec, T)
                         for sec in ("terms-and-conditions-for-accessing-or-otherwise-using-python",
                                     "history-of-the-software")) if _in_range(r)]
    rows += [r for r in (changelog_file(*c) for c in CORPUS_CHANGELOG_FILES if Path(c[0]).exists()) if _in_range(r)]
    for sec in CORPUS_CHANGELOG_SECTIONS:
        try:
            row = pydoc_html("whatsnew/changelog.html.gz", "changelog", sec, T)
        except SystemExit:
            continue
        if _in_range(row):
            rows.append(row)
    rows += [r for r in (package_description(n, dists, h, "changelog") for n, h in PACKAGE_CHANGELOGS) if _in_range(r)]
    return rows


def corpus_candidates(n_html: int = 150, n_man: int = 60) -> list[dict]:
    dists = distributions()
    rows = corpus_pydoc_topics() + corpus_pydoc_pages(n_html) + corpus_nav_pages()
    rows += corpus_packages(dists) + corpus_man_pages(n_man) + corpus_licences_and_changelogs(dists)
    seen, out = set(), []
    for r in rows:
        if r["id"] not in seen:
            seen.add(r["id"])
            out.append(r)
    return out


# ----------------------------------------------------------------------------- build: join drafts with labels

LABELS = DATA / "real_documents_labels.jsonl"
WEB_JUNK = DATA / "web_junk.jsonl"
WORDINGS = DATA / "injection_wordings.jsonl"
FIELDS = ("id", "type", "source", "licence", "label", "why", "text")

# one junk page per kind the issue names, and twelve good pages of several types
INJECTION_JUNK_BASES = [
    "junk-product-1", "junk-cookie-1", "junk-forum-1", "junk-login-1", "junk-404-1", "junk-casino-1",
    "junk-comments-1", "junk-events-1", "junk-jobad-1", "junk-tos-1", "junk-ticker-1", "junk-linkfarm-1",
]
INJECTION_GOOD_BASES = [
    "pydoc-topic-with", "pydoc-topic-booleans", "pyhtml-howto-sorting--key-functions-crude",
    "pyhtml-tutorial-venv--creating-virtual-environments", "pyhtml-library-secrets--recipes-and-best-practices",
    "pyhtml-library-sqlite3--how-to-use-placeholders-to-bind-values-in-sql-queries", "pyhtml-howto-urllib2--headers",
    "pkg-requests", "pkg-click", "man-pldd.1", "man-kill.2", "man-sln.8",
]
POSITIONS = ("top", "middle", "bottom")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def insert_line(text: str, line: str, position: str) -> str:
    """The page with `line` added as its own paragraph at the top, at the paragraph (else line)
    break nearest the middle, or at the bottom."""
    if position == "top":
        return f"{line}\n\n{text}"
    if position == "bottom":
        return f"{text}\n\n{line}"
    mid = len(text) // 2
    breaks = [m.start() for m in re.finditer(r"\n\n", text)] or [m.start() for m in re.finditer(r"\n", text)]
    cut = min(breaks, key=lambda b: abs(b - mid)) if breaks else mid
    return f"{text[:cut].rstrip()}\n\n{line}\n\n{text[cut:].lstrip()}"


def injection_rows(docs: dict[str, dict], wordings: list[dict]) -> list[dict]:
    """Each base page clean, and with injected lines: every junk page three times (rater wordings,
    each wording used three times over the twelve pages, in all three positions), every good page
    twice (hijack wordings)."""
    rows = []
    for kind, bases, target, per_page in (("junk", INJECTION_JUNK_BASES, "rater", 3),
                                          ("good", INJECTION_GOOD_BASES, "hijack", 2)):
        pool = [w for w in wordings if w["target"] == target]
        for i, base in enumerate(bases):
            doc = docs[base]
            if doc["label"] != kind:
                raise SystemExit(f"{base} is labelled {doc['label']}, not {kind}")
            rows.append({"id": f"inj-{base}--clean", "base_id": base, "kind": kind, "injected": False,
                         "injection": None, "position": None, "wording": None, "split": "dev",
                         "target": target, "text": doc["text"]})
            for k in range(per_page):
                w = pool[(per_page * i + k) % len(pool)]
                pos = POSITIONS[(i + k) % 3] if kind == "junk" else POSITIONS[(i + 2 * k + i // 3) % 3]
                rows.append({"id": f"inj-{base}--{w['wording']}--{pos}", "base_id": base, "kind": kind,
                             "injected": True, "injection": w["text"], "position": pos,
                             "wording": w["wording"], "split": w["split"], "target": target,
                             "text": insert_line(doc["text"], w["text"], pos)})
    return rows


def build(drafts: Path) -> None:
    labels = {r["id"]: r for r in read_jsonl(LABELS)}
    draft = read_jsonl(drafts / "labelled_draft.jsonl")
    missing = [r["id"] for r in draft if r["id"] not in labels]
    extra = sorted(set(labels) - {r["id"] for r in draft})
    if missing or extra:
        raise SystemExit(f"labels and draft disagree: unlabelled {missing[:5]}, labels without text {extra[:5]}")
    docs = []
    for r in draft:
        row = {k: r.get(k) for k in FIELDS}
        row["label"], row["why"] = labels[r["id"]]["label"], labels[r["id"]]["why"]
        for k in ("licence_checked", "notice"):  # how a man page's licence was checked; the holders to credit
            if r.get(k):
                row[k] = r[k]
        docs.append(row)
    docs += [{k: r[k] for k in FIELDS} for r in read_jsonl(WEB_JUNK)]
    write_jsonl(DATA / "real_documents.jsonl", docs)
    corpus = [{k: v for k, v in r.items() if k not in ("label", "why")} for r in read_jsonl(drafts / "corpus_draft.jsonl")]
    corpus += [{k: r[k] for k in FIELDS if k not in ("label", "why")} for r in read_jsonl(WEB_JUNK)]
    write_jsonl(DATA / "real_corpus.jsonl", corpus)
    inj = injection_rows({d["id"]: d for d in docs}, read_jsonl(WORDINGS))
    write_jsonl(DATA / "injection_pages.jsonl", inj)
    n_junk = sum(d["label"] == "junk" for d in docs)
    print(f"real_documents.jsonl: {len(docs)} pages, {n_junk} junk; real_corpus.jsonl: {len(corpus)} pages; "
          f"injection_pages.jsonl: {len(inj)} pages ({sum(r['injected'] for r in inj)} injected)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract", help="raw texts into drafts (no labels)")
    ex.add_argument("--out-dir", default="runs/real_documents")
    bd = sub.add_parser("build", help="join the drafts with the labels; write the fixtures")
    bd.add_argument("--drafts", default="runs/real_documents")
    sub.add_parser("injection", help="only the injection set, from real_documents.jsonl and injection_wordings.jsonl")
    args = ap.parse_args()
    if args.cmd == "build":
        build(Path(args.drafts))
    if args.cmd == "injection":
        inj = injection_rows({d["id"]: d for d in read_jsonl(DATA / "real_documents.jsonl")}, read_jsonl(WORDINGS))
        write_jsonl(DATA / "injection_pages.jsonl", inj)
        print(f"injection_pages.jsonl: {len(inj)} pages ({sum(r['injected'] for r in inj)} injected)")
    if args.cmd == "extract":
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = labelled_candidates()
        with open(out / "labelled_draft.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"wrote {out / 'labelled_draft.jsonl'}: {len(rows)} texts")
        rows = corpus_candidates()
        with open(out / "corpus_draft.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"wrote {out / 'corpus_draft.jsonl'}: {len(rows)} texts")


if __name__ == "__main__":
    main()
