"""The report page's stylesheet and script, inlined into every report.html.

The script renders the example data with `textContent` only, never as HTML: every text in the page
comes from web documents or models. Its sha256 goes into the page's Content-Security-Policy
(`report._csp`), so this exact script is the only one the page runs.
"""

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1500px;padding:0 20px 40px;color:#222}
header{border-bottom:2px solid #4c78a8;margin-bottom:8px}header p{color:#666;margin-top:0}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #ddd}h3{font-size:14px;margin:16px 0 6px}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.fig{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8}.notes{color:#555;font-size:12.5px}.hint{color:#555}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;position:sticky;top:0;background:#fff;padding:8px 0;z-index:2;border-bottom:1px solid #eee}
#search{flex:1;min-width:240px;padding:6px 8px;font-size:14px}select{padding:5px}#match-count{color:#555}
.example{border:1px solid #d8dde5;border-radius:6px;margin:12px 0;overflow:hidden}
.ex-head{display:flex;flex-wrap:wrap;gap:10px;align-items:baseline;background:#f3f5f8;padding:6px 10px;font-size:13px}
.ex-id{font-weight:600;font-family:ui-monospace,monospace}.ex-url{color:#666;word-break:break-all}
.badge{border-radius:10px;padding:1px 8px;font-size:12px;color:#fff}.b-exported{background:#54a24b}.b-rejected{background:#e45756}.b-pending{background:#9d755d}
.ex-cols{display:grid;grid-template-columns:2fr 1.1fr 1fr 2fr 1.6fr}
.col{padding:6px 10px;border-left:1px solid #eee;min-width:0}.col:first-child{border-left:0}
.col h4{margin:0 0 4px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#4c78a8}
.txt{white-space:pre-wrap;overflow-wrap:anywhere;max-height:24em;overflow:auto;font-size:13px}
.muted{color:#999;font-style:italic}.raw{color:#8a5a00;font-size:12px}
.score{font-size:22px;font-weight:600}.probs{display:grid;grid-template-columns:1.2em 1fr 3em;gap:2px 6px;font-size:11px;margin:6px 0}
.bar{background:#4c78a8;height:9px;align-self:center}
ins{background:#c8f0c0;text-decoration:none}del{background:#fbd3d3;color:#8b1a1a}
body.hide-del del{display:none}
.unfold{font-size:11px;margin-left:4px;padding:0 6px;border:1px solid #d99;background:#fff;color:#8b1a1a;border-radius:8px;cursor:pointer}#more{margin:8px 0;padding:6px 14px}
@media (max-width:1000px){.ex-cols{grid-template-columns:1fr}.col{border-left:0;border-top:1px solid #eee}}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var PAGE = 25;
  var data = JSON.parse(document.getElementById("examples-data").textContent);
  var list = document.getElementById("example-list");
  var search = document.getElementById("search");
  var selects = {status: document.getElementById("filter-status"),
                 stage: document.getElementById("filter-stage"),
                 reason: document.getElementById("filter-reason")};
  var more = document.getElementById("more");
  var count = document.getElementById("match-count");
  var shown = PAGE;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function haystack(ex) {
    return [ex.id, ex.url, ex.document, ex.instruction, ex.instruction_raw, ex.score_reason, ex.response,
            ex.response_raw, ex.distilled, ex.stage, ex.reason, ex.unsupported].filter(Boolean).join("\n").toLowerCase();
  }
  data.forEach(function (ex) { ex._hay = haystack(ex); });

  function fillSelect(select, key) {
    var values = [];
    data.forEach(function (ex) { if (ex[key] && values.indexOf(ex[key]) < 0) values.push(ex[key]); });
    values.sort().forEach(function (v) {
      var n = data.filter(function (ex) { return ex[key] === v; }).length;
      var opt = el("option", null, v + " (" + n + ")");
      opt.value = v;
      select.appendChild(opt);
    });
  }
  Object.keys(selects).forEach(function (key) { fillSelect(selects[key], key); });

  function column(title, body) {
    var col = el("div", "col");
    col.appendChild(el("h4", null, title));
    col.appendChild(body);
    return col;
  }

  function textBox(text, emptyNote) {
    return text ? el("div", "txt", text) : el("div", "txt muted", emptyNote);
  }

  function scoreBox(ex) {
    var box = el("div");
    if (ex.score === null || ex.score === undefined) {
      box.appendChild(el("div", "muted", "not scored"));
      return box;
    }
    box.appendChild(el("span", "score", ex.score));
    if (typeof ex.score_expected === "number") box.appendChild(el("span", null, "  expected " + ex.score_expected.toFixed(2)));
    if (ex.score_probs && typeof ex.score_probs === "object") {
      var grid = el("div", "probs");
      Object.keys(ex.score_probs).sort().forEach(function (k) {
        var p = Number(ex.score_probs[k]) || 0;
        grid.appendChild(el("span", null, k));
        var bar = el("div", "bar");
        bar.style.width = Math.max(1, Math.round(p * 100)) + "%";
        grid.appendChild(bar);
        grid.appendChild(el("span", null, p.toFixed(2)));
      });
      box.appendChild(grid);
    }
    if (ex.score_reason) box.appendChild(el("div", "txt", ex.score_reason));
    return box;
  }

  // A long deleted run (a paragraph the rewriter dropped) is folded to its first words, so the
  // rewrite itself stays in view; one click shows it all.
  var FOLD_WORDS = 24;
  function deleted(text) {
    var words = text.split(/(\s+)/);
    if (words.length <= 2 * FOLD_WORDS + 1) return el("del", null, text);
    var node = el("del", null, words.slice(0, 2 * FOLD_WORDS).join(""));
    var hidden = Math.floor((words.length - 2 * FOLD_WORDS) / 2);
    var more = el("button", "unfold", "… " + hidden + " more deleted words");
    more.type = "button";
    more.addEventListener("click", function () { node.textContent = text; });
    node.appendChild(more);
    return node;
  }

  function rewriteBox(ex) {
    if (ex.diff) {
      var wrap = el("div");
      var box = el("div", "txt");
      ex.diff.forEach(function (seg) {
        box.appendChild(seg[0] === "+" ? el("ins", null, seg[1]) : seg[0] === "-" ? deleted(seg[1])
                        : document.createTextNode(seg[1]));
      });
      wrap.appendChild(box);
      if (ex.unsupported) wrap.appendChild(el("div", "raw", "grounding check: " + ex.unsupported));
      return wrap;
    }
    if (ex.response_raw) {
      var raw = el("div");
      raw.appendChild(el("div", "raw", "raw model output (rejected):"));
      raw.appendChild(el("div", "txt", ex.response_raw));
      return raw;
    }
    return textBox(ex.response, "not rewritten");
  }

  function instructionBox(ex) {
    var box = el("div");
    box.appendChild(textBox(ex.instruction, "no instruction"));
    if (ex.instruction_raw) {
      box.appendChild(el("div", "raw", "raw model output:"));
      box.appendChild(el("div", "txt", ex.instruction_raw));
    }
    return box;
  }

  function card(ex) {
    var node = el("article", "example");
    node.dataset.id = ex.id;
    var head = el("div", "ex-head");
    head.appendChild(el("span", "ex-id", ex.id));
    head.appendChild(el("span", "badge b-" + ex.status, ex.status));
    if (ex.stage && ex.status !== "exported") head.appendChild(el("span", "ex-stage", (ex.status === "rejected" ? "at " : "last stage: ") + ex.stage));
    if (ex.reason) head.appendChild(el("span", "ex-reason", "reason: " + ex.reason));
    if (typeof ex.kept_share === "number") head.appendChild(el("span", null, Math.round(ex.kept_share * 100) + "% of the rewrite's words come from the document"));
    if (ex.url) head.appendChild(el("span", "ex-url", ex.url));
    node.appendChild(head);
    var cols = el("div", "ex-cols");
    cols.appendChild(column("Document", textBox(ex.document, "empty")));
    cols.appendChild(column("Instruction", instructionBox(ex)));
    cols.appendChild(column("Score and rationale", scoreBox(ex)));
    cols.appendChild(column("Rewrite (changes vs document)", rewriteBox(ex)));
    cols.appendChild(column("Distilled", textBox(ex.distilled, ex.distill_reason ? "distill failed: " + ex.distill_reason : "not distilled")));
    node.appendChild(cols);
    return node;
  }

  function matching() {
    var q = search.value.trim().toLowerCase();
    return data.filter(function (ex) {
      for (var key in selects) if (selects[key].value && ex[key] !== selects[key].value) return false;
      return !q || ex._hay.indexOf(q) >= 0;
    });
  }

  function render() {
    var rows = matching();
    var frag = document.createDocumentFragment();
    rows.slice(0, shown).forEach(function (ex) { frag.appendChild(card(ex)); });
    list.replaceChildren(frag);
    count.textContent = rows.length + " of " + data.length + " rows match";
    more.hidden = rows.length <= shown;
  }

  function reset() { shown = PAGE; render(); }
  search.addEventListener("input", reset);
  Object.keys(selects).forEach(function (key) { selects[key].addEventListener("change", reset); });
  more.addEventListener("click", function () { shown += PAGE; render(); });
  document.getElementById("show-deleted").addEventListener("change", function (e) {
    document.body.classList.toggle("hide-del", !e.target.checked);
  });
  render();
})();
"""
